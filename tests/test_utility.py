"""--mode=utility: the fixed classifier, its scores, and the three training sets of a conditional run."""

import json
import os
import statistics

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import main_in_process, smoke_config
from mrigen import classifier, data, holdout, train, utility
from mrigen.errors import UserError
from test_cli import SMOKE, assert_one_line_error
from test_conditional import CLASSES, half_bright_images

STEPS = 25  # The classifier separates the half-bright classes in 5-10 steps at seeds 0-2.


def toy_set(per_class, rng, name="toy"):
    images = np.concatenate([half_bright_images(n, top, rng) for top, n in enumerate(per_class)])
    labels = np.repeat(np.arange(len(per_class), dtype=np.int32), per_class)
    return data.Dataset(images=images, source=name, cache_key=name, labels=labels, class_names=CLASSES)


class HalfBrightSampler:
    """A stand-in for a conditional run's sampler: images of the class it is asked for, or of the other one."""

    class_names, resolution, step, ema = CLASSES, 32, 7, True

    def __init__(self, swapped=False):
        self.swapped = swapped

    def __call__(self, key, n, labels):
        rng = np.random.default_rng(np.asarray(key).ravel().tolist())
        tops = 1 - np.asarray(labels) if self.swapped else np.asarray(labels)
        return data.to_float_host(np.concatenate([half_bright_images(1, int(top), rng) for top in tops]))


def test_scores_against_a_hand_count():
    predictions, labels = np.array([0, 0, 1, 1, 2, 0]), np.array([0, 1, 1, 1, 2, 2])
    result = classifier.scores(predictions, labels, 4)  # class 3 has no image
    assert result["accuracy"] == pytest.approx(4 / 6)
    np.testing.assert_allclose(result["recall"][:3], [1, 2 / 3, 1 / 2])
    assert np.isnan(result["recall"][3])
    assert result["balanced_accuracy"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)


def test_the_classifier_learns_separable_classes_from_unequal_sets_and_repeats_itself():
    rng = np.random.default_rng(0)
    training, test = toy_set((24, 6), rng), toy_set((20, 20), rng)
    params = classifier.train(training.images, training.labels, 2, seed=0, steps=STEPS)
    result = classifier.scores(classifier.predict(params, test.images, 2), test.labels, 2)
    assert min(result["recall"]) >= 0.95, result
    again = classifier.train(training.images, training.labels, 2, seed=0, steps=STEPS)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again)))
    untrained = classifier.train(training.images, training.labels, 2, seed=0, steps=0)
    assert classifier.scores(classifier.predict(untrained, test.images, 2), test.labels, 2)["accuracy"] < 0.9


