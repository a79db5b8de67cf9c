"""A run survives being killed: SIGKILL at random moments (mid-save included), SIGINT, SIGTERM, NaNs.

The kill tests run main.py as a user does, kill it, run the same command
again until it finishes, and compare the final state with that of an
uninterrupted run, bit for bit (CPU, fixed seed). The uninterrupted runs train
first, in the test process: the killed processes then find their programs
compiled, in JAX's persistent cache.
"""

import dataclasses
import errno
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import SMOKE_4_STEPS_EPOCHS, ROOT, folder_digest, main_in_process, smoke_config
from mrigen import checkpoint, losses, models, progress, run_config, state as state_lib, train, workdir_lock
from mrigen.errors import UserError

TMP_SUFFIX = ".orbax-checkpoint-tmp"


# ---------------------------------------------------------------- workdir inspection


def finished_steps(workdir):
    """Steps of the complete checkpoints: folders named by their step alone."""
    try:
        return sorted(int(name) for name in os.listdir(os.path.join(workdir, "checkpoints")) if name.isdigit())
    except FileNotFoundError:
        return []


def half_written(workdir):
    try:
        return sorted(name for name in os.listdir(os.path.join(workdir, "checkpoints")) if TMP_SUFFIX in name)
    except FileNotFoundError:
        return []


def stats(workdir):
    with open(os.path.join(workdir, "stats.jsonl")) as f:
        return [json.loads(line) for line in f]


def logged_steps(workdir):
    """Steps in stats.jsonl, tolerating a line cut short by a kill."""
    try:
        with open(os.path.join(workdir, "stats.jsonl")) as f:
            return [int(m.group(1)) for m in re.finditer(r'^\{"step": (\d+),', f.read(), re.MULTILINE)]
    except FileNotFoundError:
        return []


def restored_state(workdir):
    """The latest checkpoint's state, restored the way a resumed run restores it."""
    config = run_config.load(workdir)
    arch = models.build(config)
    ckpt = checkpoint.Checkpointer(workdir)
    try:
        return jax.device_get(state_lib.restore_or_init(ckpt, arch, state_lib.create_optimizer(config.train),
                                                        config))
    finally:
        ckpt.close()


def assert_same_state(a, b):
    flat_a = {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(a)[0]}
    flat_b = {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(b)[0]}
    assert set(flat_a) == set(flat_b)
    for key in flat_a:
        np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=key)


def assert_same_records(interrupted, uninterrupted, steps):
    """stats.jsonl: each step once, with the uninterrupted run's numbers (timings aside)."""
    a, b = stats(interrupted), stats(uninterrupted)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, steps + 1))
    timing = {"img_per_sec", "elapsed_sec", "time"}  # when, not what
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if k not in timing} == {k: v for k, v in y.items() if k not in timing}


# ---------------------------------------------------------------- killing main.py


def command(model, workdir, overrides):
    return [sys.executable, os.path.join(ROOT, "main.py"), f"--config=configs/{model}.py:smoke",
            f"--workdir={workdir}", *overrides]


class Run:
    """main.py in a subprocess; stderr goes to a file (a pipe could fill up and block it)."""

    def __init__(self, command, log_path, commit_delay=0.0):
        """commit_delay: seconds each checkpoint waits, complete, before its folder is renamed (see SLOW_COMMIT)."""
        self.log_path = log_path
        self.resumes_from = None
        self.started = time.time()
        env = dict(os.environ, MRIGEN_TEST_COMMIT_DELAY=str(commit_delay)) if commit_delay else None
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(with_default_signals(command), cwd=ROOT, stdout=subprocess.DEVNULL,
                                            stderr=log, env=env)

    def wait(self):
        returncode = self.process.wait(timeout=300)
        with open(self.log_path) as f:
            return returncode, f.read()


# A suite started in the background (`nohup pytest &`) passes an ignored SIGINT to its children,
# which StopSignals rightly leaves ignored; the children of these tests are meant to see it. The
# child restores the defaults itself: a preexec_fn could deadlock after fork in a threaded process.
RESTORE_SIGNALS = "import signal; [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGTERM)]; "


