"""Progressively grown GAN (docs/models.md; progan5.py and Karras et al. 2018).

The networks grow from 4x4 to the configured resolution, one resolution per
two stages: a fade-in stage, where the new block is blended in with weight
alpha rising from 0 to 1, then a stabilize stage at alpha = 1. Every stage's
parameters form one tree keyed by resolution:

  G: b4, b8, ..., b{R}, to_rgb_4, ..., to_rgb_{R}
  D: from_rgb_4, ..., from_rgb_{R}, b{R}, ..., b8, b4

The tree of a stage at resolution R holds every toRGB/fromRGB layer up to R,
used or not, so growing only ever adds keys and the trainer can carry every
existing weight over unchanged (state.grow_state).

Every layer uses the equalized learning rate: weights are stored as N(0, 1)
and multiplied at run time by the He constant sqrt(2 / fan_in), as
progan5.py does for every layer (toRGB and the last dense layer included).
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from mrigen.models import base, conditional
from mrigen.models.layers import minibatch_stddev

# Channels at resolutions 4, 8, ..., 256 (before `width`).
CHANNELS = (512, 512, 256, 128, 64, 32, 16)
MAX_RESOLUTION = 4 * 2 ** (len(CHANNELS) - 1)
KERNEL = 5  # Kernel size of the blocks above 4x4.


def channels_at(resolution: int, width: float) -> int:
    """Feature maps of the block at `resolution` (4 ... 256), times `width`."""
    return base.scaled(CHANNELS[int(math.log2(resolution)) - 2], width)


def resolutions_up_to(resolution: int) -> list[int]:
    """[4, 8, ..., resolution]."""
    return [2 ** i for i in range(2, int(math.log2(resolution)) + 1)]


def pixel_norm(x: jnp.ndarray, epsilon: float = 1e-8) -> jnp.ndarray:
    """Each pixel's feature vector scaled to unit root-mean-square over channels."""
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + epsilon)).astype(x.dtype)


def _lrelu(x):
    return nn.leaky_relu(x, 0.2)


class EqualizedConv(nn.Module):
    """A stride-1 convolution with the equalized learning rate.

    kernel [k, k, C_in, C_out] is stored N(0, 1) and scaled by
    sqrt(2 / (k * k * C_in)) when applied, so Adam's per-weight step sizes
    act on every layer alike. Bias starts at zero.
    """

    features: int
    kernel_size: int
    padding: str | tuple = "SAME"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        k, c_in = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", nn.initializers.normal(1.0), (k, k, c_in, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        scale = math.sqrt(2.0 / (k * k * c_in))
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), (kernel * scale).astype(self.dtype), (1, 1), self.padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + bias.astype(self.dtype)


