"""A run trained with data.labels: class names in its checkpoints, grids by class, sampling by label."""

import json
import os

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from conftest import main_in_process, smoke_config
from mrigen import checkpoint, class_evaluation, data, models, sampling, train
from mrigen import state as state_lib
from mrigen.errors import UserError
from test_cli import SMOKE, assert_one_line_error
from test_conditional import CLASSES, half_bright_images


@pytest.fixture(scope="module")
def labeled_run(tmp_path_factory):
    """configs/dcgan.py:smoke on two class folders of 8 slices each, trained for 2 steps; read-only."""
    root = tmp_path_factory.mktemp("classes")
    rng = np.random.default_rng(0)
    for top, name in enumerate(CLASSES):
        os.makedirs(root / name)
        for i, image in enumerate(half_bright_images(8, top, rng)):
            Image.fromarray(image[..., 0]).save(root / name / f"{i}.png")
    workdir = str(tmp_path_factory.mktemp("labeled_run") / "run")
    config = smoke_config(data__path=str(root), data__labels="folders", data__cache_dir="", train__epochs=1.0)
    train.train(config, workdir)
    return workdir, config


def test_checkpoints_record_the_class_names_and_grids_have_a_row_per_class(labeled_run):
    workdir, config = labeled_run
    ckpt = checkpoint.Checkpointer(workdir)
    try:
        assert ckpt.latest_step() == 2 and state_lib.checkpoint_classes(ckpt) == CLASSES
        other = models.build(config, ("a", "b"))
        with pytest.raises(UserError, match="trained with the classes bottom, top, this config's data has the "
                                            "classes a, b"):
            state_lib.restore_or_init(ckpt, other, state_lib.create_optimizer(config.train), config)
        with pytest.raises(UserError, match="trained with the classes bottom, top, this config's data has no "
                                            "labels"):
            state_lib.restore_or_init(ckpt, models.build(config), state_lib.create_optimizer(config.train), config)
    finally:
        ckpt.close()
    grid = np.asarray(Image.open(os.path.join(workdir, "samples", "step_00000002.png")))
    per_class = config.num_grid_samples // 2
    assert grid.shape == (2 * 32 + 2, per_class * 32 + (per_class - 1) * 2)  # 2 rows of 4, 2 px apart


def test_a_workdir_refuses_other_labels_on_resume(labeled_run, tmp_path):
    workdir, config = labeled_run
    changed = config.copy_and_resolve_references()
    changed.data.labels = ""
    with pytest.raises(UserError, match=r"data.labels: 'folders' -> ''"):
        train.train(changed, workdir)


def test_the_sampler_makes_the_labels_it_is_given(labeled_run):
    sampler = sampling.load_sampler(labeled_run[0])
    assert sampler.class_names == CLASSES
    key = jax.random.PRNGKey(3)
    bottom, top = (np.asarray(sampler(key, 8, jnp.full(8, k))) for k in (0, 1))
    in_turn = np.asarray(sampler(key, 8))  # no labels: the classes in turn
    np.testing.assert_array_equal(in_turn[0::2], bottom[0::2])
    np.testing.assert_array_equal(in_turn[1::2], top[1::2])
    assert not np.array_equal(bottom, top)
    walks = sampling.interpolation(sampler, key, rows=2, steps=3)  # row i within class i
    key_a, _ = jax.random.split(key)
    first = np.asarray(sampler.from_latents(sampler.latents(key_a, 2), jnp.array([0, 1])))
    np.testing.assert_allclose(walks[[0, 3]], first, atol=1e-6)


def test_evaluate_mode_of_a_conditional_run_reports_each_class(labeled_run, tmp_path):
    """--mode=evaluate of the two-class run against 30 slices of each class (the run's own data are 8 of each)."""
    workdir, _ = labeled_run
    root = tmp_path / "more"
    rng = np.random.default_rng(5)
    for top, name in enumerate(CLASSES):
        os.makedirs(root / name)
        for i, image in enumerate(half_bright_images(30, top, rng)):
            Image.fromarray(image[..., 0]).save(root / name / f"{i}.png")
    out = tmp_path / "eval"
    result = main_in_process(SMOKE, f"--workdir={workdir}", "--mode=evaluate", f"--out={out}",
                             f"--config.data.path={root}")
    assert result.returncode == 0, result.stderr
    with open(out / "eval.json") as f:
        classes = json.load(f)["classes"]
    assert list(classes) == list(CLASSES)
    assert sum(row["n_generated"] for row in classes.values()) == 30  # the held-out half's size
    for name, row in classes.items():
        assert row["n_generated"] == row["n_floor"] >= class_evaluation.MIN_IMAGES
        assert os.path.isfile(out / "classes" / name / "report.md")
    assert "## Per class" in result.stdout
    by_class = tmp_path / "by_class"  # a folder of class sub-folders, as --per_class writes it: evaluated by class
    assert main_in_process(SMOKE, f"--workdir={workdir}", "--mode=sample", "--per_class=13",
                           f"--out={by_class}").returncode == 0
    result = main_in_process(SMOKE, f"--workdir={workdir}", "--mode=evaluate", f"--eval_images={by_class}",
                             f"--out={tmp_path / 'folder_eval'}", f"--config.data.path={root}",
                             "--config.data.labels=folders")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "folder_eval" / "eval.json") as f:
        assert [row["n_generated"] for row in json.load(f)["classes"].values()] == [13, 13]


