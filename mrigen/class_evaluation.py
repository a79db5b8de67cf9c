"""Evaluation per class: each class's generated images against that class's own real images.

A conditional run is evaluated pooled (every class together, as an
unconditional one) and class by class: the generated images of label c
against the reference and held-out real images of class c, with the whole
suite and its verdict. The generated set has the held-out set's class shares,
so the pooled comparison is between sets of the same class mix. Each class's
full report goes to <out>/classes/<class>/ (with real_vs_generated.png); the
pooled report gets one table row per class.
"""

import os

import numpy as np

from mrigen import images
from mrigen.errors import UserError

MIN_IMAGES = 12  # Per set, for a class's own evaluation: half-samples of 6 images, PRDC counts 5 neighbours in them.
SUMMARY = ("spectrum", "kid", "feature_fd", "precision", "recall", "coverage", "pca_fd")


def check_same_classes(class_names: tuple, dataset, use: str) -> None:
    """UserError unless `dataset` (a data.Dataset) is labeled with the run's classes; use: 'evaluated', 'tested'."""
    if dataset.labels is None or dataset.class_names != tuple(class_names):
        data_classes = ", ".join(dataset.class_names) or "no labels"
        raise UserError(f"config.data.labels: the run was trained with the classes {', '.join(class_names)}, "
                        f"the data it is {use} against has {data_classes}")


def class_counts(floor_labels: np.ndarray, num_classes: int, count: int) -> np.ndarray:
    """[C] images per class of a generated set of `count`: the held-out set's class shares, by largest remainder."""
    shares = np.bincount(floor_labels, minlength=num_classes) / len(floor_labels) * count
    counts = np.floor(shares).astype(np.int64)
    remainder_order = np.argsort(-(shares - counts), kind="stable")
    counts[remainder_order[:count - counts.sum()]] += 1
    return counts


def evaluate_classes(sets: dict, class_names: tuple, basis, seed: int, floor_in_sample: bool, out_dir: str) -> dict:
    """{class: summary} of each class's evaluation, its report written to out_dir/classes/<class>/.

    sets: {'reference', 'floor', 'generated'}: (images [N, R, R, 1] float32 in
    [-1, 1], labels [N] int32). A class with fewer than MIN_IMAGES in a set is
    reported as skipped, with its counts.
    """
    from mrigen import metrics
    from mrigen.metrics import report

    summaries = {}
    for c, name in enumerate(class_names):
        chosen = {role: x[labels == c] for role, (x, labels) in sets.items()}
        counts = {f"n_{role}": len(x) for role, x in chosen.items()}
        if min(counts.values()) < MIN_IMAGES:
            summaries[name] = {**counts, "skipped": f"fewer than {MIN_IMAGES} images in a set"}
            continue
        results = metrics.evaluate_sets(chosen["reference"], chosen["generated"], chosen["floor"], basis=basis,
                                        rng_seed=seed, floor_in_sample=floor_in_sample)
        results["source"] = {"class": name, **counts}
        class_dir = os.path.join(out_dir, "classes", name)
        report.write_report(results, class_dir)
        report.save_side_by_side_png(images.representative(chosen["reference"], 8, seed),
                                     images.representative(chosen["generated"], 8, seed),
                                     os.path.join(class_dir, "real_vs_generated.png"))
        summaries[name] = {**counts, **summary(results)}
    return summaries


def summary(results: dict) -> dict:
    """The per-class table's fields of one evaluate_sets result: rho, SUMMARY's values, the verdict."""
    generated = results["sets"]["generated"]
    return {"rho": generated["rho"], "rho_floor": results["sets"]["held-out real"]["rho"],
            **{m: generated["texture"][m]["value"] for m in SUMMARY},
            "distinguishable_by": generated["distinguishable_by"], "metrics": len(generated["verdict"])}
