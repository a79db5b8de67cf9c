"""The layers that make a model conditional on a class label (docs/models.md).

G: a learned embedding of the class, as long as z, appended to z.
D: the projection discriminator (Miyato and Koyama 2018),
   D(x, y) = psi(phi(x)) + <embed(y), phi(x)>,
   phi(x) the features entering D's last dense layer psi, embed(y) a learned
   vector per class. Each family calls these at that point of its networks;
   with no classes they add nothing, so the networks are exactly the unconditional ones.
"""

import math
from typing import Callable, Optional

import flax.linen as nn
import jax.numpy as jnp

GENERATOR_EMBEDDING = "label_embed"
PROJECTION = "label_projection"


def _require(labels: Optional[jnp.ndarray], num_classes: int) -> None:
    if labels is None:
        raise ValueError(f"a conditional network ({num_classes} classes) needs labels")


def conditioned_latent(z: jnp.ndarray, labels: Optional[jnp.ndarray], num_classes: int) -> jnp.ndarray:
    """[N, L] -> [N, 2L]: z with its class's embedding appended; z itself when num_classes is 0.

    Call inside a compact method: the embedding [num_classes, L] belongs to the caller.
    """
    if not num_classes:
        return z
    _require(labels, num_classes)
    embedding = nn.Embed(num_classes, z.shape[-1], name=GENERATOR_EMBEDDING)(labels)
    return jnp.concatenate([z, embedding.astype(z.dtype)], axis=-1)


def projection(features: jnp.ndarray, labels: Optional[jnp.ndarray], num_classes: int,
               init: Callable = nn.initializers.normal(0.02), scale: float = 1.0) -> jnp.ndarray:
    """<embed(y), phi(x)>: [N, F] features -> [N] float32, to add to D's output (only when num_classes > 0).

    init: the embedding's initializer, that of the family's last dense layer;
    scale: a run-time multiplier (ProGAN's equalized learning rate).
    """
    _require(labels, num_classes)
    embedding = nn.Embed(num_classes, features.shape[-1], embedding_init=init, name=PROJECTION)(labels)
    return scale * jnp.sum(embedding.astype(jnp.float32) * features.astype(jnp.float32), axis=-1)


def equalized_scale(features: int) -> float:
    """ProGAN's He constant for a projection over `features` inputs, as its dense layers use."""
    return math.sqrt(2.0 / features)
