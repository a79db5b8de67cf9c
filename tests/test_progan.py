"""ProGAN: shapes pinned to docs/models.md, growth as staged parameter trees, staged training and resuming."""

import importlib.util
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mrigen import checkpoint, models, run_config, sampling, state as state_lib, train
from mrigen.models import base, progan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_variant(variant=None):
    spec = importlib.util.spec_from_file_location("progan_config", os.path.join(ROOT, "configs", "progan.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def param_shapes(arch, stage, batch=4):
    """({path: shape} of G, {path: shape} of D) for `stage`, without allocating anything."""
    optimizer = state_lib.create_optimizer(config_variant().train)
    state = jax.eval_shape(lambda: state_lib.initial_state(arch, stage, optimizer, 0, batch))
    return flat_shapes(state["g"]["params"]), flat_shapes(state["d"]["params"])


def flat_shapes(tree):
    return {jax.tree_util.keystr(path): leaf.shape
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def flat_values(tree):
    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


# ---------------------------------------------------------------- configs and stages


def test_paper_config():
    config = config_variant()
    assert (config.model, config.loss, config.data.resolution, config.arch.latent_dim) == (
        "progan", "wgan_gp", 256, 512)
    assert (config.train.learning_rate, config.train.b1, config.train.b2) == (1e-3, 0.0, 0.999)
    assert (config.train.batch_size, config.train.update_ratio, config.train.epochs_per_stage) == (64, 1, 20.0)
    assert (config.train.penalty_weight, config.train.drift) == (0.25, 0.001)
    assert config.arch.pixel_norm and config.train.reset_optimizer_per_stage


def test_config_variants_have_the_same_fields_as_dcgan_plus_progans_own():
    spec = importlib.util.spec_from_file_location("dcgan_config", os.path.join(ROOT, "configs", "dcgan.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dcgan = set(run_config.flatten(module.get_config()))
    for variant in (None, "smoke", "quick"):
        ours = set(run_config.flatten(config_variant(variant)))
        assert ours - dcgan == {"train.epochs_per_stage", "arch.pixel_norm", "train.reset_optimizer_per_stage"}
        # ProGAN's length is epochs_per_stage x stages; it upsamples by nearest neighbour already.
        assert dcgan - ours == {"train.epochs", "arch.upsample"}
    with pytest.raises(ValueError, match="unknown variant"):
        config_variant("huge")


def test_256_px_grows_in_13_stages():
    arch = models.build(config_variant())
    stages = arch.stages
    assert len(stages) == 13
    assert [(s.resolution, s.fade_in) for s in stages] == [(4, False)] + [
        (r, f) for r in (8, 16, 32, 64, 128, 256) for f in (True, False)]
    assert [s.index for s in stages] == list(range(13))
    assert all(s.epochs == 20.0 for s in stages)


def test_the_final_resolution_sets_the_number_of_stages():
    config = config_variant("smoke")
    arch = models.build(config)
    assert [(s.resolution, s.fade_in) for s in arch.stages] == [
        (4, False), (8, True), (8, False), (16, True), (16, False)]
    assert all(s.epochs == config.train.epochs_per_stage for s in arch.stages)
    config.data.resolution = 4
    assert len(models.build(config).stages) == 1
    config.data.resolution = 512
    with pytest.raises(Exception, match="data.resolution: progan cannot make 512x512"):
        models.build(config)
    config.data.resolution = 16
    config.train.epochs_per_stage = 0.0
    with pytest.raises(Exception, match="epochs_per_stage: 0.0 must be positive"):
        models.build(config)


# ---------------------------------------------------------------- shapes


def test_full_size_parameter_shapes():
    arch = models.build(config_variant())
    g, d = param_shapes(arch, arch.stages[-1])
    channels = dict(zip((4, 8, 16, 32, 64, 128, 256), (512, 512, 256, 128, 64, 32, 16)))
    # G: the latent as 1x1x512 -> Conv 4x4 (padding 3) -> Conv 3x3, then 5x5 blocks.
    assert g["['b4']['conv0']['kernel']"] == (4, 4, 512, 512)
    assert g["['b4']['conv1']['kernel']"] == (3, 3, 512, 512)
    for r in (8, 16, 32, 64, 128, 256):
        c, previous = channels[r], channels[r // 2]
        assert g[f"['b{r}']['conv0']['kernel']"] == (5, 5, previous, c)
        assert g[f"['b{r}']['conv1']['kernel']"] == (5, 5, c, c)
        assert d[f"['b{r}']['conv0']['kernel']"] == (5, 5, c, c)
        assert d[f"['b{r}']['conv1']['kernel']"] == (5, 5, c, min(512, 2 * c))
    for r, c in channels.items():
        assert g[f"['to_rgb_{r}']['kernel']"] == (1, 1, c, 1)
        assert d[f"['from_rgb_{r}']['kernel']"] == (1, 1, 1, c)
    # D at 4x4: minibatch stddev (+1 map) -> Conv 3x3 512 -> Conv 4x4 valid 512 -> Dense 1.
    assert d["['b4']['conv0']['kernel']"] == (3, 3, 513, 512)
    assert d["['b4']['conv1']['kernel']"] == (4, 4, 512, 512)
    assert d["['b4']['dense']['kernel']"] == (512, 1)
    assert len(g) == 2 * (2 * 7 + 7) and len(d) == 2 * (2 * 7 + 1 + 7)


def test_full_size_outputs():
    arch = models.build(config_variant())
    stage = arch.stages[-1]

    def run():
        z = arch.sample_latent(jax.random.PRNGKey(0), 4)
        g_vars = arch.generator(stage).init(jax.random.PRNGKey(1), z, 1.0)
        images = arch.generator(stage).apply(g_vars, z, 1.0)
        d_vars = arch.discriminator(stage).init(jax.random.PRNGKey(2), images, 1.0)
        return images, arch.discriminator(stage).apply(d_vars, images, 1.0)

    images, logits = jax.eval_shape(run)
    assert images.shape == (4, 256, 256, 1) and logits.shape == (4,) and logits.dtype == jnp.float32


def test_width_multiplies_every_channel_count():
    config = config_variant()
    config.arch.width = 0.25
    arch = models.build(config)
    g, d = param_shapes(arch, arch.stages[-1])
    assert g["['b4']['conv0']['kernel']"] == (4, 4, 512, 128)  # z stays 512-d
    assert g["['b256']['conv1']['kernel']"] == (5, 5, 4, 4)
    assert d["['b4']['conv0']['kernel']"] == (3, 3, 129, 128)


def test_every_stage_only_adds_keys():
    arch = models.build(config_variant())
    previous = None
    for stage in arch.stages:
        g, d = param_shapes(arch, stage)
        r = stage.resolution
        assert {k.split("']")[0][2:] for k in g} == {f"b{s}" for s in progan.resolutions_up_to(r)} | {
            f"to_rgb_{s}" for s in progan.resolutions_up_to(r)}
        assert {k.split("']")[0][2:] for k in d} == {f"b{s}" for s in progan.resolutions_up_to(r)} | {
            f"from_rgb_{s}" for s in progan.resolutions_up_to(r)}
        if previous is not None:
            for old, new in zip(previous, (g, d)):
                assert {k: new[k] for k in old} == old  # every old key, same shape
                added = {k.split("']")[0][2:] for k in set(new) - set(old)}
                assert added == (set() if not stage.fade_in else
                                 {f"b{r}", f"to_rgb_{r}"} if new is g else {f"b{r}", f"from_rgb_{r}"})
        previous = (g, d)


# ---------------------------------------------------------------- layers


def test_equalized_conv_stores_unit_variance_and_scales_at_run_time():
    layer = progan.EqualizedConv(64, 5)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 64))
    variables = jax.jit(layer.init)(jax.random.PRNGKey(1), x)
    kernel = np.asarray(variables["params"]["kernel"])
    assert kernel.shape == (5, 5, 64, 64)
    assert abs(kernel.std() - 1.0) < 0.01 and abs(kernel.mean()) < 0.01
    assert not np.any(variables["params"]["bias"])
    expected = jax.lax.conv_general_dilated(x, kernel * np.sqrt(2 / (5 * 5 * 64)), (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(jax.jit(layer.apply)(variables, x), expected, rtol=1e-5, atol=1e-5)


def test_equalized_dense_stores_unit_variance_and_scales_at_run_time():
    layer = progan.EqualizedDense(3)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4096))
    variables = layer.init(jax.random.PRNGKey(1), x)
    kernel = np.asarray(variables["params"]["kernel"])
    assert abs(kernel.std() - 1.0) < 0.02
    np.testing.assert_allclose(layer.apply(variables, x), x @ kernel * np.sqrt(2 / 4096), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("use_pixel_norm", [True, False])
def test_pixel_norm_after_each_generator_conv_is_switchable(use_pixel_norm):
    block = progan.GeneratorBlock(8, 16, use_pixel_norm)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 16))
    out = block.apply(block.init(jax.random.PRNGKey(1), x), x)
    rms = np.sqrt(np.mean(np.square(np.asarray(out)), axis=-1))
    assert out.shape == (2, 8, 8, 16)
    if use_pixel_norm:
        np.testing.assert_allclose(rms, 1.0, rtol=1e-4)
    else:
        assert np.abs(rms - 1.0).max() > 0.05


# ---------------------------------------------------------------- growth


@pytest.fixture(scope="module")
def grown():
    """The smoke model (4 -> 16 px) walked through its 5 stages by state.grow_state.

    Before each growth every weight is perturbed, so carried-over weights are
    told apart from fresh ones. Returns (arch, config, [state before growing,
    per stage], [state after growing, per stage]).
    """
    config = config_variant("smoke")
    arch = models.build(config)
    optimizer = state_lib.create_optimizer(config.train)
    grown_states = [state_lib.initial_state(arch, arch.stages[0], optimizer, config.seed, config.train.batch_size)]
    trained = []
    for stage in arch.stages[1:]:
        previous = dict(grown_states[-1])
        for net in ("g", "d"):
            previous[net] = {**previous[net], "params": jax.tree.map(lambda p: 1.1 * p + 0.01, previous[net]["params"])}
        trained.append(previous)
        grown_states.append(state_lib.grow_state(previous, arch, stage, optimizer, config))
    return arch, config, trained, grown_states[1:]


def test_growing_adds_keys_and_carries_every_existing_weight_over(grown):
    arch, config, trained, grown_states = grown
    optimizer = state_lib.create_optimizer(config.train)
    for stage, before, after in zip(arch.stages[1:], trained, grown_states):
        assert int(after["stage"]) == stage.index and float(after["alpha"]) == (0.0 if stage.fade_in else 1.0)
        for net in ("g", "d"):
            old, new = flat_values(before[net]["params"]), flat_values(after[net]["params"])
            assert set(old) <= set(new)
            assert (set(new) - set(old) != set()) == stage.fade_in
            for key in old:
                np.testing.assert_array_equal(new[key], old[key], err_msg=key)
            fresh = flat_values(state_lib.initial_state(arch, stage, optimizer, config.seed, 4)[net]["params"]) \
                if stage.fade_in else {}
            for key in set(new) - set(old):
                np.testing.assert_array_equal(new[key], fresh[key], err_msg=key)
        # A fresh optimizer state shaped like the grown parameters.
        assert jax.tree.structure(after["g_opt"]) == jax.tree.structure(
            optimizer.init(after["g"]["params"]))


def _g(arch, stage, variables, z, alpha):
    return jax.jit(lambda v, z, a: arch.generator(stage).apply(v, z, a, train=False))(variables, z, alpha)


def _d(arch, stage, variables, x, alpha):
    return jax.jit(lambda v, x, a: arch.discriminator(stage).apply(v, x, a, train=False))(variables, x, alpha)


@pytest.mark.parametrize("index", [1, 3])
def test_fade_in_at_alpha_0_equals_the_previous_stage(grown, index):
    arch, _, trained, grown_states = grown
    stage, previous_stage = arch.stages[index], arch.stages[index - 1]
    before, after = trained[index - 1], grown_states[index - 1]
    z = arch.sample_latent(jax.random.PRNGKey(0), 8)
    old_images = _g(arch, previous_stage, before["g"], z, 1.0)
    new_images = _g(arch, stage, after["g"], z, 0.0)
    assert new_images.shape == (8, stage.resolution, stage.resolution, 1)
    np.testing.assert_allclose(new_images, base.upsample_nearest(old_images, 2), atol=1e-6)
    assert np.abs(np.asarray(_g(arch, stage, after["g"], z, 0.5) - new_images)).max() > 1e-4

    x = jax.random.uniform(jax.random.PRNGKey(1), (8, stage.resolution, stage.resolution, 1), minval=-1, maxval=1)
    old_logits = _d(arch, previous_stage, before["d"], base.average_pool(x, 2), 1.0)
    new_logits = _d(arch, stage, after["d"], x, 0.0)
    np.testing.assert_allclose(new_logits, old_logits, rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(_d(arch, stage, after["d"], x, 0.5) - new_logits)).max() > 1e-4


def test_fade_in_at_alpha_1_equals_the_stabilize_stage(grown):
    arch, _, _, grown_states = grown
    fade, stable, variables = arch.stages[3], arch.stages[4], grown_states[2]
    z = arch.sample_latent(jax.random.PRNGKey(0), 8)
    np.testing.assert_allclose(_g(arch, fade, variables["g"], z, 1.0), _g(arch, stable, variables["g"], z, 1.0),
                               atol=1e-6)
    x = jax.random.uniform(jax.random.PRNGKey(1), (8, 16, 16, 1), minval=-1, maxval=1)
    np.testing.assert_allclose(_d(arch, fade, variables["d"], x, 1.0), _d(arch, stable, variables["d"], x, 1.0),
                               rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- training


def smoke_config(cache_dir):
    """The smoke config grown to 8 px only (3 stages of 3 steps) to keep compiles few; a checkpoint every step."""
    config = config_variant("smoke")
    config.data.resolution = 8
    config.data.cache_dir = cache_dir
    config.checkpoint_every_steps = 1
    config.keep_checkpoints = 100
    config.sample_every_steps = 100
    return config


STEPS_PER_STAGE = 3  # round(0.18 epochs * 137 slices / batch 8)
INTERRUPT_AFTER = STEPS_PER_STAGE + 2  # mid fade-in: the checkpoint after the second of stage 1's steps


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted smoke run, and one killed right after its mid-fade-in checkpoint, then resumed."""
    cache_dir = str(tmp_path_factory.mktemp("cache"))
    whole, stopped = str(tmp_path_factory.mktemp("whole")), str(tmp_path_factory.mktemp("stopped"))
    final = train.train(smoke_config(cache_dir), whole)

    save = checkpoint.Checkpointer.save

    def save_then_die(self, step, state, meta, force=False):
        save(self, step, state, meta, force)
        if step == INTERRUPT_AFTER:
            raise KeyboardInterrupt

    checkpoint.Checkpointer.save = save_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            train.train(smoke_config(cache_dir), stopped)
    finally:
        checkpoint.Checkpointer.save = save
    stopped_copy = str(tmp_path_factory.mktemp("stopped_copy"))
    shutil.copytree(stopped, stopped_copy, dirs_exist_ok=True)
    resumed = train.train(smoke_config(cache_dir), stopped)
    return whole, final, stopped_copy, stopped, resumed


def test_smoke_run_walks_through_all_stages_and_records_them(runs):
    whole, final, _, _, _ = runs
    assert int(final["step"]) == 3 * STEPS_PER_STAGE and int(final["stage"]) == 2
    ckpt = checkpoint.Checkpointer(whole)
    try:
        metas = [ckpt.read_meta(step) for step in range(1, 3 * STEPS_PER_STAGE + 1)]
    finally:
        ckpt.close()
    assert [m["stage"] for m in metas] == [0] * 3 + [1] * 3 + [2] * 3
    assert [m["resolution"] for m in metas] == [4] * 3 + [8] * 6
    with open(os.path.join(whole, "stats.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["stage"] for r in records] == [0] * 3 + [1] * 3 + [2] * 3
    np.testing.assert_allclose([r["alpha"] for r in records], [1, 1, 1, 0, 1 / 3, 2 / 3, 1, 1, 1], atol=1e-6)
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in records)
    # The final tree holds every resolution's layers.
    assert {"b4", "b8", "to_rgb_4", "to_rgb_8"} == set(final["g"]["params"])
    assert {"b4", "b8", "from_rgb_4", "from_rgb_8"} == set(final["d"]["params"])


@pytest.mark.parametrize("last_step, resolution, alpha", [(3, 4, 1.0), (INTERRUPT_AFTER, 8, 1 / 3), (9, 8, 1.0)])
def test_sampler_returns_images_at_the_checkpoints_stage(runs, tmp_path, last_step, resolution, alpha):
    whole = runs[0]
    workdir = str(tmp_path / "run")
    shutil.copytree(whole, workdir)
    for name in os.listdir(os.path.join(workdir, "checkpoints")):
        if name.isdigit() and int(name) > last_step:
            shutil.rmtree(os.path.join(workdir, "checkpoints", name))
    sampler = sampling.load_sampler(workdir)
    assert (sampler.step, sampler.resolution) == (last_step, resolution)
    assert sampler.alpha == pytest.approx(alpha)
    images = np.asarray(sampler(jax.random.PRNGKey(0), 8))
    assert images.shape == (8, resolution, resolution, 1) and np.abs(images).max() <= 1 and images.std() > 0


def test_a_run_stopped_mid_fade_in_resumes_at_the_same_stage_and_alpha(runs):
    whole, final, stopped_copy, stopped, resumed = runs
    ckpt = checkpoint.Checkpointer(stopped_copy)
    try:
        assert ckpt.latest_step() == INTERRUPT_AFTER
        assert ckpt.read_meta(INTERRUPT_AFTER)["stage"] == 1
    finally:
        ckpt.close()
    with open(os.path.join(stopped, "stats.jsonl")) as f:
        records = [json.loads(line) for line in f]
    # Steps 1-5 before the interruption, then 6-9 after it: nothing was redone.
    assert [r["step"] for r in records] == list(range(1, 3 * STEPS_PER_STAGE + 1))
    after_resume = [r for r in records if r["step"] > INTERRUPT_AFTER]
    assert [(r["step"], r["stage"]) for r in after_resume] == [(6, 1), (7, 2), (8, 2), (9, 2)]
    assert after_resume[0]["alpha"] == pytest.approx(2 / 3)
    with open(os.path.join(whole, "stats.jsonl")) as f:
        uninterrupted = {r["step"]: r for r in map(json.loads, f)}
    for r in after_resume:
        assert (r["d_loss"], r["g_loss"]) == (uninterrupted[r["step"]]["d_loss"], uninterrupted[r["step"]]["g_loss"])
    # Bit for bit the state of the uninterrupted run.
    final_values, resumed_values = flat_values(final), flat_values(resumed)
    assert set(final_values) == set(resumed_values)
    for key in final_values:
        np.testing.assert_array_equal(resumed_values[key], final_values[key], err_msg=key)
