"""main.py as a user runs it: train, sample, interpolate, and one-line errors for bad input.

Training, sampling and a few errors run `python main.py` as a process; the other
cases run main.py's own parse_flags and main in the test process
(conftest.main_in_process), which checks the same line, exit code and files
without a new process's start-up.
"""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, main_in_process
from mrigen import cli, sampling

SMOKE = "--config=configs/dcgan.py:smoke"
# JAX's line for each platform it probes and does not find; a user should not see it.
BACKEND_PROBE = "Unable to initialize backend"


def main_py(*args, cwd=ROOT, env=None):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    return result


def one_line_error(result) -> str:
    """The one `error: ` line of a main.py that refused its input (exit 2, no traceback)."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


def assert_one_line_error(result, *fragments):
    error = one_line_error(result)
    for fragment in fragments:
        assert fragment in error, error


@pytest.fixture(scope="module")
def workdir(smoke_run):
    """The smoke run (configs/dcgan.py:smoke, 2 steps), trained as main.py trains it; read-only."""
    return smoke_run


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, shared_cache_dir):
    """`python main.py --config=<repo>/configs/dcgan.py:smoke` from an empty folder, without --workdir.
    JAX probes platforms as on a user's machine (no JAX_PLATFORMS). Returns (folder, env, result)."""
    cwd = tmp_path_factory.mktemp("default_run")
    env = {name: value for name, value in os.environ.items() if name != "JAX_PLATFORMS"}
    result = main_py(f"--config={ROOT}/configs/dcgan.py:smoke", f"--config.data.cache_dir={shared_cache_dir}",
                     cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, env, result


def test_train_shows_progress_and_writes_a_checkpoint(default_run):
    cwd, _, trained = default_run
    run = cwd / "workdirs" / "dcgan_smoke"
    assert (run / "checkpoints" / "2").is_dir()
    assert (run / "stats.jsonl").stat().st_size > 0
    assert "compiling:" in trained.stderr  # the bar's label until the first step is done
    summary = trained.stdout.splitlines()[-1]
    assert summary.startswith("done: 16 images shown in ") and " img/s after" in summary, summary


def test_sample_writes_png_files_and_refuses_to_overwrite(workdir, tmp_path):
    out = str(tmp_path / "generated")
    result = main_py(SMOKE, f"--workdir={workdir}", "--mode=sample", "--num_samples=5", f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote 5 images of 32x32" in result.stdout
    names = sorted(os.listdir(out))
    assert names == ["manifest.json"] + [f"sample_{i:06d}.png" for i in range(5)]
    names = names[1:]
    first = np.asarray(Image.open(os.path.join(out, names[0])))
    assert first.shape == (32, 32) and first.dtype == np.uint8
    stamp = os.path.getmtime(os.path.join(out, names[0]))
    assert "Resuming from" not in result.stderr  # sampling only reads the checkpoint
    again = main_in_process(SMOKE, f"--workdir={workdir}", "--mode=sample", "--num_samples=5", f"--out={out}")
    assert_one_line_error(again, "already holds images", "--overwrite")
    assert os.path.getmtime(os.path.join(out, names[0])) == stamp


def test_interpolate_writes_a_grid_of_latent_walks(workdir, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        result = main_in_process(SMOKE, f"--workdir={workdir}", "--mode=interpolate", f"--out={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"wrote {tmp_path}/interpolation_step2.png: 8 latent walks of 10 images, 32x32" in result.stdout
    grid = np.asarray(Image.open(tmp_path / "interpolation_step2.png"))
    assert grid.shape == (8 * 34 - 2, 10 * 34 - 2)  # 8 walks of 10 images of 32 px, 2 px apart
    assert "Loaded checkpoint 2" in caplog.text and "Resuming from" not in caplog.text


def test_reading_a_checkpoint_says_loaded_not_resuming(workdir, caplog):
    """load_sampler serves --mode=sample, interpolate and evaluate: they read a run, they do not resume it."""
    with caplog.at_level(logging.INFO):
        assert sampling.load_sampler(workdir).step == 2
    assert "Loaded checkpoint 2" in caplog.text
    assert "Resuming" not in caplog.text


@pytest.mark.parametrize("spec, expected", [
    ("configs/dcgan.py", "workdirs/dcgan"),
    ("configs/dcgan.py:smoke", "workdirs/dcgan_smoke"),
    ("/somewhere/else/configs/experiment.py:cpu32", "workdirs/experiment_cpu32"),
    ("progan.py:quick", "workdirs/progan_quick"),
    ("configs/x.py:a b/c", "workdirs/x_a_b_c"),  # a variant is an argument, not a path
])
def test_the_default_workdir_is_named_after_the_config_file_and_variant(spec, expected):
    assert cli.default_workdir(spec) == expected


def test_without_workdir_every_mode_finds_the_same_default_run(default_run, shared_cache_dir):
    """Run from any folder: training makes workdirs/dcgan_smoke there and says so first; sampling and a
    second training (which resumes) find it. JAX probes platforms as on a user's machine (no
    JAX_PLATFORMS) and says nothing of the ones missing."""
    tmp_path, env, trained = default_run
    config = f"--config={ROOT}/configs/dcgan.py:smoke"
    cache = f"--config.data.cache_dir={shared_cache_dir}"
    run = tmp_path / "workdirs" / "dcgan_smoke"
    sampled = main_py(config, "--mode=sample", "--num_samples=2", cwd=tmp_path, env=env)
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert sorted(os.listdir(run / "generated_step2")) == ["manifest.json", "sample_000000.png", "sample_000001.png"]
    resumed = main_py(config, cache, cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for result in (trained, sampled, resumed):
        assert result.stdout.splitlines()[0] == "workdir: workdirs/dcgan_smoke"
        assert BACKEND_PROBE not in result.stderr and "libtpu" not in result.stderr, result.stderr[-3000:]
    assert "Resuming from" not in trained.stderr and "Resuming from" not in sampled.stderr
    assert "Resuming from" in resumed.stderr
    summary = trained.stdout.splitlines()[-1]
    assert "samples in workdirs/dcgan_smoke/samples, checkpoints in workdirs/dcgan_smoke/checkpoints" in summary
    assert os.listdir(tmp_path) == ["workdirs"]


def test_only_the_missing_platform_lines_of_jax_are_dropped():
    keep = logging.LogRecord("jax._src.xla_bridge", logging.WARNING, "", 0, "CUDA backend failed to initialize", (),
                             None)
    drop = logging.LogRecord("jax._src.xla_bridge", logging.INFO, "", 0,
                             "Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so", (), None)
    assert cli._drop_backend_probe_lines(keep) and not cli._drop_backend_probe_lines(drop)


def unreadable_file(root):
    """A file this process cannot read (root reads any file chmod protects; not a write-only sysctl)."""
    if os.geteuid() == 0:
        if not os.path.exists("/proc/sys/vm/drop_caches"):
            pytest.skip("no file here that root cannot read")
        return "/proc/sys/vm/drop_caches"
    path = os.path.join(root, "locked.py")
    with open(path, "w") as f:
        f.write("def get_config(variant=None):\n    return None\n")
    os.chmod(path, 0)
    return path


def config_file(root, text, name="mine.py"):
    path = os.path.join(root, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def a_fifo(root):
    """A named pipe: opening it to read would wait for a writer forever."""
    path = os.path.join(root, "pipe.py")
    os.mkfifo(path)
    return path


RAISES = "import os\n\nraise RuntimeError('boom')\n"
VARIANTS_BY_KEY = "VARIANTS = {'quick': 1}\n\ndef get_config(variant=None):\n    return VARIANTS[variant]\n"
NO_VARIANTS = "import ml_collections\n\ndef get_config():\n    return ml_collections.ConfigDict()\n"

# (arguments for main.py given the test's folder, the whole error line or fragments of it); "{root}" is the folder.
CONFIG_ERRORS = {
    "missing_file": (lambda r: ["--config=configs/nope.py"],
                     ["error: --config: configs/nope.py does not exist (configs/ holds ", "dcgan.py"]),
    "missing_file_with_variant": (lambda r: ["--config=configs/nope.py:smoke"],
                                  ["error: --config: configs/nope.py does not exist", "dcgan.py"]),
    "misspelt_file": (lambda r: ["--config=configs/dcgn.py:smoke"],
                      "error: --config: configs/dcgn.py does not exist (did you mean configs/dcgan.py?)"),
    "unreadable_file": (lambda r: [f"--config={unreadable_file(r)}"],
                        ["error: --config: cannot read ", "Permission denied"]),
    "not_a_regular_file": (lambda r: [f"--config={a_fifo(r)}"],
                           "error: --config: {root}/pipe.py is not a regular file"),
    "a_folder": (lambda r: ["--config=configs"],
                 ["error: --config: configs is a folder, not a config file", "dcgan.py"]),
    "raises_on_import": (lambda r: [f"--config={config_file(r, RAISES)}"],
                         "error: --config: {root}/mine.py, line 3: RuntimeError: boom"),
    "syntax_error": (lambda r: [f"--config={config_file(r, 'def get_config(:')}"],
                     "error: --config: {root}/mine.py, line 1: SyntaxError: invalid syntax"),
    "no_get_config": (lambda r: [f"--config={config_file(r, 'x = 1')}"],
                      "error: --config: {root}/mine.py defines no get_config(variant=None)"),
    "unknown_variant": (lambda r: ["--config=configs/dcgan.py:x"],
                        ["error: --config: unknown variant 'x' of configs/dcgan.py; known: ", "smoke"]),
    "unknown_variant_of_a_dict": (lambda r: [f"--config={config_file(r, VARIANTS_BY_KEY)}:x"],
                                  "error: --config: unknown variant 'x' of {root}/mine.py"),
    "variant_of_a_file_without_variants": (lambda r: [f"--config={config_file(r, NO_VARIANTS)}:smoke"],
                                           "error: --config: {root}/mine.py has no variants (its get_config "
                                           "takes no argument); drop ':smoke'"),
    "unknown_field": (lambda r: [SMOKE, "--config.dat.path=x"],
                      "error: --config.dat.path: no such field 'dat' (did you mean 'data'?)"),
    "unknown_nested_field": (lambda r: [SMOKE, "--config.data.pth=x"],
                             "error: --config.data.pth: no such field 'pth' in data (did you mean 'path'?)"),
    "field_of_a_value": (lambda r: [SMOKE, "--config.data.path.x=1"],
                         "error: --config.data.path.x: data.path is a str, not a group of fields"),
    "mistyped_integer": (lambda r: [SMOKE, "--config.train.batch_size=abc"],
                         "error: --config.train.batch_size: expected an integer, got 'abc'"),
    "mistyped_number": (lambda r: [SMOKE, "--config.train.learning_rate", "fast"],
                        "error: --config.train.learning_rate: expected a number, got 'fast'"),
    "mistyped_bool": (lambda r: [SMOKE, "--config.data.include_segmentation=maybe"],
                      "error: --config.data.include_segmentation: expected true or false, got 'maybe'"),
    "a_group_given_a_value": (lambda r: [SMOKE, "--config.data=x"],
                              ["error: --config.data: data is a group of fields (", "path", "--config.data."]),
    "mistyped_flag_value": (lambda r: [SMOKE, "--num_samples=many"],
                            "error: --num_samples: expected an integer, got 'many'"),
    "unknown_mode": (lambda r: [SMOKE, "--mode=train_fast"], ["error: --mode: expected one of train, sample, ",
                                                            "got 'train_fast'"]),
    "unknown_flag": (lambda r: [SMOKE, "--workdr=x"], ["error: --workdr: unknown flag (did you mean --workdir?)"]),
    "a_config_without_--config=": (lambda r: ["configs/dcgan.py"],
                                   ["error: unexpected argument 'configs/dcgan.py'", "--config="]),
    "out_for_training": (lambda r: [SMOKE, f"--out={r}/out"], ["error: --out: works with --mode=sample", "not train"]),
    "out_is_a_file": (lambda r: [SMOKE, "--mode=sample", f"--out={config_file(r, 'x')}"],
                      "error: --out: {root}/mine.py exists and is not a folder"),
    "eval_images_for_sampling": (lambda r: [SMOKE, "--mode=sample", f"--eval_images={r}"],
                                 "error: --eval_images: works with --mode=evaluate, not sample"),
}


# These also run as a process of their own: a config file that raises or does not parse, a flag absl
# does not know. A named pipe runs in a process only: read, it would block, and a process can be timed out.
CONFIG_ERRORS_IN_A_PROCESS = ("raises_on_import", "syntax_error", "unknown_flag", "not_a_regular_file")
CONFIG_ERRORS_HERE = [name for name in CONFIG_ERRORS if name != "not_a_regular_file"]


@pytest.mark.parametrize("name, in_a_process", [(name, False) for name in CONFIG_ERRORS_HERE]
                         + [(name, True) for name in CONFIG_ERRORS_IN_A_PROCESS],
                         ids=[*CONFIG_ERRORS_HERE, *(f"{name}-process" for name in CONFIG_ERRORS_IN_A_PROCESS)])
def test_a_bad_config_or_flag_is_one_line_that_names_it(name, in_a_process, tmp_path):
    make_args, expected = CONFIG_ERRORS[name]
    root = str(tmp_path)
    run = main_py if in_a_process else main_in_process
    error = one_line_error(run(*make_args(root), f"--workdir={root}/run"))
    if isinstance(expected, str):
        assert error == expected.replace("{root}", root)
    else:
        for fragment in expected:
            assert fragment.replace("{root}", root) in error, error
    assert not os.path.exists(os.path.join(root, "run"))


@pytest.mark.parametrize("args, fragments", [
    (["--config.loss=hinge"], ["loss: unknown loss 'hinge'", "wgan_gp"]),
    (["--config.model=vae"], ["model: unknown model 'vae'", "dcgan"]),
    (["--config.data.path=/no/such/folder"], ["data.path: /no/such/folder does not exist"]),
    (["--config.no_such_field=1"], ["no_such_field"]),
    (["--config.train.batch_size=6"], ["train.batch_size: 6 is not divisible by the 4 devices"]),
    (["--config.data.resolution=48"], ["data.resolution", "power of two"]),
    (["--config=configs/dcgan.py:huge"], ["unknown variant 'huge'"]),
])
def test_bad_input_is_a_one_line_error_with_exit_code_2(tmp_path, args, fragments):
    result = main_in_process(SMOKE, f"--workdir={tmp_path / 'run'}", *args)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "run").exists()


def test_a_workdir_of_another_config_is_refused_and_left_untouched(workdir):
    with open(os.path.join(workdir, "config.json")) as f:
        before = f.read()
    result = main_in_process(SMOKE, f"--workdir={workdir}", "--config.loss=wgan")
    assert_one_line_error(result, "holds a run with another config", "loss: 'dragan' -> 'wgan'", "new --workdir")
    with open(os.path.join(workdir, "config.json")) as f:
        assert f.read() == before


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("keep me")
    assert_one_line_error(main_in_process(SMOKE, f"--workdir={path}"), "exists and is not a folder")
    assert path.read_text() == "keep me"


def test_training_imports_no_evaluation_library():
    """mrigen.metrics (scipy.stats, scikit-learn: ~1.5 s) loads when a run evaluates, not for every main.py."""
    script = ("import sys; import mrigen.cli, mrigen.train, mrigen.dryrun; "
              "print(sorted(m for m in ('mrigen.metrics', 'scipy.stats', 'sklearn') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
