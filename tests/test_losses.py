"""The six losses against hand computations, and the gradient penalties against finite differences."""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mrigen import losses
from mrigen.errors import UserError

REAL = jnp.array([2.0, -1.0, 0.5])
FAKE = jnp.array([-3.0, 0.25, 1.0])
T = 0.9  # One-sided label smoothing target.


def log_sigmoid(x):
    return -math.log1p(math.exp(-x))


def log_one_minus_sigmoid(x):
    return -math.log1p(math.exp(x))


def hand_mean(fn, *columns):
    return sum(fn(*values) for values in zip(*columns)) / len(columns[0])


def test_gan_losses_match_hand_computation():
    expected_d = hand_mean(lambda r, f: -(T * log_sigmoid(r) + (1 - T) * log_one_minus_sigmoid(r))
                           - log_one_minus_sigmoid(f), REAL.tolist(), FAKE.tolist())
    expected_g = hand_mean(lambda f: -(T * log_sigmoid(f) + (1 - T) * log_one_minus_sigmoid(f)),
                           FAKE.tolist())
    np.testing.assert_allclose(losses.gan_d(REAL, FAKE, T), expected_d, rtol=1e-6)
    np.testing.assert_allclose(losses.gan_g(FAKE, T), expected_g, rtol=1e-6)
    # Without smoothing the generator loss is the non-saturating -log sigma(D(G(z))).
    np.testing.assert_allclose(losses.gan_g(FAKE, 1.0), hand_mean(lambda f: -log_sigmoid(f), FAKE.tolist()),
                               rtol=1e-6)


def test_logistic_losses_are_stable_for_huge_logits():
    huge = jnp.array([1e4, -1e4])
    assert np.isfinite(losses.gan_d(huge, -huge, T))
    assert np.isfinite(losses.gan_g(-huge, T))
    np.testing.assert_allclose(losses.gan_g(jnp.array([-1e4]), 1.0), 1e4, rtol=1e-6)


def test_lsgan_losses_match_hand_computation():
    expected_d = hand_mean(lambda r, f: (r - T) ** 2 + f ** 2, REAL.tolist(), FAKE.tolist())
    expected_g = hand_mean(lambda f: (f - T) ** 2, FAKE.tolist())
    np.testing.assert_allclose(losses.lsgan_d(REAL, FAKE, T), expected_d, rtol=1e-6)
    np.testing.assert_allclose(losses.lsgan_g(FAKE, T), expected_g, rtol=1e-6)


def test_wasserstein_losses_match_hand_computation():
    expected_d = hand_mean(lambda r, f: -r + f, REAL.tolist(), FAKE.tolist())
    np.testing.assert_allclose(losses.wgan_d(REAL, FAKE, T), expected_d, rtol=1e-6)
    np.testing.assert_allclose(losses.wgan_g(FAKE, T), -float(np.mean(FAKE)), rtol=1e-6)


def test_r1_losses_match_hand_computation_and_ignore_the_smoothing_target():
    expected_d = hand_mean(lambda r, f: -log_sigmoid(r) - log_one_minus_sigmoid(f), REAL.tolist(), FAKE.tolist())
    expected_g = hand_mean(lambda f: -log_sigmoid(f), FAKE.tolist())
    for target in (T, 1.0):
        np.testing.assert_allclose(losses.r1_d(REAL, FAKE, target), expected_d, rtol=1e-6)
        np.testing.assert_allclose(losses.r1_g(FAKE, target), expected_g, rtol=1e-6)


def test_registry_pairs_each_name_with_its_terms():
    assert list(losses.LOSSES) == ["gan", "lsgan", "wgan", "wgan_gp", "dragan", "r1"]
    assert all(losses.get(name).name == name for name in losses.LOSSES)
    assert losses.get("wgan").clips_critic and not losses.get("wgan_gp").clips_critic
    assert losses.get("wgan_gp").penalty is losses.wgan_gp_penalty
    assert losses.get("dragan").penalty is losses.dragan_penalty
    assert losses.get("dragan").d_loss is losses.gan_d
    assert losses.get("r1").d_loss is losses.r1_d and losses.get("r1").g_loss is losses.r1_g
    assert losses.get("r1").penalty is losses.r1_real_penalty and not losses.get("r1").clips_critic
    assert all(losses.get(name).penalty is None for name in ("gan", "lsgan", "wgan"))
    with pytest.raises(UserError, match="unknown loss 'hinge'.*dragan.*r1.*wgan_gp"):
        losses.get("hinge")