class EqualizedDense(nn.Module):
    """A dense layer with the equalized learning rate: [N, C_in] -> [N, features]."""

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c_in = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.normal(1.0), (c_in, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        scale = math.sqrt(2.0 / c_in)
        return x.astype(self.dtype) @ (kernel * scale).astype(self.dtype) + bias.astype(self.dtype)


class GeneratorBlock(nn.Module):
    """One resolution of G. At 4x4: z [N, 1, 1, L] -> [N, 4, 4, C]; above: [N, r/2, r/2, C'] -> [N, r, r, C]."""

    resolution: int
    features: int
    use_pixel_norm: bool
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        norm = pixel_norm if self.use_pixel_norm else (lambda h: h)
        if self.resolution == 4:
            # A 4x4 conv over the 1x1 latent padded by 3: a dense layer to 4x4xC.
            x = norm(_lrelu(EqualizedConv(self.features, 4, ((3, 3), (3, 3)), self.dtype, name="conv0")(x)))
            return norm(_lrelu(EqualizedConv(self.features, 3, "SAME", self.dtype, name="conv1")(x)))
        x = base.upsample_nearest(x, 2)
        x = norm(_lrelu(EqualizedConv(self.features, KERNEL, "SAME", self.dtype, name="conv0")(x)))
        return norm(_lrelu(EqualizedConv(self.features, KERNEL, "SAME", self.dtype, name="conv1")(x)))


class DiscriminatorBlock(nn.Module):
    """One resolution of D: [N, r, r, C] -> [N, r/2, r/2, C_out] (conv, conv, 2x2 average pool)."""

    features: int
    features_out: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = _lrelu(EqualizedConv(self.features, KERNEL, "SAME", self.dtype, name="conv0")(x))
        # conv then average pool = progan5.py's fused conv2d_downscale2d.
        x = EqualizedConv(self.features_out, KERNEL, "SAME", self.dtype, name="conv1")(x)
        return _lrelu(base.average_pool(x, 2))


class DiscriminatorHead(nn.Module):
    """D at 4x4: minibatch stddev, Conv3x3, Conv4x4 (valid), Dense 1. [N, 4, 4, C] -> [N] float32.

    With classes, the projection of the dense layer's inputs on the label's embedding is added.
    """

    features: int
    dtype: jnp.dtype = jnp.float32
    num_classes: int = 0

    @nn.compact
    def __call__(self, x, labels=None):
        x = minibatch_stddev(x)
        x = _lrelu(EqualizedConv(self.features, 3, "SAME", self.dtype, name="conv0")(x))
        x = _lrelu(EqualizedConv(self.features, 4, "VALID", self.dtype, name="conv1")(x))
        features = x.reshape(x.shape[0], -1)
        logits = EqualizedDense(1, self.dtype, name="dense")(features)[:, 0].astype(jnp.float32)
        if self.num_classes:  # Stored N(0, 1) and scaled at run time, as every layer here.
            logits = logits + conditional.projection(features, labels, self.num_classes, nn.initializers.normal(1.0),
                                                     conditional.equalized_scale(features.shape[-1]))
        return logits


class Generator(nn.Module):
    """G of one stage: z [N, L] (unit norm) -> images [N, R, R, 1] in [-1, 1].

    During a fade-in, the output is tanh(alpha * toRGB_R(b_R(h)) + (1 - alpha)
    * up(toRGB_{R/2}(h))), h the features at R/2 (the blend before the tanh,
    as progan5.py).
    """

    resolution: int
    fade_in: bool = False
    width: float = 1.0
    use_pixel_norm: bool = True
    dtype: jnp.dtype = jnp.float32
    num_classes: int = 0  # > 0: conditional on labels [N] int32 (models/conditional.py).

    @nn.compact
    def __call__(self, z, alpha=1.0, train: bool = True, labels=None):
        del train  # No batch statistics.
        resolutions = resolutions_up_to(self.resolution)
        to_rgb = {r: EqualizedConv(1, 1, "SAME", self.dtype, name=f"to_rgb_{r}") for r in resolutions}
        x = conditional.conditioned_latent(z, labels, self.num_classes)
        x = x.reshape(x.shape[0], 1, 1, x.shape[-1])
        features = {}
        for r in resolutions:
            x = GeneratorBlock(r, channels_at(r, self.width), self.use_pixel_norm, self.dtype, name=f"b{r}")(x)
            features[r] = x
        out = to_rgb[self.resolution](x).astype(jnp.float32)
        used = {self.resolution}
        if self.fade_in:
            previous = self.resolution // 2
            old = base.upsample_nearest(to_rgb[previous](features[previous]).astype(jnp.float32), 2)
            out = alpha * out + (1.0 - alpha) * old
            used.add(previous)
        if self.is_initializing():
            # Keep the unused toRGB layers of lower resolutions in the tree (see module doc).
            for r in resolutions:
                if r not in used:
                    to_rgb[r](features[r])
        return jnp.tanh(out)


class Discriminator(nn.Module):
    """D of one stage: images [N, R, R, 1] -> critic values [N] float32.

    During a fade-in, the features entering block R/2 are alpha * b_R(fromRGB_R(x))
    + (1 - alpha) * fromRGB_{R/2}(avgpool(x)).
    """

    resolution: int
    fade_in: bool = False
    width: float = 1.0
    dtype: jnp.dtype = jnp.float32
    num_classes: int = 0  # > 0: a projection discriminator on labels [N] int32 (models/conditional.py).

    @nn.compact
    def __call__(self, x, alpha=1.0, train: bool = True, labels=None):
        del train
        resolutions = resolutions_up_to(self.resolution)
        from_rgb = {r: EqualizedConv(channels_at(r, self.width), 1, "SAME", self.dtype, name=f"from_rgb_{r}")
                    for r in resolutions}
        x = x.astype(self.dtype)
        h = _lrelu(from_rgb[self.resolution](x))
        used = {self.resolution}
        for r in reversed(resolutions[1:]):
            h = DiscriminatorBlock(channels_at(r, self.width), channels_at(r // 2, self.width), self.dtype,
                                   name=f"b{r}")(h)
            if r == self.resolution and self.fade_in:
                old = _lrelu(from_rgb[r // 2](base.average_pool(x, 2)))
                h = alpha * h + (1.0 - alpha) * old
                used.add(r // 2)
        if self.is_initializing():
            for r in resolutions:
                if r not in used:
                    from_rgb[r](base.average_pool(x, self.resolution // r))
        return DiscriminatorHead(channels_at(4, self.width), self.dtype, self.num_classes, name="b4")(h, labels)


@dataclasses.dataclass(frozen=True)
class ProGAN(base.Architecture):
    """The growing schedule: 4x4, then a fade-in and a stabilize stage per doubling."""

    name: str
    resolution: int
    latent_dim: int
    epochs_per_stage: float
    width: float = 1.0
    use_pixel_norm: bool = True
    dtype: jnp.dtype = jnp.float32
    class_names: tuple = ()

    @property
    def stages(self) -> tuple[base.Stage, ...]:
        stages = [base.Stage(index=0, resolution=4, fade_in=False, epochs=self.epochs_per_stage)]
        for r in resolutions_up_to(self.resolution)[1:]:
            for fade_in in (True, False):
                stages.append(base.Stage(index=len(stages), resolution=r, fade_in=fade_in,
                                         epochs=self.epochs_per_stage))
        return tuple(stages)

    def generator(self, stage: base.Stage) -> nn.Module:
        return Generator(stage.resolution, stage.fade_in, self.width, self.use_pixel_norm, self.dtype,
                         self.num_classes)

    def discriminator(self, stage: base.Stage) -> nn.Module:
        return Discriminator(stage.resolution, stage.fade_in, self.width, self.dtype, self.num_classes)

    def sample_latent(self, key: jax.Array, n: int) -> jax.Array:
        return base.unit_gaussian_latent(key, n, self.latent_dim)


def build(config, class_names: tuple = ()) -> base.Architecture:
    resolution = config.data.resolution
    if not 4 <= resolution <= MAX_RESOLUTION or resolution & (resolution - 1):
        raise base.bad_resolution("progan", resolution, f"a power of two from 4 to {MAX_RESOLUTION}")
    return ProGAN(
        name="progan",
        resolution=resolution,
        latent_dim=config.arch.latent_dim,
        epochs_per_stage=base.positive_epochs(config, "epochs_per_stage"),
        width=config.arch.width,
        use_pixel_norm=config.arch.pixel_norm,
        dtype=base.compute_dtype(config),
        class_names=tuple(class_names),
    )
