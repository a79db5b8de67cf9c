"""Conditional models: the label embedding in G, the projection in D, and samples that follow their labels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import smoke_config
from mrigen import data, losses, models, parallel, sampling, train
from mrigen.labels import device_data
from mrigen import state as state_lib

CLASSES = ("bottom", "top")


def parameter_shapes(model, class_names):
    config = smoke_config(model)
    arch = models.build(config, class_names)
    shapes = jax.eval_shape(lambda: state_lib.initial_state(arch, arch.stages[-1],
                                                            state_lib.create_optimizer(config.train), 0, 8))
    flat = lambda tree: {jax.tree_util.keystr(path): leaf.shape  # noqa: E731
                         for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
    return flat(shapes["g"]["params"]), flat(shapes["d"]["params"]), config.arch.latent_dim


# The layer that reads z, whose inputs the class embedding doubles.
FIRST_G_KERNEL = {"dcgan": "['Dense_0']['kernel']", "srresnet": "['dense']['kernel']",
                  "progan": "['b4']['conv0']['kernel']"}
PROJECTION = {"dcgan": "['label_projection']['embedding']", "srresnet": "['label_projection']['embedding']",
              "progan": "['b4']['label_projection']['embedding']"}


@pytest.mark.parametrize("model", ["dcgan", "srresnet", "progan"])
def test_conditional_trees_add_the_embedding_and_the_projection_only(model):
    g, d, latent = parameter_shapes(model, ())
    g3, d3, _ = parameter_shapes(model, ("a", "b", "c"))
    assert not any("label" in path for path in [*g, *d])  # the unconditional trees have no label layers
    assert set(g3) - set(g) == {"['label_embed']['embedding']"} and set(g) <= set(g3)
    assert g3["['label_embed']['embedding']"] == (3, latent)
    first = FIRST_G_KERNEL[model]
    assert g3[first][-2] == 2 * g[first][-2] == 2 * latent  # z and its class's embedding
    assert {p: s for p, s in g3.items() if p in g and p != first} == {p: s for p, s in g.items() if p != first}
    assert set(d3) - set(d) == {PROJECTION[model]} and all(d3[p] == d[p] for p in d)
    dense_kernel = [s for p, s in d.items() if p.endswith("['kernel']") and len(s) == 2 and s[-1] == 1]
    assert d3[PROJECTION[model]] == (3, dense_kernel[-1][0])  # one vector per class over phi, D's last features


def test_projection_adds_the_inner_product_to_the_unconditional_output():
    config = smoke_config()
    plain, conditioned = models.build(config), models.build(config, CLASSES)
    x = jax.random.uniform(jax.random.PRNGKey(1), (8, 32, 32, 1), minval=-1, maxval=1)
    labels = jnp.array([0, 1] * 4)
    d_vars = state_lib.init_variables(conditioned.discriminator(conditioned.stages[0]), jax.random.PRNGKey(0), x,
                                      labels)
    plain_vars = {**d_vars, "params": {k: v for k, v in d_vars["params"].items() if k != "label_projection"}}
    d_plain = plain.discriminator(plain.stages[0])
    d_cond = conditioned.discriminator(conditioned.stages[0])
    expected = d_plain.apply(plain_vars, x, 1.0, train=False)
    zeroed = jax.tree.map(jnp.zeros_like, d_vars["params"]["label_projection"])
    without = d_cond.apply({**d_vars, "params": {**d_vars["params"], "label_projection": zeroed}}, x, 1.0,
                           train=False, labels=labels)
    np.testing.assert_array_equal(np.asarray(without), np.asarray(expected))  # psi(phi(x)) bit for bit
    with_projection = d_cond.apply(d_vars, x, 1.0, train=False, labels=labels)
    swapped = d_cond.apply(d_vars, x, 1.0, train=False, labels=1 - labels)
    assert not np.allclose(np.asarray(with_projection), np.asarray(swapped))  # the label changes D's verdict


def half_bright_images(count, top, rng):
    """32-px images with the top (or bottom) half bright, over noise."""
    images = rng.integers(0, 40, (count, 32, 32, 1)).astype(np.uint8)
    images[:, :16] += 180 * top
    images[:, 16:] += 180 * (1 - top)
    return images


def test_samples_follow_their_labels_on_a_two_class_set():
    """Top-half-bright vs bottom-half-bright slices: after 200 steps of the tiniest conditional DCGAN (LSGAN,
    Adam at 1e-3, which learns the labels within ~120 steps for seeds 0-2) each label's samples are bright
    where its class is. Unequal classes, drawn class-balanced."""
    rng = np.random.default_rng(0)
    images = np.concatenate([half_bright_images(40, 0, rng), half_bright_images(16, 1, rng)])
    dataset = data.Dataset(images=images, source="toy", cache_key="toy",
                           labels=np.array([0] * 40 + [1] * 16, np.int32), class_names=CLASSES)
    config = smoke_config(loss="lsgan", train__update_ratio=1, train__learning_rate=1e-3)
    arch = models.build(config, CLASSES)
    stage, optimizer, mesh = arch.stages[0], state_lib.create_optimizer(config.train), parallel.data_mesh()
    replicated = parallel.replicated(mesh)
    step_fn = train.make_train_step(arch, stage, 0, 200, losses.get("lsgan"), optimizer, config.train,
                                    len(dataset), mesh)
    state = jax.device_put(state_lib.initial_state(arch, stage, optimizer, 0, 8, config.train), replicated)
    on_device = jax.device_put(device_data(dataset, balanced=True), replicated)
    for _ in range(200):
        state, metrics = step_fn(state, on_device)
        jax.block_until_ready(metrics)  # as the smoke runs' log steps do: 200 queued steps aborted XLA:CPU here
    assert np.isfinite(float(metrics["d_loss"]))
    z = arch.sample_latent(jax.random.PRNGKey(5), 32)
    for label, sign in [(0, -1), (1, 1)]:
        fake = np.asarray(sampling.generate(arch.generator(stage), state["g"], z, 1.0, jnp.full(32, label)))
        top_minus_bottom = fake[:, :16].mean(axis=(1, 2, 3)) - fake[:, 16:].mean(axis=(1, 2, 3))
        assert np.mean(sign * top_minus_bottom > 0.5) >= 0.9, (CLASSES[label], top_minus_bottom)


# DCGAN with DRAGAN (configs/dcgan.py:smoke) trains conditionally in test_conditional_run.py's labeled run.
@pytest.mark.parametrize("model, loss", [("srresnet", "r1"), ("progan", "wgan_gp")])
def test_every_family_trains_conditionally_with_a_gradient_penalty(model, loss):
    """One step of SRResNet and ProGAN, each with a penalty (computed on the conditional D, which refuses to
    run without labels): finite, and every class's G embedding and D projection vector took a step."""
    rng = np.random.default_rng(1)
    images = np.concatenate([half_bright_images(8, 0, rng), half_bright_images(8, 1, rng)])
    dataset = data.Dataset(images=images, source="toy", cache_key="toy",
                           labels=np.array([0] * 8 + [1] * 8, np.int32), class_names=CLASSES)
    config = smoke_config(model, loss=loss)
    arch = models.build(config, CLASSES)
    stage, optimizer, mesh = arch.stages[0], state_lib.create_optimizer(config.train), parallel.data_mesh()
    replicated = parallel.replicated(mesh)
    step_fn = train.make_train_step(arch, stage, 0, 10, losses.get(loss), optimizer, config.train, len(dataset),
                                    mesh)
    start = jax.device_get(state_lib.initial_state(arch, stage, optimizer, 0, 8, config.train))
    state, metrics = step_fn(jax.device_put(start, replicated), jax.device_put(device_data(dataset), replicated))
    state, metrics = jax.device_get((state, metrics))
    assert np.isfinite(metrics["penalty"]) and metrics["penalty"] > 0
    d_params = lambda s: s["d"]["params"]["b4"] if model == "progan" else s["d"]["params"]  # noqa: E731
    d_moved = np.abs(d_params(state)["label_projection"]["embedding"]
                     - d_params(start)["label_projection"]["embedding"]).max(axis=1)
    g_moved = np.abs(state["g"]["params"]["label_embed"]["embedding"]
                     - start["g"]["params"]["label_embed"]["embedding"]).max(axis=1)
    assert np.all(d_moved > 0) and np.all(g_moved > 0)  # every class's vector took a step