# With MRIGEN_TEST_COMMIT_DELAY, the child's Orbax waits that long before renaming a complete checkpoint
# folder from its temporary name: a save is then under way long enough for the test to see it and kill
# the child in it, however loaded the machine (polling a save of a few milliseconds could miss all eight).
SLOW_COMMIT = ("import os\n"
               "if float(os.environ.get('MRIGEN_TEST_COMMIT_DELAY', 0)):\n"
               "    import asyncio\n"
               "    from orbax.checkpoint._src.path import async_path\n"
               "    _rename = async_path.rename\n"
               "    async def _slow_rename(*args, **kwargs):\n"
               "        await asyncio.sleep(float(os.environ['MRIGEN_TEST_COMMIT_DELAY']))\n"
               "        return await _rename(*args, **kwargs)\n"
               "    async_path.rename = _slow_rename\n")


def with_default_signals(command):
    """`python script.py args` as a command that first sets SIGINT and SIGTERM to their defaults."""
    python, script, *args = command
    run_script = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    return [python, "-c", RESTORE_SIGNALS + "\n" + SLOW_COMMIT + run_script, script, *args]


def has_written(run, workdir):
    """True once this run has written stats.jsonl: by then it has removed the temporary
    folders of earlier runs and dropped their records after its checkpoint."""
    try:
        return os.stat(os.path.join(workdir, "stats.jsonl")).st_mtime >= run.started
    except FileNotFoundError:
        return False


def wait_for(run, condition, timeout=120):
    """Polls every 2 ms until `condition()` or the run ends; True if the condition came first."""
    deadline = time.time() + timeout
    while run.process.poll() is None and time.time() < deadline:
        if condition():
            return True
        time.sleep(0.002)
    return False


def interrupt(run, workdir, moment, rng):
    """Waits for `moment` in the run, then returns True; False if the run ended first."""
    if moment == "startup":  # loading data, restoring, or compiling
        time.sleep(rng.uniform(0.5, 4.0))
        return run.process.poll() is None
    if moment == "during_save":
        return wait_for(run, lambda: has_written(run, workdir) and half_written(workdir))
    if moment == "after_steps":
        target = run.resumes_from + rng.choice([1, 2])
        if not wait_for(run, lambda: has_written(run, workdir) and max(logged_steps(workdir), default=0) >= target):
            return False
        time.sleep(rng.uniform(0.0, 0.4))
        return run.process.poll() is None
    raise ValueError(moment)


def one_error_line(stderr):
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def lock_path(workdir):
    return os.path.join(workdir, workdir_lock.LOCK_FILE)


def run_with_interruptions(command, workdir, plan, tmp_path, seed):
    """Runs `command`, interrupting it as `plan` says ((moment, signal) per run), then once more
    to the end. Returns what each interrupted run left: (moment, signal, kind of exit).

    A run SIGKILLed after it wrote stats.jsonl leaves its lock; the next run takes it over, saying so."""
    rng = random.Random(seed)
    outcomes = []
    for i, (moment, signum) in enumerate(plan + [(None, None)]):
        left_lock = os.path.exists(lock_path(workdir))
        run = Run(command, str(tmp_path / f"run{i}.log"), commit_delay=0.3 if moment == "during_save" else 0.0)
        run.resumes_from = max(finished_steps(workdir), default=0)
        if moment is None or not interrupt(run, workdir, moment, rng):
            returncode, stderr = run.wait()
            assert returncode == 0, stderr[-3000:]
            assert ("taking over the lock of PID" in stderr) == left_lock, stderr[-3000:]
            assert not os.path.exists(lock_path(workdir))
            return outcomes
        run.process.send_signal(signum)
        returncode, stderr = run.wait()
        assert ("taking over the lock of PID" in stderr) == left_lock, stderr[-3000:]
        latest = max(finished_steps(workdir), default=0)
        if signum == signal.SIGKILL:
            assert returncode == -signal.SIGKILL
            if moment != "startup":
                assert workdir_lock.read_holder(lock_path(workdir)).pid == run.process.pid
            if moment == "during_save":
                # Killed mid-save: the half-written folder is left, and is not a checkpoint.
                assert half_written(workdir)
                assert all(int(name.split(".")[0]) > latest for name in half_written(workdir))
                ckpt = checkpoint.Checkpointer(workdir)
                try:
                    assert ckpt.latest_step() == (latest or None)
                finally:
                    ckpt.close()
        else:
            # SIGINT / SIGTERM: a checkpoint of the last step, then a clean exit with 128 + signal.
            assert returncode == 128 + signum, stderr[-3000:]
            name = signal.Signals(signum).name
            assert f"error: stopped by {name} after step {latest}; checkpoint {latest} is saved" in one_error_line(stderr)
            assert max(logged_steps(workdir)) == latest and not half_written(workdir)
            assert not os.path.exists(lock_path(workdir))
        outcomes.append((moment, signum, latest))
    return outcomes


