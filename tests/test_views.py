"""Seeing and using a run: TensorBoard events, loss curves and montage, --dry_run, exported sets."""

import json
import os

import jax
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from conftest import main_in_process, smoke_config
from mrigen import data, dryrun, export, plots, sampling, tensorboard, train
from test_cli import SMOKE, assert_one_line_error, main_py


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_cache_dir):
    """Five steps of the smoke DCGAN: grids at steps 2, 4 and the end (5), a log line every step."""
    workdir = str(tmp_path_factory.mktemp("views") / "run")
    train.train(smoke_config(data__cache_dir=shared_cache_dir, train__epochs=0.3), workdir)
    return workdir


# ---------------------------------------------------------------- TensorBoard


def test_tensorboard_events_hold_the_logged_statistics_and_grids(trained):
    scalars = tensorboard.read_scalars(trained)
    records = plots.read_stats(trained)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    for field in ("d_loss", "g_loss", "penalty", "real_logit", "d_grad_norm", "img_per_sec"):
        expected = [(r["step"], pytest.approx(r[field], rel=1e-6)) for r in records]
        assert scalars[tensorboard.tag(field)] == expected, field
    assert tensorboard.tag("penalty") == "penalty/penalty" and tensorboard.tag("d_loss") == "loss/d_loss"
    assert tensorboard.read_image_tags(trained) == {"samples/fixed_latents": [2, 4, 5]}


def log_d_loss(workdir, steps, value, resume_step=None):
    """A training session's TensorBoard scalars: d_loss = value(step) for each step, then closed."""
    writer = tensorboard.Writer(str(workdir), resume_step=resume_step)
    for step in steps:
        writer.scalars(step, {"d_loss": value(step)})
    writer.close()


def test_a_resumed_run_replaces_the_events_it_trains_again(tmp_path):
    log_d_loss(tmp_path, range(1, 6), float)  # killed after logging step 5, with its last checkpoint at step 3
    log_d_loss(tmp_path, range(4, 7), lambda step: 10.0 + step, resume_step=3)
    assert len(os.listdir(tmp_path)) == 2  # two files, though opened within one second
    assert tensorboard.read_scalars(str(tmp_path)) == {
        "loss/d_loss": [(1, 1.0), (2, 2.0), (3, 3.0), (4, 14.0), (5, 15.0), (6, 16.0)]}


def test_a_run_restarted_from_scratch_replaces_the_events_of_one_killed_before_its_first_checkpoint(tmp_path):
    log_d_loss(tmp_path, range(1, 5), float, resume_step=0)  # killed after logging step 4, before any checkpoint
    log_d_loss(tmp_path, range(1, 6), lambda step: 10.0 + step, resume_step=0)
    writer = tensorboard.Writer(str(tmp_path))  # an evaluation's scalars drop nothing
    writer.scalars(5, {"rho": 0.5}, prefix="eval")
    writer.close()
    assert tensorboard.read_scalars(str(tmp_path)) == {
        "loss/d_loss": [(step, 10.0 + step) for step in range(1, 6)], "eval/rho": [(5, 0.5)]}


# ---------------------------------------------------------------- plots


def test_a_run_ends_with_its_plots(trained):
    curves = Image.open(os.path.join(trained, "loss_curves.png"))
    assert curves.size == (800, 900)
    assert np.asarray(curves.convert("L")).std() > 10  # lines and text, not a blank canvas
    with Image.open(os.path.join(trained, "progress.gif")) as gif:
        assert gif.size == (100, 100)  # the grids of 8 images: 3 x 3 cells of 32 px, 2 px apart
    assert Image.open(os.path.join(trained, "progress.png")).size == (900, 320)  # 3 frames in one row