def test_evaluating_a_conditional_run_against_unlabeled_data_is_refused(labeled_run, tmp_path):
    workdir, _ = labeled_run
    result = main_in_process(SMOKE, f"--workdir={workdir}", "--mode=evaluate", f"--out={tmp_path / 'e'}",
                             "--config.data.labels=")
    assert result.returncode == 2 and "trained with the classes bottom, top, the data it is evaluated against " \
                                      "has no labels" in result.stderr
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("fmt", ["png", "oasis", "nifti"])
def test_sample_per_class_writes_a_folder_per_class(labeled_run, tmp_path, fmt):
    workdir = labeled_run[0]
    out = tmp_path / "by_class"
    result = main_in_process(SMOKE, f"--workdir={workdir}", "--mode=sample", "--per_class=3", f"--format={fmt}",
                             "--sample_seed=4", f"--out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "6 images (3 of each of bottom, top)" in result.stdout
    with open(out / "manifest.json") as f:
        manifest = json.load(f)
    assert manifest["classes"] == list(CLASSES) and manifest["per_class"] == 3 and manifest["count"] == 6
    assert sorted(manifest["labels"]) == sorted(manifest["files"])
    for path in manifest["files"]:
        assert path.split(os.sep)[0] == manifest["labels"][path] and (out / path).is_file()
    sampler = sampling.load_sampler(workdir)
    for label, name in enumerate(CLASSES):
        expected = data.to_uint8(np.asarray(sampler(jax.random.fold_in(jax.random.PRNGKey(4), 0), 64,
                                                    jnp.full(64, label)))[:3, ..., 0])
        mine = sorted(p for p in manifest["files"] if p.startswith(name + os.sep))
        if fmt == "nifti":
            assert len(mine) == 1
            volume = np.asarray(nib.load(out / mine[0]).dataobj)
            written = np.stack([np.rot90(volume[:, :, k]) for k in range(volume.shape[2])])
        else:
            assert len(mine) == 3
            written = np.stack([np.asarray(Image.open(out / p)) for p in mine])
        np.testing.assert_array_equal(written, expected)


def test_per_class_needs_a_run_with_labels_and_the_sample_mode(smoke_run, tmp_path):
    assert_one_line_error(main_in_process(SMOKE, f"--workdir={smoke_run}", "--mode=sample", "--per_class=2",
                                          f"--out={tmp_path / 'o'}"), "--per_class: this run is unconditional")
    assert_one_line_error(main_in_process(SMOKE, f"--workdir={smoke_run}", "--mode=interpolate", "--per_class=2"),
                          "--per_class: works with --mode=sample or utility, not interpolate")
    assert_one_line_error(main_in_process(SMOKE, f"--workdir={smoke_run}", "--mode=sample", "--per_class=-1"),
                          "--per_class: -1 must be at least 0")


def test_bad_labels_are_one_line_errors_of_main(tmp_path):
    assert_one_line_error(main_in_process(SMOKE, f"--workdir={tmp_path / 'a'}", "--config.data.labels=folder"),
                          "config.data.labels: unknown label source 'folder'")
    root = tmp_path / "data"
    os.makedirs(root / "x")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "x" / "0.png")
    (tmp_path / "l.csv").write_text("file,label\nx/0.png,A\nx/1.png,B\n")
    assert_one_line_error(main_in_process(SMOKE, f"--workdir={tmp_path / 'b'}", f"--config.data.path={root}",
                                          f"--config.data.labels=csv:{tmp_path / 'l.csv'}"),
                          "config.data.labels: ", "line 3: 'x/1.png' is not an image file under")
