"""Checking a config before anything runs, and recording it in the workdir."""

import difflib
import importlib.machinery
import importlib.util
import inspect
import json
import math
import os
import traceback
from typing import Optional

import ml_collections

from mrigen.errors import UserError, first_line, writing

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG_FILE = "config.json"
AUGMENT_POLICIES = ("", "fixed", "ada")
# Fields a resumed run may change; any other difference means another experiment.
RESUMABLE_CHANGES = frozenset({
    "train.epochs", "log_every_steps", "sample_every_steps", "checkpoint_every_steps",
    "keep_checkpoints", "num_grid_samples", "data.path", "data.cache_dir",
    "eval_every_steps", "eval_num_images",
})


def validate(config) -> None:
    """Raises UserError naming the first shared field whose value cannot work.

    Fields only one model reads (train.epochs, train.epochs_per_stage, ...) are
    checked by that model's `build`.
    """
    tc = config.train
    checks = [
        ("train.batch_size", tc.batch_size >= 1, "must be at least 1"),
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
        ("train.ema_kimg", math.isfinite(tc.ema_kimg) and tc.ema_kimg >= 0, "must be non-negative and finite"),
        ("train.ema_rampup", math.isfinite(tc.ema_rampup) and tc.ema_rampup >= 0,
         "must be non-negative and finite"),
        ("train.augment", tc.augment in AUGMENT_POLICIES, f"must be one of {AUGMENT_POLICIES}"),
        ("train.augment_p", 0 <= tc.augment_p <= 1, "must be in [0, 1]"),
        ("train.ada_target", 0 < tc.ada_target < 1, "must be in (0, 1)"),
        ("train.ada_interval", tc.ada_interval >= 1, "must be at least 1"),
        ("train.ada_kimg", math.isfinite(tc.ada_kimg) and tc.ada_kimg > 0, "must be positive and finite"),
        ("train.r1_gamma", math.isfinite(tc.r1_gamma) and tc.r1_gamma >= 0, "must be non-negative and finite"),
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
    from mrigen import labels  # Deferred: it imports JAX.

    labels.parse(config.data.get("labels", ""))
    if config.data.get("balanced", False) and not config.data.get("labels", ""):
        raise UserError("config.data.balanced: True needs labels to balance; set data.labels")


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


def override(config, values: dict):
    """`config` with each {"data.path": value, ...} set in place (the field's sections must exist); returns it."""
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def to_json(config) -> str:
    return json.dumps(config.to_dict() if hasattr(config, "to_dict") else config, indent=2, sort_keys=True)


def load(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with (its config.json)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(workdir):
        raise UserError(f"workdir: {workdir} does not exist; train a run there first (--mode=train), "
                        f"or pass the run's folder as --workdir")
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
    existing = nearest_existing(os.path.abspath(workdir))
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


def nearest_existing(path: str) -> str:
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


# Fields added to mrigen after runs were recorded without them, and the value such a run had
# (the models read a missing one as this; tests check they agree).
ADDED_FIELDS = {"arch.upsample": "transposed", "arch.residual_blocks": 16}


def config_differences(previous, current) -> list[tuple[str, object, object]]:
    """(field, previous value, current value) for each field a resumed run may not change.

    A field the previous config lacks and the current one leaves off ("", 0,
    False) is no change: it was added to mrigen after that run started.
    Fields of ADDED_FIELDS it lacks had the value recorded there.
    """
    new = flatten(json.loads(to_json(current)))
    old = {**{k: v for k, v in ADDED_FIELDS.items() if k in new}, **flatten(previous)}
    return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k) and (k in old or new.get(k))]


def write_config(workdir: str, config) -> None:
    """Creates the workdir if needed and records the config in its config.json (atomically)."""
    path = os.path.join(workdir, CONFIG_FILE)
    with writing(path):
        os.makedirs(workdir, exist_ok=True)
        temporary = path + ".tmp"
        with open(temporary, "w") as f:
            f.write(to_json(config))
        os.replace(temporary, path)


def from_file(path: str, variant: Optional[str] = None) -> ml_collections.ConfigDict:
    """`get_config(variant)` of a config file such as configs/dcgan.py (its exceptions propagate)."""
    if not os.path.isfile(path):
        raise UserError(f"config: {path} does not exist")
    return _load_module(path).get_config(variant)


