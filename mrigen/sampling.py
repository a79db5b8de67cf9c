"""Generating images from a trained generator, from Python or the command line.

    sampler = mrigen.sampling.load_sampler("workdirs/dcgan")
    images = sampler(jax.random.PRNGKey(0), 16)   # [16, R, R, 1] float32 in [-1, 1]

A conditional run's sampler takes labels too, [n] int32 indices into
`sampler.class_names`: `sampler(key, 16, jnp.full(16, 1))`. Without them it
makes the classes in turn (image i of class i mod C).
"""

import dataclasses
import functools
import os
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mrigen import checkpoint, images, models, run_config
from mrigen.errors import UserError
from mrigen.models.base import Architecture, Stage


def classes_in_turn(n: int, num_classes: int) -> jax.Array:
    """[n] int32 labels 0, 1, ..., C - 1, 0, 1, ...: what a conditional G makes when no labels are given."""
    return jnp.arange(n, dtype=jnp.int32) % num_classes


def _apply(generator, g_vars, z, alpha, labels):
    num_classes = getattr(generator, "num_classes", 0)
    if not num_classes:
        return generator.apply(g_vars, z, alpha, train=False)
    if labels is None:
        labels = classes_in_turn(z.shape[0], num_classes)
    return generator.apply(g_vars, z, alpha, train=False, labels=labels)


@functools.partial(jax.jit, static_argnums=0)
def generate(generator, g_vars, z, alpha, labels=None) -> jax.Array:
    """G(z) in inference mode (batch-norm running averages): [N, R, R, 1] in [-1, 1].

    labels: [N] int32 for a conditional G (None: the classes in turn); ignored by an unconditional one.
    """
    return _apply(generator, g_vars, z, alpha, labels)


def grid_latents(arch: Architecture, key: jax.Array, count: int) -> tuple[jax.Array, Optional[jax.Array]]:
    """The fixed latents (and labels) of the training's sample grids.

    Unconditional: `count` latents, labels None. Conditional: one row per
    class, each row the same count // C latents (at least one) with its label,
    so a column shows one latent in every class.
    """
    if not arch.num_classes:
        return arch.sample_latent(key, count), None
    columns = grid_columns(arch, count)
    z = jnp.tile(arch.sample_latent(key, columns), (arch.num_classes, 1))
    return z, jnp.repeat(jnp.arange(arch.num_classes, dtype=jnp.int32), columns)


def grid_columns(arch: Architecture, count: int) -> Optional[int]:
    """Columns of a sample grid of `count` images: per class for a conditional model, else images.grid's choice."""
    return max(1, count // arch.num_classes) if arch.num_classes else None


@dataclasses.dataclass(frozen=True)
class Sampler:
    """A trained generator, ready to sample.

    Calling it with (key, n) returns [n, R, R, 1] float32 in [-1, 1]; the
    function is jitted (one compile per n). A conditional one also takes
    labels [n] int32 (key, n, labels); without, the classes in turn.
    resolution: R, the side length of the images of the checkpoint's stage.
    step: the training step of the checkpoint.
    ema: whether g_vars are the moving average of G's weights (train.ema_kimg).
    """

    arch: Architecture
    stage: Stage
    g_vars: dict
    alpha: float
    step: int
    ema: bool = False

    @property
    def resolution(self) -> int:
        return self.stage.resolution

    @property
    def class_names(self) -> tuple:
        """The classes of a conditional run, which labels index; () for an unconditional one."""
        return self.arch.class_names

    def latents(self, key: jax.Array, n: int) -> jax.Array:
        return self.arch.sample_latent(key, n)

    def from_latents(self, z: jax.Array, labels: Optional[jax.Array] = None) -> jax.Array:
        """[n, latent_dim] (and [n] labels) -> [n, R, R, 1] float32 in [-1, 1]."""
        return generate(self.arch.generator(self.stage), self.g_vars, z, self.alpha, labels)

    def __call__(self, key: jax.Array, n: int, labels: Optional[jax.Array] = None) -> jax.Array:
        if labels is not None and not self.class_names:
            raise UserError("labels: this run is unconditional (trained without data.labels)")
        return _sample(self.arch.generator(self.stage), self.arch.sample_latent, n,
                       self.g_vars, key, self.alpha, labels)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _sample(generator, latent_fn: Callable, n: int, g_vars, key, alpha, labels):
    return _apply(generator, g_vars, latent_fn(key, n), alpha, labels)


def load_sampler(workdir: str, ema: bool = True) -> Sampler:
    """The generator of the latest checkpoint in `workdir`, at the stage it reached.

    ema: the moving average of G's weights where the run keeps one (train.ema_kimg > 0);
    False, or a run without one: G's own weights.
    """
    from mrigen import state as state_lib

    config = run_config.load(workdir)
    ckpt = checkpoint.Checkpointer(workdir)
    try:
        if ckpt.latest_step() is None:
            raise UserError(f"workdir: {workdir} holds no checkpoint; train first")
        arch = models.build(config, state_lib.checkpoint_classes(ckpt))
        state = state_lib.restore_or_init(ckpt, arch, state_lib.create_optimizer(config.train), config,
                                          resume=False)
    finally:
        ckpt.close()
    stage = arch.stages[int(state["stage"])]
    return Sampler(arch=arch, stage=stage, g_vars=state_lib.generator_variables(state, ema),
                   alpha=float(state["alpha"]), step=int(state["step"]), ema=ema and "g_ema" in state)


def interpolation(sampler: Sampler, key: jax.Array, rows: int, steps: int) -> np.ndarray:
    """Images along straight lines between pairs of random latents.

    Returns [rows * steps, R, R, 1]: row i walks from one latent to another in
    `steps` equal steps (the paper's memorization check: a smooth walk means
    the generator does not just recall training images). A conditional
    model's walks stay within a class: row i is of class i mod C throughout.
    """
    key_a, key_b = jax.random.split(key)
    start, end = sampler.latents(key_a, rows), sampler.latents(key_b, rows)
    t = jnp.linspace(0.0, 1.0, steps)[None, :, None]
    z = (start[:, None, :] * (1.0 - t) + end[:, None, :] * t).reshape(rows * steps, -1)
    labels = None
    if sampler.class_names:
        labels = jnp.repeat(classes_in_turn(rows, len(sampler.class_names)), steps)
    return np.asarray(sampler.from_latents(z, labels))


def write_samples(sampler: Sampler, key: jax.Array, count: int, folder: str,
                  overwrite: bool = False, batch_size: int = 64) -> list[str]:
    """Writes `count` generated images as sample_000000.png ... into `folder`."""
    if os.path.isdir(folder) and not overwrite and any(n.lower().endswith(".png") for n in os.listdir(folder)):
        raise UserError(f"--out: {folder} already holds PNG images; pass --overwrite to replace them")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for start in range(0, count, batch_size):
        n = min(batch_size, count - start)
        batch = np.asarray(sampler(jax.random.fold_in(key, start), batch_size))[:n]
        for i, image in enumerate(images.grid(batch[j:j + 1], 1, 0) for j in range(n)):
            path = os.path.join(folder, f"sample_{start + i:06d}.png")
            images.save_png(image, path)
            paths.append(path)
    return paths