def test_penalty_weights_come_from_the_train_config():
    tc = types.SimpleNamespace(penalty_weight=0.25, r1_gamma=10.0)
    assert losses.get("wgan_gp").penalty_weight(tc) == 0.25
    assert losses.get("dragan").penalty_weight(tc) == 0.25
    assert losses.get("r1").penalty_weight(tc) == 5.0  # gamma / 2


def tiny_critic(w):
    """A smooth nonlinear D: [N, 2, 2, 1] -> [N]."""
    return lambda x: jnp.tanh(jnp.sum(x * w, axis=(1, 2, 3))) + jnp.sum(x ** 3, axis=(1, 2, 3))


def test_gradient_penalty_matches_finite_differences():
    w = jnp.array([0.3, -1.2, 0.7, 2.0]).reshape(1, 2, 2, 1)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 2, 1))
    d = tiny_critic(w)
    eps = 1e-3
    expected = []
    for sample in np.asarray(x, np.float64):
        grad = np.zeros_like(sample)
        for idx in np.ndindex(sample.shape):
            step = np.zeros_like(sample)
            step[idx] = eps
            f = lambda s: float(d(jnp.asarray(s[None], jnp.float32))[0])
            grad[idx] = (f(sample + step) - f(sample - step)) / (2 * eps)
        expected.append((np.linalg.norm(grad) - 1.0) ** 2)
    np.testing.assert_allclose(losses.gradient_penalty(d, x), np.mean(expected), rtol=2e-3)


def test_gradient_penalty_uses_the_norm_over_all_pixels_of_a_sample():
    # D(x) = sum(x * w): the gradient is w everywhere, its norm ||w|| over all four pixels.
    w = jnp.array([3.0, 0.0, 0.0, 4.0]).reshape(1, 2, 2, 1)
    d = lambda x: jnp.sum(x * w, axis=(1, 2, 3))
    penalty = losses.gradient_penalty(d, jnp.zeros((2, 2, 2, 1)))
    np.testing.assert_allclose(penalty, (5.0 - 1.0) ** 2, rtol=1e-6)


def test_gradient_penalty_is_finite_where_the_gradient_is_zero():
    d = lambda x, w: jnp.sum(x * w, axis=(1, 2, 3))
    x = jnp.ones((2, 2, 2, 1))
    value, grad_w = jax.value_and_grad(lambda w: losses.gradient_penalty(lambda y: d(y, w), x))(
        jnp.zeros((1, 2, 2, 1)))
    np.testing.assert_allclose(value, 1.0, rtol=1e-4)
    assert np.all(np.isfinite(grad_w))


def finite_difference_gradients(d, x, eps=1e-3):
    """[N, ...] central differences of each sample's D(x_n), from float32 evaluations."""
    grads = []
    for sample in np.asarray(x, np.float64):
        grad = np.zeros_like(sample)
        f = lambda s: float(d(jnp.asarray(s[None], jnp.float32))[0])
        for idx in np.ndindex(sample.shape):
            step = np.zeros_like(sample)
            step[idx] = eps
            grad[idx] = (f(sample + step) - f(sample - step)) / (2 * eps)
        grads.append(grad)
    return np.stack(grads)


def test_r1_penalty_matches_finite_differences():
    w = jnp.array([0.3, -1.2, 0.7, 2.0]).reshape(1, 2, 2, 1)
    x = jax.random.normal(jax.random.PRNGKey(4), (3, 2, 2, 1))
    d = tiny_critic(w)
    grads = finite_difference_gradients(d, x)
    expected = np.mean(np.sum(grads ** 2, axis=(1, 2, 3)))
    np.testing.assert_allclose(losses.r1_penalty(d, x), expected, rtol=2e-3)