OVERRIDES = {
    # 8 steps, a checkpoint after each; the final sample grid only.
    "dcgan": {"train__epochs": 0.47, "checkpoint_every_steps": 1, "sample_every_steps": 100},
    # 3 stages (4 px, the fade-in to 8 px, 8 px) of 3 steps.
    "progan": {"data__resolution": 8, "checkpoint_every_steps": 1, "sample_every_steps": 100},
}
STEPS = {"dcgan": 8, "progan": 9}


def main_py_overrides(model, cache_dir):
    return [f"--config.{key.replace('__', '.')}={value}" for key, value in OVERRIDES[model].items()] + [
        f"--config.data.cache_dir={cache_dir}"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, shared_cache_dir):
    """Both models' uninterrupted runs, trained here as main.py trains them; returns model -> workdir."""
    root = tmp_path_factory.mktemp("uninterrupted")
    for model in OVERRIDES:
        train.train(smoke_config(model, data__cache_dir=shared_cache_dir, **OVERRIDES[model]), str(root / model))
    return lambda model: str(root / model)


def test_dcgan_killed_at_random_moments_ends_bit_for_bit_as_an_uninterrupted_run(
        uninterrupted, tmp_path, shared_cache_dir):
    interrupted = str(tmp_path / "interrupted")
    plan = [("startup", signal.SIGKILL), ("during_save", signal.SIGKILL), ("after_steps", signal.SIGKILL),
            ("after_steps", signal.SIGTERM)]
    outcomes = run_with_interruptions(
        command("dcgan", interrupted, main_py_overrides("dcgan", shared_cache_dir)),
        interrupted, plan, tmp_path, seed=0)
    assert [(moment, signum) for moment, signum, _ in outcomes] == plan
    whole = uninterrupted("dcgan")
    final = restored_state(interrupted)
    assert int(final["step"]) == STEPS["dcgan"]
    assert_same_state(final, restored_state(whole))
    assert_same_records(interrupted, whole, STEPS["dcgan"])


def is_mid_fade_in(workdir):
    """Step 5's checkpoint is being written or done: stage 1 (the 8 px fade-in) is under way."""
    names = os.listdir(os.path.join(workdir, "checkpoints"))
    return "5" in names or any(name.startswith("5" + TMP_SUFFIX) for name in names)


