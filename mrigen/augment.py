"""Differentiable augmentation of every image the discriminator sees (ADA / DiffAugment).

StyleGAN2-ADA (Karras et al. 2020) and DiffAugment (Zhao et al. 2020) keep a
discriminator from memorising a small training set by showing it real *and*
generated images through the same random, differentiable transforms; G's
gradient flows back through them. Each transform below is applied to each
image independently with probability `p`, which ADA tunes during training
(`ada_adjust`). While p stays below about 0.8 the transforms do not "leak"
into the generated images (Karras et al., section 2.2). A transform not
chosen for an image leaves that image exactly as it was, so p = 0 is the
identity, bit for bit.

Images are grayscale brain-MRI slices, [N, H, W, 1] in [-1, 1] with -1 the
black background; everything that uncovers or removes image content fills
with -1. The transforms, in the order applied:

- left-right flip: brains are nearly symmetric and scans are shown in either
  radiological or neurological convention, so a mirrored slice is plausible.
  There is no vertical flip or 90-degree rotation: brains are never upside
  down, and the discriminator should not learn that they might be.
- integer translation by up to 1/8 of the side in each axis: head position
  in the field of view varies from scan to scan.
- isotropic scaling (log-normal, sd 0.2 ln 2, ADA's default) and rotation
  (uniform within +-10 degrees), resampled together with one bilinear
  interpolation: head size varies between subjects, and head tilt in the
  scanner is a few degrees; slices are aligned to the axial plane, so ADA's
  full-circle rotation would show the discriminator orientations the data
  never has.
- brightness (additive, sd 0.2 in [0, 1] units, ADA's default), contrast
  (multiplicative about the image mean, log-normal sd 0.5 ln 2, ADA's
  default) and gamma (exponent log-normal, sd 0.2 ln 2) on (x + 1) / 2:
  MRI intensities have no absolute unit, and scanners, sequences and
  windowing change their offset, gain and non-linearity.
- cutout: one square of 1/4 of the side filled with the background, centre
  uniform over the image (it may hang over the edge). DiffAugment's half-side
  square would hide up to a third of the brain; a quarter still makes the
  discriminator judge the whole slice rather than one region.

The result is not clipped to [-1, 1]: clipping would zero the gradient of every
pixel pushed past the range, and the discriminator copes with values slightly
outside it (ADA does not clip either).

Everything is pure jax.numpy with static shapes and no Python branching on
traced values, so `augment` runs inside the jitted, batch-sharded train step;
draws are made for the global batch from one key.
"""

import math

import jax
import jax.numpy as jnp

BACKGROUND = -1.0

TRANSLATE_MAX_FRACTION = 0.125  # ADA's xint_max: shifts up to 1/8 of the side.
SCALE_LOG_STD = 0.2 * math.log(2.0)  # ADA's scale_std: scale factor mostly within [0.76, 1.32].
ROTATE_MAX_DEGREES = 10.0  # Head tilt in the scanner; ADA's full circle never occurs in aligned slices.
BRIGHTNESS_STD = 0.2  # ADA's brightness_std, in [0, 1] intensity units.
CONTRAST_LOG_STD = 0.5 * math.log(2.0)  # ADA's contrast_std: gain mostly within [0.5, 2].
GAMMA_LOG_STD = 0.2 * math.log(2.0)  # Exponent mostly within [0.76, 1.32]: mild windowing changes.
CUTOUT_FRACTION = 0.25  # Side of the cutout square relative to the image side.

# Below this [0, 1] intensity the gamma curve is continued as a straight line, so
# the derivative stays finite at the black background (u = 0) and for u < 0.
_GAMMA_LINEAR_BELOW = 1e-3


def _per_image(chosen: jax.Array, transformed: jax.Array, images: jax.Array) -> jax.Array:
    """`transformed` where the image was chosen, the untouched image elsewhere."""
    return jnp.where(chosen[:, None, None, None], transformed, images)


def _to_unit(images: jax.Array) -> jax.Array:
    return (images + 1.0) * 0.5


def _from_unit(intensities: jax.Array) -> jax.Array:
    return intensities * 2.0 - 1.0


def _flip(images: jax.Array, chosen: jax.Array) -> jax.Array:
    """Mirror the chosen images left-right."""
    return _per_image(chosen, images[:, :, ::-1, :], images)


