"""The moving average of G, and augmentation state, inside the training state: update, growth, resume, sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import smoke_config
from mrigen import checkpoint, data, losses, models, parallel, sampling, state as state_lib, train


def tree_equal(a, b):
    same_structure = jax.tree.structure(a) == jax.tree.structure(b)
    return same_structure and all(np.array_equal(np.asarray(x), np.asarray(y))
                                  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def improved_config(**overrides):
    """dcgan:smoke with an EMA of G and ADA moving p at every step."""
    settings = dict(train__ema_kimg=0.01, train__ema_rampup=0.5, train__augment="ada", train__augment_p=0.2,
                    train__ada_interval=1, train__ada_kimg=0.05, train__ada_target=0.01)
    settings.update(overrides)
    return smoke_config(**settings)


def test_ema_beta_follows_the_half_life_and_its_ramp_up():
    tc = smoke_config(train__ema_kimg=10.0, train__ema_rampup=0.05).train
    # No images seen: the half-life ramps up from 0, so the average starts as a copy of G.
    assert float(state_lib.ema_beta(jnp.int32(0), 16, tc)) == 0.0
    # 1,000 images seen: half-life min(10,000, 0.05 * 1,000) = 50 images.
    np.testing.assert_allclose(float(state_lib.ema_beta(jnp.int32(1000), 16, tc)), 0.5 ** (16 / 50), rtol=1e-6)
    # Past the ramp-up: 10,000 images.
    np.testing.assert_allclose(float(state_lib.ema_beta(jnp.int32(10 ** 6), 16, tc)), 0.5 ** (16 / 10000),
                               rtol=1e-6)
    tc.ema_rampup = 0.0  # No ramp-up: the full half-life from the start.
    np.testing.assert_allclose(float(state_lib.ema_beta(jnp.int32(0), 16, tc)), 0.5 ** (16 / 10000), rtol=1e-6)


def test_ema_update_is_the_weighted_mean_leaf_by_leaf():
    average = {"params": {"w": jnp.array([1.0, 2.0])}, "batch_stats": {"m": jnp.array([4.0])}}
    current = {"params": {"w": jnp.array([3.0, -2.0])}, "batch_stats": {"m": jnp.array([0.0])}}
    updated = state_lib.ema_update(average, current, jnp.float32(0.75))
    np.testing.assert_allclose(updated["params"]["w"], [0.75 * 1 + 0.25 * 3, 0.75 * 2 - 0.25 * 2])
    np.testing.assert_allclose(updated["batch_stats"]["m"], [3.0])


def test_paper_configs_keep_the_state_without_ema_or_augmentation():
    config = smoke_config()
    arch = models.build(config)
    state = jax.eval_shape(lambda: state_lib.initial_state(
        arch, arch.stages[0], state_lib.create_optimizer(config.train), 0, 8, config.train))
    assert not {"g_ema", "augment_p", "ada_sign_sum"} & set(state)


@pytest.fixture(scope="module")
def mni32(shared_cache_dir):
    return data.load_dataset("", 32, cache_dir=shared_cache_dir).images


def test_train_steps_update_the_average_and_p_as_computed_by_hand(mni32):
    config = improved_config(train__ada_interval=2)
    tc = config.train
    arch = models.build(config)
    optimizer = state_lib.create_optimizer(tc)
    mesh = parallel.data_mesh()
    step_fn = train.make_train_step(arch, arch.stages[0], 0, 100, losses.get(config.loss), optimizer, tc,
                                    len(mni32), mesh)
    state = jax.device_put(state_lib.initial_state(arch, arch.stages[0], optimizer, 0, tc.batch_size, tc),
                           parallel.replicated(mesh))
    images = jax.device_put(mni32, parallel.replicated(mesh))
    first, m1 = jax.device_get(step_fn(state, images))
    # Step 1 saw no images before it: beta = 0, the average is G after the step.
    assert tree_equal(first["g_ema"], first["g"])
    # ADA waits for its interval (2 steps), summing the signs of D(real).
    assert first["augment_p"] == np.float32(0.2) and m1["augment_p"] == np.float32(0.2)
    np.testing.assert_allclose(first["ada_sign_sum"], m1["real_sign"] * tc.batch_size, rtol=1e-6)
    second, m2 = jax.device_get(step_fn(jax.device_put(first, parallel.replicated(mesh)), images))
    beta = 0.5 ** (tc.batch_size / (tc.batch_size * tc.ema_rampup))  # half-life: rampup x images seen
    expected = jax.tree.map(lambda a, g: beta * a + (1 - beta) * g, first["g_ema"], second["g"])
    for x, y in zip(jax.tree.leaves(expected), jax.tree.leaves(second["g_ema"])):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
    assert not tree_equal(second["g_ema"], second["g"])
    # Then p moves by one step size in the direction of (mean sign over both steps) - target, and the sum resets.
    mean_sign = (m1["real_sign"] + m2["real_sign"]) / 2
    step_size = 2 * tc.batch_size / (tc.ada_kimg * 1000)
    np.testing.assert_allclose(second["augment_p"],
                               np.clip(0.2 + np.sign(mean_sign - tc.ada_target) * step_size, 0, 1), rtol=1e-6)
    assert second["augment_p"] != np.float32(0.2) and second["ada_sign_sum"] == 0.0


def restored(workdir, config):
    arch = models.build(config)
    ckpt = checkpoint.Checkpointer(workdir)
    try:
        return jax.device_get(state_lib.restore_or_init(ckpt, arch, state_lib.create_optimizer(config.train),
                                                        config, resume=False))
    finally:
        ckpt.close()


@pytest.fixture(scope="module")
def resumed_and_straight(tmp_path_factory, shared_cache_dir):
    """The same improved run trained 6 steps straight, and 3 + 3 steps with a resume between (workdirs).

    ADA moves p every 2 steps, so the resume falls between two moves (the running sum is resumed too),
    and the step is the one the hand-computed test compiles (JAX's cache compiles it once for both).
    """
    steps_per_epoch = 137 / 8
    straight = str(tmp_path_factory.mktemp("straight"))
    split = str(tmp_path_factory.mktemp("split"))
    config = improved_config(train__ada_interval=2, train__epochs=6 / steps_per_epoch,
                             data__cache_dir=shared_cache_dir)
    train.train(config, straight)
    config.train.epochs = 3 / steps_per_epoch
    train.train(config, split)
    config.train.epochs = 6 / steps_per_epoch
    train.train(config, split)
    return config, straight, split


def test_ema_and_p_resume_bit_exact(resumed_and_straight):
    config, straight_dir, split_dir = resumed_and_straight
    straight, resumed = restored(straight_dir, config), restored(split_dir, config)
    assert int(straight["step"]) == int(resumed["step"]) == 6
    assert {"g_ema", "augment_p", "ada_sign_sum"} <= set(straight)
    assert float(straight["augment_p"]) != config.train.augment_p  # p moved, so its resume is tested
    assert tree_equal(straight, resumed)


def test_sampler_uses_the_average_and_the_raw_generator_is_one_flag_away(resumed_and_straight):
    config, workdir, _ = resumed_and_straight
    final = restored(workdir, config)
    assert not tree_equal(final["g_ema"], final["g"])
    average, raw = sampling.load_sampler(workdir), sampling.load_sampler(workdir, ema=False)
    assert average.ema and not raw.ema
    assert tree_equal(average.g_vars, final["g_ema"]) and tree_equal(raw.g_vars, final["g"])
    key = jax.random.PRNGKey(3)
    assert not np.array_equal(np.asarray(average(key, 4)), np.asarray(raw(key, 4)))


def test_progan_growth_grows_the_average_like_g():
    config = smoke_config("progan", train__ema_kimg=1.0)
    arch = models.build(config)
    optimizer = state_lib.create_optimizer(config.train)
    first = state_lib.initial_state(arch, arch.stages[0], optimizer, 0, 4, config.train)
    first["g_ema"] = jax.tree.map(lambda x: x + 1.0, first["g_ema"])  # an average unlike G
    grown = state_lib.grow_state(first, arch, arch.stages[1], optimizer, config)
    assert jax.tree.structure(grown["g_ema"]) == jax.tree.structure(grown["g"])
    assert set(grown["g_ema"]["params"]) > set(first["g_ema"]["params"])
    for name, old in first["g_ema"]["params"].items():  # existing blocks keep their average
        assert tree_equal(grown["g_ema"]["params"][name], old)
    for name in set(grown["g"]["params"]) - set(first["g"]["params"]):  # new blocks start as G's
        assert tree_equal(grown["g_ema"]["params"][name], grown["g"]["params"][name])
