"""Class labels of slices, chosen by `data.labels`, and class-balanced batch draws.

  ""              none (the default): the models are unconditional.
  "folders"       the first-level sub-folders of data.path are the classes (sorted by name).
  "csv:PATH"      a CSV file with `file` and `label` columns; files relative to data.path.
  "slice_level:K" K bins of axial position: the kept slices of each volume, from
                  inferior to superior, cut into K runs of (nearly) equal length.

Labels are [N] int32 indices into the sorted class names. Everything a user
can get wrong raises a one-line UserError naming data.labels.
"""

import csv
import os
import re
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mrigen.errors import UserError

FIELD = "config.data.labels"
KINDS = ("folders", "csv", "slice_level")
MIN_CLASS_IMAGES = 4  # Fewer slices than this in a class cannot be learned, nor evaluated.
_OASIS_SPLIT = re.compile(r"^keras_png_slices_(seg_)?(train|validate|test)$")


def parse(spec) -> tuple[str, Optional[object]]:
    """('', None), ('folders', None), ('csv', path) or ('slice_level', K); UserError for anything else."""
    spec = "" if spec is None else str(spec).strip()
    kind, colon, argument = spec.partition(":")
    if not spec:
        return "", None
    if kind == "folders" and not colon:
        return kind, None
    if kind == "csv" and argument:
        return kind, argument
    if kind == "slice_level" and argument:
        try:
            bins = int(argument)
        except ValueError:
            bins = 0
        if bins >= 2:
            return kind, bins
        raise UserError(f"{FIELD}: {spec!r}: K must be a whole number of at least 2")
    raise UserError(f"{FIELD}: unknown label source {spec!r}; choose '', 'folders', 'csv:PATH' or 'slice_level:K'")


def assign(spec, root: str, files: Sequence[str], origins: np.ndarray) -> tuple[Optional[np.ndarray], tuple]:
    """The labels of a loaded set and its class names.

    root: data.path made absolute ('' for the embedded MNI152 template).
    files: the PNG files then the volumes the slices were read from.
    origins: [N] int32, the index in `files` of each slice's file.
    Returns (None, ()) when `spec` asks for no labels.
    """
    kind, argument = parse(spec)
    if not kind:
        return None, ()
    if kind == "slice_level":
        names, per_slice = _slice_levels(files, origins, argument)
    else:
        if not root or not os.path.isdir(root):
            what = "the embedded MNI152 template" if not root else root
            raise UserError(f"{FIELD}: {kind!r} needs data.path to be a folder; {what} is not one "
                            f"(slice_level:K labels volumes by axial position)")
        per_file = _folder_classes(root, files) if kind == "folders" else _csv_classes(argument, root, files)
        per_slice = [per_file[i] for i in origins]
        names = sorted(set(per_file), key=_natural)
    return _indices(names, per_slice)


def _indices(names: Sequence[str], per_slice: Sequence[str]) -> tuple[np.ndarray, tuple]:
    index = {name: i for i, name in enumerate(names)}
    labels = np.array([index[name] for name in per_slice], np.int32)
    counts = np.bincount(labels, minlength=len(names))
    if len(names) < 2:
        raise UserError(f"{FIELD}: found {len(names)} class ({', '.join(names)}); labels need at least 2")
    for name, count in zip(names, counts):
        if count < MIN_CLASS_IMAGES:
            raise UserError(f"{FIELD}: class {name!r} has {count} slices; each class needs at least "
                            f"{MIN_CLASS_IMAGES}")
    return labels, tuple(names)


