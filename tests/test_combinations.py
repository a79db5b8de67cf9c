"""Every architecture trains with every loss: 3 x 5 combinations at tiny size."""

import jax
import numpy as np
import pytest

from conftest import smoke_config
from mrigen import losses, models, parallel, state as state_lib, train

RESOLUTION = {"dcgan": 32, "srresnet": 16, "progan": 8}


@pytest.mark.parametrize("loss", sorted(losses.LOSSES))
@pytest.mark.parametrize("model", sorted(models.ARCHITECTURES))
def test_each_model_trains_with_each_loss(model, loss):
    config = smoke_config(model, loss=loss)
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
    assert ("penalty" in metrics) == (loss in ("wgan_gp", "dragan"))
    for name in ("g", "d"):
        before = jax.tree.leaves(start[name]["params"])
        after = jax.tree.leaves(jax.device_get(state[name]["params"]))
        changed = sum(not np.array_equal(a, b) for a, b in zip(before, after))
        assert changed == len(before), f"{name}: only {changed} of {len(before)} parameter arrays changed"
