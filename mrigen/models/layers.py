"""Layers shared by the discriminators."""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def minibatch_stddev(x: jnp.ndarray, group_size: int = 4) -> jnp.ndarray:
    """Appends the minibatch standard deviation as one extra feature map.

    The batch is split into groups of `group_size` (the whole batch when it is
    smaller); per group, the standard deviation of every feature over the group
    (sqrt(var + 1e-8)) is averaged over features and pixels to one number,
    broadcast as a constant map to each sample of the group.

    Args:
      x: [N, H, W, C]; N must be a multiple of the group size.
    Returns:
      [N, H, W, C + 1], same dtype.
    """
    n, h, w, c = x.shape
    group = min(group_size, n)
    if n % group:
        raise ValueError(f"minibatch_stddev: batch {n} is not a multiple of the group size {group}")
    grouped = x.astype(jnp.float32).reshape(group, n // group, h, w, c)
    stddev = jnp.sqrt(jnp.var(grouped, axis=0) + 1e-8)  # [N/G, H, W, C]
    per_group = jnp.mean(stddev, axis=(1, 2, 3))  # [N/G]
    feature = jnp.tile(per_group, group).reshape(n, 1, 1, 1)
    feature = jnp.broadcast_to(feature, (n, h, w, 1)).astype(x.dtype)
    return jnp.concatenate([x, feature], axis=-1)


def _phase_taps(kernel_size: int, stride: int, pad_low: int, phase: int) -> tuple[list, list]:
    """Kernel taps that reach output phase `phase`, and the input offsets they read."""
    taps = [m for m in range(kernel_size) if (phase + m - pad_low) % stride == 0]
    return taps, [(phase + m - pad_low) // stride for m in taps]


def conv_transpose_subpixel(x: jnp.ndarray, kernel: jnp.ndarray, stride: int) -> jnp.ndarray:
    """`lax.conv_transpose(x, kernel, (s, s), 'SAME')` as s*s stride-1 convolutions.

    Each output phase (a, b) reads only the kernel taps that land on real
    (not zero-inserted) input pixels, so this does the same arithmetic without
    the dilated input. Same result to float rounding; on XLA:CPU its weight
    gradient is about 30x faster than conv_transpose's.
    x: [N, H, W, Cin]; kernel: [k, k, Cin, Cout]. Returns [N, H*s, W*s, Cout].
    """
    k = kernel.shape[0]
    # The leading padding lax.conv_transpose uses for 'SAME'.
    pad_low = k - 1 if stride > k - 1 else -(-(k + stride - 2) // 2)
    n, h, w, _ = x.shape
    rows = []
    for a in range(stride):
        taps_a, offsets_a = _phase_taps(k, stride, pad_low, a)
        columns = []
        for b in range(stride):
            taps_b, offsets_b = _phase_taps(k, stride, pad_low, b)
            sub_kernel = kernel[jnp.asarray(taps_a)][:, jnp.asarray(taps_b)]
            padding = [(-offsets_a[0], offsets_a[-1]), (-offsets_b[0], offsets_b[-1])]
            columns.append(jax.lax.conv_general_dilated(
                x, sub_kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")))
        rows.append(jnp.stack(columns, axis=3))  # [N, H, W, s_b, C]
    return jnp.stack(rows, axis=2).reshape(n, h * stride, w * stride, -1)


class ConvTranspose(nn.Module):
    """A 'SAME' transposed convolution with flax's parameter layout (kernel [k, k, Cin, Cout], bias).

    subpixel=True computes it with `conv_transpose_subpixel` (fast on CPU);
    False uses lax.conv_transpose (cuDNN's kernels on GPU). Both give the
    same result; `default_subpixel()` picks by backend.
    """

    features: int
    kernel_size: int
    stride: int = 1
    kernel_init: Callable = nn.initializers.lecun_normal()
    dtype: jnp.dtype = jnp.float32
    subpixel: bool = True
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init,
                            (self.kernel_size, self.kernel_size, x.shape[-1], self.features))
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if self.subpixel:
            y = conv_transpose_subpixel(x, kernel, self.stride)
        else:
            y = jax.lax.conv_transpose(x, kernel, (self.stride, self.stride), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
        return y


def default_subpixel() -> bool:
    """The transposed-convolution form that is fastest on this backend."""
    return jax.default_backend() == "cpu"
