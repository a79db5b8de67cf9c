"""Layers shared by the discriminators."""

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
