"""Evaluation per class: a conditional run's classes each against their own real images, beside the pooled result."""

import json

import numpy as np

from mrigen import class_evaluation, data, evaluation, holdout


def test_generated_classes_take_the_held_out_shares():
    floor = np.array([0, 0, 0, 1, 2, 2], np.int32)
    np.testing.assert_array_equal(class_evaluation.class_counts(floor, 3, 6), [3, 1, 2])
    np.testing.assert_array_equal(class_evaluation.class_counts(floor, 3, 12), [6, 2, 4])
    np.testing.assert_array_equal(class_evaluation.class_counts(floor, 3, 7), [4, 1, 2])  # 3.5, 1.17, 2.33
    np.testing.assert_array_equal(class_evaluation.class_counts(floor, 4, 5), [2, 1, 2, 0])  # 2.5, 0.83, 1.67, 0


NAMES = ("fine", "coarse")


def toy_images(count, coarse, rng):
    """32-px noise, of single pixels or of 8-pixel squares: classes that differ in texture, which the random
    features see (they do not see a brightness offset, nor where a bright half is)."""
    if not coarse:
        return rng.integers(0, 256, (count, 32, 32, 1)).astype(np.uint8)
    squares = rng.integers(0, 256, (count, 4, 4, 1)).astype(np.uint8)
    return squares.repeat(8, axis=1).repeat(8, axis=2)


def two_class_split(per_class=32):
    rng = np.random.default_rng(0)
    images = np.concatenate([toy_images(per_class, 0, rng), toy_images(per_class, 1, rng)])
    labels = np.repeat(np.arange(2, dtype=np.int32), per_class)
    dataset = data.Dataset(images=images, source="toy", cache_key="", labels=labels, class_names=NAMES)
    return holdout.Split(dataset, None)


def test_each_class_is_judged_against_its_own_real_images(tmp_path):
    """A 'generator' whose fine images are new fine images and whose coarse images are fine ones too: the
    per-class verdict blames the coarse class alone."""
    split = two_class_split()
    reference_labels, floor_labels = split.evaluation_labels()
    counts = class_evaluation.class_counts(floor_labels, 2, len(floor_labels))
    fresh = toy_images(int(counts.sum()), 0, np.random.default_rng(1))
    labels = np.repeat(np.arange(2, dtype=np.int32), counts)
    results = evaluation.evaluate(split, data.to_float_host(fresh), str(tmp_path), "", generated_labels=labels)
    fine, coarse = (results["classes"][name] for name in NAMES)
    assert (fine["n_floor"], coarse["n_floor"]) == tuple(np.bincount(floor_labels))
    assert (fine["n_generated"], coarse["n_generated"]) == tuple(counts)
    assert fine["n_reference"] + coarse["n_reference"] == len(reference_labels)
    assert coarse["precision"] == 0 and fine["precision"] > 0.5
    assert fine["distinguishable_by"] == [] and len(coarse["distinguishable_by"]) >= 8
    assert {"precision", "recall", "spectrum"} <= set(coarse["distinguishable_by"])
    with open(tmp_path / "classes" / "coarse" / "eval.json") as f:
        assert json.load(f)["source"]["class"] == "coarse"
    report = (tmp_path / "report.md").read_text()
    assert "## Per class" in report
    rows = [line for line in report.splitlines() if line.startswith(("| fine |", "| coarse |"))]
    assert len(rows) == 2 and f"of {coarse['metrics']} (" in rows[1]


def test_a_class_too_small_to_evaluate_is_reported_as_skipped(tmp_path):
    split = two_class_split(per_class=16)  # about 8 held out of each class: below MIN_IMAGES
    _, floor_labels = split.evaluation_labels()
    generated = data.to_float_host(split.training.images[:len(floor_labels)])
    results = evaluation.evaluate(split, generated, str(tmp_path), "", generated_labels=np.sort(floor_labels))
    assert all("skipped" in row for row in results["classes"].values())
    assert "not evaluated: fewer than 12 images in a set" in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "classes").exists()
