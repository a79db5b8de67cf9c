"""What each `main.py --mode` does, given the parsed config and flags."""

import logging
import os

import jax

from mrigen import evaluation, images, sampling, train
from mrigen.errors import UserError

MODES = ["train", "sample", "interpolate", "evaluate"]


def run(mode: str, config, workdir: str, flags) -> None:
    """Dispatches one mode; bad input raises UserError."""
    if not workdir:
        raise UserError("--workdir: required (the folder of the run)")
    if mode not in MODES:
        raise UserError(f"--mode: unknown mode {mode!r}; choose one of {MODES}")
    logging.info("JAX devices: %s", jax.devices())
    if mode == "train":
        train.train(config, workdir)
    elif mode == "sample":
        sampler = sampling.load_sampler(workdir)
        out = flags.out or os.path.join(workdir, f"generated_step{sampler.step}")
        paths = sampling.write_samples(sampler, jax.random.PRNGKey(flags.sample_seed),
                                       flags.num_samples, out, overwrite=flags.overwrite)
        print(f"wrote {len(paths)} images of {sampler.resolution}x{sampler.resolution} "
              f"(checkpoint step {sampler.step}) to {out}")
    elif mode == "interpolate":
        sampler = sampling.load_sampler(workdir)
        steps = 10
        grid = sampling.interpolation(sampler, jax.random.PRNGKey(flags.sample_seed), rows=8, steps=steps)
        path = os.path.join(flags.out or workdir, f"interpolation_step{sampler.step}.png")
        images.save_grid(grid, path, columns=steps)
        print(f"wrote {path}: 8 latent walks of {steps} images, {sampler.resolution}x{sampler.resolution}")
    elif mode == "evaluate":
        if flags.eval_images:
            out = flags.out or os.path.join(workdir, "eval_" + os.path.basename(os.path.normpath(flags.eval_images)))
            _, out = evaluation.evaluate_folder(config, flags.eval_images, out, flags.sample_seed)
        else:
            _, out = evaluation.evaluate_workdir(config, workdir, flags.out, flags.num_eval,
                                                       flags.sample_seed)
        with open(os.path.join(out, "report.md")) as f:
            print(f.read())
        print(f"wrote {out}/eval.json, report.md, real_vs_generated.png, closest_pairs.png")
