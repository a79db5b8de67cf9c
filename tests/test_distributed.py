"""Two processes on localhost (2 CPU devices each) train like one process with 4 devices."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import ROOT, smoke_config
from mrigen import checkpoint, distributed, models, state as state_lib, workdir_lock
from test_cli import assert_one_line_error, main_py

SMOKE = "--config=configs/dcgan.py:smoke"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Code run in one process of a pair before main.py (see launch_pair).
RUN_MAIN = "import runpy; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')\n"
# Process 1 starts its first step this many seconds after process 0.
COMPILE_SKEW_S = 35
LATE_COMPILE = ("import time\n"
                "from mrigen import train\n"
                "_make = train.make_train_step\n"
                "def _late(*args, **kwargs):\n"
                f"    time.sleep({COMPILE_SKEW_S})\n"
                "    return _make(*args, **kwargs)\n"
                "train.make_train_step = _late\n")


def stopping_after(steps: int, clock: bool) -> str:
    """Code for one process: after its `steps`-th step of the launch, a SIGTERM to itself, or (clock) the
    time budget runs out from then on."""
    return ("import os, signal\n"
            "from mrigen import progress\n"
            "Reporter, _steps = progress.ProgressReporter, [0]\n"
            "_advance, _out_of_time = Reporter.advance, Reporter.out_of_time\n"
            "def _counted(self, batch_size):\n"
            "    _advance(self, batch_size)\n"
            "    _steps[0] += 1\n"
            f"    if not {clock} and _steps[0] == {steps}:\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "Reporter.advance = _counted\n"
            f"Reporter.out_of_time = lambda self: _out_of_time(self) or ({clock} and _steps[0] >= {steps})\n")


def launch_pair(workdir, *args, timeout=600, code=None, config=SMOKE):
    """main.py as processes 0 and 1 of 2, each with 2 CPU devices; returns both results.

    code: {process id: Python code} run in that process before main.py, e.g. LATE_COMPILE (process 1
    builds its train step COMPILE_SKEW_S seconds late, as a slower or busier host compiles later; XLA:CPU's
    gloo collectives time out when processes reach one 30 s apart) or stopping_after(...). Both processes
    are killed, and the test fails, if either is still running after `timeout` seconds: a hang.
    """
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    address = f"127.0.0.1:{free_port()}"
    processes = []
    for i in range(2):
        prefix = [sys.executable]
        if code and i in code:
            prefix += ["-c", "import sys; sys.path.insert(0, sys.argv[1].rpartition('/')[0])\n" + code[i] + RUN_MAIN]
        processes.append(subprocess.Popen(
            [*prefix, os.path.join(ROOT, "main.py"), config, f"--workdir={workdir}",
             f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}",
             "--distributed_timeout=60", *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + timeout
    results = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=max(deadline - time.monotonic(), 1))
            results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        outputs = [process.communicate()[1][-1500:] for process in processes]
        pytest.fail(f"the pair was still running after {timeout} s (a hang); stderr tails: {outputs}")
    return results


def final_state(workdir, config):
    arch = models.build(config)
    ckpt = checkpoint.Checkpointer(workdir)
    try:
        return jax.device_get(state_lib.restore_or_init(ckpt, arch, state_lib.create_optimizer(config.train), config))
    finally:
        ckpt.close()


def state_at(workdir, step, config, scratch):
    """The state of `workdir`'s checkpoint `step`, read from a copy of that checkpoint alone in `scratch`."""
    shutil.copytree(os.path.join(workdir, "checkpoints", str(step)), os.path.join(scratch, "checkpoints", str(step)))
    return final_state(scratch, config)


def weights(state):
    return jax.tree.leaves((state["g"], state["d"], state.get("g_ema")))


def assert_same_step(a, b):
    assert int(a["step"]) == int(b["step"]) and int(a["images_seen"]) == int(b["images_seen"])


def stats_steps(workdir):
    with open(os.path.join(workdir, "stats.jsonl")) as f:
        return [json.loads(line)["step"] for line in f]


def one_run_experiment(path, cache_dir) -> str:
    """--config of an experiment of one run, configs/dcgan.py:smoke as it is, 6 steps, a checkpoint after each."""
    experiment = os.path.join(ROOT, "configs", "experiment.py")
    with open(path, "w") as f:
        f.write("import runpy\n"
                "def get_config():\n"
                f"    config = runpy.run_path({experiment!r})['get_config']('smoke')\n"
                "    config.runs, config.paper_recipe, config.budget_images = ('dcgan_dragan',), False, 48\n"
                f"    config.shared.data.cache_dir = {cache_dir!r}\n"
                "    config.shared.checkpoint_every_steps, config.shared.keep_checkpoints = 1, 6\n"
                "    return config\n")
    return f"--config={path}"


