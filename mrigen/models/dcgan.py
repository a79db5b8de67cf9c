"""DCGAN (docs/models.md; the paper's Tables 1-2 and dcgan3.py).

The layer sequence is the paper's at every resolution: the generator starts
from a (resolution / 32)-pixel square instead of 8 pixels, so 256 px gives the
paper's 8x8 start and 32 px (tests) starts at 1x1. `width` multiplies every
channel count (1.0 is the paper's model).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mrigen.errors import UserError
from mrigen.models import base, conditional
from mrigen.models.layers import ConvTranspose, default_subpixel, minibatch_stddev

# (channels, stride) of the generator's transposed convolutions after the dense layer.
GENERATOR_LAYERS = ((256, 2), (256, 1), (256, 2), (256, 1), (256, 2), (256, 1), (128, 2), (64, 2))
DISCRIMINATOR_CHANNELS = (64, 128, 256, 512, 1024)
DOWNSCALE = 32  # 2 ** (number of stride-2 layers)

# How G doubles the resolution: the paper's transposed convolution (a 5x5 kernel at stride 2
# covers alternate output pixels with 3 and 2 taps, a checkerboard G must learn to cancel), or
# "resize": nearest-neighbour upsampling then a 5x5 convolution, which has no such pattern.
UPSAMPLE_MODES = ("transposed", "resize")

_weight_init = nn.initializers.normal(stddev=0.02)
# Layers followed by batch norm have no bias: BN's shift makes it redundant, and
# its gradient is exactly zero, which Adam would turn into rounding noise.


def _batch_norm(train: bool, dtype) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype)


class Generator(nn.Module):
    """z [N, latent_dim] in U(-1, 1) -> images [N, R, R, 1] in [-1, 1]."""

    resolution: int
    width: float = 1.0
    dtype: jnp.dtype = jnp.float32
    subpixel: bool = True  # How transposed convolutions are computed (same result).
    upsample: str = "transposed"  # Stride-2 layers: "transposed" (the paper) or "resize" (UPSAMPLE_MODES).
    num_classes: int = 0  # > 0: conditional on labels [N] int32 (models/conditional.py).

    @nn.compact
    def __call__(self, z, alpha=1.0, train: bool = True, labels=None):
        del alpha  # One stage only.
        ch = lambda c: base.scaled(c, self.width)
        start = self.resolution // DOWNSCALE
        x = conditional.conditioned_latent(z, labels, self.num_classes)
        x = nn.Dense(start * start * ch(256), use_bias=False, kernel_init=_weight_init, dtype=self.dtype)(x)
        x = nn.relu(_batch_norm(train, self.dtype)(x))
        x = x.reshape(z.shape[0], start, start, ch(256))
        for channels, stride in GENERATOR_LAYERS:
            if stride == 2 and self.upsample == "resize":
                x = base.upsample_nearest(x, 2)
                x = nn.Conv(ch(channels), (5, 5), padding="SAME", use_bias=False, kernel_init=_weight_init,
                            dtype=self.dtype)(x)
            else:
                x = ConvTranspose(ch(channels), 5, stride, _weight_init, self.dtype, self.subpixel,
                                  use_bias=False)(x)
            x = nn.relu(_batch_norm(train, self.dtype)(x))
        x = ConvTranspose(1, 5, 1, _weight_init, self.dtype, self.subpixel)(x)
        return jnp.tanh(x.astype(jnp.float32))


class Discriminator(nn.Module):
    """images [N, R, R, 1] -> logits [N] float32."""

    resolution: int
    width: float = 1.0
    dtype: jnp.dtype = jnp.float32
    num_classes: int = 0  # > 0: a projection discriminator on labels [N] int32 (models/conditional.py).

    @nn.compact
    def __call__(self, x, alpha=1.0, train: bool = True, labels=None):
        del alpha
        ch = lambda c: base.scaled(c, self.width)
        x = x.astype(self.dtype)
        for i, channels in enumerate(DISCRIMINATOR_CHANNELS):
            # Not on a 1x1 map (32 px): batch norm there scores a batch by how its images differ,
            # not by what they show, so D rewards G for collapsing (docs/models.md).
            norm = i > 0 and self.resolution // 2 ** (i + 1) > 1
            x = nn.Conv(ch(channels), (5, 5), strides=(2, 2), padding="SAME", use_bias=not norm,
                        kernel_init=_weight_init, dtype=self.dtype)(x)
            if norm:
                x = _batch_norm(train, self.dtype)(x)
            x = nn.leaky_relu(x, 0.2)
        x = minibatch_stddev(x)
        x = x.reshape(x.shape[0], -1)
        features = nn.leaky_relu(nn.Dense(ch(1024) + 1, kernel_init=_weight_init, dtype=self.dtype)(x), 0.2)
        logits = nn.Dense(1, kernel_init=_weight_init, dtype=self.dtype)(features)[:, 0].astype(jnp.float32)
        if self.num_classes:
            logits = logits + conditional.projection(features, labels, self.num_classes, _weight_init)
        return logits


def uniform_latent(key: jax.Array, n: int, latent_dim: int) -> jax.Array:
    """z ~ U(-1, 1): [n, latent_dim] float32."""
    return jax.random.uniform(key, (n, latent_dim), minval=-1.0, maxval=1.0)


def build(config, class_names: tuple = ()) -> base.Architecture:
    resolution = config.data.resolution
    if resolution < DOWNSCALE or resolution % DOWNSCALE or resolution > base.MAX_RESOLUTION:
        raise base.bad_resolution("dcgan", resolution,
                                  f"a multiple of {DOWNSCALE} up to {base.MAX_RESOLUTION}")
    dtype = base.compute_dtype(config)
    width = config.arch.width
    upsample = config.arch.get("upsample", UPSAMPLE_MODES[0])  # runs saved before the field: the paper's
    if upsample not in UPSAMPLE_MODES:
        raise UserError(f"arch.upsample: unknown mode {upsample!r}; choose one of {', '.join(UPSAMPLE_MODES)}")
    return base.SingleStage(
        name="dcgan",
        resolution=resolution,
        latent_dim=config.arch.latent_dim,
        epochs=base.positive_epochs(config, "epochs"),
        make_generator=lambda: Generator(resolution, width, dtype, default_subpixel(), upsample, len(class_names)),
        make_discriminator=lambda: Discriminator(resolution, width, dtype, len(class_names)),
        latent_fn=uniform_latent,
        class_names=tuple(class_names),
    )
