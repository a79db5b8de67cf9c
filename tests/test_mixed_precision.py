"""bfloat16 compute: parameters and optimizer state stay float32, and a step agrees with float32."""

import jax
import numpy as np
import pytest

from conftest import smoke_config
from mrigen import losses, models, parallel, state as state_lib, train


def one_step(config, dataset):
    """One step from a fresh state, as tests/test_combinations.py takes it (the float32 steps are the same
    programs as its dcgan + dragan and progan + wgan_gp ones: compiled once, in JAX's cache)."""
    arch = models.build(config)
    stage = arch.stages[1] if len(arch.stages) > 1 else arch.stages[0]  # ProGAN: a fade-in stage
    optimizer = state_lib.create_optimizer(config.train)
    mesh = parallel.data_mesh()
    step_fn = train.make_train_step(arch, stage, 0, 4, losses.get(config.loss), optimizer, config.train,
                                    len(dataset), mesh)
    start = jax.device_get(state_lib.initial_state(arch, stage, optimizer, 0, config.train.batch_size))
    state, metrics = step_fn(jax.device_put(start, parallel.replicated(mesh)),
                             jax.device_put(dataset, parallel.replicated(mesh)))
    return start, jax.device_get(state), jax.device_get(metrics)


@pytest.mark.parametrize("model", ["dcgan", "progan"])
def test_bfloat16_step_agrees_with_float32_within_bfloat16_tolerance(model):
    dataset = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 1), dtype=np.uint8)
    results = {}
    for dtype in ("float32", "bfloat16"):
        # One G update per step (DCGAN's smoke config has 3): the precision is under test, not the ratio.
        config = smoke_config(model, train__compute_dtype=dtype, train__update_ratio=1)
        config.data.resolution = 32 if model == "dcgan" else 8
        dataset_at = dataset[:, :config.data.resolution, :config.data.resolution]
        results[dtype] = one_step(config, dataset_at)
    start, fp32, m32 = results["float32"]
    _, bf16, m16 = results["bfloat16"]
    for leaf in jax.tree.leaves((bf16["g"]["params"], bf16["d"]["params"], bf16["g_opt"], bf16["d_opt"])):
        assert leaf.dtype in (np.float32, np.int32), leaf.dtype
    for key in ("d_loss", "g_loss"):
        assert m16[key].dtype == np.float32
        np.testing.assert_allclose(m16[key], m32[key], rtol=5e-2, atol=5e-2)
    # The weight updates point the same way: bfloat16 keeps about 3 significant digits.
    delta32 = np.concatenate([(b - a).ravel() for a, b in zip(
        jax.tree.leaves(start["d"]["params"]), jax.tree.leaves(fp32["d"]["params"]))])
    delta16 = np.concatenate([(b - a).ravel() for a, b in zip(
        jax.tree.leaves(start["d"]["params"]), jax.tree.leaves(bf16["d"]["params"]))])
    cosine = delta32 @ delta16 / (np.linalg.norm(delta32) * np.linalg.norm(delta16))
    assert cosine > 0.9, cosine
    assert not np.array_equal(delta32, delta16)  # bfloat16 really ran


def test_unknown_compute_dtype_is_refused():
    config = smoke_config(train__compute_dtype="float8")
    with pytest.raises(Exception, match="train.compute_dtype: unknown dtype 'float8'"):
        models.build(config)
