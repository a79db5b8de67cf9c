"""SRResNet: layer shapes pinned to docs/models.md (srresgan1.py), the resolution rule, a smoke run."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mrigen import models, sampling, train
from mrigen.models import srresnet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_variant(variant=None):
    spec = importlib.util.spec_from_file_location("srresnet_config", os.path.join(ROOT, "configs", "srresnet.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def variable_shapes(module, *inputs):
    """All variable collections of `module` as shapes, computed without allocating anything."""
    variables = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *inputs, 1.0, train=True))
    return jax.tree.map(lambda a: a.shape, variables)


def output_shape(module, *inputs):
    def run():
        variables = module.init(jax.random.PRNGKey(0), *inputs, 1.0, train=True)
        return module.apply(variables, *inputs, 1.0, train=False)
    return jax.eval_shape(run)


def test_paper_config_builds_the_paper_model():
    config = config_variant()
    assert (config.model, config.loss, config.arch.latent_dim, config.data.resolution) == (
        "srresnet", "dragan", 256, 256)
    assert (config.train.batch_size, config.train.epochs, config.train.update_ratio) == (64, 60.0, 2)
    assert (config.train.learning_rate, config.train.b1, config.train.b2) == (2e-4, 0.5, 0.999)
    arch = models.build(config)
    assert len(arch.stages) == 1 and arch.stages[0].resolution == 256
    z = arch.sample_latent(jax.random.PRNGKey(0), 5)
    assert z.shape == (5, 256)
    np.testing.assert_allclose(jnp.linalg.norm(z, axis=1), 1.0, rtol=1e-5)


def test_config_variants_have_the_same_fields():
    names = lambda c: sorted(c.to_dict())  # noqa: E731
    full, smoke, quick = config_variant(), config_variant("smoke"), config_variant("quick")
    assert names(full) == names(smoke) == names(quick)
    for section in ("data", "arch", "train"):
        assert sorted(full[section]) == sorted(smoke[section]) == sorted(quick[section])
    with pytest.raises(ValueError, match="unknown variant"):
        config_variant("huge")


def test_residual_blocks_sets_the_generators_depth_and_is_checked():
    config = config_variant("smoke")
    assert config.arch.residual_blocks == 2 and config_variant().arch.residual_blocks == 16
    arch = models.build(config)
    params = variable_shapes(arch.generator(arch.stages[0]), jnp.zeros((4, config.arch.latent_dim)))["params"]
    assert sorted(name for name in params if name.startswith("res")) == ["res0", "res1"]
    del config.arch.residual_blocks  # a run saved before the field existed: the paper's 16
    params = variable_shapes(models.build(config).generator(arch.stages[0]), jnp.zeros((4, 16)))["params"]
    assert len([name for name in params if name.startswith("res")]) == 16
    for bad in (0, -3):
        config = config_variant("smoke")
        config.arch.residual_blocks = bad
        with pytest.raises(Exception, match=f"arch.residual_blocks: {bad!r} must be a whole number of at least 1"):
            models.build(config)


def test_full_size_generator():
    arch = models.build(config_variant())
    shapes = variable_shapes(arch.generator(arch.stages[0]), jnp.zeros((4, 256)))
    params = shapes["params"]
    assert params["dense"]["kernel"] == (256, 64 * 16 * 16)
    assert [params[f"res{i}"]["conv0"]["kernel"] for i in range(16)] == [(3, 3, 64, 64)] * 16
    assert [params[f"res{i}"]["conv1"]["kernel"] for i in range(16)] == [(3, 3, 64, 64)] * 16
    assert "res16" not in params
    # No bias right before batch norm; the upsampling convs keep theirs.
    assert "bias" not in params["dense"] and "bias" not in params["res0"]["conv0"]
    assert params["up0"]["bias"] == (256,)
    # Four Conv3x3 to 256 channels, each followed by depth-to-space back to 64.
    assert [params[f"up{i}"]["kernel"] for i in range(4)] == [(3, 3, 64, 256)] * 4
    assert [params[f"up{i}_bn"]["scale"] for i in range(4)] == [(64,)] * 4
    assert params["conv_out"]["kernel"] == (9, 9, 64, 1)
    # BN after the dense layer, twice per residual block, after the blocks, once per upsampling block.
    assert len(jax.tree.leaves(shapes["batch_stats"])) == 2 * (1 + 2 * 16 + 1 + 4)
    images = output_shape(arch.generator(arch.stages[0]), jnp.zeros((4, 256)))
    assert images.shape == (4, 256, 256, 1) and images.dtype == jnp.float32


def test_full_size_discriminator_ends_at_2x2x2048_without_batch_norm():
    arch = models.build(config_variant())
    shapes = variable_shapes(arch.discriminator(arch.stages[0]), jnp.zeros((4, 256, 256, 1)))
    assert set(shapes) == {"params"}  # No batch norm.
    params = shapes["params"]
    channels = [1, 32, 64, 128, 256, 512, 1024]
    # Downsampling convs are 4x4 (the code), not 3x3 (the paper's text).
    assert [params[f"down{i}"]["kernel"] for i in range(6)] == [
        (4, 4, channels[i], channels[i + 1]) for i in range(6)]
    for i, c in enumerate(channels[1:]):
        for block in (f"res{i}a", f"res{i}b"):
            assert params[block]["conv0"]["kernel"] == params[block]["conv1"]["kernel"] == (3, 3, c, c)
    assert "down6" not in params
    assert params["conv_out"]["kernel"] == (3, 3, 1024, 2048)
    assert params["dense"]["kernel"] == (2 * 2 * 2048, 1)
    logits = output_shape(arch.discriminator(arch.stages[0]), jnp.zeros((4, 256, 256, 1)))
    assert logits.shape == (4,) and logits.dtype == jnp.float32


@pytest.mark.parametrize("resolution, levels", [(16, (512, 1024)), (32, (256, 512, 1024)),
                                                (64, (128, 256, 512, 1024))])
def test_smaller_resolutions_drop_the_high_resolution_end(resolution, levels):
    config = config_variant()
    config.data.resolution = resolution
    arch = models.build(config)
    assert srresnet.discriminator_channels(resolution) == levels
    d = variable_shapes(arch.discriminator(arch.stages[0]), jnp.zeros((4, resolution, resolution, 1)))["params"]
    assert d["down0"]["kernel"] == (4, 4, 1, levels[0])
    assert d["dense"]["kernel"] == (2 * 2 * 2048, 1)  # still 2x2x2048
    g = variable_shapes(arch.generator(arch.stages[0]), jnp.zeros((4, 256)))["params"]
    start = resolution // 16
    assert g["dense"]["kernel"] == (256, 64 * start * start)
    assert output_shape(arch.generator(arch.stages[0]), jnp.zeros((4, 256))).shape == (
        4, resolution, resolution, 1)


def test_resolutions_below_16_are_refused():
    config = config_variant()
    config.data.resolution = 8
    with pytest.raises(Exception, match="data.resolution: srresnet cannot make 8x8"):
        models.build(config)


def test_width_multiplies_every_channel_count():
    config = config_variant()
    config.arch.width = 0.25
    arch = models.build(config)
    g = variable_shapes(arch.generator(arch.stages[0]), jnp.zeros((4, 256)))["params"]
    d = variable_shapes(arch.discriminator(arch.stages[0]), jnp.zeros((4, 256, 256, 1)))["params"]
    assert g["res0"]["conv0"]["kernel"] == (3, 3, 16, 16) and g["up0"]["kernel"] == (3, 3, 16, 64)
    assert d["down0"]["kernel"] == (4, 4, 1, 8) and d["conv_out"]["kernel"] == (3, 3, 256, 512)


def test_depth_to_space_uses_tensorflows_channel_order():
    # Input channel (i * 2 + j) * C + c lands at output pixel (2h + i, 2w + j), channel c.
    x = jnp.arange(2 * 3 * 4 * 8, dtype=jnp.float32).reshape(2, 3, 4, 8)
    y = np.asarray(srresnet.depth_to_space(x, 2))
    assert y.shape == (2, 6, 8, 2)
    xs = np.asarray(x)
    for i in range(2):
        for j in range(2):
            for c in range(2):
                np.testing.assert_array_equal(y[:, i::2, j::2, c], xs[:, :, :, (i * 2 + j) * 2 + c])


def test_weights_start_he_normal_and_biases_at_zero():
    block = srresnet.DiscriminatorResidualBlock(64)
    params = jax.jit(block.init)(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 64)))["params"]
    kernel = np.asarray(params["conv0"]["kernel"])
    assert abs(kernel.std() - np.sqrt(2 / (3 * 3 * 64))) < 0.002 and abs(kernel.mean()) < 0.002
    assert np.abs(kernel).max() <= 2 * np.sqrt(2 / (3 * 3 * 64)) / 0.87962566 + 1e-6  # truncated, as Keras
    assert not np.any(params["conv0"]["bias"])


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("srresnet"))
    config = config_variant("smoke")
    config.data.cache_dir = str(tmp_path_factory.mktemp("cache"))
    state = train.train(config, workdir)
    return config, workdir, state


def test_smoke_run_trains_and_samples(smoke_run):
    config, workdir, state = smoke_run
    assert int(state["step"]) == 2  # 0.12 epochs of the 137 MNI152 slices at batch 8
    assert os.listdir(os.path.join(workdir, "samples"))
    sampler = sampling.load_sampler(workdir)
    assert sampler.resolution == 32 and sampler.step == 2
    images = np.asarray(sampler(jax.random.PRNGKey(0), 8))
    assert images.shape == (8, 32, 32, 1) and np.all(np.isfinite(images)) and np.abs(images).max() <= 1
    assert images.std() > 0