def test_two_processes_match_one_process_and_stop_together(tmp_path, smoke_run, shared_cache_dir):
    """Against the reference of one process with the 4 devices of conftest (the smoke run, 2 steps), an
    experiment of one run on a pair (6 steps), then a pair stopped by a SIGTERM to one process and by one
    process's clock, resumed: as the uninterrupted pair."""
    experiment_dir, workdir = str(tmp_path / "experiment"), str(tmp_path / "pair")
    straight_dir = os.path.join(experiment_dir, "dcgan_dragan")
    results = launch_pair(experiment_dir, "--mode=experiment",
                          config=one_run_experiment(tmp_path / "experiment.py", shared_cache_dir))
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    assert "report.md" in results[0].stdout and "report.md" not in results[1].stdout  # process 0 alone reports
    with open(os.path.join(experiment_dir, "experiment.json")) as f:
        record, = json.load(f)["runs"]
    assert record["status"] == "done" and record["images_seen"] == 48 and record["metrics"]["generated"]["n"] == 16
    assert stats_steps(straight_dir) == [1, 2, 3, 4, 5, 6]
    args = (f"--config.data.cache_dir={shared_cache_dir}", f"--config.train.epochs={6 * 8 / 137}")  # 6 steps
    config = smoke_config()

    # After 2 steps the pair holds the single process's weights up to the order of its float sums: within
    # half an Adam step (learning rate 2e-4), where gradients left unaveraged would move weights a whole
    # step. Later steps cannot be compared: at init these tiny GANs amplify a 1e-7 difference to 1e-3 in
    # 4 steps (one process with 1 device vs 4 devices differs as much).
    at_two, reference = state_at(straight_dir, 2, config, str(tmp_path / "at2")), final_state(smoke_run, config)
    assert_same_step(at_two, reference)
    assert int(at_two["step"]) == 2
    for x, y in zip(weights(at_two), weights(reference)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)

    # SIGTERM to process 1 after step 3: both save checkpoint 3 and exit 128 + 15, none goes on to step 4.
    for result in launch_pair(workdir, *args, code={1: stopping_after(3, clock=False)}):
        assert result.returncode == 143, result.stderr[-3000:]
        assert "stopped by SIGTERM to process 1 after step 3; checkpoint 3 is saved" in result.stderr
    assert checkpoint.complete_steps(os.path.join(workdir, "checkpoints")) == [2, 3]

    # Resumed, process 1 compiling late; process 0 alone runs out of time after step 5: both stop there.
    for result in launch_pair(workdir, *args, code={0: stopping_after(2, clock=True), 1: LATE_COMPILE}):
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Time budget reached after step 5" in result.stderr
    resumed = final_state(workdir, config)
    straight = state_at(straight_dir, 5, config, str(tmp_path / "at5"))
    assert_same_step(resumed, straight)
    assert int(resumed["step"]) == 5
    for x, y in zip(weights(resumed), weights(straight)):
        np.testing.assert_array_equal(x, y)
    assert stats_steps(workdir) == [1, 2, 3, 4, 5]  # written by process 0 only, once per step
    assert sorted(os.listdir(os.path.join(workdir, "samples"))) == [
        "step_00000002.png", "step_00000004.png", "step_00000005.png"]


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


def test_a_locked_workdir_ends_both_processes_with_process_0_s_line(tmp_path):
    """Process 0 takes the lock; refused, it tells the other process, which would otherwise wait for it."""
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    lock = workdir_lock.WorkdirLock(workdir)
    lock.acquire()
    try:
        results = launch_pair(workdir, timeout=300)
    finally:
        lock.release()
    for result in results:
        assert_one_line_error(result, f"workdir: {workdir} is in use: PID {os.getpid()} on ")
    assert os.listdir(workdir) == []


def test_a_process_found_gone_in_the_step_agreement_is_one_line_and_exit_5(monkeypatch):
    """When the agreement's collective reports a lost process (Gloo: the peer's connection reset), it is a
    PeerLost (main.py: one line, exit 5, no JAX shutdown), not a traceback. A pair cannot test this
    deterministically: depending on when a process dies, the collective may wait instead, and JAX's
    coordination service then aborts the others after its heartbeat timeout."""
    def gone(_):
        raise jax.errors.JaxRuntimeError("UNKNOWN: Gloo AllGather failed: [pair.cc:538] Read error "
                                         "[127.0.0.1]:60843: Connection reset by peer")

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(distributed.multihost_utils, "process_allgather", gone)
    expected = r"^another process of this run ended while this one waited .*\(UNKNOWN: Gloo AllGather .*peer\)$"
    with pytest.raises(distributed.PeerLost, match=expected) as lost:
        distributed.agreed_stop(None, False)
    assert lost.value.exit_code == 5
