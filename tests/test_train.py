"""The training step, data parallelism, exact resume, and the sampling API."""

import collections
import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import SMOKE_4_STEPS_EPOCHS, smoke_config
from mrigen import data, images, losses, models, parallel, sampling, state as state_lib, step_cache, train


def tree_allclose(a, b, rtol, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def tree_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def run_steps(config, mesh, dataset_u8, num_steps):
    arch = models.build(config)
    optimizer = state_lib.create_optimizer(config.train)
    stage = arch.stages[0]
    step_fn = train.make_train_step(arch, stage, 0, 100, losses.get(config.loss), optimizer,
                                    config.train, len(dataset_u8), mesh)
    replicated = parallel.replicated(mesh)
    state = jax.device_put(state_lib.initial_state(arch, stage, optimizer, config.seed,
                                                   config.train.batch_size), replicated)
    images = jax.device_put(dataset_u8, replicated)
    history = []
    for _ in range(num_steps):
        state, metrics = step_fn(state, images)
        history.append(jax.device_get(metrics))
    return jax.device_get(state), history


@pytest.fixture(scope="module")
def mni32(shared_cache_dir):
    return data.load_dataset("", 32, cache_dir=shared_cache_dir).images


def test_four_devices_give_the_same_steps_as_one(mni32):
    assert jax.device_count() == 4
    config = smoke_config()
    one, history_one = run_steps(config, parallel.data_mesh(jax.devices()[:1]), mni32, 2)
    four, history_four = run_steps(config, parallel.data_mesh(), mni32, 2)
    assert int(four["step"]) == 2 and int(four["images_seen"]) == 2 * config.train.batch_size
    for a, b in zip(history_one, history_four):
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5)
    # Batch-norm running statistics are means over the global batch.
    tree_allclose(one["g"]["batch_stats"], four["g"]["batch_stats"], rtol=1e-4, atol=1e-6)
    tree_allclose(one["d"]["batch_stats"], four["d"]["batch_stats"], rtol=1e-4, atol=1e-6)
    # Adam moves a weight by about lr = 2e-4 whatever its gradient's size, so a near-zero gradient summed in
    # another order can move it by a few 1e-6 more: atol is 5% of one step.
    tree_allclose(one["g"]["params"], four["g"]["params"], rtol=1e-4, atol=1e-5)
    tree_allclose(one["d"]["params"], four["d"]["params"], rtol=1e-4, atol=1e-5)
    # The step changed the weights (the comparison above is not between two untouched trees).
    arch = models.build(config)
    fresh = state_lib.initial_state(arch, arch.stages[0], state_lib.create_optimizer(config.train),
                                    config.seed, config.train.batch_size)
    assert not tree_equal(fresh["g"]["params"], four["g"]["params"])
    assert not tree_equal(fresh["d"]["params"], four["d"]["params"])


def test_state_carries_everything_needed_to_resume(smoke_run_4_steps):
    _, final = smoke_run_4_steps
    assert set(final) == {"g", "d", "g_opt", "d_opt", "step", "images_seen", "stage", "alpha", "rng"}
    assert "batch_stats" in final["g"] and "batch_stats" in final["d"]


def test_carry_over_keeps_old_leaves_and_adds_new_ones():
    fresh = {"b4": {"w": jnp.zeros(2)}, "b8": {"w": jnp.ones(3)}}
    previous = {"b4": {"w": jnp.full(2, 7.0)}, "gone": jnp.zeros(1)}
    merged = state_lib.carry_over(fresh, previous)
    np.testing.assert_array_equal(merged["b4"]["w"], 7.0)
    np.testing.assert_array_equal(merged["b8"]["w"], 1.0)
    assert set(merged) == {"b4", "b8"}


def test_schedule_turns_epochs_into_steps():
    config = smoke_config(train__epochs=2.0)
    phases = train.schedule(models.build(config), num_images=100, batch_size=8)
    assert [(p.start, p.steps) for p in phases] == [(0, 25)]