def test_progan_killed_mid_fade_in_ends_bit_for_bit_as_an_uninterrupted_run(
        uninterrupted, tmp_path, shared_cache_dir):
    interrupted = str(tmp_path / "interrupted")
    progan = command("progan", interrupted, main_py_overrides("progan", shared_cache_dir))
    run = Run(progan, str(tmp_path / "first.log"))
    assert wait_for(run, lambda: has_written(run, interrupted) and is_mid_fade_in(interrupted))
    run.process.send_signal(signal.SIGKILL)
    assert run.wait()[0] == -signal.SIGKILL
    resume_step = max(finished_steps(interrupted))
    ckpt = checkpoint.Checkpointer(interrupted)
    try:
        assert ckpt.latest_step() == resume_step in (4, 5)  # mid fade-in: alpha 0 or 1/3 of the way
        assert ckpt.read_meta(resume_step)["stage"] == 1
    finally:
        ckpt.close()
    # Once more, stopped by Ctrl-C, then to the end.
    outcomes = run_with_interruptions(progan, interrupted, [("after_steps", signal.SIGINT)], tmp_path, seed=1)
    assert [(moment, signum) for moment, signum, _ in outcomes] == [("after_steps", signal.SIGINT)]
    whole = uninterrupted("progan")
    final = restored_state(interrupted)
    assert int(final["step"]) == STEPS["progan"] and int(final["stage"]) == 2
    assert_same_state(final, restored_state(whole))
    assert_same_records(interrupted, whole, STEPS["progan"])
    resumed = [r for r in stats(interrupted) if r["step"] == resume_step + 1][0]
    assert (resumed["stage"], resumed["alpha"]) == (1, pytest.approx((resume_step - 3) / 3))


