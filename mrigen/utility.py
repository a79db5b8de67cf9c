"""`--mode=utility`: does a conditional run's synthetic data help a classifier of its classes?

The fixed classifier (mrigen.classifier) is trained on three training sets,
each with several seeds, and tested on the same real images:

    real                 the real training images
    real + synthetic     the same, plus N generated images of each class
    synthetic only       the N generated images of each class

The test set is the run's held-out real images (data.holdout), never seen by
G or by the classifier. Without a holdout the training data is split into the
fixed halves of --mode=evaluate: the classifier trains on one and is tested
on the other, which G trained on, so the synthetic rows are optimistic; the
report says so. Seed i (from --sample_seed) sets the classifier's
initialization and batches and the synthetic images' latents.

Writes OUT/utility.json (every number, each seed's, and the setup) and OUT/utility.md (the table).
"""

import json
import logging
import os
import time
from typing import Callable, Optional

import jax
import numpy as np

from mrigen import class_evaluation, classifier, data, evaluation, holdout, sampling
from mrigen.errors import UserError, writing

CONDITIONS = ("real", "real_plus_synthetic", "synthetic")


def check_conditional(sampler: sampling.Sampler) -> None:
    if not sampler.class_names:
        raise UserError("--mode=utility: this run is unconditional (trained without data.labels)")


def real_sets(split: holdout.Split, class_names: tuple) -> dict:
    """The real training and test images and labels, and where the test set comes from.

    Returns {"train": (images, labels), "test": (images, labels), "in_sample": bool, "source": str};
    training images [N, R, R, 1] float32 in [-1, 1], test images uint8, labels [N] int32.
    """
    class_evaluation.check_same_classes(class_names, split.training, "tested")
    reference, floor, in_sample = split.evaluation_sets()
    reference_labels, floor_labels = split.evaluation_labels()
    missing = [name for c, name in enumerate(class_names) if not np.any(reference_labels == c)]
    if missing:
        field = "config.data.labels" if in_sample else "config.data.holdout"
        raise UserError(f"{field}: the real images left to train the classifier on have none of the class "
                        f"{', '.join(missing)}")
    if in_sample:
        source = ("in-sample: a fixed half of the training data (the classifier's real images are the other "
                  "half), on which the generator trained")
    else:
        source = f"held out from training (data.holdout): {split.note}"
    return {"train": (data.to_float_host(reference), reference_labels), "test": (floor, floor_labels),
            "in_sample": in_sample, "source": source}