def _natural(name: str):
    """Sort key: '2' before '10', then names as text."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _folder_classes(root: str, files: Sequence[str]) -> list[str]:
    classes = []
    for path in files:
        parts = os.path.relpath(path, root).split(os.sep)
        if len(parts) < 2:
            raise UserError(f"{FIELD}: {path} is not inside a class sub-folder of {root} ('folders')")
        classes.append(parts[0])
    splits = sorted(name for name in set(classes) if _OASIS_SPLIT.match(name))
    if splits:
        raise UserError(f"{FIELD}: the sub-folders of {root} are OASIS's splits ({', '.join(splits)}), "
                        f"not classes; give the classes as csv:PATH")
    return classes


def _csv_classes(csv_path: str, root: str, files: Sequence[str]) -> list[str]:
    """The label of each file, from the CSV's rows; every file needs exactly one."""
    csv_path = os.path.expanduser(csv_path)
    wanted = {os.path.normpath(os.path.relpath(path, root)): i for i, path in enumerate(files)}
    per_file = [None] * len(files)
    try:
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"file", "label"} <= {n.strip() for n in reader.fieldnames}:
                raise UserError(f"{FIELD}: {csv_path} needs a header with 'file' and 'label' columns "
                                f"(it has {', '.join(reader.fieldnames or []) or 'none'})")
            for row in reader:
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                where = f"{csv_path}, line {reader.line_num}"
                relative = os.path.normpath(row["file"]) if row["file"] else ""
                if relative not in wanted:
                    raise UserError(f"{FIELD}: {where}: {row['file']!r} is not an image file under {root}")
                _check_class_name(row["label"], where)
                i = wanted[relative]
                if per_file[i] not in (None, row["label"]):
                    raise UserError(f"{FIELD}: {where}: {row['file']} has two labels, "
                                    f"{per_file[i]!r} and {row['label']!r}")
                per_file[i] = row["label"]
    except OSError as e:
        raise UserError(f"{FIELD}: cannot read {csv_path} ({e.strerror})") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"{FIELD}: {csv_path} is not a readable CSV file ({e})") from None
    for path, label in zip(files, per_file):
        if label is None:
            raise UserError(f"{FIELD}: {path} has no row in {csv_path}")
    return per_file


def _check_class_name(name: str, where: str) -> None:
    """A class name becomes a folder of --mode=sample's output: no path separators, not empty or dotted."""
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        raise UserError(f"{FIELD}: {where}: label {name!r} cannot name a folder (empty, starts with '.', or has "
                        f"a slash)")


def _slice_levels(files: Sequence[str], origins: np.ndarray, bins: int) -> tuple[list[str], list[str]]:
    pngs = [path for path in files if path.lower().endswith(".png")]
    if pngs:
        raise UserError(f"{FIELD}: slice_level needs volumes; {pngs[0]} is a PNG slice, whose place in its "
                        f"volume is unknown")
    names = [f"level_{k}" for k in range(bins)]
    per_slice = []
    for origin in np.unique(origins):  # The slices of one volume are consecutive, inferior first.
        count = int(np.sum(origins == origin))
        per_slice += [names[i * bins // count] for i in range(count)]
    return names, per_slice


# ---------------------------------------------------------------- balanced draws


def class_table(labels: np.ndarray, num_classes: int) -> dict:
    """What `balanced_batch_indices` needs: the slices sorted by class, and each class's start and count."""
    order = np.argsort(labels, kind="stable").astype(np.int32)
    counts = np.bincount(labels, minlength=num_classes).astype(np.int32)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
    return {"order": order, "starts": starts, "counts": counts}


def balanced_batch_indices(key: jax.Array, step: jax.Array, table: dict, batch_size: int) -> jax.Array:
    """Indices of batch `step` with the classes in turn (slot i has class i mod C), images drawn at random.

    Jittable; depends only on (key, step), so a resumed run draws the same batches.
    """
    order, starts, counts = (jnp.asarray(table[name]) for name in ("order", "starts", "counts"))
    classes = jnp.arange(batch_size) % counts.shape[0]
    u = jax.random.uniform(jax.random.fold_in(key, step), (batch_size,))
    within = jnp.minimum((u * counts[classes]).astype(jnp.int32), counts[classes] - 1)
    return order[starts[classes] + within]


def device_data(dataset, balanced: bool = False):
    """What the step reads its batches from: the images, or for labeled data a dict of images and labels.

    balanced: add the class table of balanced_batch_indices (data.balanced).
    """
    if dataset.labels is None:
        return dataset.images
    on_device = {"images": dataset.images, "labels": dataset.labels}
    if balanced:
        on_device["classes"] = class_table(dataset.labels, len(dataset.class_names))
    return on_device