@pytest.fixture(scope="module")
def trained_workdir(smoke_run_4_steps, shared_cache_dir):
    """A smoke run of 4 steps, checkpointed every 2 steps (read-only)."""
    workdir, final = smoke_run_4_steps
    return workdir, smoke_config(data__cache_dir=shared_cache_dir, train__epochs=SMOKE_4_STEPS_EPOCHS), final


def test_training_writes_stats_samples_reals_config_and_checkpoints(trained_workdir):
    workdir, config, final = trained_workdir
    assert int(final["step"]) == 4
    with open(os.path.join(workdir, "stats.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert {"images_seen", "img_per_sec", "d_loss", "g_loss", "penalty"} <= set(records[-1])
    assert records[-1]["images_seen"] == 4 * config.train.batch_size
    assert sorted(os.listdir(os.path.join(workdir, "samples"))) == [
        "step_00000002.png", "step_00000004.png"]
    reals = np.asarray(Image.open(os.path.join(workdir, "reals.png")))
    dataset = data.load_dataset("", config.data.resolution, cache_dir=config.data.cache_dir)
    chosen = images.representative(dataset.images, config.num_grid_samples, config.seed)
    np.testing.assert_array_equal(reals, images.grid(data.to_float(chosen)))  # a seeded choice,
    assert not np.array_equal(chosen, dataset.images[:config.num_grid_samples])  # not the first files
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["loss"] == "dragan"
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]


def test_resumed_run_equals_uninterrupted_run_bit_for_bit(tmp_path, trained_workdir, smoke_run, shared_cache_dir,
                                                          monkeypatch):
    _, _, uninterrupted = trained_workdir
    workdir = str(tmp_path / "resumed")
    shutil.copytree(smoke_run, workdir)  # the smoke run: the same config, stopped after 2 steps
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]
    full = smoke_config(data__cache_dir=shared_cache_dir, train__epochs=SMOKE_4_STEPS_EPOCHS)
    built = steps_built(monkeypatch)
    resumed = jax.device_get(train.train(full, workdir))
    assert int(resumed["step"]) == 4 and int(resumed["images_seen"]) == int(uninterrupted["images_seen"])
    assert tree_equal(resumed, uninterrupted)
    with open(os.path.join(workdir, "stats.jsonl")) as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2, 3, 4]

    # The same resume again in this process: the step is reused (not traced again), with the same result.
    again = str(tmp_path / "again")
    shutil.copytree(smoke_run, again)
    assert tree_equal(jax.device_get(train.train(full, again)), uninterrupted)
    assert built == [0]


def steps_built(monkeypatch) -> list:
    """An empty step cache; the returned list gets the stage index of every train step built from now on."""
    monkeypatch.setattr(step_cache, "_steps", collections.OrderedDict())
    built, make = [], train.make_train_step
    monkeypatch.setattr(train, "make_train_step", lambda arch, stage, *rest: built.append(stage.index)
                        or make(arch, stage, *rest))
    return built


def test_a_train_step_is_reused_only_for_the_same_model_loss_and_data_size():
    config = smoke_config("progan")
    arch, mesh, loss = models.build(config), parallel.data_mesh(), losses.get(config.loss)
    stable, fade = arch.stages[0], arch.stages[1]
    assert fade.fade_in and not stable.fade_in
    key = step_cache.step_key(config, loss, stable, 0, 10, 137, mesh)
    elsewhere = smoke_config("progan", log_every_steps=7, keep_checkpoints=1, data__path="/elsewhere")
    assert step_cache.step_key(elsewhere, loss, stable, 5, 20, 137, mesh) == key  # outputs, data source, start
    dcgan = smoke_config()
    dcgan_stage = models.build(dcgan).stages[0]
    assert step_cache.step_key(dcgan, loss, dcgan_stage, 0, 2, 137, mesh) == step_cache.step_key(
        smoke_config(train__epochs=5.0), loss, dcgan_stage, 0, 85, 137, mesh)  # the run's length
    for other in (smoke_config("progan", arch__width=0.5), smoke_config("progan", train__batch_size=16),
                  smoke_config("progan", train__learning_rate=0.0123)):
        assert step_cache.step_key(other, loss, stable, 0, 10, 137, mesh) != key
    assert step_cache.step_key(config, losses.get("wgan"), stable, 0, 10, 137, mesh) != key
    assert step_cache.step_key(config, loss, stable, 0, 10, 136, mesh) != key
    assert step_cache.step_key(config, loss, stable, 0, 10, 137, mesh, ("a", "b")) != key  # a conditional model
    assert step_cache.step_key(config, loss, fade, 0, 10, 137, mesh) != step_cache.step_key(
        config, loss, fade, 5, 10, 137, mesh)  # a fade-in's alpha depends on where it starts


