"""What each `main.py --mode` does, given the parsed config and flags."""

import difflib
import logging
import os
import re

import jax
from absl import flags as absl_flags

from mrigen import run_config
from mrigen.errors import UserError, first_line

MODES = ["train", "sample", "interpolate", "evaluate", "experiment", "plots", "utility"]
DRY_RUN_MODES = ("train", "experiment")
OUT_MODES = ("sample", "interpolate", "evaluate", "plots", "utility")
PER_CLASS_MODES = ("sample", "utility")
UTILITY_SEEDS = 3  # --mode=utility: classifier seeds per training set
UTILITY_STEPS = 1000  # --mode=utility: training steps of each classifier
# --config's default: the repository's configs/dcgan.py when the current folder has none.
DEFAULT_CONFIG = ("configs/dcgan.py" if os.path.isfile("configs/dcgan.py")
                  else os.path.join(run_config.REPO_ROOT, "configs", "dcgan.py"))
WORKDIRS = "workdirs"  # Without --workdir, a run goes to workdirs/<config file stem>[_<variant>].


def run(mode: str, config, workdir: str, flags) -> None:
    """Dispatches one mode; bad input raises UserError. No workdir: the config's default one."""
    if mode not in MODES:
        raise UserError(f"--mode: unknown mode {mode!r}; choose one of {MODES}")
    check_config_kind(mode, config)
    check_flags(mode, flags)
    if not workdir:
        workdir = default_workdir(config_spec(flags))
        print(f"workdir: {workdir}", flush=True)
    if flags.dry_run:
        dry_run(mode, config)
        return
    logging.info("JAX devices: %s", jax.devices())
    # Each mode imports what it uses: a bad flag is reported without loading the trainer or the metrics.
    if mode == "train":
        from mrigen import train

        train.train(config, workdir)
    elif mode == "sample":
        sample(workdir, flags)
    elif mode == "interpolate":
        interpolate(workdir, flags)
    elif mode == "evaluate":
        evaluate(config, workdir, flags)
    elif mode == "experiment":
        from mrigen import experiment

        experiment.run_experiment(config, workdir)
        if jax.process_index() == 0:  # process 0 alone writes the report
            print(f"wrote {os.path.join(workdir, 'report.md')}, experiment.json, grids.png")
    elif mode == "plots":
        from mrigen import plots

        paths = plots.write_run_plots(workdir, flags.out or workdir)
        print("wrote " + ", ".join(paths))
    elif mode == "utility":
        utility(config, workdir, flags)


