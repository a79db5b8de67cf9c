"""What the trainer needs to know of an architecture, and helpers they share.

An architecture is a sequence of stages with fixed shapes (one for DCGAN and
SRResNet, thirteen for ProGAN). For each stage it builds a generator
`G(z, alpha, train) -> [N, R, R, 1] in [-1, 1]` and a discriminator
`D(x, alpha, train) -> [N] logits`; `alpha` is the fade-in blend of ProGAN's
growing stages and is ignored elsewhere. An architecture built with class
names is conditional: both networks then take `labels=` [N] int32 as well
(mrigen/models/conditional.py).
"""

import dataclasses
import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mrigen.errors import UserError


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training phase with fixed shapes.

    index: position in the schedule (0-based).
    resolution: side length of the images G makes and D reads in this stage.
    fade_in: alpha rises linearly from 0 to 1 over the stage (else alpha = 1).
    epochs: length of the stage in passes over the training set.
    """

    index: int
    resolution: int
    fade_in: bool
    epochs: float


class Architecture:
    """The interface every model family implements."""

    name: str
    latent_dim: int
    resolution: int  # of the last stage's images
    stages: tuple[Stage, ...]
    class_names: tuple = ()  # The classes of a conditional model, which labels index; () for none.

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def generator(self, stage: Stage) -> nn.Module:
        raise NotImplementedError

    def discriminator(self, stage: Stage) -> nn.Module:
        raise NotImplementedError

    def sample_latent(self, key: jax.Array, n: int) -> jax.Array:
        """[n, latent_dim] float32 latents from the family's prior."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class SingleStage(Architecture):
    """An architecture trained in one stage at its full resolution."""

    name: str
    resolution: int
    latent_dim: int
    epochs: float
    make_generator: Callable[[], nn.Module]
    make_discriminator: Callable[[], nn.Module]
    latent_fn: Callable[[jax.Array, int, int], jax.Array]
    class_names: tuple = ()

    @property
    def stages(self) -> tuple[Stage, ...]:
        return (Stage(index=0, resolution=self.resolution, fade_in=False, epochs=self.epochs),)

    def generator(self, stage: Stage) -> nn.Module:
        return self.make_generator()

    def discriminator(self, stage: Stage) -> nn.Module:
        return self.make_discriminator()

    def sample_latent(self, key: jax.Array, n: int) -> jax.Array:
        return self.latent_fn(key, n, self.latent_dim)


def scaled(channels: int, width: float) -> int:
    """A channel count times the width multiplier, at least 1."""
    return max(1, int(round(channels * width)))


def unit_gaussian_latent(key: jax.Array, n: int, latent_dim: int) -> jax.Array:
    """z ~ N(0, I) normalized to unit L2 norm: [n, latent_dim] float32."""
    z = jax.random.normal(key, (n, latent_dim))
    return z / jnp.sqrt(jnp.sum(z * z, axis=1, keepdims=True) + 1e-8)


def positive_epochs(config, field: str) -> float:
    """config.train.<field>, a stage's length in passes over the data; UserError unless positive and finite."""
    value = config.train.get(field)
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UserError(f"config.train.{field}: {value!r} must be positive and finite")
    return float(value)


def compute_dtype(config) -> jnp.dtype:
    """The dtype of activations and convolutions; parameters stay float32."""
    names = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    name = config.train.get("compute_dtype", "float32")
    if name not in names:
        raise UserError(f"train.compute_dtype: unknown dtype {name!r}; choose one of {sorted(names)}")
    return names[name]


# The single-stage models' limit. MRI slices are rarely above 512 px (the paper
# trains at 256), and at 2048 px the paper's 11,328 slices alone would take 47 GB
# of accelerator memory, where the training set is kept.
MAX_RESOLUTION = 1024


def bad_resolution(model: str, resolution: int, requirement: str) -> UserError:
    return UserError(f"data.resolution: {model} cannot make {resolution}x{resolution} images; "
                     f"the resolution must be {requirement}")


def average_pool(images: jnp.ndarray, factor: int) -> jnp.ndarray:
    """[N, H, W, C] -> [N, H/f, W/f, C], the mean of each f x f block."""
    if factor == 1:
        return images
    n, h, w, c = images.shape
    return images.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def upsample_nearest(images: jnp.ndarray, factor: int) -> jnp.ndarray:
    """[N, H, W, C] -> [N, H*f, W*f, C], each pixel repeated f x f times."""
    return jnp.repeat(jnp.repeat(images, factor, axis=1), factor, axis=2)


def real_images_for_stage(images: jnp.ndarray, stage: Stage, alpha) -> jnp.ndarray:
    """Real images as a stage's discriminator sees them.

    Average-pooled to the stage's resolution; during a fade-in, blended with
    their 2x-downsampled-then-upsampled version: alpha x + (1 - alpha) up(down(x)).
    """
    images = average_pool(images, images.shape[1] // stage.resolution)
    if stage.fade_in:
        coarse = upsample_nearest(average_pool(images, 2), 2)
        images = alpha * images + (1.0 - alpha) * coarse
    return images
