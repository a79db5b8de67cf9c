"""main.py as a user runs it: train, sample, interpolate, and one-line errors for bad input."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

SMOKE = "--config=configs/dcgan.py:smoke"


def main_py(*args, cwd=ROOT):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args], cwd=cwd,
                            capture_output=True, text=True, timeout=600)
    return result


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, shared_cache_dir):
    workdir = str(tmp_path_factory.mktemp("cli") / "run")
    result = main_py(SMOKE, f"--workdir={workdir}", f"--config.data.cache_dir={shared_cache_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_train_shows_progress_and_writes_a_checkpoint(workdir):
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))
    assert os.path.getsize(os.path.join(workdir, "stats.jsonl")) > 0


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
    again = main_py(SMOKE, f"--workdir={workdir}", "--mode=sample", "--num_samples=5", f"--out={out}")
    assert_one_line_error(again, "already holds images", "--overwrite")
    assert os.path.getmtime(os.path.join(out, names[0])) == stamp


def test_interpolate_writes_a_grid_of_latent_walks(workdir, tmp_path):
    result = main_py(SMOKE, f"--workdir={workdir}", "--mode=interpolate", f"--out={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    grid = np.asarray(Image.open(tmp_path / "interpolation_step2.png"))
    assert grid.shape == (8 * 34 - 2, 10 * 34 - 2)  # 8 walks of 10 images of 32 px, 2 px apart


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
    result = main_py(SMOKE, f"--workdir={tmp_path / 'run'}", *args)
    assert_one_line_error(result, *fragments)


def test_a_workdir_of_another_config_is_refused_and_left_untouched(workdir):
    with open(os.path.join(workdir, "config.json")) as f:
        before = f.read()
    result = main_py(SMOKE, f"--workdir={workdir}", "--config.loss=wgan")
    assert_one_line_error(result, "holds a run with another config", "loss: 'dragan' -> 'wgan'", "new --workdir")
    with open(os.path.join(workdir, "config.json")) as f:
        assert f.read() == before


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("keep me")
    assert_one_line_error(main_py(SMOKE, f"--workdir={path}"), "exists and is not a folder")
    assert path.read_text() == "keep me"
