"""Test-session setup: four fake CPU devices, so every test runs the data-parallel path.

Settings go through environment variables so that `main.py` subprocesses get
them too; compiled programs are shared through JAX's persistent cache, since
compiling dominates test time. Also here: main.py run inside the test process
(`main_in_process`, for the many cases of bad input that need no fresh
process), and the trained smoke runs that several test files read.
"""

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import subprocess
import sys
import tempfile

# XLA:CPU's newer fusion emitters take up to twice as long (1.1-3x) to compile the small GAN steps of
# the tests as the classic ones (the suite is mostly compiling); the results are the same to within
# float rounding, and every comparison of the suite is between programs compiled alike. Set once, by
# the first pytest process (a probe of ~2 s: a jaxlib that no longer knows a flag would abort on it).
FAST_COMPILE_FLAGS = ("--xla_cpu_use_fusion_emitters=false",)


def _accepted_by_xla(flags: list) -> bool:
    """Whether the installed jaxlib starts with `flags` in XLA_FLAGS (it aborts on a flag it does not know)."""
    env = dict(os.environ, XLA_FLAGS=" ".join([os.environ.get("XLA_FLAGS", ""), *flags]), JAX_PLATFORMS="cpu")
    probe = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env, capture_output=True)
    return probe.returncode == 0


# Must happen before JAX initializes its backends.
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):  # xdist workers inherit it
    flags = ["--xla_force_host_platform_device_count=4",
             *(FAST_COMPILE_FLAGS if _accepted_by_xla(list(FAST_COMPILE_FLAGS)) else ())]
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
# One cache for every pytest-xdist worker and the main.py processes they start: a program compiled by one
# is loaded by the others. Two processes may write one entry at once, or one read an entry while another
# writes it; JAX then warns that it could not read the entry and compiles the program again.
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ.get(
    "MRIGEN_TEST_JAX_CACHE", os.path.join(tempfile.gettempdir(), "mrigen-test-jax-cache"))
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

import jax  # noqa: E402
import pytest  # noqa: E402

from mrigen import run_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The test files that take longest, longest first. pytest-xdist (--dist loadfile) hands whole files to
# its workers in collection order, so these start first and the short ones fill in at the end; by
# default it would order files by their number of tests, and start the long files with few tests last.
LONGEST_FIRST = ["test_reliability.py", "test_combinations.py", "test_experiment.py", "test_distributed.py",
                 "test_train.py", "test_conditional_run.py", "test_mixed_precision.py", "test_views.py",
                 "test_cli.py", "test_conditional.py", "test_progan.py",
                 "test_evaluation.py", "test_srresnet.py", "test_holdout.py", "test_bad_input.py"]


def pytest_configure(config):
    config.option.loadscopereorder = False  # keep the order below (pytest-xdist >= 3.6 has the option)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the others keep their order


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
    return run_config.override(config, {key.replace("__", "."): value for key, value in overrides.items()})


# ---------------------------------------------------------------- main.py in this process


def main_module():
    """main.py as a module, imported once per process (its absl flags can be defined only once)."""
    module = sys.modules.get("mrigen_main")
    if module is None:
        spec = importlib.util.spec_from_file_location("mrigen_main", os.path.join(ROOT, "main.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["mrigen_main"] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules["mrigen_main"]
            raise
    return module


def main_in_process(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    """`python main.py *args` run in this process: main.py's own parse_flags and main, as app.run calls
    them, with what they print and the exit code returned as a subprocess.run result would hold them.

    An exception main.py lets through (a traceback for a user) is raised here, failing the test.
    Saves a new process's imports and JAX start-up (~5 s); tests/test_cli.py and
    tests/test_bad_input.py still run some cases as real processes, for the contract end to end.
    """
    module = main_module()
    argv = [os.path.join(ROOT, "main.py"), *map(str, args)]
    stdout, stderr = io.StringIO(), io.StringIO()
    saved = sys.argv, os.getcwd(), logging.root.level, logging.getLogger("absl").level
    bridge = logging.getLogger("jax._src.xla_bridge")
    bridge_filters = list(bridge.filters)
    returncode = 0
    try:
        sys.argv = argv  # ml_collections reads the --config.* overrides from sys.argv
        os.chdir(cwd)
        # The flags as a new process has them: at their defaults, and none of the --config.<field>
        # overrides that ml_collections defines while it parses.
        for name in [name for name in module.FLAGS if name.startswith("config.")]:
            delattr(module.FLAGS, name)
        sys.modules.pop("config_config", None)  # where ml_collections loads the --config file (load_module)
        if module.FLAGS.is_parsed():
            module.FLAGS.unparse_flags()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                module.main(module.parse_flags(argv))
            except SystemExit as e:
                returncode = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved[0]
        os.chdir(saved[1])
        logging.root.setLevel(saved[2])
        logging.getLogger("absl").setLevel(saved[3])
        bridge.filters[:] = bridge_filters
    return subprocess.CompletedProcess(argv, returncode, stdout.getvalue(), stderr.getvalue())


# ---------------------------------------------------------------- trained runs shared by test files


def folder_digest(root):
    """A hash of every file's relative path, size, modification time and content under root."""
    digest = hashlib.sha256()
    for directory, subdirs, names in sorted(os.walk(root)):
        subdirs.sort()
        for name in sorted(names):
            path = os.path.join(directory, name)
            digest.update(f"{os.path.relpath(path, root)} {os.stat(path).st_mtime_ns}".encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def _read_only(workdir):
    """Yields workdir; fails (at the end of the test module) if a test changed anything in it: copy it first."""
    before = folder_digest(workdir)
    yield workdir
    assert folder_digest(workdir) == before, f"the test changed the shared run in {workdir}; change a copy"


@pytest.fixture(scope="session")
def _smoke_run(tmp_path_factory, shared_cache_dir):
    from mrigen import train

    workdir = str(tmp_path_factory.mktemp("smoke_run") / "run")
    train.train(smoke_config(data__cache_dir=shared_cache_dir), workdir)
    return workdir


@pytest.fixture(scope="module")
def smoke_run(_smoke_run):
    """configs/dcgan.py:smoke trained to its end (2 steps, checkpoint 2) with the shared data cache,
    as `main.py --config=configs/dcgan.py:smoke` trains it; one per test process, read-only."""
    yield from _read_only(_smoke_run)


@pytest.fixture(scope="session")
def _smoke_run_4_steps(tmp_path_factory, shared_cache_dir):
    from mrigen import train

    workdir = str(tmp_path_factory.mktemp("smoke_run_4_steps") / "run")
    final = train.train(smoke_config(data__cache_dir=shared_cache_dir, train__epochs=SMOKE_4_STEPS_EPOCHS), workdir)
    return workdir, jax.device_get(final)


SMOKE_4_STEPS_EPOCHS = 4 * 8 / 137  # 4 steps of 8 of the 137 MNI152 slices


@pytest.fixture(scope="module")
def smoke_run_4_steps(_smoke_run_4_steps):
    """The smoke run trained uninterrupted for 4 steps (checkpoints 2 and 4): (workdir, final state);
    one per test process, read-only."""
    workdir, final = _smoke_run_4_steps
    for _ in _read_only(workdir):
        yield workdir, final