def test_plots_mode_writes_them_on_demand(trained, tmp_path):
    result = main_py(SMOKE, f"--workdir={trained}", "--mode=plots", f"--out={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["loss_curves.png", "progress.gif", "progress.png"]
    assert_one_line_error(main_in_process(SMOKE, f"--workdir={tmp_path / 'empty'}", "--mode=plots"),
                          "stats.jsonl: not found")


def test_the_montage_spreads_its_frames_over_the_run(tmp_path):
    grids = []
    for step in range(0, 200, 10):
        path = str(tmp_path / f"step_{step:08d}.png")
        Image.fromarray(np.full((10, 10), step, np.uint8)).save(path)
        grids.append((step, path))
    frames = plots.evenly_spaced(grids, 12)
    assert len(frames) == 12 and frames[0] == grids[0] and frames[-1] == grids[-1]
    plots.save_montage(grids, str(tmp_path / "montage.png"), max_frames=12)
    assert Image.open(tmp_path / "montage.png").size == (1200, 960)  # 3 rows of 4
    plots.save_animation(grids, str(tmp_path / "progress.gif"))
    with Image.open(tmp_path / "progress.gif") as gif:
        assert gif.n_frames == 20  # every grid


# ---------------------------------------------------------------- --dry_run


def test_dry_run_prints_config_data_and_parameters_and_writes_nothing(tmp_path, shared_cache_dir, trained):
    workdir = tmp_path / "run"
    result = main_in_process(SMOKE, f"--workdir={workdir}", "--dry_run", f"--config.data.cache_dir={shared_cache_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = dryrun.parameter_counts(smoke_config())
    g_params = sampling.load_sampler(trained).g_vars["params"]
    assert counts["generator"] == sum(x.size for x in jax.tree.leaves(g_params))
    assert '"loss": "dragan"' in result.stdout  # the resolved config
    assert "data: 137 slices of 32x32 px" in result.stdout and "MNI152" in result.stdout
    assert f"G {counts['generator']:,} parameters, D {counts['discriminator']:,}" in result.stdout
    assert "schedule: 2 steps of 8 images" in result.stdout
    assert not workdir.exists()


# ---------------------------------------------------------------- exported sets


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """40 images of the trained run in each format, seed 3."""
    sampler = sampling.load_sampler(trained)
    out = tmp_path_factory.mktemp("export")
    manifests = {fmt: export.export(sampler, jax.random.PRNGKey(3), 40, str(out / fmt), fmt, {"seed": 3})
                 for fmt in export.FORMATS}
    pngs = np.stack([np.asarray(Image.open(out / "png" / f"sample_{i:06d}.png")) for i in range(40)])
    return out, manifests, pngs


def test_the_oasis_layout_holds_the_same_images_and_mrigen_reads_it(exported):
    out, manifests, pngs = exported
    files = manifests["oasis"]["files"]
    assert files[0] == os.path.join("keras_png_slices_train", "case_001_slice_0.nii.png")
    assert files[33] == os.path.join("keras_png_slices_train", "case_002_slice_1.nii.png")
    oasis = np.stack([np.asarray(Image.open(out / "oasis" / name)) for name in files])
    np.testing.assert_array_equal(oasis, pngs)
    assert len(data.load_dataset(str(out / "oasis"), 32)) == 40


def test_nifti_stacks_slices_with_a_ras_affine(exported):
    out, manifests, pngs = exported
    manifest = manifests["nifti"]
    assert manifest["files"] == ["generated_0000.nii.gz", "generated_0001.nii.gz"]  # 32 + 8 slices
    first, second = (nib.load(out / "nifti" / name) for name in manifest["files"])
    assert first.shape == (32, 32, 32) and second.shape == (32, 32, 8) and first.get_data_dtype() == np.uint8
    assert nib.aff2axcodes(first.affine) == ("R", "A", "S")
    np.testing.assert_allclose(np.diag(first.affine)[:3], [8.0, 8.0, 8.0])  # 256 mm over 32 px
    np.testing.assert_allclose(first.affine[:3, 3], -8.0 * 31 / 2)  # centred on the origin
    np.testing.assert_allclose(manifest["affine"], first.affine)
    assert first.header.get_xyzt_units()[0] == "mm"
    # mrigen's own volume reader cuts them back into the very same axial slices.
    volume = np.concatenate([data.read_volume(str(out / "nifti" / name)) for name in manifest["files"]], axis=2)
    slices = np.stack([np.rot90(volume[:, :, k]) for k in range(40)])
    np.testing.assert_array_equal(slices, pngs)


def test_the_manifest_names_model_checkpoint_seed_and_count(trained, tmp_path):
    out = tmp_path / "nifti"
    result = main_in_process(SMOKE, f"--workdir={trained}", "--mode=sample", "--format=nifti", "--num_samples=10",
                             "--slices_per_volume=4", "--sample_seed=3", f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "manifest.json") as f:
        manifest = json.load(f)
    assert {k: manifest[k] for k in ("model", "loss", "checkpoint_step", "seed", "count", "resolution",
                                     "format")} == {"model": "dcgan", "loss": "dragan", "checkpoint_step": 5,
                                                    "seed": 3, "count": 10, "resolution": 32, "format": "nifti"}
    assert manifest["files"] == [f"generated_{i:04d}.nii.gz" for i in range(3)]  # 4 + 4 + 2 slices
    assert [nib.load(out / f).shape[2] for f in manifest["files"]] == [4, 4, 2]
    again = main_in_process(SMOKE, f"--workdir={trained}", "--mode=sample", "--format=nifti", f"--out={out}")
    assert_one_line_error(again, "already holds images", "--overwrite")


def test_loss_curves_mark_where_each_progan_stage_begins():
    records = [{"images_seen": 8, "stage": 0, "resolution": 4, "alpha": 1.0},
               {"images_seen": 16, "stage": 1, "resolution": 8, "alpha": 0.1},
               {"images_seen": 24, "stage": 1, "resolution": 8, "alpha": 0.9},
               {"images_seen": 32, "stage": 2, "resolution": 8, "alpha": 1.0}]
    assert plots._stage_starts(records) == [(0.008, "8px fade-in"), (0.024, "8px")]