def test_prepare_pools_large_slices_and_maps_uint8():
    images = np.arange(2 * 128 * 128, dtype=np.int64).reshape(2, 128, 128, 1) % 256
    pooled = classifier.prepare(images.astype(np.uint8))
    r = classifier.MAX_INPUT
    assert pooled.shape == (2, r, r, 1) and pooled.dtype == np.float32
    expected = (images.astype(np.float32) / 127.5 - 1).reshape(2, r, 128 // r, r, 128 // r, 1).mean(axis=(2, 4))
    np.testing.assert_allclose(pooled, expected, atol=1e-6)


@pytest.mark.parametrize("swapped, seeds", [(False, 2), (True, 1)])
def test_synthetic_only_accuracy_follows_the_labels_the_sampler_honours(swapped, seeds):
    rng = np.random.default_rng(1)
    split = holdout.Split(toy_set((10, 6), rng), toy_set((8, 8), rng, "held"), "toy holdout")
    lines = []
    results = utility.measure(HalfBrightSampler(swapped), split, per_class=8, seeds=seeds, steps=STEPS, seed=4,
                              log=lines.append)
    conditions = results["conditions"]
    assert conditions["real"]["mean"]["accuracy"] >= 0.95
    synthetic = conditions["synthetic"]["mean"]["balanced_accuracy"]
    assert (synthetic <= 0.05) if swapped else (synthetic >= 0.95)
    assert [row["images"] for row in conditions.values()] == [16, 32, 16]
    for row in conditions.values():
        accuracies = [seed_row["accuracy"] for seed_row in row["seeds"]]
        assert [seed_row["seed"] for seed_row in row["seeds"]] == [4, 5][:seeds]
        assert row["mean"]["accuracy"] == pytest.approx(statistics.mean(accuracies))
        if seeds > 1:
            assert row["sd"]["accuracy"] == pytest.approx(statistics.stdev(accuracies))
    assert results["setup"]["test_set"] == {"source": "held out from training (data.holdout): toy holdout",
                                            "in_sample": False, "n": 16, "per_class": [8, 8]}
    assert len(lines) == 3 * seeds and all(line.startswith("utility: ") for line in lines)


def test_an_unconditional_run_is_refused_before_anything_is_read_or_written(tmp_path):
    class Unconditional(HalfBrightSampler):
        class_names = ()

    config = smoke_config(data__path=str(tmp_path / "missing"))  # its data would be a UserError of its own
    with pytest.raises(UserError, match=r"^--mode=utility: this run is unconditional \(trained without data.labels\)$"):
        utility.run_utility(config, str(tmp_path), str(tmp_path / "out"), 0, 1, 1, sampler=Unconditional())
    assert not (tmp_path / "out").exists()


def test_a_class_missing_from_the_real_training_images_is_refused():
    rng = np.random.default_rng(3)
    split = holdout.Split(toy_set((8, 0), rng), toy_set((4, 4), rng, "held"), "toy holdout")
    with pytest.raises(UserError, match="^config.data.holdout: the real images left to train the classifier on have "
                                        "none of the class top$"):
        utility.measure(HalfBrightSampler(), split, per_class=4, seeds=1, steps=1)


# ---------------------------------------------------------------- main.py --mode=utility


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    """configs/dcgan.py:smoke on two class folders of 8 slices each, with a labeled holdout folder of 6 each;
    trained for 2 steps with a moving average of G; read-only."""
    root = tmp_path_factory.mktemp("utility_data")
    rng = np.random.default_rng(0)
    for part, count in (("train", 8), ("held", 6)):
        for top, name in enumerate(CLASSES):
            os.makedirs(root / part / name)
            for i, image in enumerate(half_bright_images(count, top, rng)):
                Image.fromarray(image[..., 0]).save(root / part / name / f"{i}.png")
    workdir = str(tmp_path_factory.mktemp("utility_run") / "run")
    train.train(smoke_config(data__path=str(root / "train"), data__labels="folders", data__holdout=str(root / "held"),
                             data__cache_dir="", train__epochs=1.0, train__ema_kimg=0.5), workdir)
    return workdir


def read_outputs(folder):
    with open(folder / "utility.json") as f, open(folder / "utility.md") as g:
        return json.load(f), g.read()


def test_utility_mode_writes_three_training_sets_by_three_seeds(conditional_run, tmp_path):
    out = tmp_path / "u"
    result = main_in_process(SMOKE, f"--workdir={conditional_run}", "--mode=utility", "--utility_steps=5",
                             "--per_class=5", "--sample_seed=3", f"--out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    results, report = read_outputs(out)
    setup = results["setup"]
    assert setup["checkpoint_step"] == 2 and setup["classes"] == list(CLASSES) and setup["seeds"] == [3, 4, 5]
    assert setup["test_set"]["n"] == 12 and setup["test_set"]["per_class"] == [6, 6]
    assert not setup["test_set"]["in_sample"] and setup["real_training_per_class"] == [8, 8]
    assert setup["classifier"]["steps"] == 5 and setup["generator"] == "moving average of G"
    assert list(results["conditions"]) == list(utility.CONDITIONS)
    for name, images in zip(utility.CONDITIONS, (16, 26, 10)):
        row = results["conditions"][name]
        assert row["images"] == images and len(row["seeds"]) == 3 and len(row["mean"]["recall"]) == 2
    real = results["conditions"]["real"]
    assert f"| real | 16 | {real['mean']['accuracy']:.3f} ± {real['sd']['accuracy']:.3f} |" in report
    assert "| real + 5 synthetic per class | 26 |" in report and "| synthetic only (5 per class) | 10 |" in report
    assert "recall bottom | recall top |" in report and "In-sample" not in report
    assert report in result.stdout and f"wrote {out / 'utility.json'}, utility.md" in result.stdout
    assert result.stdout.count("utility: ") == 9


def test_utility_without_a_holdout_says_its_test_set_is_in_sample(conditional_run, tmp_path):
    out = tmp_path / "v"
    result = main_in_process(SMOKE, f"--workdir={conditional_run}", "--mode=utility", "--utility_steps=2",
                             "--utility_seeds=1", "--raw_generator", "--config.data.holdout=", f"--out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    results, report = read_outputs(out)
    test_set = results["setup"]["test_set"]
    real_per_class = results["setup"]["real_training_per_class"]
    assert test_set["in_sample"] and test_set["n"] == 8 and sum(real_per_class) == 8
    assert results["setup"]["generator"] == "raw G" and results["setup"]["per_class"] == max(real_per_class)
    assert report.startswith("# Utility of the synthetic images\n\n**In-sample test set: the generator trained on "
                             "the test images")


def test_utility_errors_are_one_line_and_write_nothing(conditional_run, tmp_path):
    out = tmp_path / "w"
    cases = [
        ((f"--workdir={conditional_run}", "--utility_seeds=0"), "--utility_seeds: 0 must be at least 1"),
        ((f"--workdir={conditional_run}", "--utility_steps=-3"), "--utility_steps: -3 must be at least 1"),
        ((f"--workdir={conditional_run}", "--per_class=-1"), "--per_class: -1 must be at least 0"),
        ((f"--workdir={conditional_run}", "--config.data.labels="),
         "config.data.labels: the run was trained with the classes bottom, top, the data it is tested against has "
         "no labels"),
    ]
    for arguments, message in cases:
        assert_one_line_error(main_in_process(SMOKE, "--mode=utility", f"--out={out}", *arguments), message)
        assert not out.exists()
    assert_one_line_error(main_in_process(SMOKE, f"--workdir={conditional_run}", "--mode=sample",
                                          "--utility_seeds=2", f"--out={out}"),
                          "--utility_seeds: works with --mode=utility, not sample")
    assert not out.exists()