def test_sampler_loads_the_generator_and_is_deterministic(trained_workdir):
    workdir, config, final = trained_workdir
    sampler = sampling.load_sampler(workdir)
    assert sampler.step == 4 and sampler.resolution == 32
    images = sampler(jax.random.PRNGKey(0), 5)
    assert images.shape == (5, 32, 32, 1) and images.dtype == jnp.float32
    assert float(jnp.min(images)) >= -1.0 and float(jnp.max(images)) <= 1.0
    np.testing.assert_array_equal(images, sampler(jax.random.PRNGKey(0), 5))
    assert not np.array_equal(images, sampler(jax.random.PRNGKey(1), 5))
    # The sampler uses the checkpoint's generator: same latents, same images as the final state.
    z = sampler.latents(jax.random.PRNGKey(3), 4)
    arch = models.build(config)
    expected = sampling.generate(arch.generator(arch.stages[0]), final["g"], z, 1.0)
    np.testing.assert_allclose(sampler.from_latents(z), expected, atol=1e-6)


def test_interpolation_walks_straight_between_latents(trained_workdir):
    sampler = sampling.load_sampler(trained_workdir[0])
    walk = sampling.interpolation(sampler, jax.random.PRNGKey(0), rows=2, steps=5)
    assert walk.shape == (10, 32, 32, 1)
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    np.testing.assert_allclose(walk[0], sampler.from_latents(sampler.latents(key_a, 2))[0], atol=1e-5)
    np.testing.assert_allclose(walk[4], sampler.from_latents(sampler.latents(key_b, 2))[0], atol=1e-5)


def test_representative_images_are_a_seeded_choice_in_file_order():
    stack = np.arange(50)[:, None]
    chosen = images.representative(stack, 8, seed=3)
    assert len(np.unique(chosen)) == 8 and np.all(np.diff(chosen[:, 0]) > 0)
    np.testing.assert_array_equal(chosen, images.representative(stack, 8, seed=3))
    assert not np.array_equal(chosen, images.representative(stack, 8, seed=4))
    np.testing.assert_array_equal(images.representative(stack[:5], 8), stack[:5])  # all, when fewer


def test_the_progress_bar_says_compiling_and_leaves_the_compile_out_of_its_rate(tmp_path):
    from mrigen.progress import ProgressReporter, format_duration

    reporter = ProgressReporter(str(tmp_path), total_images=100, images_seen=0)
    try:
        reporter.compiling("stage 2/5 8px")
        assert reporter.bar.desc == "compiling stage 2/5 8px"
        time.sleep(0.5)
        reporter.compiled()
        assert reporter.bar.desc == "stage 2/5 8px"
        assert reporter.bar.format_dict["elapsed"] < 0.25  # the half second of compiling is not counted
        reporter.advance(10)
        summary = reporter.summary(str(tmp_path))
        assert summary.startswith("done: 10 images shown in ") and "compiling" in summary
    finally:
        reporter.close()
    assert [format_duration(s) for s in (4.4, 440, 7500)] == ["4 s", "7 min 20 s", "2 h 05 min"]


def test_the_progress_bar_ends_its_line_when_the_run_stops_right_after_compiling(tmp_path, capsys):
    from mrigen.progress import ProgressReporter

    reporter = ProgressReporter(str(tmp_path), total_images=100, images_seen=0)
    reporter.compiling("")
    time.sleep(0.5)
    reporter.compiled()  # the compile is taken out of the bar's time
    reporter.close()  # e.g. a failed write at the first step: the error that follows needs a line of its own
    assert capsys.readouterr().err.endswith("\n")
