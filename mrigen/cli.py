"""What each `main.py --mode` does, given the parsed config and flags."""

import logging
import os

import jax

from mrigen import evaluation, images, sampling, train
from mrigen.errors import UserError

MODES = ["train", "sample", "interpolate", "evaluate", "experiment", "plots"]
DRY_RUN_MODES = ("train", "experiment")


def run(mode: str, config, workdir: str, flags) -> None:
    """Dispatches one mode; bad input raises UserError."""
    if not workdir:
        raise UserError("--workdir: required (the folder of the run)")
    if mode not in MODES:
        raise UserError(f"--mode: unknown mode {mode!r}; choose one of {MODES}")
    check_config_kind(mode, config)
    if flags.dry_run:
        dry_run(mode, config)
        return
    logging.info("JAX devices: %s", jax.devices())
    if mode == "train":
        train.train(config, workdir)
    elif mode == "sample":
        sample(workdir, flags)
    elif mode == "interpolate":
        sampler = sampling.load_sampler(workdir)
        steps = 10
        grid = sampling.interpolation(sampler, jax.random.PRNGKey(flags.sample_seed), rows=8, steps=steps)
        path = os.path.join(flags.out or workdir, f"interpolation_step{sampler.step}.png")
        images.save_grid(grid, path, columns=steps)
        print(f"wrote {path}: 8 latent walks of {steps} images, {sampler.resolution}x{sampler.resolution}")
    elif mode == "evaluate":
        evaluate(config, workdir, flags)
    elif mode == "experiment":
        from mrigen import experiment

        experiment.run_experiment(config, workdir)
        print(f"wrote {os.path.join(workdir, 'report.md')}, experiment.json, grids.png")
    elif mode == "plots":
        from mrigen import plots

        paths = plots.write_run_plots(workdir, flags.out or workdir)
        print("wrote " + ", ".join(paths))


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
    """Writes --num_samples generated images in --format (png, oasis, nifti) with a manifest."""
    from mrigen import export, run_config

    sampler = sampling.load_sampler(workdir)
    out = flags.out or os.path.join(workdir, f"generated_step{sampler.step}")
    config = run_config.load(workdir)
    info = {"model": config.model, "loss": config.loss, "workdir": os.path.abspath(workdir),
            "seed": flags.sample_seed}
    manifest = export.export(sampler, jax.random.PRNGKey(flags.sample_seed), flags.num_samples, out,
                             flags.format, info, overwrite=flags.overwrite,
                             slices_per_volume=flags.slices_per_volume)
    print(f"wrote {manifest['count']} images of {sampler.resolution}x{sampler.resolution} "
          f"(checkpoint step {sampler.step}) as {len(manifest['files'])} {flags.format} files "
          f"and manifest.json to {out}")


def evaluate(config, workdir: str, flags) -> None:
    if flags.eval_images:
        out = flags.out or os.path.join(workdir, "eval_" + os.path.basename(os.path.normpath(flags.eval_images)))
        _, out = evaluation.evaluate_folder(config, flags.eval_images, out, flags.sample_seed)
    else:
        _, out = evaluation.evaluate_workdir(config, workdir, flags.out, flags.num_eval, flags.sample_seed)
    with open(os.path.join(out, "report.md")) as f:
        print(f.read())
    print(f"wrote {out}/eval.json, report.md, real_vs_generated.png, closest_pairs.png")
