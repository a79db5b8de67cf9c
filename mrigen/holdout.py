"""Real images kept out of training, so that an evaluation's real-vs-real floor is honest.

`data.holdout` says where they come from:
  ""      none. Training uses every image; evaluation splits them into two
          halves, so its floor is in-sample (both halves were trained on).
  "0.2"   a fraction (a number in (0, 1)) split off the data by subject:
          every slice of a held-out subject (OASIS's `case_NNN`, OASIS-1's
          `OAS1_NNNN`, BIDS `sub-XX`, else each volume) is left out of
          training. Data with a single volume (the embedded MNI152 template)
          can only be split by slice, and the report says so.
  PATH    a folder or file of real images, in any form data.path takes,
          never trained on.
"""

import dataclasses
import math
import os
from typing import Optional

import numpy as np

from mrigen import data
from mrigen.errors import UserError

HOLDOUT_SEED = 20020527  # Fixed: every run and evaluation of a dataset holds out the same subjects.
SPLIT_SEED = 20020527  # The in-sample halves when there is no holdout.
MIN_IMAGES = 4


@dataclasses.dataclass(frozen=True)
class Split:
    """The images a run trains on, and the real images its evaluation uses as the floor.

    training: what the model trains on (everything when there is no holdout).
    holdout: real images it never trains on, or None.
    note: how the holdout was made, for reports ('' when there is none).
    """

    training: data.Dataset
    holdout: Optional[data.Dataset]
    note: str = ""

    def evaluation_sets(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """(reference, floor, floor_in_sample) as uint8 [N, R, R, 1] arrays.

        With a holdout: the whole training set and the holdout. Without: two
        disjoint halves of the training set, by a fixed permutation.
        """
        if self.holdout is not None:
            return self.training.images, self.holdout.images, False
        reference, floor = split_halves(self.training.images)
        return reference, floor, True

    def evaluation_labels(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """The labels of evaluation_sets' reference and floor images, or None for data without labels."""
        if self.training.labels is None:
            return None
        if self.holdout is not None:
            return self.training.labels, self.holdout.labels
        return split_halves(self.training.labels)


def split_halves(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of a dataset (reference, held-out), by a fixed permutation (the same for its labels)."""
    if len(images) < MIN_IMAGES:
        raise UserError(f"data.path: {len(images)} images are too few to evaluate (need at least {MIN_IMAGES})")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    half = len(images) // 2
    return images[np.sort(order[:half])], images[np.sort(order[half:2 * half])]


def parse(spec) -> Optional[object]:
    """None, a fraction in (0, 1) (float), or a path (str); UserError for a number outside (0, 1)."""
    spec = "" if spec is None else str(spec).strip()
    if not spec:
        return None
    try:
        fraction = float(spec)
    except ValueError:
        return spec
    if not (math.isfinite(fraction) and 0 < fraction < 1):
        raise UserError(f"config.data.holdout: {spec!r} is neither a fraction in (0, 1) nor a path")
    return fraction


def load(data_config) -> Split:
    """The dataset of `data_config` (a config's `data` fields) split into training and holdout."""
    get = data_config.get
    options = dict(include_segmentation=get("include_segmentation", False),
                   min_foreground=get("min_foreground", 0.05), cache_dir=get("cache_dir", ""))
    dataset = data.load_dataset(data_config.path, data_config.resolution, labels=get("labels", ""), **options)
    spec = parse(get("holdout", ""))
    if spec is None:
        return Split(dataset, None)
    if isinstance(spec, float):
        return split_by_subject(dataset, spec)
    held = _holdout_folder(spec, data_config, options)
    return Split(dataset, with_classes_of(dataset, held, f"config.data.holdout: {spec}"), f"the real images in {spec}")


def _holdout_folder(path: str, data_config, options: dict) -> data.Dataset:
    held = os.path.realpath(os.path.expanduser(path))
    if data_config.path:
        trained = os.path.realpath(os.path.expanduser(data_config.path))
        if held == trained or held.startswith(trained + os.sep):
            raise UserError(f"config.data.holdout: {path} is inside data.path ({data_config.path}), "
                            f"so it would be trained on")
    try:
        dataset = data.load_dataset(path, data_config.resolution, labels=data_config.get("labels", ""), **options)
    except UserError as e:  # data.py names data.path; here the folder is data.holdout's
        message = str(e)
        raise UserError("config.data.holdout: " + message.removeprefix("data.path: ")) from None
    _check_size(len(dataset), path)
    return dataset


def with_classes_of(training: data.Dataset, other: data.Dataset, what: str) -> data.Dataset:
    """`other`'s labels as indices into the training data's class names (it may have fewer of the classes).

    what: the flag or field and path that gave `other`, for the error of a class the training data has not.
    """
    if other.labels is None:
        return other
    unknown = sorted(set(other.class_names) - set(training.class_names))
    if unknown:
        raise UserError(f"{what} has classes the training data has not: {', '.join(unknown)} "
                        f"(training: {', '.join(training.class_names)})")
    index = np.array([training.class_names.index(name) for name in other.class_names], np.int32)
    return dataclasses.replace(other, labels=index[other.labels], class_names=training.class_names)


def split_by_subject(dataset: data.Dataset, fraction: float) -> Split:
    """About `fraction` of the slices, whole subjects at a time (chosen with a fixed seed), held out."""
    subjects = dataset.subjects if dataset.subjects is not None else np.arange(len(dataset))
    unique = np.unique(subjects)
    rng = np.random.default_rng(HOLDOUT_SEED)
    if len(unique) == 1:
        held = np.zeros(len(dataset), bool)
        held[rng.choice(len(dataset), size=max(1, round(fraction * len(dataset))), replace=False)] = True
        note = (f"{held.sum()} of the {len(dataset)} slices of the data's one volume, chosen at random: "
                f"their neighbours were trained on, so this floor is easier to reach than unseen subjects")
    else:
        counts = {s: int(np.sum(subjects == s)) for s in unique}
        chosen, total = [], 0
        for subject in rng.permutation(unique):
            if total >= fraction * len(dataset):
                break
            chosen.append(subject)
            total += counts[subject]
        if len(chosen) == len(unique):
            raise UserError(f"config.data.holdout: {fraction} would hold out every one of the "
                            f"{len(unique)} subjects; use a smaller fraction")
        held = np.isin(subjects, chosen)
        note = f"{held.sum()} slices of {len(chosen)} of the {len(unique)} subjects, none of them trained on"
    _check_size(int(held.sum()), f"{fraction} of the data")
    key = data.fingerprint([dataset.cache_key, "holdout", fraction])
    return Split(_subset(dataset, ~held, f"{key}-train"), _subset(dataset, held, f"{key}-holdout"), note)


def _subset(dataset: data.Dataset, keep: np.ndarray, key: str) -> data.Dataset:
    subjects = None if dataset.subjects is None else dataset.subjects[keep]
    labels = None if dataset.labels is None else dataset.labels[keep]
    return data.Dataset(images=dataset.images[keep], source=f"{dataset.source}, {int(keep.sum())} of its slices",
                        cache_key=key, subjects=subjects, labels=labels, class_names=dataset.class_names)


def _check_size(count: int, what: str) -> None:
    if count < MIN_IMAGES:
        raise UserError(f"config.data.holdout: {what} gives {count} real images; "
                        f"an evaluation needs at least {MIN_IMAGES}")
