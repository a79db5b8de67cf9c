"""Two processes on localhost (2 CPU devices each) train like one process with 4 devices."""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, smoke_config
from mrigen import checkpoint, models, state as state_lib
from test_cli import assert_one_line_error, main_py

SMOKE = "--config=configs/dcgan.py:smoke"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Process 1 starts its first step this many seconds after process 0 (see launch_pair).
COMPILE_SKEW_S = 35
LATE_COMPILE = ("import sys, time; sys.path.insert(0, sys.argv[1].rpartition('/')[0])\n"
                "from mrigen import train\n"
                "_make = train.make_train_step\n"
                "def _late(*args, **kwargs):\n"
                f"    time.sleep({COMPILE_SKEW_S})\n"
                "    return _make(*args, **kwargs)\n"
                "train.make_train_step = _late\n"
                "import runpy; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')\n")


def launch_pair(workdir, *args, timeout=600, late_process_1=False):
    """main.py as processes 0 and 1 of 2, each with 2 CPU devices; returns both results.

    late_process_1: process 1 builds its train step COMPILE_SKEW_S seconds late, as a slower or busier
    host compiles later (XLA:CPU's gloo collectives time out when processes reach one 30 s apart).
    """
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    address = f"127.0.0.1:{free_port()}"
    processes = []
    for i in range(2):
        prefix = [sys.executable, "-c", LATE_COMPILE] if late_process_1 and i == 1 else [sys.executable]
        processes.append(subprocess.Popen(
            [*prefix, os.path.join(ROOT, "main.py"), SMOKE, f"--workdir={workdir}",
             f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}",
             "--distributed_timeout=60", *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def final_state(workdir, config):
    arch = models.build(config)
    ckpt = checkpoint.Checkpointer(workdir)
    try:
        return jax.device_get(state_lib.restore_or_init(ckpt, arch, state_lib.create_optimizer(config.train), config))
    finally:
        ckpt.close()


def weights(state):
    return jax.tree.leaves((state["g"], state["d"], state.get("g_ema")))


def assert_same_step(a, b):
    assert int(a["step"]) == int(b["step"]) and int(a["images_seen"]) == int(b["images_seen"])


def test_two_processes_match_one_process_and_resume_as_a_pair(tmp_path, smoke_run, shared_cache_dir):
    """Against the reference of one process with the 4 devices of conftest: the smoke run, 2 steps."""
    workdir = str(tmp_path / "pair")
    args = (f"--config.data.cache_dir={shared_cache_dir}", f"--config.train.epochs={4 * 8 / 137}")
    for result in launch_pair(workdir, *args):
        assert result.returncode == 0, result.stderr[-3000:]
    config = smoke_config()
    straight = final_state(workdir, config)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))

    # After 2 steps the pair holds the single process's weights up to the order of its float sums: within
    # half an Adam step (learning rate 2e-4), where gradients left unaveraged would move weights a whole
    # step. Later steps cannot be compared: at init these tiny GANs amplify a 1e-7 difference to 1e-3 in
    # 4 steps (one process with 1 device vs 4 devices differs as much).
    at_two, reference = final_state(workdir, config), final_state(smoke_run, config)
    assert_same_step(at_two, reference)
    assert int(at_two["step"]) == 2
    for x, y in zip(weights(at_two), weights(reference)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)

    # Resume from step 2 as a pair, one process compiling late: bit-identical to 4 straight steps.
    for result in launch_pair(workdir, *args, late_process_1=True):
        assert result.returncode == 0, result.stderr[-3000:]
    resumed = final_state(workdir, config)
    assert_same_step(resumed, straight)
    for x, y in zip(weights(resumed), weights(straight)):
        np.testing.assert_array_equal(x, y)
    with open(os.path.join(workdir, "stats.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f]
    assert steps == [1, 2, 3, 4]  # written by process 0 only, once per step; the resumed steps replace theirs
    assert sorted(os.listdir(os.path.join(workdir, "samples"))) == ["step_00000002.png", "step_00000004.png"]


def test_unreachable_coordinator_is_a_one_line_error_not_a_hang(tmp_path):
    result = main_py(SMOKE, f"--workdir={tmp_path / 'run'}", f"--coordinator_address=127.0.0.1:{free_port()}",
                     "--num_processes=2", "--process_id=1", "--distributed_timeout=3")
    assert_one_line_error(result, "--coordinator_address", "could not be reached within 3 s")


def test_incomplete_distributed_flags_are_refused(tmp_path):
    result = main_py(SMOKE, f"--workdir={tmp_path / 'run'}", "--num_processes=2")
    assert_one_line_error(result, "--coordinator_address, --process_id: required with --num_processes")


def test_a_batch_the_pair_cannot_split_ends_both_processes_with_one_line(tmp_path):
    for result in launch_pair(str(tmp_path / "run"), "--config.train.batch_size=6", timeout=300):
        assert_one_line_error(result, "train.batch_size: 6 is not divisible by the 4 devices")
