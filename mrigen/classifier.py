"""The fixed slice classifier of `--mode=utility`: a small CNN, its class-balanced training, its scores.

The architecture and the training recipe are fixed (docs/utility.md), so that
accuracies measured on different training sets, runs and machines compare
the data, not the classifier:

    input [N, R, R, 1] in [-1, 1], average-pooled to at most MAX_INPUT px
    3 x (Conv 3x3, same padding, CHANNELS = 8 / 16 / 32 channels; ReLU; 2x2 average pooling)
    mean over the pixels, Dense(C): the logits

Adam (LEARNING_RATE) on the cross-entropy, a fixed number of steps of
class-balanced batches (labels.balanced_batch_indices: slot i of a batch has
class i mod C), so a class with few images weighs as much as a large one.
Everything depends on the seed only: on one machine the same seed gives the
same weights, bit for bit.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mrigen import labels as labels_lib

MAX_INPUT = 32  # Larger slices are average-pooled down to this side length.
CHANNELS = (8, 16, 32)
LEARNING_RATE = 1e-3
BATCH_PER_CLASS_TARGET = 32  # A batch holds C * max(1, 32 // C) images: every class equally often.
PREDICT_BATCH = 64


class SliceClassifier(nn.Module):
    """[N, r, r, 1] float32 in [-1, 1] (r <= MAX_INPUT) -> [N, num_classes] logits."""

    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for channels in CHANNELS:
            x = nn.relu(nn.Conv(channels, (3, 3), padding="SAME")(x))
            if x.shape[1] > 1:  # A checkpoint of an early ProGAN stage can be 4 px.
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


def input_resolution(resolution: int) -> int:
    """The side length the classifier sees for slices of side `resolution`."""
    return min(resolution, MAX_INPUT)


def prepare(images: np.ndarray) -> np.ndarray:
    """[N, R, R, 1] uint8, or float in [-1, 1] -> [N, r, r, 1] float32 in [-1, 1], r = input_resolution(R)."""
    x = np.asarray(images)
    x = x.astype(np.float32) / 127.5 - 1.0 if x.dtype == np.uint8 else x.astype(np.float32)
    factor = x.shape[1] // input_resolution(x.shape[1])
    if factor > 1:
        n, r = x.shape[0], x.shape[1] // factor
        x = x.reshape(n, r, factor, r, factor, 1).mean(axis=(2, 4))
    return x


def batch_size(num_classes: int) -> int:
    return num_classes * max(1, BATCH_PER_CLASS_TARGET // num_classes)


@functools.partial(jax.jit, static_argnums=0)
def _train_step(model: SliceClassifier, params, opt_state, images: jax.Array, labels: jax.Array):
    def loss_fn(p):
        logits = model.apply({"params": p}, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optax.adam(LEARNING_RATE).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


@functools.partial(jax.jit, static_argnums=(0, 1))
def _initial_state(model: SliceClassifier, image_shape: tuple, key: jax.Array):
    params = model.init(key, jnp.zeros((1, *image_shape), jnp.float32))["params"]
    return params, optax.adam(LEARNING_RATE).init(params)


def train(images: np.ndarray, labels: np.ndarray, num_classes: int, seed: int, steps: int) -> dict:
    """The classifier's parameters after `steps` class-balanced Adam steps on (images, labels).

    images: [N, R, R, 1] uint8 or float in [-1, 1]; labels: [N] int32 in [0, num_classes), every class present.
    """
    x = prepare(images)
    labels = np.asarray(labels, np.int32)
    model, size = SliceClassifier(num_classes), batch_size(num_classes)
    init_key, batch_key = jax.random.split(jax.random.PRNGKey(seed))
    params, opt_state = _initial_state(model, x.shape[1:], init_key)
    draws = _batch_draws(batch_key, steps, labels_lib.class_table(labels, num_classes), size)
    # The batches are gathered on the host: one compiled step serves training sets of every size. (A
    # lax.fori_loop over the steps, with the data on the device, ran several times slower per step on XLA:CPU.)
    for indices in draws:
        params, opt_state, loss = _train_step(model, params, opt_state, x[indices], labels[indices])
        loss.block_until_ready()  # Hundreds of queued CPU steps can abort XLA:CPU (tests/test_conditional.py).
    return params


_draw_batches = jax.jit(jax.vmap(labels_lib.balanced_batch_indices, (None, 0, None, None)), static_argnums=3)


def _batch_draws(key: jax.Array, steps: int, table: dict, size: int) -> np.ndarray:
    """[steps, size] indices of every batch (labels.balanced_batch_indices of steps 0 .. steps - 1)."""
    if not steps:
        return np.zeros((0, size), np.int32)
    return np.asarray(_draw_batches(key, jnp.arange(steps), table, size))


@functools.partial(jax.jit, static_argnums=0)
def _logits(model: SliceClassifier, params, images: jax.Array) -> jax.Array:
    return model.apply({"params": params}, images)


def predict(params: dict, images: np.ndarray, num_classes: int) -> np.ndarray:
    """[N] int32 predicted classes of images ([N, R, R, 1] uint8 or float in [-1, 1])."""
    x = prepare(images)
    model, out = SliceClassifier(num_classes), []
    for start in range(0, len(x), PREDICT_BATCH):
        chunk = x[start:start + PREDICT_BATCH]
        padded = np.concatenate([chunk, np.zeros((PREDICT_BATCH - len(chunk), *x.shape[1:]), np.float32)])
        out.append(np.asarray(jnp.argmax(_logits(model, params, padded), axis=-1))[:len(chunk)])
    return np.concatenate(out).astype(np.int32) if out else np.zeros(0, np.int32)


def scores(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """Accuracy, balanced accuracy and per-class recall of predictions against the true labels ([N] int each).

    recall[c]: the share of class c's images predicted as c (NaN for a class with no image);
    balanced accuracy: the mean recall over the classes present.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    correct = predictions == labels
    counts = np.bincount(labels, minlength=num_classes)
    hits = np.bincount(labels[correct], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
    return {"accuracy": float(correct.mean()) if len(labels) else float("nan"),
            "balanced_accuracy": float(np.nanmean(recall)) if counts.any() else float("nan"),
            "recall": [float(r) for r in recall]}