def test_a_second_signal_stops_at_once():
    script = (RESTORE_SIGNALS + "\n"
              "import os, signal, sys, time\n"
              "from mrigen.signals import StopSignals\n"
              "with StopSignals() as stop:\n"
              "    os.kill(os.getpid(), signal.SIGINT)\n"
              "    time.sleep(0.2)\n"
              "    print('asked to stop:', stop.name, flush=True)\n"
              "    os.kill(os.getpid(), signal.SIGINT)\n"
              "    time.sleep(30)\n"
              "print('not stopped')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGINT, result.stderr[-2000:]
    assert result.stdout == "asked to stop: SIGINT\n"
    assert "send it again to stop at once" in result.stderr


# ---------------------------------------------------------------- half-written checkpoints


@pytest.fixture(scope="module")
def two_steps(smoke_run):
    """A smoke run of 2 steps with its checkpoint at step 2 (read-only: copy it to change it)."""
    assert finished_steps(smoke_run) == [2]
    return smoke_run


def test_half_written_checkpoints_are_never_taken_for_finished_ones(two_steps, tmp_path, shared_cache_dir):
    workdir = str(tmp_path / "run")
    shutil.copytree(two_steps, workdir)
    for name in ["3" + TMP_SUFFIX, "9" + TMP_SUFFIX + "-1764000000"]:  # Orbax's two naming schemes
        os.makedirs(os.path.join(workdir, "checkpoints", name, "state"))
        with open(os.path.join(workdir, "checkpoints", name, "state", "_METADATA"), "w") as f:
            f.write("{half")
    ckpt = checkpoint.Checkpointer(workdir)
    try:
        assert ckpt.latest_step() == 2
    finally:
        ckpt.close()
    resumed = train.train(smoke_config(data__cache_dir=shared_cache_dir, train__epochs=4 * 8 / 137), workdir)
    assert int(resumed["step"]) == 4
    assert logged_steps(workdir) == [1, 2, 3, 4]
    assert finished_steps(workdir) == [2, 4] and not half_written(workdir)  # the leftovers are cleared


def test_records_after_the_checkpoint_are_dropped_on_resume(tmp_path):
    path = str(tmp_path / "stats.jsonl")
    with open(path, "w") as f:
        f.write("".join(json.dumps({"step": s, "d_loss": 0.5}) + "\n" for s in range(1, 6)) + '{"step": 6, "d_')
    progress.truncate_stats(path, 3)
    assert [json.loads(line)["step"] for line in open(path)] == [1, 2, 3]


# ---------------------------------------------------------------- one trainer per workdir


def dead_pid():
    """The PID of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_lock_record(workdir, host, pid):
    with open(lock_path(workdir), "w") as f:
        json.dump({"host": host, "pid": pid, "since": "2025-01-01T00:00:00+00:00", "command": "main.py"}, f)


def smoke_flags(workdir, cache_dir, *more):
    return ["--config=configs/dcgan.py:smoke", f"--workdir={workdir}", f"--config.data.cache_dir={cache_dir}", *more]


def test_the_lock_names_its_holder_refuses_a_second_taker_and_is_gone_once_released(tmp_path):
    workdir = str(tmp_path / "new" / "run")
    first = workdir_lock.WorkdirLock(workdir)
    first.acquire()  # creates the workdir
    try:
        holder = workdir_lock.read_holder(lock_path(workdir))
        assert (holder.host, holder.pid) == (socket.gethostname(), os.getpid())
        with pytest.raises(UserError) as refused:
            workdir_lock.WorkdirLock(workdir).acquire()
        assert f"is in use: PID {os.getpid()} on {socket.gethostname()} since {holder.since}" in str(refused.value)
        with pytest.raises(UserError):
            workdir_lock.check_free(workdir)
    finally:
        first.release()
    assert os.listdir(workdir) == []
    workdir_lock.check_free(workdir)


def test_a_lock_of_another_host_is_refused_and_says_which_file_to_delete(tmp_path):
    write_lock_record(str(tmp_path), "elsewhere.invalid", 4242)
    with pytest.raises(UserError) as refused:
        workdir_lock.WorkdirLock(str(tmp_path)).acquire()
    assert str(refused.value) == (f"workdir: {tmp_path} is locked by PID 4242 on elsewhere.invalid since "
                                  f"2025-01-01T00:00:00+00:00 (main.py), which cannot be checked from "
                                  f"{socket.gethostname()}; if that run is gone, delete {lock_path(str(tmp_path))}")
    assert workdir_lock.read_holder(lock_path(str(tmp_path))).host == "elsewhere.invalid"  # left as it was


def test_a_lock_left_by_a_dead_trainer_is_taken_over_with_a_warning(two_steps, tmp_path, shared_cache_dir, caplog):
    workdir = str(tmp_path / "run")
    shutil.copytree(two_steps, workdir)
    pid = dead_pid()
    write_lock_record(workdir, socket.gethostname(), pid)
    result = main_in_process(*smoke_flags(workdir, shared_cache_dir))  # the run is finished: nothing to train
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{lock_path(workdir)}: taking over the lock of PID {pid} on {socket.gethostname()}" in "\n".join(warnings)
    assert not os.path.exists(lock_path(workdir))


def test_read_only_modes_work_while_a_trainer_holds_the_lock(two_steps, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(two_steps, workdir)
    with workdir_lock.held(workdir):
        sampled = main_in_process("--config=configs/dcgan.py:smoke", f"--workdir={workdir}", "--mode=sample",
                                  "--num_samples=2", f"--out={tmp_path / 'out'}")
        plotted = main_in_process("--config=configs/dcgan.py:smoke", f"--workdir={workdir}", "--mode=plots",
                                  f"--out={tmp_path / 'plots'}")
        assert workdir_lock.read_holder(lock_path(workdir)).pid == os.getpid()
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert plotted.returncode == 0, plotted.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "out")) == ["manifest.json", "sample_000000.png", "sample_000001.png"]


# ---------------------------------------------------------------- failed writes (a full disk)


def no_space(path=None):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def failing_open(fails):
    """open, raising ENOSPC where fails(path, mode) is true."""
    def fake(path, mode="r", *args, **kwargs):
        if fails(str(path), mode):
            raise no_space(path)
        return open(path, mode, *args, **kwargs)
    return fake


def fail_if(condition, method):
    """`method`, raising ENOSPC where condition(self, *args) is true."""
    def fake(self, *args, **kwargs):
        if condition(self, *args):
            raise no_space()
        return method(self, *args, **kwargs)
    return fake


def inject_no_space(patch, writer):
    """Makes `writer` fail with a full disk, at its first write after checkpoint 2 (or during step 3 or 4)."""
    import matplotlib.figure
    import PIL.Image
    from orbax.checkpoint._src.path import async_path
    from tensorboardX import record_writer

    if writer == "checkpoint":  # the rename that completes a save, in Orbax's background thread
        async def rename(*args, **kwargs):
            raise no_space()
        patch.setattr(async_path, "rename", rename)
    elif writer == "stats":
        patch.setattr(progress, "open", failing_open(lambda path, mode: mode == "a"), raising=False)
    elif writer == "config":
        patch.setattr(run_config, "open", failing_open(lambda path, mode: "w" in mode), raising=False)
    elif writer == "tensorboard":
        patch.setattr(record_writer.RecordWriter, "write",
                      fail_if(lambda self, data: b"loss/d_loss" in data, record_writer.RecordWriter.write))
    elif writer in ("sample_grid", "reals"):
        name = "samples" if writer == "sample_grid" else "reals.png"
        patch.setattr(PIL.Image.Image, "save", fail_if(lambda self, path, *a: name in str(path), PIL.Image.Image.save))
    elif writer == "plots":
        patch.setattr(matplotlib.figure.Figure, "savefig",
                      fail_if(lambda self, *a: True, matplotlib.figure.Figure.savefig))
    else:
        raise ValueError(writer)


SMOKE_4_STEPS = f"--config.train.epochs={SMOKE_4_STEPS_EPOCHS!r}"  # resumes checkpoint 2 of two_steps, to 4


@pytest.mark.parametrize("writer, failed, kept", [
    ("checkpoint", "checkpoints: cannot write a checkpoint", 2),
    ("stats", "stats.jsonl: cannot write", 2),
    ("config", "config.json: cannot write", 2),
    ("tensorboard", "events.out.tfevents.", 2),
    ("sample_grid", "samples/step_00000004.png: cannot write", 2),
    ("reals", "reals.png: cannot write", 2),
    ("plots", "loss_curves.png: cannot write", 4),
])
def test_a_full_disk_at_any_writer_is_one_line_exit_4_naming_the_file_and_the_checkpoint_kept(
        two_steps, tmp_path, shared_cache_dir, caplog, writer, failed, kept):
    workdir = str(tmp_path / "run")
    shutil.copytree(two_steps, workdir)
    if writer == "reals":
        os.remove(os.path.join(workdir, "reals.png"))
    with pytest.MonkeyPatch.context() as patch:
        inject_no_space(patch, writer)
        result = main_in_process(*smoke_flags(workdir, shared_cache_dir, SMOKE_4_STEPS))
    assert result.returncode == 4, result.stderr[-3000:]
    line = one_error_line(result.stderr)
    assert line.startswith(f"error: {workdir}/{failed}"), line
    assert line.endswith(f"(No space left on device); the last complete checkpoint is {workdir}/checkpoints/{kept}: "
                         f"free space and run the same command to resume"), line
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert finished_steps(workdir) == ([2, 4] if kept == 4 else [2])
    assert not os.path.exists(lock_path(workdir))
    leftovers = [name for _, _, names in os.walk(workdir) for name in names if name.endswith(".tmp")]
    assert leftovers == []


def test_a_full_disk_in_plots_mode_is_one_line_exit_4(two_steps, tmp_path, monkeypatch):
    import matplotlib.figure

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        fail_if(lambda self, *a: True, matplotlib.figure.Figure.savefig))
    out = tmp_path / "plots"
    result = main_in_process("--config=configs/dcgan.py:smoke", f"--workdir={two_steps}", "--mode=plots",
                             f"--out={out}")
    assert result.returncode == 4, result.stderr[-3000:]
    assert one_error_line(result.stderr) == f"error: {out}/loss_curves.png: cannot write (No space left on device)"
    assert os.listdir(out) == []


@pytest.mark.parametrize("mode, writer, failed", [
    ("sample", "image", "sample_000000.png"),
    ("sample", "manifest", "manifest.json"),
    ("evaluate", "report", ""),
])
def test_a_full_disk_in_sample_and_evaluate_is_one_line_exit_4_naming_the_output(
        two_steps, tmp_path, shared_cache_dir, mode, writer, failed):
    import PIL.Image

    from mrigen import export
    from mrigen.metrics import report

    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as patch:
        if writer == "image":
            patch.setattr(PIL.Image.Image, "save", fail_if(lambda self, path, *a: True, PIL.Image.Image.save))
        elif writer == "manifest":
            patch.setattr(export, "open", failing_open(lambda path, mode: "w" in mode), raising=False)
        else:
            def write_report(*args, **kwargs):
                raise no_space()
            patch.setattr(report, "write_report", write_report)
        count = "--num_samples=4" if mode == "sample" else "--num_eval=8"
        result = main_in_process("--config=configs/dcgan.py:smoke", f"--workdir={two_steps}", f"--mode={mode}",
                                 f"--out={out}", count, f"--config.data.cache_dir={shared_cache_dir}")
    assert result.returncode == 4, result.stderr[-3000:]
    line = one_error_line(result.stderr)
    assert line.startswith(f"error: {os.path.join(out, failed)}".rstrip("/")), line
    assert "(No space left on device)" in line, line


@pytest.fixture
def small_filesystem(tmp_path):
    """A tmpfs mounted at tmp_path/fs (skips where mounting is not allowed); resize(bytes) changes its size."""
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")

    def resize(size):
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mount_point)], check=True)

    try:
        yield mount_point, resize
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_run_stopped_by_a_full_disk_resumes_to_the_uninterrupted_state_once_there_is_room(
        two_steps, smoke_run_4_steps, small_filesystem, shared_cache_dir):
    """A real ENOSPC (TensorStore's, in Orbax's background save): a filesystem with room for the run
    so far, not for its next checkpoint."""
    mount_point, resize = small_filesystem
    workdir = str(mount_point / "run")
    shutil.copytree(two_steps, workdir)
    used = os.statvfs(mount_point)
    resize((used.f_blocks - used.f_bfree) * used.f_frsize + 256 * 1024)  # a checkpoint takes ~700 KB
    failed = main_in_process(*smoke_flags(workdir, shared_cache_dir, SMOKE_4_STEPS))
    assert failed.returncode == 4, failed.stderr[-3000:]
    assert one_error_line(failed.stderr) == (
        f"error: {workdir}/checkpoints: cannot write a checkpoint (No space left on device); the last complete "
        f"checkpoint is {workdir}/checkpoints/2: free space and run the same command to resume")
    assert finished_steps(workdir) == [2] and not os.path.exists(lock_path(workdir))
    resize("64m")
    resumed = main_in_process(*smoke_flags(workdir, shared_cache_dir, SMOKE_4_STEPS))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole, final = smoke_run_4_steps
    assert_same_state(restored_state(workdir), final)
    assert_same_records(workdir, whole, 4)
    assert finished_steps(workdir) == [2, 4] and not half_written(workdir)


# ---------------------------------------------------------------- divergence


def nan_gradient(x):
    """0 with a NaN gradient: d sqrt(u)/du is infinite at 0, and inf * 0 is NaN."""
    return jnp.sqrt(0.0 * jnp.mean(x))


def nan_d_loss(real, fake, t):
    return losses.gan_d(real, fake, t) * jnp.nan


def poison(monkeypatch, **replacement):
    """losses.get gives DRAGAN with `replacement`'s terms, whatever loss is asked for."""
    poisoned = dataclasses.replace(losses.get("dragan"), **replacement)
    monkeypatch.setattr(losses, "get", lambda name: poisoned)


# The NaN cases train ProGAN's smoke config at 4x4: one stage of 3 steps, the quickest step to compile
# (each poison is a program of its own). What stops a diverged run does not depend on the model.
NAN_RUN = {"data__resolution": 4, "checkpoint_every_steps": 1}
NAN_RUN_FLAGS = ["--config=configs/progan.py:smoke", "--config.data.resolution=4", "--config.checkpoint_every_steps=1"]


@pytest.fixture(scope="module")
def stopped_after_two_steps(tmp_path_factory, shared_cache_dir):
    """That run, stopped right after its checkpoint of step 2 (read-only: copy it to change it)."""
    workdir = str(tmp_path_factory.mktemp("stopped") / "run")
    save = checkpoint.Checkpointer.save

    def save_then_stop(self, step, state, meta, force=False):
        save(self, step, state, meta, force)
        if step == 2:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint.Checkpointer, "save", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            train.train(smoke_config("progan", data__cache_dir=shared_cache_dir, **NAN_RUN), workdir)
    assert finished_steps(workdir) == [1, 2] and logged_steps(workdir) == [1, 2]
    return workdir


@pytest.mark.parametrize("replacement, named, not_named", [
    ({"d_loss": nan_d_loss}, ["d_loss", "d_grad_norm"], []),
    ({"d_loss": lambda real, fake, t: losses.gan_d(real, fake, t) + nan_gradient(real)},
     ["d_grad_norm", "d_param_norm"], ["d_loss"]),
    ({"g_loss": lambda fake, t: losses.gan_g(fake, t) + nan_gradient(fake)},
     ["g_grad_norm", "g_param_norm"], ["d_loss", "d_grad_norm", "d_param_norm"]),
], ids=["nan_loss", "nan_d_gradient_finite_loss", "nan_g_gradient_finite_loss"])
def test_a_nan_stops_training_naming_step_and_quantity_and_keeps_the_checkpoint(
        stopped_after_two_steps, tmp_path, shared_cache_dir, monkeypatch, replacement, named, not_named):
    workdir = str(tmp_path / "run")
    shutil.copytree(stopped_after_two_steps, workdir)
    before = folder_digest(os.path.join(workdir, "checkpoints"))
    poison(monkeypatch, **replacement)
    with pytest.raises(train.DivergedError) as error:
        train.train(smoke_config("progan", data__cache_dir=shared_cache_dir, **NAN_RUN), workdir)
    message = str(error.value)
    assert message.startswith("training diverged at step 3: ") and "\n" not in message
    quantities = message.split(": ", 1)[1].split(" is not finite")[0].split(" are not finite")[0].split(", ")
    assert set(named) <= set(quantities) and not set(not_named) & set(quantities), message
    assert "the last checkpoint, step 2, is kept" in message
    assert error.value.exit_code == 3
    assert folder_digest(os.path.join(workdir, "checkpoints")) == before
    assert logged_steps(workdir) == [1, 2]


def test_divergence_exits_with_status_3_and_one_line(tmp_path, shared_cache_dir, monkeypatch):
    """main.py (in this process) on a new workdir, with the nan_loss case's step above (compiled once)."""
    poison(monkeypatch, d_loss=nan_d_loss)
    workdir = str(tmp_path / "run")
    result = main_in_process(*NAN_RUN_FLAGS, f"--workdir={workdir}", f"--config.data.cache_dir={shared_cache_dir}")
    assert result.returncode == 3, result.stderr[-3000:]
    line = one_error_line(result.stderr)
    assert line.startswith("error: training diverged at step 1: ") and "d_loss" in line and "d_grad_norm" in line
    assert "there is no checkpoint yet" in line
    assert finished_steps(workdir) == [] and not half_written(workdir)
    assert not os.path.exists(lock_path(workdir))


# ---------------------------------------------------------------- nothing is pickled


def test_checkpoints_hold_no_pickles(two_steps):
    for directory, _, names in os.walk(os.path.join(two_steps, "checkpoints")):
        for name in names:
            with open(os.path.join(directory, name), "rb") as f:
                head = f.read(2)
            assert not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")), name
    with open(os.path.join(two_steps, "checkpoints", "2", "meta", "metadata")) as f:
        assert json.load(f)["step"] == 2


def test_the_package_neither_unpickles_nor_runs_shell_commands_nor_expands_variables():
    forbidden = re.compile(r"^\s*(import|from)\s+(c?pickle|dill|joblib|shelve|marshal)\b|pickle\.|allow_pickle\s*=\s*True"
                           r"|shell=True|os\.system\(|os\.popen\(|expandvars\(|\beval\(")
    package = os.path.join(ROOT, "mrigen")
    for directory, _, names in os.walk(package):
        for name in names:
            if name.endswith(".py"):
                with open(os.path.join(directory, name)) as f:
                    for number, line in enumerate(f, 1):
                        assert not forbidden.search(line), f"{name}:{number}: {line.strip()}"
