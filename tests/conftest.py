"""Test-session setup: four fake CPU devices, so every test runs the data-parallel path."""

import os

# Must happen before JAX initializes its backends.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_disable_most_optimizations", True)  # Compiles dominate test time.


@pytest.fixture
def cache_dir(tmp_path):
    """An empty dataset cache folder."""
    return str(tmp_path / "cache")
