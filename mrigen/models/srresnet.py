"""SRResNet GAN (docs/models.md; srresgan1.py and the paper's section 2.1).

At 256 px this is the paper's model exactly. Other resolutions keep the
layer pattern:
- the generator starts from a (resolution / 16)-pixel square, so its four
  upsampling blocks always end at the requested resolution (16 px at 256);
- the discriminator has log2(resolution) - 2 downsampling levels, so it
  always reaches 4x4 before the final stride-2 conv to 2x2. Levels are
  dropped from the high-resolution end (as ProGAN grows): level i of L has
  1024 / 2^(L-1-i) channels, i.e. 32, 64, ..., 1024 at 256 px and
  256, 512, 1024 at 32 px.
`width` multiplies every channel count (1.0 is the paper's model).
"""

import flax.linen as nn
import jax.numpy as jnp

from mrigen.errors import UserError
from mrigen.models import base, conditional

FEATURES = 64  # Generator channels between the dense layer and the output conv.
RESIDUAL_BLOCKS = 16  # Generator residual blocks (the paper's; arch.residual_blocks).
UPSAMPLING_BLOCKS = 4  # Each doubles the side length with depth-to-space.
DISCRIMINATOR_LAST_CHANNELS = 1024  # Channels of the deepest level, at 4x4.
DISCRIMINATOR_FINAL_CHANNELS = 2048  # The stride-2 conv from 4x4 to 2x2.
MIN_RESOLUTION = 2 ** UPSAMPLING_BLOCKS

_weight_init = nn.initializers.he_normal()
# Layers followed directly by batch norm have no bias (as dcgan.py): BN's shift
# makes it redundant and its gradient is exactly zero, which Adam would turn
# into rounding noise. The upsampling convs keep theirs: after depth-to-space a
# bias varies with the sub-pixel position, which BN's per-channel shift cannot undo.


def _batch_norm(train: bool, dtype, name: str) -> nn.BatchNorm:
    # srresgan1.py: tf.contrib batch_norm with decay 0.9, epsilon 1e-5, scale.
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name)


def _conv(features: int, kernel: int, stride: int, dtype, name: str, use_bias: bool = True) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding="SAME", use_bias=use_bias,
                   kernel_init=_weight_init, dtype=dtype, name=name)


def depth_to_space(x: jnp.ndarray, block: int) -> jnp.ndarray:
    """[N, H, W, C * b * b] -> [N, H * b, W * b, C], TensorFlow's channel order.

    Output pixel (h * b + i, w * b + j), channel c reads input channel
    (i * b + j) * C + c at (h, w).
    """
    n, h, w, c = x.shape
    out = c // (block * block)
    x = x.reshape(n, h, w, block, block, out).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h * block, w * block, out)


def discriminator_channels(resolution: int) -> tuple[int, ...]:
    """Channels of the discriminator's downsampling levels (before `width`)."""
    levels = resolution.bit_length() - 1 - 2  # log2(resolution / 4)
    return tuple(max(1, DISCRIMINATOR_LAST_CHANNELS >> (levels - 1 - i)) for i in range(levels))


class GeneratorResidualBlock(nn.Module):
    """x + BN(Conv3x3(ReLU(BN(Conv3x3(x))))), same shape in and out."""

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        h = _conv(self.features, 3, 1, self.dtype, "conv0", use_bias=False)(x)
        h = nn.relu(_batch_norm(train, self.dtype, "bn0")(h))
        h = _conv(self.features, 3, 1, self.dtype, "conv1", use_bias=False)(h)
        return x + _batch_norm(train, self.dtype, "bn1")(h)


class DiscriminatorResidualBlock(nn.Module):
    """LReLU(x + Conv3x3(LReLU(Conv3x3(x)))), same shape in and out."""

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = nn.leaky_relu(_conv(self.features, 3, 1, self.dtype, "conv0")(x), 0.2)
        h = _conv(self.features, 3, 1, self.dtype, "conv1")(h)
        return nn.leaky_relu(x + h, 0.2)


