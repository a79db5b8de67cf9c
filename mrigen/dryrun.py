"""`--dry_run`: what a command would train, without training or writing to the workdir.

Prints the resolved config, the dataset found (count, size, source), the
schedule and the parameter counts; shapes come from `jax.eval_shape`, so no
weights are allocated.
"""

import jax
import numpy as np

from mrigen import holdout, losses, models, parallel, run_config, train
from mrigen.data import Dataset
from mrigen.state import create_optimizer, initial_state


def parameter_counts(config, class_names: tuple = ()) -> dict:
    """{'generator': n, 'discriminator': m}: trainable parameters at the last (largest) stage."""
    arch = models.build(config, class_names)
    shapes = jax.eval_shape(lambda: initial_state(arch, arch.stages[-1], create_optimizer(config.train),
                                                  config.seed, config.train.batch_size))
    count = lambda tree: sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))
    return {"generator": count(shapes["g"]["params"]), "discriminator": count(shapes["d"]["params"])}


def describe_data(dataset: Dataset) -> str:
    return (f"data: {len(dataset)} slices of {dataset.resolution}x{dataset.resolution} px "
            f"({dataset.images.nbytes / 2**20:.1f} MiB as uint8) from {dataset.source}")


def describe_training(config) -> str:
    """The text `--mode=train --dry_run` prints; bad config or data raise UserError as training would."""
    run_config.validate(config)
    arch = models.build(config)
    losses.get(config.loss)
    parallel.check_batch_size(config.train.batch_size, parallel.data_mesh())
    split = holdout.load(config.data)
    dataset = split.training
    phases = train.schedule(arch, len(dataset), config.train.batch_size)
    counts = parameter_counts(config, dataset.class_names)
    lines = [run_config.to_json(config), "", describe_data(dataset)]
    if dataset.class_names:
        lines.append(f"classes ({config.data.labels}): " + ", ".join(
            f"{name} {count}" for name, count in zip(dataset.class_names, np.bincount(dataset.labels))))
    if split.note:
        lines.append(f"held out from training: {split.note}")
    lines += [f"model: {arch.name} + {config.loss}; G {counts['generator']:,} parameters, "
              f"D {counts['discriminator']:,}",
              f"schedule: {phases[-1].end:,} steps of {config.train.batch_size} images = "
              f"{phases[-1].end * config.train.batch_size:,} images shown"]
    if len(phases) > 1:
        lines += [f"  stage {p.stage.index}: {p.stage.resolution}px{' fade-in' if p.stage.fade_in else ''}, "
                  f"steps {p.start}-{p.end - 1}" for p in phases]
    lines.append(f"devices: {jax.device_count()} x {jax.devices()[0].platform}")
    return "\n".join(lines)
