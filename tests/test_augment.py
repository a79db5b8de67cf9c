"""Differentiable augmentation: exact identity at p = 0, each transform against known parameters,
gradients, determinism, jit with a traced p, and ADA's p update by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mrigen import augment as aug

KEY = jax.random.PRNGKey(0)
N = 8
ALL = jnp.ones((N,), bool)

# Compiled once per input shape and shared by the tests: compiling dominates this file's run time.
augment = jax.jit(aug.augment)
flip = jax.jit(aug._flip)
translate = jax.jit(aug._translate)
scale_rotate = jax.jit(aug._scale_rotate)
brightness = jax.jit(aug._brightness)
contrast = jax.jit(aug._contrast)
gamma = jax.jit(aug._gamma)
cutout = jax.jit(aug._cutout, static_argnums=3)


def images(size=16, batch=N, seed=1):
    """Random images in [-1, 1] with a black background border, like a slice."""
    x = jax.random.uniform(jax.random.PRNGKey(seed), (batch, size, size, 1), minval=-1.0, maxval=1.0)
    border = max(1, size // 8)
    return x.at[:, :border].set(-1.0).at[:, -border:].set(-1.0)


def ramp(size=16, batch=2):
    """Images linear in position: bilinear interpolation reproduces them exactly."""
    rows = jnp.arange(size, dtype=jnp.float32)[:, None] - (size - 1) / 2
    cols = jnp.arange(size, dtype=jnp.float32)[None, :] - (size - 1) / 2
    one = (0.03 * rows + 0.05 * cols)[None, :, :, None]
    return jnp.broadcast_to(one, (batch, size, size, 1))


# 1. p = 0 is the exact identity.

def test_p_zero_is_bit_exact_identity_eager_and_jitted():
    x = images()
    np.testing.assert_array_equal(aug.augment(KEY, x, 0.0), x)
    np.testing.assert_array_equal(augment(KEY, x, 0.0), x)


def test_unchosen_images_are_untouched_by_every_transform():
    x = images()
    chosen = jnp.arange(N) % 2 == 0
    half = jnp.full((N,), 0.5)
    outputs = [
        flip(x, chosen),
        translate(x, chosen, jnp.full((N, 2), 1)),
        scale_rotate(x, chosen, 1.0 + half, half),
        brightness(x, chosen, half),
        contrast(x, chosen, 1.0 + half),
        gamma(x, chosen, 1.0 + half),
        cutout(x, chosen, jnp.full((N, 2), 8.0), 4),
    ]
    for out in outputs:
        np.testing.assert_array_equal(out[1::2], x[1::2])
        assert not np.array_equal(out[0::2], x[0::2])


# 2. Each transform with known parameters; p = 1 changes the images.

def test_p_one_changes_every_image():
    x = images()
    out = augment(KEY, x, 1.0)
    assert out.shape == x.shape
    assert all(not np.array_equal(out[i], x[i]) for i in range(N))


def test_flip_mirrors_left_right_only():
    x = jnp.zeros((1, 4, 4, 1)).at[0, 1, 0, 0].set(1.0)
    out = flip(x, jnp.array([True]))
    expected = jnp.zeros((1, 4, 4, 1)).at[0, 1, 3, 0].set(1.0)
    np.testing.assert_array_equal(out, expected)


def test_translate_moves_pixel_and_fills_background():
    x = jnp.zeros((1, 16, 16, 1)).at[0, 3, 3, 0].set(0.7)
    out = translate(x, jnp.array([True]), jnp.array([[2, -1]]))
    assert out[0, 5, 2, 0] == pytest.approx(0.7)
    assert float(jnp.sum(out == 0.7)) == 1
    # Shifting down by 2 uncovers the top two rows; shifting left by 1 uncovers the last column.
    np.testing.assert_array_equal(out[0, :2], -1.0)
    np.testing.assert_array_equal(out[0, :, -1], -1.0)
    np.testing.assert_array_equal(out[0, 2:, :-1], x[0, :-2, 1:])


def test_scale_one_rotation_zero_is_identity():
    x = images()
    out = scale_rotate(x, ALL, jnp.ones((N,)), jnp.zeros((N,)))
    np.testing.assert_allclose(out, x, atol=1e-5)


def test_rotation_by_quarter_turn_matches_rot90():
    x = images()
    out = scale_rotate(x, ALL, jnp.ones((N,)), jnp.full((N,), math.pi / 2))
    np.testing.assert_allclose(out, jnp.rot90(x, k=1, axes=(1, 2)), atol=1e-5)


def test_scaling_by_two_keeps_centre_pixel_and_stretches_about_centre():
    # Odd side: one pixel sits exactly on the centre and maps to itself.
    x = jnp.full((1, 5, 5, 1), -1.0).at[0, 2, 2, 0].set(1.0)
    out = scale_rotate(x, jnp.array([True]), jnp.array([2.0]), jnp.array([0.0]))
    assert out[0, 2, 2, 0] == pytest.approx(1.0)
    assert out[0, 2, 3, 0] == pytest.approx(0.0)  # Halfway between the centre (1) and its neighbour (-1).
    assert out[0, 0, 0, 0] == pytest.approx(-1.0)
    # Linear images: output(offset) = input(offset / 2) exactly, i.e. the slope halves.
    r = ramp()
    out = scale_rotate(r, jnp.array([True, True]), jnp.array([2.0, 2.0]), jnp.zeros((2,)))
    np.testing.assert_allclose(out, r / 2, atol=1e-5)


def test_shrinking_fills_outside_with_background():
    x = jnp.ones((1, 16, 16, 1))
    out = scale_rotate(x, jnp.array([True]), jnp.array([0.5]), jnp.array([0.0]))
    np.testing.assert_allclose(out[0, 0], -1.0)
    np.testing.assert_allclose(out[0, 4:12, 4:12], 1.0, atol=1e-6)


def test_cutout_fills_square_with_background():
    x = jnp.zeros((1, 16, 16, 1))
    out = cutout(x, jnp.array([True]), jnp.array([[8.0, 8.0]]), 4)
    np.testing.assert_array_equal(out[0, 6:10, 6:10], -1.0)
    assert float(jnp.sum(out == -1.0)) == 16
    assert aug._cutout_side(16) == 4 and aug._cutout_side(4) == 1


def test_intensity_transforms_with_neutral_parameters_are_identity():
    x = images()
    np.testing.assert_allclose(brightness(x, ALL, jnp.zeros((N,))), x, atol=1e-6)
    np.testing.assert_allclose(contrast(x, ALL, jnp.ones((N,))), x, atol=1e-6)
    np.testing.assert_allclose(gamma(x, ALL, jnp.ones((N,))), x, atol=1e-6)


def test_intensity_transforms_in_unit_range():
    x = jnp.array([-1.0, 0.0, 1.0]).reshape(1, 1, 3, 1)
    one = jnp.array([True])
    # Brightness +0.1 in [0, 1] units is +0.2 in [-1, 1].
    np.testing.assert_allclose(brightness(x, one, jnp.array([0.1])).ravel(), [-0.8, 0.2, 1.2], atol=1e-6)
    # Contrast 2 about the mean intensity 0.5: 0, 0.5, 1 -> -0.5, 0.5, 1.5.
    np.testing.assert_allclose(contrast(x, one, jnp.array([2.0])).ravel(), [-2.0, 0.0, 2.0], atol=1e-6)
    # Gamma 2: 0, 0.5, 1 -> 0, 0.25, 1; black and white stay put.
    np.testing.assert_allclose(gamma(x, one, jnp.array([2.0])).ravel(), [-1.0, -0.5, 1.0], atol=1e-6)


def test_random_parameter_statistics():
    """Drawn strengths have their stated spread, and each transform fires with probability p."""
    batch = 256
    key = jax.random.PRNGKey(3)
    offsets = jax.random.normal(key, (batch,)) * aug.BRIGHTNESS_STD
    out = brightness(jnp.zeros((batch, 4, 4, 1)), jnp.ones((batch,), bool), offsets)
    np.testing.assert_allclose(float(jnp.std(out[:, 0, 0, 0] / 2)), aug.BRIGHTNESS_STD, rtol=0.1)
    # A random image is changed by every transform, except translation when it draws the shift (0, 0):
    # 1/25 at side 16 (shifts -2..2). So P(untouched) = (1 - p)^7 (1 - p * 24/25).
    p = 0.1
    x = jax.random.uniform(jax.random.PRNGKey(4), (N, 16, 16, 1), minval=-1.0, maxval=1.0)
    untouched = [jnp.all(augment(k, x, p) == x, axis=(1, 2, 3)) for k in jax.random.split(key, 32)]
    np.testing.assert_allclose(float(jnp.mean(jnp.stack(untouched))), (1 - p) ** 7 * (1 - p * 24 / 25), atol=0.07)


def test_augment_keeps_mean_intensity_roughly_and_stays_finite():
    x = images()
    out = augment(KEY, x, 1.0)
    assert np.all(np.isfinite(out))
    assert abs(float(jnp.mean(out)) - float(jnp.mean(x))) < 0.5


# 3. Gradients.

def test_gradients_are_finite_and_flow_at_p_one_and_exact_at_p_zero():
    x = images()
    w = jax.random.normal(jax.random.PRNGKey(7), x.shape)
    gradient = jax.jit(jax.grad(lambda v, p: jnp.sum(aug.augment(KEY, v, p) * w)))
    grad_one = gradient(x, 1.0)
    assert np.all(np.isfinite(grad_one))
    assert np.any(grad_one != 0)
    grad_zero = gradient(x, 0.0)
    np.testing.assert_array_equal(grad_zero, w)


def test_gamma_gradient_is_finite_at_black_background():
    x = jnp.full((1, 4, 4, 1), -1.0)
    gradient = jax.grad(lambda v, exponents: jnp.sum(gamma(v, jnp.array([True, True]), exponents)))
    g = gradient(jnp.concatenate([x, x]), jnp.array([0.5, 2.0]))
    assert np.all(np.isfinite(g)) and np.all(g > 0)


# 4. Determinism.

def test_same_key_same_output_different_key_different_output():
    x = images()
    a = augment(KEY, x, 1.0)
    np.testing.assert_array_equal(a, augment(KEY, x, 1.0))
    assert not np.array_equal(a, augment(jax.random.PRNGKey(1), x, 1.0))


# 5. ADA's p update.

def test_ada_adjust_matches_hand_computation():
    # step = 64 / (100 * 1000) = 0.00064
    np.testing.assert_allclose(aug.ada_adjust(0.5, 0.9, 0.6, 64, 100.0), 0.50064, rtol=1e-6)
    np.testing.assert_allclose(aug.ada_adjust(0.5, 0.1, 0.6, 64, 100.0), 0.49936, rtol=1e-6)
    np.testing.assert_allclose(aug.ada_adjust(0.5, 0.6, 0.6, 64, 100.0), 0.5)
    # step = 256 / (0.5 * 1000) = 0.512: 0.7 + 0.512 clips to 1, 0.3 - 0.512 and 0 - 0.00064 clip to 0.
    assert float(aug.ada_adjust(0.7, 1.0, 0.6, 256, 0.5)) == 1.0
    assert float(aug.ada_adjust(0.3, -1.0, 0.6, 256, 0.5)) == 0.0
    assert float(aug.ada_adjust(0.0, 0.0, 0.6, 64, 100.0)) == 0.0
    p = jax.jit(aug.ada_adjust, static_argnums=(2, 3, 4))(jnp.float32(0.2), jnp.float32(0.8), 0.6, 1000, 1.0)
    np.testing.assert_allclose(p, 1.0)


# 6. jit with traced p at several resolutions; 7. shape and dtype.

@pytest.mark.parametrize("size", [4, 16, 64])
def test_jit_with_traced_p_at_each_resolution(size):
    x = images(size=size)
    out = augment(KEY, x, 1.0)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert np.all(np.isfinite(out)) and not np.array_equal(out, x)
    np.testing.assert_array_equal(augment(KEY, x, 0.0), x)


def test_bfloat16_keeps_shape_and_dtype():
    x = images(size=16, batch=4).astype(jnp.bfloat16)
    out = augment(KEY, x, 1.0)
    assert out.shape == x.shape and out.dtype == jnp.bfloat16
    np.testing.assert_array_equal(augment(KEY, x, 0.0), x)
