"""Every architecture trains with every loss: 3 x 6 combinations at tiny size."""

import jax
import numpy as np
import pytest

from conftest import smoke_config
from mrigen import losses, models, parallel, state as state_lib, train

RESOLUTION = {"dcgan": 32, "srresnet": 16, "progan": 8}


def flat_params(tree) -> dict:
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("loss", sorted(losses.LOSSES))
@pytest.mark.parametrize("model", sorted(models.ARCHITECTURES))
def test_each_model_trains_with_each_loss(model, loss):
    # One G update per step: the loss is under test here; r updates are tested in test_train.py.
    config = smoke_config(model, loss=loss, train__update_ratio=1)
    config.data.resolution = RESOLUTION[model]
    arch = models.build(config)
    stage = arch.stages[1] if len(arch.stages) > 1 else arch.stages[0]  # ProGAN: a fade-in stage
    optimizer = state_lib.create_optimizer(config.train)
    mesh = parallel.data_mesh()
    rng = np.random.default_rng(0)
    dataset = rng.integers(0, 256, (16, config.data.resolution, config.data.resolution, 1), dtype=np.uint8)
    step_fn = train.make_train_step(arch, stage, 0, 4, losses.get(loss), optimizer, config.train,
                                    len(dataset), mesh)
    start = jax.device_get(state_lib.initial_state(arch, stage, optimizer, 0, config.train.batch_size))
    state = jax.device_put(start, parallel.replicated(mesh))
    images = jax.device_put(dataset, parallel.replicated(mesh))
    for _ in range(2):
        state, metrics = step_fn(state, images)
    metrics = jax.device_get(metrics)
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    assert ("penalty" in metrics) == (loss in ("wgan_gp", "dragan", "r1"))
    if loss == "wgan":  # the critic's weights stay clipped
        leaves = jax.tree.leaves(jax.device_get(state["d"]["params"]))
        assert max(float(np.abs(leaf).max()) for leaf in leaves) <= config.train.clip_value + 1e-7
    for name in ("g", "d"):
        # Adam's first moment is non-zero wherever a parameter received a gradient. (Comparing
        # weights is not enough: a clipped WGAN critic passes G gradients too small to move 1.0.)
        first_moment = flat_params(jax.device_get(state[f"{name}_opt"][0].mu))
        without_gradient = [path for path, mu in first_moment.items() if not np.any(mu)]
        if name == "d" and loss in ("wgan", "wgan_gp"):
            # mean(D(fake)) - mean(D(real)) does not depend on the critic's output bias: its gradient is 0.
            without_gradient = [p for p in without_gradient
                                if not (p.endswith("['bias']") and first_moment[p].shape == (1,))]
        assert not without_gradient, f"{name}: parameters without gradient: {without_gradient}"
        before, after = flat_params(start[name]["params"]), flat_params(jax.device_get(state[name]["params"]))
        assert sum(not np.array_equal(before[p], after[p]) for p in before) > len(before) // 2