def _translate(images: jax.Array, chosen: jax.Array, shifts: jax.Array) -> jax.Array:
    """Move the chosen images by integer `shifts` [N, 2] = (down, right) pixels; uncovered pixels are background."""
    _, height, width, _ = images.shape

    def move(image, shift):
        source_rows = jnp.arange(height) - shift[0]
        source_cols = jnp.arange(width) - shift[1]
        inside = (((source_rows >= 0) & (source_rows < height))[:, None]
                  & ((source_cols >= 0) & (source_cols < width))[None, :])
        gathered = image[jnp.clip(source_rows, 0, height - 1)[:, None], jnp.clip(source_cols, 0, width - 1)[None, :]]
        return jnp.where(inside[..., None], gathered, BACKGROUND)

    # vmap (not one batched index) keeps the gather batch-parallel when the batch is sharded over devices.
    return _per_image(chosen, jax.vmap(move)(images, shifts), images)


def _sample_bilinear(image: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
    """image [H, W, C] at fractional pixel positions rows, cols [H', W']; outside the image is background."""
    height, width, _ = image.shape
    top, left = jnp.floor(rows), jnp.floor(cols)
    down_weight, right_weight = (rows - top)[..., None], (cols - left)[..., None]
    top, left = top.astype(jnp.int32), left.astype(jnp.int32)

    def pixel(row, col):
        inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
        value = image[jnp.clip(row, 0, height - 1), jnp.clip(col, 0, width - 1)]
        return jnp.where(inside[..., None], value, BACKGROUND)

    upper = pixel(top, left) * (1.0 - right_weight) + pixel(top, left + 1) * right_weight
    lower = pixel(top + 1, left) * (1.0 - right_weight) + pixel(top + 1, left + 1) * right_weight
    return upper * (1.0 - down_weight) + lower * down_weight


def _scale_rotate(images: jax.Array, chosen: jax.Array, scales: jax.Array, angles: jax.Array) -> jax.Array:
    """Scale the chosen images by `scales` [N] and turn them counter-clockwise (as displayed) by `angles` [N]
    radians about the image centre, in one bilinear resampling."""
    _, height, width, _ = images.shape
    centre_row, centre_col = (height - 1) / 2.0, (width - 1) / 2.0
    # Output pixel offsets from the centre: y down, x right.
    y = (jnp.arange(height, dtype=jnp.float32) - centre_row)[None, :, None]
    x = (jnp.arange(width, dtype=jnp.float32) - centre_col)[None, None, :]
    cos = (jnp.cos(angles) / scales)[:, None, None]
    sin = (jnp.sin(angles) / scales)[:, None, None]
    # Each output pixel reads the source point that the inverse transform sends it to.
    source_cols = centre_col + x * cos - y * sin
    source_rows = centre_row + x * sin + y * cos
    resampled = jax.vmap(_sample_bilinear)(images, source_rows, source_cols)
    return _per_image(chosen, resampled, images)


def _brightness(images: jax.Array, chosen: jax.Array, offsets: jax.Array) -> jax.Array:
    """Add `offsets` [N] ([0, 1] intensity units) to the chosen images."""
    return _per_image(chosen, images + 2.0 * offsets[:, None, None, None], images)


def _contrast(images: jax.Array, chosen: jax.Array, gains: jax.Array) -> jax.Array:
    """Stretch the chosen images' intensities about each image's mean by `gains` [N]."""
    intensities = _to_unit(images)
    mean = jnp.mean(intensities, axis=(1, 2, 3), keepdims=True)
    stretched = mean + (intensities - mean) * gains[:, None, None, None]
    return _per_image(chosen, _from_unit(stretched), images)


def _gamma(images: jax.Array, chosen: jax.Array, exponents: jax.Array) -> jax.Array:
    """Raise the chosen images' [0, 1] intensities to `exponents` [N] (linear continuation near and below 0)."""
    intensities = _to_unit(images)
    exponent = exponents[:, None, None, None]
    # The power is taken of a safe value in both branches so its gradient is never inf * 0 = NaN.
    safe = jnp.maximum(intensities, _GAMMA_LINEAR_BELOW)
    curve = jnp.where(intensities > _GAMMA_LINEAR_BELOW,
                      safe ** exponent,
                      intensities * _GAMMA_LINEAR_BELOW ** (exponent - 1.0))
    return _per_image(chosen, _from_unit(curve), images)


def _cutout_side(size: int) -> int:
    return max(1, round(CUTOUT_FRACTION * size))


def _cutout(images: jax.Array, chosen: jax.Array, centres: jax.Array, side: int) -> jax.Array:
    """Fill a `side` x `side` square centred at `centres` [N, 2] = (row, col) in pixel units
    (pixel i covers [i, i + 1)) of the chosen images with background."""
    _, height, width, _ = images.shape
    row_centres = jnp.arange(height, dtype=jnp.float32) + 0.5
    col_centres = jnp.arange(width, dtype=jnp.float32) + 0.5
    in_rows = jnp.abs(row_centres[None, :] - centres[:, 0:1]) < side / 2.0
    in_cols = jnp.abs(col_centres[None, :] - centres[:, 1:2]) < side / 2.0
    hole = (in_rows[:, :, None] & in_cols[:, None, :])[..., None]
    return _per_image(chosen, jnp.where(hole, BACKGROUND, images), images)


def augment(key: jax.Array, images: jax.Array, p: jax.Array) -> jax.Array:
    """images [N,H,W,1] in [-1,1] -> same shape; each transform applied to each image independently
    with probability p (scalar, may be traced)."""
    batch, height, width, _ = images.shape
    x = images.astype(jnp.float32)
    # Two draws for everything: each random call compiles its own counter-based hash, which dominates compile time.
    key_uniform, key_normal = jax.random.split(key)
    uniforms = jax.random.uniform(key_uniform, (13, batch))
    scale_noise, brightness_noise, contrast_noise, gamma_noise = jax.random.normal(key_normal, (4, batch))
    (flip_chosen, translate_chosen, scale_chosen, rotate_chosen,
     brightness_chosen, contrast_chosen, gamma_chosen, cutout_chosen) = uniforms[:8] < p
    shift_draws, angle_draws, centre_draws = uniforms[8:10].T, uniforms[10], uniforms[11:13].T

    x = _flip(x, flip_chosen)

    max_shift = int(TRANSLATE_MAX_FRACTION * min(height, width))
    shifts = jnp.minimum(jnp.floor(shift_draws * (2 * max_shift + 1)).astype(jnp.int32), 2 * max_shift) - max_shift
    x = _translate(x, translate_chosen, shifts)

    scales = jnp.where(scale_chosen, jnp.exp(scale_noise * SCALE_LOG_STD), 1.0)
    max_angle = math.radians(ROTATE_MAX_DEGREES)
    angles = jnp.where(rotate_chosen, (2.0 * angle_draws - 1.0) * max_angle, 0.0)
    x = _scale_rotate(x, scale_chosen | rotate_chosen, scales, angles)

    x = _brightness(x, brightness_chosen, brightness_noise * BRIGHTNESS_STD)
    x = _contrast(x, contrast_chosen, jnp.exp(contrast_noise * CONTRAST_LOG_STD))
    x = _gamma(x, gamma_chosen, jnp.exp(gamma_noise * GAMMA_LOG_STD))

    centres = centre_draws * jnp.array([height, width], jnp.float32)
    x = _cutout(x, cutout_chosen, centres, _cutout_side(min(height, width)))
    return x.astype(images.dtype)


def ada_adjust(p, mean_sign_real, target: float, images_per_adjust: int, ada_kimg: float) -> jax.Array:
    """ADA's update: p + sign(mean_sign_real - target) * images_per_adjust / (ada_kimg * 1000), clipped to [0, 1]."""
    step = images_per_adjust / (ada_kimg * 1000.0)
    p = jnp.asarray(p, jnp.float32)
    return jnp.clip(p + jnp.sign(jnp.asarray(mean_sign_real, jnp.float32) - target) * step, 0.0, 1.0)


def ada_step(p, sign_sum, steps_done, batch_size: int, tc):
    """ADA every tc.ada_interval steps: p moved by the mean sign of D(real) since the last move.

    sign_sum: the sum of sign(D(real)) over the images since then; returns (p, sign_sum), both reset when moved.
    """
    images = tc.ada_interval * batch_size
    due = steps_done % tc.ada_interval == 0
    moved = ada_adjust(p, sign_sum / images, tc.ada_target, images, tc.ada_kimg)
    return jnp.where(due, moved, p), jnp.where(due, jnp.float32(0.0), sign_sum)
