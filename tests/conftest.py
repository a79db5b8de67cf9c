"""Test-session setup: four fake CPU devices, so every test runs the data-parallel path.

Settings go through environment variables so that `main.py` subprocesses get
them too; compiled programs are shared through JAX's persistent cache, since
compiling dominates test time.
"""

import os
import tempfile

# Must happen before JAX initializes its backends.
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):  # xdist workers inherit it
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
# One cache per pytest-xdist worker (and the subprocesses it starts): no two processes write one entry at once.
_cache = os.environ.get("MRIGEN_TEST_JAX_CACHE", os.path.join(tempfile.gettempdir(), "mrigen-test-jax-cache"))
os.environ["JAX_COMPILATION_CACHE_DIR"] = f"{_cache}-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

import jax  # noqa: E402
import pytest  # noqa: E402

from mrigen import run_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def cache_dir(tmp_path):
    """An empty dataset cache folder."""
    return str(tmp_path / "cache")


@pytest.fixture(scope="session")
def shared_cache_dir(tmp_path_factory):
    """A dataset cache shared by the whole session (the MNI152 slices are decoded once)."""
    return str(tmp_path_factory.mktemp("data-cache"))


def smoke_config(model: str = "dcgan", **overrides):
    """configs/<model>.py:smoke with dotted-key overrides (`train__epochs=...` for train.epochs)."""
    config = run_config.from_file(os.path.join(ROOT, "configs", f"{model}.py"), "smoke")
    for key, value in overrides.items():
        *parents, leaf = key.split("__")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config