def test_r1_penalty_is_the_squared_norm_over_all_pixels_at_the_real_images():
    # D(x) = sum(x * w): the gradient is w everywhere, its squared norm 3^2 + 4^2 = 25.
    w = jnp.array([3.0, 0.0, 0.0, 4.0]).reshape(1, 2, 2, 1)
    d = lambda x: jnp.sum(x * w, axis=(1, 2, 3))
    np.testing.assert_allclose(losses.r1_penalty(d, jnp.zeros((2, 2, 2, 1))), 25.0, rtol=1e-6)
    # Through the Loss interface: taken at the real batch, whatever the key and the fakes.
    d = tiny_critic(w)
    real = jax.random.normal(jax.random.PRNGKey(5), (3, 2, 2, 1))
    r1 = losses.get("r1").penalty
    np.testing.assert_allclose(r1(d, jax.random.PRNGKey(6), real, real + 5.0),
                               losses.r1_penalty(d, real), rtol=1e-6)
    np.testing.assert_allclose(r1(d, jax.random.PRNGKey(7), real, -real), losses.r1_penalty(d, real), rtol=1e-6)


def test_r1_penalty_has_a_finite_gradient_where_the_input_gradient_is_zero():
    d = lambda x, w: jnp.sum(x * w, axis=(1, 2, 3))
    value, grad_w = jax.value_and_grad(lambda w: losses.r1_penalty(lambda y: d(y, w), jnp.ones((2, 2, 2, 1))))(
        jnp.zeros((1, 2, 2, 1)))
    assert value == 0.0 and np.all(np.isfinite(grad_w))


def test_wgan_gp_and_dragan_penalties_are_the_gradient_penalty_at_their_points():
    d = tiny_critic(jnp.array([0.3, -1.2, 0.7, 2.0]).reshape(1, 2, 2, 1))
    key = jax.random.PRNGKey(8)
    real = jax.random.normal(jax.random.PRNGKey(9), (4, 2, 2, 1))
    fake = jax.random.normal(jax.random.PRNGKey(10), (4, 2, 2, 1))
    for name, points in (("wgan_gp", losses.wgan_gp_points), ("dragan", losses.dragan_points)):
        np.testing.assert_allclose(losses.get(name).penalty(d, key, real, fake),
                                   losses.gradient_penalty(d, points(key, real, fake)), rtol=1e-6)


def test_wgan_gp_points_mix_real_and_fake_with_one_weight_per_sample():
    real, fake = jnp.ones((4, 3, 3, 1)), jnp.zeros((4, 3, 3, 1))
    points = losses.wgan_gp_points(jax.random.PRNGKey(1), real, fake)
    per_sample = points.reshape(4, -1)
    assert np.allclose(per_sample, per_sample[:, :1])  # a is constant within a sample,
    assert len(np.unique(np.round(per_sample[:, 0], 6))) == 4  # and differs between samples.
    assert np.all((per_sample >= 0) & (per_sample <= 1))


def test_dragan_points_perturb_real_images_per_pixel():
    real = jax.random.uniform(jax.random.PRNGKey(2), (4, 8, 8, 1), minval=-1, maxval=1)
    points = losses.dragan_points(jax.random.PRNGKey(3), real, None)
    # x' = a x + (1 - a) x_p lies between x and x_p = 0.5 std(x) u, u in [0, 1].
    bound = 0.5 * float(jnp.std(real))
    low = jnp.minimum(real, 0.0) - 1e-6
    high = jnp.maximum(real, bound) + 1e-6
    assert np.all((points >= low) & (points <= high))
    assert len(np.unique(np.round(np.asarray(points - real).ravel(), 6))) > 200  # per-pixel draws


def test_clip_weights_bounds_every_leaf():
    params = {"a": jnp.array([-1.0, 0.005, 2.0]), "b": {"c": jnp.array([[0.3]])}}
    clipped = losses.clip_weights(params, 0.01)
    np.testing.assert_allclose(clipped["a"], [-0.01, 0.005, 0.01], rtol=1e-6)
    np.testing.assert_allclose(clipped["b"]["c"], [[0.01]], rtol=1e-6)
