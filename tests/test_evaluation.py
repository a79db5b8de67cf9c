"""--mode=evaluate on a trained run and on a folder of images."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import smoke_config
from mrigen import data, evaluation, holdout, train
from test_cli import SMOKE, main_py


@pytest.fixture(scope="module")
def trained(smoke_run, shared_cache_dir):
    """The smoke run (read-only) and its config."""
    return smoke_run, smoke_config(data__cache_dir=shared_cache_dir)


def test_split_halves_are_disjoint_and_fixed():
    images = np.arange(11)[:, None, None, None].astype(np.uint8)
    reference, floor = holdout.split_halves(images)
    assert len(reference) == len(floor) == 5
    assert not set(reference.ravel()) & set(floor.ravel())
    again, _ = holdout.split_halves(images)
    np.testing.assert_array_equal(reference, again)


def test_evaluate_mode_writes_table_3_and_pictures(trained, shared_cache_dir, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(trained[0], workdir)  # evaluating writes into the run
    result = main_py(SMOKE, f"--workdir={workdir}", "--mode=evaluate",
                     f"--config.data.cache_dir={shared_cache_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = os.path.join(workdir, "eval_step2")
    assert "| training data |" in result.stdout and "| held-out real |" in result.stdout
    with open(os.path.join(out, "eval.json")) as f:
        results = json.load(f)
    half = len(data.load_dataset("", 32, cache_dir=shared_cache_dir)) // 2
    rows = results["sets"]
    assert rows["generated"]["n"] == rows["held-out real"]["n"] == rows["training data"]["n"] == half
    for row in rows.values():
        assert 0 <= row["rho"] <= 1 and row["sigma"] > 0 and row["delta"] >= 1
    assert rows["generated"]["swd"]["avg"] > rows["held-out real"]["swd"]["avg"]  # an untrained G is far off
    for name in ("report.md", "real_vs_generated.png", "closest_pairs.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert any(name.startswith("pca16_") for name in os.listdir(shared_cache_dir))


def test_evaluating_copies_of_training_images_flags_memorization(trained, shared_cache_dir, tmp_path):
    _, config = trained
    dataset = data.load_dataset("", 32, cache_dir=shared_cache_dir)
    reference, _ = holdout.split_halves(dataset.images)
    folder = tmp_path / "copies"
    folder.mkdir()
    for i, image in enumerate(reference[:40]):
        Image.fromarray(image[:, :, 0]).save(folder / f"{i:03d}.png")
    results, out = evaluation.evaluate_folder(config, str(folder), str(tmp_path / "report"), seed=0)
    memo = results["sets"]["generated"]["memorization"]
    assert memo["nn_min"] == 0.0 and memo["frac_below_train_p5"] == 1.0
    assert os.path.exists(os.path.join(out, "eval.json"))


def test_training_logs_cheap_metrics_at_the_configured_interval(tmp_path, shared_cache_dir):
    config = smoke_config(data__cache_dir=shared_cache_dir, eval_every_steps=2, eval_num_images=16)
    train.train(config, str(tmp_path / "run"))
    with open(tmp_path / "run" / "stats.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert ["eval_rho" in r for r in records] == [False, True]
    evaluated = records[1]
    assert 0 < evaluated["eval_rho"] <= 1 and evaluated["eval_sigma"] > 0 and evaluated["eval_n"] == 16
    assert 0 <= evaluated["eval_ms_ssim"] <= 1 + 1e-6
    assert 0 < evaluated["eval_spectrum_high"] and 0 < evaluated["eval_spectrum"]  # an untrained G is off