def synthetic_set(sampler: sampling.Sampler, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """per_class generated images of each class ([C * per_class, R, R, 1] float32 in [-1, 1]) and their labels."""
    return evaluation.generate_by_class(sampler, [per_class] * len(sampler.class_names), seed)


def training_set(condition: str, real: tuple, synthetic: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels a condition trains on; real and synthetic: ([N, R, R, 1] float32 in [-1, 1], [N])."""
    if condition == "real":
        return real
    if condition == "synthetic":
        return synthetic
    return np.concatenate([real[0], synthetic[0]]), np.concatenate([real[1], synthetic[1]])


def summarize(per_seed: list[dict]) -> tuple[dict, dict]:
    """The mean and the standard deviation (n - 1; NaN for one seed) over seeds of each score.

    A class without test images has a NaN recall in every seed, so its mean is NaN too.
    """
    mean, sd = {}, {}
    for name in ("accuracy", "balanced_accuracy", "recall"):
        values = np.asarray([row[name] for row in per_seed], np.float64)
        mean[name] = values.mean(axis=0).tolist()
        sd[name] = (values.std(axis=0, ddof=1) if len(values) > 1 else np.full(values.shape[1:], np.nan)).tolist()
    return mean, sd


def measure(sampler: sampling.Sampler, split: holdout.Split, per_class: int, seeds: int, steps: int, seed: int = 0,
            log: Callable[[str], None] = print) -> dict:
    """Each condition's scores on the real test set, for seeds seed .. seed + seeds - 1.

    sampler: anything with class_names, resolution, step, ema and __call__(key, n, labels) -> [n, R, R, 1]
    in [-1, 1]. per_class: synthetic images of each class (0: as many as the largest real training class).
    """
    check_conditional(sampler)
    names = tuple(sampler.class_names)
    real = real_sets(split, names)
    train_counts = np.bincount(real["train"][1], minlength=len(names))
    test_counts = np.bincount(real["test"][1], minlength=len(names))
    per_class = per_class or int(train_counts.max())
    per_seed = {condition: [] for condition in CONDITIONS}
    sizes = {}
    for i in range(seeds):
        synthetic = synthetic_set(sampler, per_class, seed + i)
        for condition in CONDITIONS:
            images, labels = training_set(condition, real["train"], synthetic)
            sizes[condition] = len(labels)
            started = time.perf_counter()
            params = classifier.train(images, labels, len(names), seed + i, steps)
            row = classifier.scores(classifier.predict(params, real["test"][0], len(names)), real["test"][1],
                                    len(names))
            per_seed[condition].append({"seed": seed + i, **row})
            log(f"utility: {condition.replace('_', ' ')}, seed {seed + i}: accuracy {row['accuracy']:.3f}, "
                f"balanced accuracy {row['balanced_accuracy']:.3f} ({time.perf_counter() - started:.0f} s)")
    conditions = {}
    for condition in CONDITIONS:
        mean, sd = summarize(per_seed[condition])
        conditions[condition] = {"images": sizes[condition], "mean": mean, "sd": sd, "seeds": per_seed[condition]}
    setup = {"checkpoint_step": int(sampler.step), "generator": "moving average of G" if sampler.ema else "raw G",
             "classes": list(names), "per_class": per_class, "seeds": list(range(seed, seed + seeds)),
             "real_training_per_class": train_counts.tolist(),
             "test_set": {"source": real["source"], "in_sample": bool(real["in_sample"]), "n": int(test_counts.sum()),
                          "per_class": test_counts.tolist()},
             "classifier": {"architecture": describe_classifier(), "steps": steps,
                            "input_resolution": classifier.input_resolution(sampler.resolution),
                            "batch_size": classifier.batch_size(len(names)), "learning_rate": classifier.LEARNING_RATE},
             "resolution": int(sampler.resolution)}
    return {"setup": setup, "conditions": conditions}


def describe_classifier() -> str:
    channels = " / ".join(map(str, classifier.CHANNELS))
    return (f"input average-pooled to at most {classifier.MAX_INPUT} px; 3 x (conv 3x3 {channels} channels, ReLU, "
            f"2x2 average pooling); mean over pixels; dense to the classes; Adam, cross-entropy, class-balanced "
            f"batches")


# ---------------------------------------------------------------- utility.md


ROW_NAMES = {"real": "real", "real_plus_synthetic": "real + {n} synthetic per class",
             "synthetic": "synthetic only ({n} per class)"}


def render_markdown(results: dict) -> str:
    """utility.md: the setup, the table (mean ± sd over seeds) and what it says."""
    setup, conditions = results["setup"], results["conditions"]
    names, test = setup["classes"], setup["test_set"]
    seeds = setup["seeds"]
    lines = ["# Utility of the synthetic images", ""]
    if test["in_sample"]:
        lines += ["**In-sample test set: the generator trained on the test images, so the synthetic rows are "
                  "optimistic.** Train the run with `--config.data.holdout=0.2` for an honest test.", ""]
    lines += [
        f"Run: {setup.get('run', '-')}, checkpoint step {setup['checkpoint_step']}, {setup['generator']}. "
        f"Classes: {', '.join(names)}; real training images per class: "
        f"{', '.join(map(str, setup['real_training_per_class']))}.",
        f"Test set: {test['n']} real images ({', '.join(map(str, test['per_class']))} per class), {test['source']}.",
        f"Classifier: {setup['classifier']['architecture']} ({setup['classifier']['steps']} steps of "
        f"{setup['classifier']['batch_size']} at {setup['classifier']['input_resolution']} px; docs/utility.md).",
        "",
        "| training set | images | accuracy | balanced accuracy | " + " | ".join(f"recall {n}" for n in names) + " |",
        "|---" * (4 + len(names)) + "|",
    ]
    for condition in CONDITIONS:
        row = conditions[condition]
        mean, sd = row["mean"], row["sd"]
        cells = [ROW_NAMES[condition].format(n=setup["per_class"]), str(row["images"]),
                 _pm(mean["accuracy"], sd["accuracy"]), _pm(mean["balanced_accuracy"], sd["balanced_accuracy"])]
        cells += [_pm(m, s) for m, s in zip(mean["recall"], sd["recall"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Mean ± standard deviation over {len(seeds)} seed{'s' if len(seeds) > 1 else ''} "
              f"({', '.join(map(str, seeds))}: the classifier's initialization and batches, and the synthetic "
              f"images' latents). Chance is 1/{len(names)} = {1 / len(names):.3f} balanced accuracy.", "",
              meaning(results), ""]
    return "\n".join(lines)


def meaning(results: dict) -> str:
    """One sentence: how the synthetic rows compare with the real one."""
    balanced = {c: results["conditions"][c]["mean"]["balanced_accuracy"] for c in CONDITIONS}
    if not all(v is not None and np.isfinite(v) for v in balanced.values()):
        return ""
    return (f"Trained on synthetic images only, the classifier reaches {balanced['synthetic']:.3f} balanced accuracy "
            f"on real images against {balanced['real']:.3f} when trained on real ones: the closer, the more of what "
            f"tells the classes apart the generator's images carry; adding them to the real images "
            f"{'raises' if balanced['real_plus_synthetic'] > balanced['real'] else 'does not raise'} it "
            f"({balanced['real_plus_synthetic']:.3f}).")


def _pm(mean, sd) -> str:
    if mean is None or not np.isfinite(mean):
        return "-"
    return f"{mean:.3f}" if sd is None or not np.isfinite(sd) else f"{mean:.3f} ± {sd:.3f}"


# ---------------------------------------------------------------- the mode


def write_outputs(results: dict, out_dir: str) -> list[str]:
    """utility.json and utility.md into out_dir (each written whole or not at all); their paths."""
    from mrigen.metrics._util import atomic_write
    from mrigen.metrics.report import to_json

    plain = to_json(results)
    texts = {"utility.json": json.dumps(plain, indent=2, allow_nan=False) + "\n",
             "utility.md": render_markdown(plain)}
    paths = []
    with writing(out_dir, "the utility report"):
        for name, text in texts.items():
            paths.append(os.path.join(out_dir, name))
            atomic_write(paths[-1], lambda f, text=text: f.write(text.encode()))
    return paths


def run_utility(config, workdir: str, out_dir: Optional[str], per_class: int, seeds: int, steps: int,
                ema: bool = True, seed: int = 0, sampler: Optional[sampling.Sampler] = None) -> tuple[dict, str]:
    """The utility test of the latest checkpoint in `workdir` against `config`'s data; writes into out_dir.

    config: the run's (cli.evaluation_config). sampler: the run's (default: load_sampler(workdir, ema)).
    Returns (results, out_dir).
    """
    sampler = sampler or sampling.load_sampler(workdir, ema=ema)
    check_conditional(sampler)
    data_config = config.data.copy_and_resolve_references()
    data_config.resolution = sampler.resolution
    split = holdout.load(data_config)
    results = measure(sampler, split, per_class, seeds, steps, seed)
    results["setup"].update(run=os.path.abspath(workdir), model=config.get("model"), loss=config.get("loss"),
                            training_data=split.training.source)
    out_dir = out_dir or workdir
    write_outputs(results, out_dir)
    return results, out_dir


def for_experiment_run(sampler: sampling.Sampler, split: holdout.Split, workdir: str, eval_config) -> Optional[dict]:
    """The utility test of one conditional run of an experiment, written into its workdir; None when it has none.

    eval_config: the experiment's `eval` fields (utility, utility_seeds, utility_steps, seed). One process only:
    on several, the synthetic images are a computation of every process while process 0 alone scores (run
    --mode=utility on each run's workdir instead). Returns {condition: {"mean", "sd"}} of balanced accuracy.
    """
    if not sampler.class_names or not eval_config.get("utility", True):
        return None
    if jax.process_count() > 1:
        logging.warning("utility: not run across processes; run --mode=utility --workdir=%s", workdir)
        return None
    results = measure(sampler, split, 0, eval_config.get("utility_seeds", 3), eval_config.get("utility_steps", 1000),
                      eval_config.get("seed", 0), log=logging.info)
    results["setup"].update(run=os.path.abspath(workdir), training_data=split.training.source)
    write_outputs(results, workdir)
    return {condition: {"mean": results["conditions"][condition]["mean"]["balanced_accuracy"],
                        "sd": results["conditions"][condition]["sd"]["balanced_accuracy"],
                        "images": results["conditions"][condition]["images"]} for condition in CONDITIONS}