def _load_module(path: str):
    name = f"mrigen_config_{os.path.splitext(os.path.basename(path))[0]}"
    # SourceFileLoader, as ml_collections uses: it reads any file name, not only *.py.
    loader = importlib.machinery.SourceFileLoader(name, path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    loader.exec_module(module)
    return module


def from_flag(spec: str, given: bool = True) -> ml_collections.ConfigDict:
    """The config `--config=spec` names (file.py or file.py:variant), loaded as ml_collections loads it.

    Raises a one-line UserError for a file that is missing, a folder, unreadable,
    raises on import or has no get_config, and for a variant get_config refuses.
    given: False when spec is --config's default (the message says so).
    """
    path, *variant = spec.split(":", 1)  # ml_collections calls get_config(*variant)
    _check_config_file(path, "" if given else " (the default)")
    try:
        module = _load_module(path)
    except SyntaxError as e:
        raise UserError(f"--config: {_where(e, path)}SyntaxError: {e.msg}") from None
    except Exception as e:  # a config file is user code: whatever it raises is reported on one line
        raise UserError(f"--config: {_where(e, path)}{type(e).__name__}: {first_line(e)}") from None
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise UserError(f"--config: {path} defines no get_config(variant=None)")
    if variant and not _accepts_one_argument(get_config):
        raise UserError(f"--config: {path} has no variants (its get_config takes no argument); "
                        f"drop ':{variant[0]}'")
    try:
        config = get_config(*variant)
    except ValueError as e:  # the config files' way to refuse a variant; the message names the known ones
        raise UserError(f"--config: {first_line(e)}" if variant else
                        f"--config: {_where(e, path)}ValueError: {first_line(e)}") from None
    except KeyError as e:
        if variant and e.args[:1] == (variant[0],):
            raise UserError(f"--config: unknown variant {variant[0]!r} of {path}") from None
        raise UserError(f"--config: {_where(e, path)}KeyError: {first_line(e)}") from None
    except Exception as e:
        raise UserError(f"--config: {_where(e, path)}{type(e).__name__}: {first_line(e)}") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(f"--config: {spec}: get_config returned {type(config).__name__}, not a ConfigDict")
    return config


def _check_config_file(path: str, default: str) -> None:
    if not path:
        raise UserError("--config: empty path; give a config file such as configs/dcgan.py")
    if os.path.isdir(path):
        names = _config_files(path)
        raise UserError(f"--config: {path}{default} is a folder, not a config file"
                        + (f"; it holds {', '.join(names)}" if names else ""))
    if not os.path.exists(path):
        raise UserError(f"--config: {path}{default} does not exist{_missing_config_hint(path)}")
    if not os.path.isfile(path):
        raise UserError(f"--config: {path}{default} is not a regular file")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise UserError(f"--config: cannot read {path} ({e.strerror})") from None


def _config_files(folder: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(folder) if n.endswith(".py") and not n.startswith("_"))
    except OSError:
        return []


def _missing_config_hint(path: str) -> str:
    if not os.path.isabs(path):
        in_repo = os.path.join(REPO_ROOT, path)
        if os.path.isfile(in_repo) and os.path.abspath(path) != in_repo:
            return f" in {os.getcwd()} (relative paths are from there); did you mean {in_repo}?"
    folder = os.path.dirname(path)
    names = _config_files(folder or ".")
    close = difflib.get_close_matches(os.path.basename(path), names, n=1)
    if close:
        return f" (did you mean {os.path.join(folder, close[0])}?)"
    return f" ({folder or '.'}/ holds {', '.join(names)})" if names else ""


def _accepts_one_argument(function) -> bool:
    try:
        inspect.signature(function).bind("variant")
    except TypeError:
        return False
    except ValueError:  # no signature to inspect: let the call decide
        pass
    return True


def _where(error: BaseException, path: str) -> str:
    """'configs/x.py, line 12: ' for the deepest frame of `error` in the config file at `path`."""
    if isinstance(error, SyntaxError) and error.lineno:
        return f"{path}, line {error.lineno}: "
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
             if os.path.abspath(frame.filename) == os.path.abspath(path)]
    return f"{path}, line {lines[-1]}: " if lines else f"{path}: "


def check_override(config, dotted: str) -> None:
    """Raises UserError when `--config.<dotted>` names no field of `config`.

    A miss names the group it was looked up in and the closest field:
    "--config.data.pth: no such field 'pth' in data (did you mean 'path'?)".
    """
    from ml_collections.config_flags import config_path

    try:
        parts = config_path.split(dotted)
    except Exception:  # a malformed path: ml_collections' own parser reports it
        return
    node, walked = config, []
    for part in parts:
        if not isinstance(part, str) or node is None:  # an index, or a placeholder ml_collections fills in
            return
        group = ".".join(walked)
        if not isinstance(node, (ml_collections.ConfigDict, dict)):
            raise UserError(f"--config.{dotted}: {group} is a {type(node).__name__}, not a group of fields")
        if part not in node:
            where = f" in {group}" if group else ""
            close = difflib.get_close_matches(part, list(node.keys()), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; its fields: {', '.join(sorted(node.keys()))}"
            raise UserError(f"--config.{dotted}: no such field {part!r}{where}{hint}")
        node = node[part]
        walked.append(part)