class Generator(nn.Module):
    """z [N, latent_dim] (unit norm) -> images [N, R, R, 1] in [-1, 1]."""

    resolution: int
    width: float = 1.0
    dtype: jnp.dtype = jnp.float32
    residual_blocks: int = RESIDUAL_BLOCKS
    num_classes: int = 0  # > 0: conditional on labels [N] int32 (models/conditional.py).

    @nn.compact
    def __call__(self, z, alpha=1.0, train: bool = True, labels=None):
        del alpha  # One stage only.
        features = base.scaled(FEATURES, self.width)
        start = self.resolution // MIN_RESOLUTION
        x = conditional.conditioned_latent(z, labels, self.num_classes)
        x = nn.Dense(start * start * features, use_bias=False, kernel_init=_weight_init, dtype=self.dtype,
                     name="dense")(x)
        x = x.reshape(z.shape[0], start, start, features)
        h = nn.relu(_batch_norm(train, self.dtype, "bn_in")(x))
        x = h
        for i in range(self.residual_blocks):
            x = GeneratorResidualBlock(features, self.dtype, name=f"res{i}")(x, train)
        x = nn.relu(_batch_norm(train, self.dtype, "bn_res")(x)) + h
        for i in range(UPSAMPLING_BLOCKS):
            # 4x the channels so that depth-to-space gives `features` channels back.
            x = depth_to_space(_conv(4 * features, 3, 1, self.dtype, f"up{i}")(x), 2)
            x = nn.relu(_batch_norm(train, self.dtype, f"up{i}_bn")(x))
        x = _conv(1, 9, 1, self.dtype, "conv_out")(x)
        return jnp.tanh(x.astype(jnp.float32))


class Discriminator(nn.Module):
    """images [N, R, R, 1] -> logits [N] float32. No batch norm."""

    resolution: int
    width: float = 1.0
    dtype: jnp.dtype = jnp.float32
    num_classes: int = 0  # > 0: a projection discriminator on labels [N] int32 (models/conditional.py).

    @nn.compact
    def __call__(self, x, alpha=1.0, train: bool = True, labels=None):
        del alpha, train
        ch = lambda c: base.scaled(c, self.width)
        x = x.astype(self.dtype)
        for i, channels in enumerate(discriminator_channels(self.resolution)):
            x = nn.leaky_relu(_conv(ch(channels), 4, 2, self.dtype, f"down{i}")(x), 0.2)
            x = DiscriminatorResidualBlock(ch(channels), self.dtype, name=f"res{i}a")(x)
            x = DiscriminatorResidualBlock(ch(channels), self.dtype, name=f"res{i}b")(x)
        x = nn.leaky_relu(_conv(ch(DISCRIMINATOR_FINAL_CHANNELS), 3, 2, self.dtype, "conv_out")(x), 0.2)
        features = x.reshape(x.shape[0], -1)  # [N, 2 * 2 * 2048]
        logits = nn.Dense(1, kernel_init=_weight_init, dtype=self.dtype, name="dense")(features)
        logits = logits[:, 0].astype(jnp.float32)
        if self.num_classes:  # The embedding starts as the dense layer's kernel does (he_normal over F).
            init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
            logits = logits + conditional.projection(features, labels, self.num_classes, init)
        return logits


def build(config, class_names: tuple = ()) -> base.Architecture:
    resolution = config.data.resolution
    if resolution < MIN_RESOLUTION or resolution % MIN_RESOLUTION or resolution > base.MAX_RESOLUTION:
        raise base.bad_resolution("srresnet", resolution,
                                  f"a multiple of {MIN_RESOLUTION} up to {base.MAX_RESOLUTION}")
    dtype = base.compute_dtype(config)
    width = config.arch.width
    blocks = config.arch.get("residual_blocks", RESIDUAL_BLOCKS)  # runs saved before the field: the paper's
    if not isinstance(blocks, int) or blocks < 1:
        raise UserError(f"arch.residual_blocks: {blocks!r} must be a whole number of at least 1")
    return base.SingleStage(
        name="srresnet",
        resolution=resolution,
        latent_dim=config.arch.latent_dim,
        epochs=base.positive_epochs(config, "epochs"),
        make_generator=lambda: Generator(resolution, width, dtype, blocks, len(class_names)),
        make_discriminator=lambda: Discriminator(resolution, width, dtype, len(class_names)),
        latent_fn=base.unit_gaussian_latent,
        class_names=tuple(class_names),
    )
