"""The five adversarial losses of the paper, and R1 beyond it (docs/losses.md), by name.

Each loss is a pair of functions on D's raw outputs (logits / critic values),
plus, for WGAN-GP, DRAGAN and R1, a penalty on D's input gradient and its
weight, and for WGAN, whether the critic's weights are clipped after each
step. The trainer owns how G and D are run; this module only says what to
minimise.
"""

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from mrigen.errors import UserError


def sigmoid_cross_entropy(logits: jnp.ndarray, target: float) -> jnp.ndarray:
    """-t log sigma(l) - (1 - t) log(1 - sigma(l)), stable for any logit."""
    return target * jax.nn.softplus(-logits) + (1.0 - target) * jax.nn.softplus(logits)


# Discriminator losses: (real_logits [N], fake_logits [N], real_target) -> scalar.


def gan_d(real, fake, target):
    return jnp.mean(sigmoid_cross_entropy(real, target) + sigmoid_cross_entropy(fake, 0.0))


def lsgan_d(real, fake, target):
    return jnp.mean((real - target) ** 2 + fake ** 2)


def wgan_d(real, fake, target):
    del target
    return jnp.mean(fake - real)


def r1_d(real, fake, target):
    """softplus(-D(x)) + softplus(D(G(z))), the logistic loss of R1 (StyleGAN2).

    It ignores `target` (train.real_target): R1 is used without label smoothing.
    """
    del target
    return gan_d(real, fake, 1.0)


# Generator losses: (fake_logits [N], real_target) -> scalar.


def gan_g(fake, target):
    return jnp.mean(sigmoid_cross_entropy(fake, target))


def lsgan_g(fake, target):
    return jnp.mean((fake - target) ** 2)


def wgan_g(fake, target):
    del target
    return -jnp.mean(fake)


def r1_g(fake, target):
    """softplus(-D(G(z))), the non-saturating loss; like `r1_d` it ignores `target`."""
    del target
    return gan_g(fake, 1.0)


# Where the gradient penalty is evaluated: (key, real, fake) -> points, all [N, H, W, 1].


def wgan_gp_points(key, real, fake):
    """x_m = a x + (1 - a) G(z), one a ~ U(0, 1) per sample."""
    a = jax.random.uniform(key, (real.shape[0], 1, 1, 1), real.dtype)
    return a * real + (1.0 - a) * fake


def dragan_points(key, real, fake):
    """x'_m = a x + (1 - a) x_p with x_p = 0.5 std(x) u; a, u ~ U(0, 1) per pixel."""
    del fake
    key_a, key_u = jax.random.split(key)
    a = jax.random.uniform(key_a, real.shape, real.dtype)
    u = jax.random.uniform(key_u, real.shape, real.dtype)
    perturbed = 0.5 * jnp.std(real) * u
    return a * real + (1.0 - a) * perturbed


def gradient_penalty(d_fn: Callable[[jnp.ndarray], jnp.ndarray], points: jnp.ndarray,
                     epsilon: float = 1e-10) -> jnp.ndarray:
    """mean over samples of (||grad_x D(x)|| - 1)^2 at `points` [N, H, W, C].

    The norm is over all pixels and channels of each sample; `epsilon` inside
    the square root keeps its gradient finite where grad_x D is zero.
    """
    grads = jax.grad(lambda x: jnp.sum(d_fn(x)))(points)
    norms = jnp.sqrt(jnp.sum(jnp.square(grads.astype(jnp.float32)), axis=(1, 2, 3)) + epsilon)
    return jnp.mean((norms - 1.0) ** 2)


def r1_penalty(d_fn: Callable[[jnp.ndarray], jnp.ndarray], real: jnp.ndarray) -> jnp.ndarray:
    """mean over samples of ||grad_x D(x)||^2 at the real images `real` [N, H, W, C], unweighted.

    The squared norm is over all pixels and channels of each sample; no square
    root is taken, so it needs no epsilon.
    """
    grads = jax.grad(lambda x: jnp.sum(d_fn(x)))(real)
    return jnp.mean(jnp.sum(jnp.square(grads.astype(jnp.float32)), axis=(1, 2, 3)))


# Penalties of a Loss: (d_fn, key, real, fake) -> scalar, with d_fn: x [N, H, W, 1] -> logits [N].


def wgan_gp_penalty(d_fn, key, real, fake):
    """`gradient_penalty` at `wgan_gp_points`."""
    return gradient_penalty(d_fn, wgan_gp_points(key, real, fake))


def dragan_penalty(d_fn, key, real, fake):
    """`gradient_penalty` at `dragan_points`."""
    return gradient_penalty(d_fn, dragan_points(key, real, fake))


def r1_real_penalty(d_fn, key, real, fake):
    """`r1_penalty` at the real batch; it draws nothing and ignores the fakes."""
    del key, fake
    return r1_penalty(d_fn, real)


# Weights of a penalty: the config's train ConfigDict -> float.


def penalty_lambda(train_config) -> float:
    """train.penalty_weight, the lambda of the gradient penalty (WGAN-GP, DRAGAN)."""
    return train_config.penalty_weight


def r1_weight(train_config) -> float:
    """train.r1_gamma / 2, the weight of R1's mean squared gradient norm."""
    return train_config.r1_gamma / 2


@dataclasses.dataclass(frozen=True)
class Loss:
    """One of the losses.

    d_loss / g_loss: see the functions above.
    penalty: the term on D's input gradient added to D's loss (None: none).
    penalty_weight: its weight, from the train config.
    clips_critic: clip D's weights to [-c, c] after each D step (WGAN).
    """

    name: str
    d_loss: Callable
    g_loss: Callable
    penalty: Optional[Callable] = None
    penalty_weight: Callable = penalty_lambda
    clips_critic: bool = False


LOSSES = {
    "gan": Loss("gan", gan_d, gan_g),
    "lsgan": Loss("lsgan", lsgan_d, lsgan_g),
    "wgan": Loss("wgan", wgan_d, wgan_g, clips_critic=True),
    "wgan_gp": Loss("wgan_gp", wgan_d, wgan_g, penalty=wgan_gp_penalty),
    "dragan": Loss("dragan", gan_d, gan_g, penalty=dragan_penalty),
    "r1": Loss("r1", r1_d, r1_g, penalty=r1_real_penalty, penalty_weight=r1_weight),
}


def get(name: str) -> Loss:
    """The loss called `name`; an unknown name is a UserError listing the known ones."""
    if name not in LOSSES:
        raise UserError(f"loss: unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]


def clip_weights(params, limit: float):
    """Every leaf clipped to [-limit, limit] (WGAN's critic constraint)."""
    return jax.tree.map(lambda p: jnp.clip(p, -limit, limit), params)
