"""Checking a config before anything runs, and recording it in the workdir."""

import json
import os
from typing import Optional

import ml_collections

from mrigen.errors import UserError

CONFIG_FILE = "config.json"
# Fields a resumed run may change; any other difference means another experiment.
RESUMABLE_CHANGES = frozenset({
    "train.epochs", "log_every_steps", "sample_every_steps", "checkpoint_every_steps",
    "keep_checkpoints", "num_grid_samples", "data.path", "data.cache_dir",
})


def validate(config) -> None:
    """Raises UserError naming the first field whose value cannot work."""
    tc = config.train
    checks = [
        ("train.batch_size", tc.batch_size >= 1, "must be at least 1"),
        ("train.epochs", tc.epochs > 0, "must be positive"),
        ("train.update_ratio", tc.update_ratio >= 1, "must be at least 1"),
        ("train.learning_rate", tc.learning_rate > 0, "must be positive"),
        ("train.real_target", 0 < tc.real_target <= 1, "must be in (0, 1]"),
        ("train.penalty_weight", tc.penalty_weight >= 0, "must be non-negative"),
        ("train.clip_value", tc.clip_value > 0, "must be positive"),
        ("arch.width", config.arch.width > 0, "must be positive"),
        ("arch.latent_dim", config.arch.latent_dim >= 1, "must be at least 1"),
        ("data.resolution", config.data.resolution >= 4 and _power_of_two(config.data.resolution),
         "must be a power of two of at least 4"),
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


def prepare_workdir(workdir: str, config) -> None:
    """Creates the workdir and writes config.json; refuses a workdir of another experiment."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"workdir: {workdir} exists and is not a folder")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise UserError(f"workdir: cannot create {workdir} ({e.strerror})") from None
    if not os.access(workdir, os.W_OK):
        raise UserError(f"workdir: {workdir} is not writable")
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(path):
        previous = flatten(load(workdir))
        current = flatten(json.loads(to_json(config)))
        differences = sorted(k for k in set(previous) | set(current)
                             if k not in RESUMABLE_CHANGES and previous.get(k) != current.get(k))
        if differences:
            shown = ", ".join(f"{k}: {previous.get(k)!r} -> {current.get(k)!r}" for k in differences[:4])
            raise UserError(f"workdir: {workdir} holds a run with another config ({shown}); "
                            f"use a new --workdir to start a new run")
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        f.write(to_json(config))
    os.replace(temporary, path)


def from_file(path: str, variant: Optional[str] = None) -> ml_collections.ConfigDict:
    """`get_config(variant)` of a config file such as configs/dcgan.py."""
    import importlib.util

    if not os.path.isfile(path):
        raise UserError(f"config: {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"mrigen_config_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)