def default_workdir(config_spec: str) -> str:
    """'configs/dcgan.py:smoke' -> 'workdirs/dcgan_smoke' (relative to the current folder)."""
    path, _, variant = config_spec.partition(":")
    name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0] + (f"_{variant}" if variant else "")
    return os.path.join(WORKDIRS, re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run")


def config_spec(flags) -> str:
    """--config as given (file.py or file.py:variant), or its default."""
    try:
        return flags["config"].config_filename
    except (KeyError, absl_flags.Error):
        return DEFAULT_CONFIG


def config_overrides(flags) -> dict:
    """The --config.FIELD=VALUE given on the command line, as {"data.path": VALUE}."""
    try:
        return dict(flags["config"].override_values)
    except (KeyError, AttributeError, absl_flags.Error):
        return {}


def evaluation_config(config, workdir: str, overrides: dict):
    """The config whose data a run is evaluated against: the run's own (its config.json, so its data.path and
    data.holdout), with the command line's --config overrides on top; `config` when the workdir has none."""
    if not os.path.isfile(os.path.join(workdir, run_config.CONFIG_FILE)):
        return config
    return run_config.override(run_config.load(workdir), overrides)


def check_flags(mode: str, flags) -> None:
    """Flags that cannot work with `mode`, named; checked before anything is read or written."""
    if flags.out is not None and mode not in OUT_MODES:
        raise UserError(f"--out: works with --mode={'/'.join(OUT_MODES)}, not {mode} "
                        f"(training writes into --workdir)")
    if flags.eval_images is not None and mode != "evaluate":
        raise UserError(f"--eval_images: works with --mode=evaluate, not {mode}")
    if flags.per_class and mode not in PER_CLASS_MODES:
        raise UserError(f"--per_class: works with --mode={' or '.join(PER_CLASS_MODES)}, not {mode}")
    if flags.per_class < 0:
        raise UserError(f"--per_class: {flags.per_class} must be at least 0 (0: --mode=sample makes --num_samples "
                        f"images in all, --mode=utility as many of each class as the largest real one has)")
    for name in ("utility_seeds", "utility_steps"):
        if _given(flags, name) and mode != "utility":
            raise UserError(f"--{name}: works with --mode=utility, not {mode}")
        if getattr(flags, name) < 1:
            raise UserError(f"--{name}: {getattr(flags, name)} must be at least 1")
    if flags.num_eval < 0:
        raise UserError(f"--num_eval: {flags.num_eval} must be at least 0 (0: as many as the held-out real half)")
    if flags.out is not None:
        check_out(flags.out)


def _given(flags, name: str) -> bool:
    """Whether flag `name` was on the command line (not just at its default)."""
    try:
        return bool(flags[name].present)
    except (KeyError, TypeError, AttributeError, absl_flags.Error):
        return False


def check_out(out: str) -> None:
    """Raises UserError if --out cannot be (or become) a writable folder; creates nothing."""
    if not out:
        raise UserError("--out: empty path")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out: {out} exists and is not a folder")
    existing = run_config.nearest_existing(os.path.abspath(out))
    if not os.path.isdir(existing):
        raise UserError(f"--out: cannot create {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out: {existing} is not writable")


def configure_logging() -> None:
    """mrigen's INFO lines, without the noise of the libraries under it."""
    # Orbax logs every file it writes through absl at INFO; mrigen logs through
    # the standard library, so this keeps mrigen's INFO lines and Orbax's warnings.
    logging.getLogger("absl").setLevel(logging.WARNING)
    # JAX probes every platform it knows and logs each one missing at INFO
    # ("Unable to initialize backend 'tpu' ... libtpu.so" on every machine
    # without a TPU). Only those lines are dropped: which platform JAX picks
    # is untouched, and its warnings (a GPU found but unusable) still show.
    logging.getLogger("jax._src.xla_bridge").addFilter(_drop_backend_probe_lines)


def _drop_backend_probe_lines(record: logging.LogRecord) -> bool:
    return not (record.levelno < logging.WARNING
                and str(record.msg).startswith("Unable to initialize backend"))


def parse_flags(flag_values, argv: list[str]) -> list[str]:
    """absl's parsing of argv, with what a user can get wrong raised as one-line UserErrors.

    --config is checked first, as ml_collections will load it (file, variant,
    every --config.<field> override against the loaded config), so a missing
    file or a mistyped field is named instead of surfacing as a traceback.
    Returns argv without the flags (the program name only: arguments are refused).
    """
    try:
        args = flag_values.read_flags_from_files(argv[1:], force_gnu=False)
    except absl_flags.Error as e:
        raise UserError(first_line(e)) from None
    specs, overrides = _config_arguments(args)
    config = None
    for spec in specs or [DEFAULT_CONFIG]:
        config = run_config.from_flag(spec, given=bool(specs))
    for name in overrides:
        run_config.check_override(config, name)
    try:
        remaining = flag_values(argv)
    except absl_flags.IllegalFlagValueError as e:
        raise UserError(_bad_value_message(e, flag_values, config)) from None
    except absl_flags.UnrecognizedFlagError as e:
        close = difflib.get_close_matches(e.flagname, list(flag_values), n=1)
        raise UserError(f"--{e.flagname}: unknown flag" + (f" (did you mean --{close[0]}?)" if close else "")
                        + "; python main.py --help lists them") from None
    except (absl_flags.Error, KeyError, ValueError, AttributeError, TypeError, OSError) as e:
        raise UserError(first_line(e)) from None
    if len(remaining) > 1:
        raise UserError(f"unexpected argument {remaining[1]!r}: flags take the form --name=value "
                        f"(a config file is --config=FILE.py)")
    return remaining


def _config_arguments(args: list[str]) -> tuple[list[str], list[str]]:
    """The values of every --config in args, in order, and the field paths of its overrides."""
    specs, overrides = [], []
    for i, arg in enumerate(args):
        if arg == "--":
            break
        given = re.match(r"^--?config(=(.*))?$", arg, re.DOTALL)
        if given:
            value = given.group(2) if given.group(1) else (args[i + 1] if i + 1 < len(args) else None)
            if value is not None:
                specs.append(value)
        override = re.match(r"^--?(no)?config\.([^=]+)", arg)  # as ml_collections finds them
        if override:
            overrides.append(override.group(2))
    return specs, overrides


_KINDS = [(bool, "true or false"), (int, "an integer"), (float, "a number")]


def _bad_value_message(error, flag_values, config) -> str:
    """'--config.train.batch_size: expected an integer, got 'abc'' from absl's 'flag --NAME=VALUE: why'."""
    message = str(error)
    for name in sorted(flag_values, key=len, reverse=True):
        prefix = f"flag --{name}="
        if not message.startswith(prefix):
            continue
        value, _, reason = message[len(prefix):].partition(": ")
        if name.startswith("config."):
            field = name[len("config."):]
            group = _field_value(config, field)
            if hasattr(group, "keys"):
                return (f"--{name}: {field} is a group of fields ({', '.join(sorted(group.keys()))}); "
                        f"set one of them, e.g. --{name}.{sorted(group.keys())[0]}=...")
            expected = next((words for kind, words in _KINDS if type(group) is kind), None)
        else:
            expected = _parser_kind(flag_values[name].parser)
        if expected:
            return f"--{name}: expected {expected}, got {value!r}"
        return f"--{name}: {first_line(reason) if reason else 'invalid value'} (got {value!r})"
    return first_line(error)


def _field_value(config, field: str):
    from ml_collections.config_flags import config_path

    try:
        return config_path.get_value(field, config)
    except Exception:
        return None


def _parser_kind(parser):
    if isinstance(parser, absl_flags.EnumParser):
        return "one of " + ", ".join(parser.enum_values)
    for kind, words in [(absl_flags.BooleanParser, "true or false"), (absl_flags.IntegerParser, "an integer"),
                        (absl_flags.FloatParser, "a number")]:
        if isinstance(parser, kind):
            return words
    return None


def check_config_kind(mode: str, config) -> None:
    """An experiment config only for --mode=experiment, and a run's config for every other mode."""
    is_experiment = "models" in config and "model" not in config
    if mode == "experiment" and not is_experiment:
        raise UserError("--config: not an experiment config (it has no `models` field); "
                        "use --config=configs/experiment.py")
    if mode != "experiment" and is_experiment:
        raise UserError(f"--config: an experiment config works only with --mode=experiment, not {mode}")


def dry_run(mode: str, config) -> None:
    """Prints what `mode` would do with `config`; trains and writes nothing."""
    if mode not in DRY_RUN_MODES:
        raise UserError(f"--dry_run: works with --mode={' or '.join(DRY_RUN_MODES)}, not {mode}")
    if mode == "experiment":
        from mrigen import experiment

        print(experiment.describe(config))
    else:
        from mrigen import dryrun

        print(dryrun.describe_training(config))


def sample(workdir: str, flags) -> None:
    """Writes --num_samples generated images (or --per_class of each class) in --format with a manifest."""
    from mrigen import export, sampling

    sampler = sampling.load_sampler(workdir, ema=not flags.raw_generator)
    out = flags.out or os.path.join(workdir, f"generated_step{sampler.step}")
    config = run_config.load(workdir)
    info = {"model": config.model, "loss": config.loss, "workdir": os.path.abspath(workdir),
            "seed": flags.sample_seed, "generator": "moving average" if sampler.ema else "raw"}
    manifest = export.export(sampler, jax.random.PRNGKey(flags.sample_seed), flags.num_samples, out,
                             flags.format, info, overwrite=flags.overwrite,
                             slices_per_volume=flags.slices_per_volume, per_class=flags.per_class)
    classes = f" ({flags.per_class} of each of {', '.join(sampler.class_names)})" if flags.per_class else ""
    generator = ", moving average of G" if sampler.ema else ""
    print(f"wrote {manifest['count']} images{classes} of {sampler.resolution}x{sampler.resolution} "
          f"(checkpoint step {sampler.step}{generator}) as {len(manifest['files'])} {flags.format} files "
          f"and manifest.json to {out}")


def interpolate(workdir: str, flags, rows: int = 8, steps: int = 10) -> None:
    """Writes a grid of `rows` latent walks of `steps` images each."""
    from mrigen import images, sampling

    sampler = sampling.load_sampler(workdir, ema=not flags.raw_generator)
    grid = sampling.interpolation(sampler, jax.random.PRNGKey(flags.sample_seed), rows=rows, steps=steps)
    path = os.path.join(flags.out or workdir, f"interpolation_step{sampler.step}.png")
    images.save_grid(grid, path, columns=steps)
    within = f", row i within class i mod {len(sampler.class_names)}" if sampler.class_names else ""
    print(f"wrote {path}: {rows} latent walks of {steps} images, {sampler.resolution}x{sampler.resolution}{within}")


def evaluate(config, workdir: str, flags) -> None:
    from mrigen import evaluation

    if flags.eval_images:
        out = flags.out or os.path.join(workdir, "eval_" + os.path.basename(os.path.normpath(flags.eval_images)))
        _, out = evaluation.evaluate_folder(config, flags.eval_images, out, flags.sample_seed)
    else:
        _, out = evaluation.evaluate_workdir(evaluation_config(config, workdir, config_overrides(flags)), workdir,
                                             flags.out, flags.num_eval, flags.sample_seed, ema=not flags.raw_generator)
    with open(os.path.join(out, "report.md")) as f:
        print(f.read())
    print(f"wrote {out}/eval.json, report.md, real_vs_generated.png, closest_pairs.png, spectrum.png")


def utility(config, workdir: str, flags) -> None:
    """Trains the fixed classifier on real, real + synthetic and synthetic images; prints and writes the table."""
    from mrigen import utility as utility_lib

    _, out = utility_lib.run_utility(evaluation_config(config, workdir, config_overrides(flags)), workdir, flags.out,
                                     flags.per_class, flags.utility_seeds, flags.utility_steps,
                                     ema=not flags.raw_generator, seed=flags.sample_seed)
    with open(os.path.join(out, "utility.md")) as f:
        print(f.read())
    print(f"wrote {os.path.join(out, 'utility.json')}, utility.md")
