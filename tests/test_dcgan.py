"""DCGAN layer shapes pinned to the paper's Tables 1-2, and the layers it is built from."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mrigen import models
from mrigen.models import dcgan, layers


def full_size_config():
    config = ml_collections.ConfigDict({
        "model": "dcgan", "data": {"resolution": 256},
        "arch": {"width": 1.0, "latent_dim": 256},
        "train": {"epochs": 60.0, "compute_dtype": "float32"}})
    return config


def shapes(module, *inputs):
    variables = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *inputs, 1.0, train=True))
    return jax.tree.map(lambda a: a.shape, variables["params"])


def test_full_size_generator_matches_table_1():
    arch = models.build(full_size_config())
    params = shapes(arch.generator(arch.stages[0]), jnp.zeros((4, 256)))
    assert params["Dense_0"]["kernel"] == (256, 256 * 8 * 8)
    expected = [(5, 5, 256, 256)] * 6 + [(5, 5, 256, 128), (5, 5, 128, 64), (5, 5, 64, 1)]
    assert [params[f"ConvTranspose_{i}"]["kernel"] for i in range(9)] == expected
    assert len([k for k in params if k.startswith("BatchNorm")]) == 9


def test_full_size_discriminator_matches_table_2():
    arch = models.build(full_size_config())
    params = shapes(arch.discriminator(arch.stages[0]), jnp.zeros((4, 256, 256, 1)))
    channels = [1, 64, 128, 256, 512, 1024]
    assert [params[f"Conv_{i}"]["kernel"] for i in range(5)] == [
        (5, 5, channels[i], channels[i + 1]) for i in range(5)]
    assert len([k for k in params if k.startswith("BatchNorm")]) == 4  # none after the first conv
    # 8x8x1024 plus the minibatch-stddev map, flattened, into Dense 1025, then Dense 1.
    assert params["Dense_0"]["kernel"] == (8 * 8 * 1025, 1025)
    assert params["Dense_1"]["kernel"] == (1025, 1)


def test_generator_and_discriminator_shapes_and_ranges_at_small_size():
    g = dcgan.Generator(resolution=32, width=1 / 16)
    d = dcgan.Discriminator(resolution=32, width=1 / 16)
    z = dcgan.uniform_latent(jax.random.PRNGKey(0), 4, 8)
    assert float(z.min()) >= -1 and float(z.max()) <= 1
    g_vars = jax.jit(lambda k: g.init(k, z, 1.0, train=True))(jax.random.PRNGKey(1))
    images = jax.jit(lambda v: g.apply(v, z, 1.0, train=False))(g_vars)
    assert images.shape == (4, 32, 32, 1) and float(jnp.abs(images).max()) <= 1.0
    d_vars = jax.jit(lambda k: d.init(k, images, 1.0, train=True))(jax.random.PRNGKey(2))
    logits, _ = jax.jit(lambda v: d.apply(v, images, 1.0, train=True, mutable=["batch_stats"]))(d_vars)
    assert logits.shape == (4,) and logits.dtype == jnp.float32


def test_weights_start_from_normal_0_02_and_zero_biases():
    g = dcgan.Generator(resolution=32, width=0.5)
    params = jax.jit(lambda k: g.init(k, jnp.zeros((4, 64)), 1.0, train=True))(jax.random.PRNGKey(0))["params"]
    kernel = np.asarray(params["ConvTranspose_1"]["kernel"])
    assert abs(kernel.std() - 0.02) < 0.001 and abs(kernel.mean()) < 0.001
    assert not np.any(params["ConvTranspose_8"]["bias"])
    assert "bias" not in params["ConvTranspose_1"]  # followed by batch norm


def test_resize_upsampling_replaces_each_stride_2_layer_by_a_convolution_of_the_same_size():
    config = full_size_config()
    config.arch.upsample = "resize"
    arch = models.build(config)
    g = arch.generator(arch.stages[0])
    params = shapes(g, jnp.zeros((4, 256)))
    strides = [stride for _, stride in dcgan.GENERATOR_LAYERS]
    assert [params[f"Conv_{i}"]["kernel"] for i in range(strides.count(2))] == [
        (5, 5, 256, 256), (5, 5, 256, 256), (5, 5, 256, 256), (5, 5, 256, 128), (5, 5, 128, 64)]
    assert len([k for k in params if k.startswith("ConvTranspose")]) == strides.count(1) + 1  # + the output layer
    transposed = shapes(models.build(full_size_config()).generator(arch.stages[0]), jnp.zeros((4, 256)))
    count = lambda tree: sum(int(np.prod(shape)) for shape in jax.tree.leaves(tree, is_leaf=lambda s: isinstance(s, tuple)))
    assert count(params) == count(transposed)
    images = jax.eval_shape(lambda: g.init_with_output(jax.random.PRNGKey(0), jnp.zeros((2, 256)), 1.0, train=False))
    assert images[0].shape == (2, 256, 256, 1)


def test_resize_upsampling_has_no_checkerboard_where_the_transposed_convolution_has_one():
    """A constant map, doubled: nearest x2 then a convolution stays constant inside, a 5x5 transposed
    convolution at stride 2 alternates (3 and 2 taps per output pixel), whatever its (positive) kernel."""
    x = jnp.ones((1, 8, 8, 1))
    kernel = jnp.ones((5, 5, 1, 1))
    resized = jax.lax.conv_general_dilated(dcgan.base.upsample_nearest(x, 2), kernel, (1, 1), "SAME",
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))[0, 4:-4, 4:-4, 0]
    transposed = layers.conv_transpose_subpixel(x, kernel, 2)[0, 4:-4, 4:-4, 0]
    assert float(resized.max() - resized.min()) == 0.0
    assert float(transposed.max() / transposed.min()) == pytest.approx(9 / 4)  # 3 x 3 taps against 2 x 2


def test_an_unknown_upsampling_mode_names_the_field():
    config = full_size_config()
    config.arch.upsample = "bilinear"
    with pytest.raises(Exception, match="arch.upsample: unknown mode 'bilinear'; choose one of transposed, resize"):
        models.build(config)


def test_resolution_must_be_a_multiple_of_32():
    config = full_size_config()
    config.data.resolution = 16
    with pytest.raises(Exception, match="data.resolution: dcgan cannot make 16x16"):
        models.build(config)


@pytest.mark.parametrize("kernel_size, stride", [(5, 2), (5, 1), (4, 2), (3, 2)])
def test_subpixel_transposed_conv_equals_lax_conv_transpose(kernel_size, stride):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 6, 3))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (kernel_size, kernel_size, 3, 4))
    expected = jax.lax.conv_transpose(x, kernel, (stride, stride), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(layers.conv_transpose_subpixel(x, kernel, stride), expected, atol=1e-5)


def test_conv_transpose_module_matches_flax_conv_transpose():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3))
    reference = nn.ConvTranspose(5, (5, 5), strides=(2, 2), padding="SAME")
    variables = reference.init(jax.random.PRNGKey(1), x)
    ours = layers.ConvTranspose(5, 5, 2, subpixel=True, use_bias=True)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)) == jax.tree.map(jnp.shape, variables)
    np.testing.assert_allclose(ours.apply(variables, x), reference.apply(variables, x), atol=1e-5)


def test_minibatch_stddev_matches_a_direct_computation():
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 3, 3, 2))
    y = np.asarray(layers.minibatch_stddev(x))
    assert y.shape == (8, 3, 3, 3)
    np.testing.assert_array_equal(y[..., :2], x)
    xs = np.asarray(x, np.float64)
    for i in range(8):
        group = xs[[j for j in range(8) if j % 2 == i % 2]]  # groups of 4: samples i, i+2, i+4, i+6
        expected = np.mean(np.sqrt(group.var(axis=0) + 1e-8))
        np.testing.assert_allclose(y[i, :, :, 2], expected, rtol=1e-5)


def test_minibatch_stddev_uses_the_whole_batch_when_smaller_than_a_group():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 2, 2, 1))
    expected = np.mean(np.sqrt(np.asarray(x, np.float64).var(axis=0) + 1e-8))
    np.testing.assert_allclose(layers.minibatch_stddev(x)[:, :, :, 1], expected, rtol=1e-5)


def test_discriminator_at_32px_sees_what_a_batch_of_copies_shows():
    # Batch norm on D's last (1x1) map made every batch of identical images score the same,
    # whatever they showed, so G was rewarded for collapsing.
    d = dcgan.Discriminator(32, width=1 / 8)
    rng = np.random.default_rng(0)
    first, second = (np.repeat(rng.uniform(-1, 1, (1, 32, 32, 1)).astype(np.float32), 16, axis=0)
                     for _ in range(2))
    d_vars = d.init(jax.random.PRNGKey(0), first, 1.0, train=True)
    score = jax.jit(lambda x: d.apply(d_vars, x, 1.0, train=True, mutable=["batch_stats"])[0])
    assert abs(float(score(first)[0]) - float(score(second)[0])) > 1e-3
    assert "bias" in d_vars["params"]["Conv_4"] and "BatchNorm_3" not in d_vars["params"]


def test_runs_recorded_before_the_model_fields_existed_resume_as_what_they_were():
    from conftest import smoke_config
    from mrigen import run_config
    from mrigen.models import srresnet

    assert run_config.ADDED_FIELDS == {"arch.upsample": dcgan.UPSAMPLE_MODES[0],
                                       "arch.residual_blocks": srresnet.RESIDUAL_BLOCKS}
    current = smoke_config()
    previous = current.to_dict()
    del previous["arch"]["upsample"]
    assert run_config.config_differences(ml_collections.ConfigDict(previous), current) == []
    current.arch.upsample = "resize"
    assert run_config.config_differences(ml_collections.ConfigDict(previous), current) == [
        ("arch.upsample", "transposed", "resize")]
    current = smoke_config("srresnet")  # 2 blocks; a smoke run recorded before the field had 16
    previous = current.to_dict()
    del previous["arch"]["residual_blocks"]
    assert run_config.config_differences(ml_collections.ConfigDict(previous), current) == [
        ("arch.residual_blocks", 16, 2)]
