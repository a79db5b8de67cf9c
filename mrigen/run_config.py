"""Checking a config before anything runs, and recording it in the workdir."""

import json
import math
import os
from typing import Optional

import ml_collections

from mrigen.errors import UserError

CONFIG_FILE = "config.json"
# Fields a resumed run may change; any other difference means another experiment.
RESUMABLE_CHANGES = frozenset({
    "train.epochs", "log_every_steps", "sample_every_steps", "checkpoint_every_steps",
    "keep_checkpoints", "num_grid_samples", "data.path", "data.cache_dir",
    "eval_every_steps", "eval_num_images",
})


def validate(config) -> None:
    """Raises UserError naming the first field whose value cannot work."""
    tc = config.train
    checks = [
        ("train.batch_size", tc.batch_size >= 1, "must be at least 1"),
        ("train.epochs", math.isfinite(tc.epochs) and tc.epochs > 0, "must be positive and finite"),
        ("train.update_ratio", tc.update_ratio >= 1, "must be at least 1"),
        ("train.learning_rate", math.isfinite(tc.learning_rate) and tc.learning_rate > 0,
         "must be positive and finite"),
        ("train.b1", 0 <= tc.b1 < 1, "must be in [0, 1)"),
        ("train.b2", 0 <= tc.b2 < 1, "must be in [0, 1)"),
        ("train.real_target", 0 < tc.real_target <= 1, "must be in (0, 1]"),
        ("train.penalty_weight", math.isfinite(tc.penalty_weight) and tc.penalty_weight >= 0,
         "must be non-negative and finite"),
        ("train.clip_value", math.isfinite(tc.clip_value) and tc.clip_value > 0,
         "must be positive and finite"),
        ("train.drift", math.isfinite(tc.drift) and tc.drift >= 0, "must be non-negative and finite"),
        ("arch.width", math.isfinite(config.arch.width) and config.arch.width > 0,
         "must be positive and finite"),
        ("arch.latent_dim", config.arch.latent_dim >= 1, "must be at least 1"),
        ("data.resolution", config.data.resolution >= 4 and _power_of_two(config.data.resolution),
         "must be a power of two of at least 4"),
        ("data.min_foreground", 0 <= config.data.min_foreground <= 1, "must be in [0, 1]"),
        ("log_every_steps", config.log_every_steps >= 1, "must be at least 1"),
        ("sample_every_steps", config.sample_every_steps >= 1, "must be at least 1"),
        ("checkpoint_every_steps", config.checkpoint_every_steps >= 1, "must be at least 1"),
        ("keep_checkpoints", config.keep_checkpoints >= 1, "must be at least 1"),
        ("num_grid_samples", config.num_grid_samples >= 1, "must be at least 1"),
    ]
    for field, ok, requirement in checks:
        if not ok:
            raise UserError(f"config.{field}: {_get(config, field)!r} {requirement}")


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _get(config, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


def flatten(config, prefix: str = "") -> dict:
    """{'train.batch_size': 64, ...} from a (nested) ConfigDict or dict."""
    flat = {}
    for key, value in (config.items() if hasattr(config, "items") else []):
        name = f"{prefix}{key}"
        if isinstance(value, (dict, ml_collections.ConfigDict)):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def to_json(config) -> str:
    return json.dumps(config.to_dict() if hasattr(config, "to_dict") else config, indent=2, sort_keys=True)


def load(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with (its config.json)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise UserError(f"{path}: not found; is {workdir} a mrigen workdir?")
    try:
        with open(path) as f:
            return ml_collections.ConfigDict(json.load(f))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable config ({e})") from None


def check_workdir(workdir: str, config) -> None:
    """Raises UserError if `workdir` cannot hold this run; creates and writes nothing.

    Refused: a file, a folder that cannot be created or written, and a workdir
    whose config.json records another experiment (see RESUMABLE_CHANGES).
    """
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"workdir: {workdir} exists and is not a folder")
    existing = _nearest_existing(os.path.abspath(workdir))
    if not os.path.isdir(existing):
        raise UserError(f"workdir: cannot create {workdir}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"workdir: {existing} is not writable")
    if os.path.exists(os.path.join(workdir, CONFIG_FILE)):
        differences = config_differences(load(workdir), config)
        if differences:
            shown = ", ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in differences[:4])
            raise UserError(f"workdir: {workdir} holds a run with another config ({shown}); "
                            f"use a new --workdir to start a new run")


def _nearest_existing(path: str) -> str:
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def config_differences(previous, current) -> list[tuple[str, object, object]]:
    """(field, previous value, current value) for each field a resumed run may not change."""
    old, new = flatten(previous), flatten(json.loads(to_json(current)))
    return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k)]


def write_config(workdir: str, config) -> None:
    """Creates the workdir if needed and records the config in its config.json (atomically)."""
    path = os.path.join(workdir, CONFIG_FILE)
    try:
        os.makedirs(workdir, exist_ok=True)
        temporary = path + ".tmp"
        with open(temporary, "w") as f:
            f.write(to_json(config))
        os.replace(temporary, path)
    except OSError as e:
        raise UserError(f"workdir: cannot write {path} ({e.strerror})") from None


def from_file(path: str, variant: Optional[str] = None) -> ml_collections.ConfigDict:
    """`get_config(variant)` of a config file such as configs/dcgan.py."""
    import importlib.util

    if not os.path.isfile(path):
        raise UserError(f"config: {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"mrigen_config_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)
