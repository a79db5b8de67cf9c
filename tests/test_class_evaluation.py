"""Evaluation per class: a conditional run's classes each against their own real images, beside the pooled result."""

import json

import numpy as np

from mrigen import class_evaluation, data, evaluation, holdout
from test_conditional import CLASSES, half_bright_images


def test_generated_classes_take_the_held_out_shares():
    floor = np.array([0, 0, 0, 1, 2, 2], np.int32)
    np.testing.assert_array_equal(class_evaluation.class_counts(floor, 3, 6), [3, 1, 2])
    np.testing.assert_array_equal(class_evaluation.class_counts(floor, 3, 12), [6, 2, 4])
    np.testing.assert_array_equal(class_evaluation.class_counts(floor, 3, 7), [4, 1, 2])  # 3.5, 1.17, 2.33
    np.testing.assert_array_equal(class_evaluation.class_counts(floor, 4, 5), [3, 1, 1, 0])  # a class never held out


def two_class_split(per_class=24):
    rng = np.random.default_rng(0)
    images = np.concatenate([half_bright_images(per_class, 0, rng), half_bright_images(per_class, 1, rng)])
    labels = np.repeat(np.arange(2, dtype=np.int32), per_class)
    dataset = data.Dataset(images=images, source="toy", cache_key="", labels=labels, class_names=CLASSES)
    return holdout.Split(dataset, None)


def test_each_class_is_judged_against_its_own_real_images(tmp_path):
    """A 'generator' whose bottom images are new bottom images and whose top images are bottom ones too: the
    pooled verdict sees half the data missing, the per-class one blames the top class alone."""
    split = two_class_split()
    reference_labels, floor_labels = split.evaluation_labels()
    counts = class_evaluation.class_counts(floor_labels, 2, len(floor_labels))
    fresh = half_bright_images(int(counts.sum()), 0, np.random.default_rng(1))
    labels = np.repeat(np.arange(2, dtype=np.int32), counts)
    results = evaluation.evaluate(split, data.to_float_host(fresh), str(tmp_path), "", generated_labels=labels)
    bottom, top = (results["classes"][name] for name in CLASSES)
    assert (bottom["n_floor"], top["n_floor"]) == tuple(np.bincount(floor_labels))
    assert (bottom["n_generated"], top["n_generated"]) == tuple(counts)
    assert bottom["n_reference"] + top["n_reference"] == len(reference_labels)
    assert top["precision"] == 0 and bottom["precision"] > 0.5
    assert len(top["distinguishable_by"]) > len(bottom["distinguishable_by"])
    assert "recall" in top["distinguishable_by"] and "precision" in top["distinguishable_by"]
    with open(tmp_path / "classes" / "top" / "eval.json") as f:
        assert json.load(f)["source"]["class"] == "top"
    report = (tmp_path / "report.md").read_text()
    assert "## Per class" in report
    rows = [line for line in report.splitlines() if line.startswith(("| bottom |", "| top |"))]
    assert len(rows) == 2 and f"of {top['metrics']} (" in rows[1]


def test_a_class_too_small_to_evaluate_is_reported_as_skipped(tmp_path):
    split = two_class_split(per_class=12)  # 6 held out of each class: below MIN_IMAGES
    _, floor_labels = split.evaluation_labels()
    generated = data.to_float_host(split.training.images[:len(floor_labels)])
    results = evaluation.evaluate(split, generated, str(tmp_path), "", generated_labels=np.sort(floor_labels))
    assert all("skipped" in row for row in results["classes"].values())
    assert "not evaluated: fewer than 8 images in a set" in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "classes").exists()
