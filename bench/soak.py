"""Soak: one training run SIGKILLed --kills times at random moments ends as an uninterrupted run does.

A reference run trains uninterrupted in <workdir>/reference. The soaked run,
in <workdir>/soaked, is the same `python main.py` command, SIGKILLed at a
seeded random moment and started again, --kills times, then left to finish.
The moments, in a seeded order: during start-up (imports, data, restore,
compile: a random delay), mid-save (as soon as a checkpoint's temporary folder
is on disk), just after a checkpoint is committed, between steps (a random
delay after a step is logged), and last, once the final step is logged
(the final checkpoint, sample grid and plots). Each kill aims at a later step,
so the kills spread over the whole run. Then it checks that

  - the final checkpoint's state equals the reference's, leaf by leaf, bit for bit
    (G, D, the moving average, both optimizer states, step, images seen, RNG, ...),
  - stats.jsonl holds each step 1..N once, in order, with the reference's values, and so does TensorBoard,
  - the same checkpoints are kept, and the same sample grids written, byte for byte,
  - no temporary checkpoint folder or temporary file is left, and train.lock is gone,
  - every kill was a kill (exit -9), no half-written folder was ever listed as a checkpoint,
    and no run failed on its own.

It prints each kill and a table, writes soak.json into --workdir and exits 1 if
a check fails (2 for bad flags). Both runs share a JAX compilation cache, so a
restart loads its programs instead of compiling them.

Run (the README's result: 10-15 min on 2 shared cores; each start takes 20-55 s to its first step):
  .venv/bin/python bench/soak.py --workdir=/tmp/soak
  .venv/bin/python bench/soak.py --workdir=/tmp/soak-progan --config=configs/progan.py:smoke --kills=10
  .venv/bin/python bench/soak.py --workdir=DIR --set train.epochs=2 --set checkpoint_every_steps=2
"""

import argparse
import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO_ROOT, os.path.dirname(os.path.abspath(__file__))]

from mrigen import checkpoint, experiment, run_config, tensorboard, workdir_lock  # noqa: E402
from mrigen.errors import UserError  # noqa: E402
from mrigen.plots import STATS_FILE  # noqa: E402
from soak_checks import (file_differences, file_lines, flat_leaves, scalar_differences, state_differences,  # noqa: E402
                         stats_problems, stray_temporaries, temporary_checkpoints)

# Every step logged, a checkpoint every 4 steps, a sample grid every 5; each model's run long enough
# (DCGAN and SRResNet: 80 steps on the 137 MNI152 slices at batch 8; ProGAN smoke: 5 stages of 12).
COMMON = {"log_every_steps": 1, "checkpoint_every_steps": 4, "sample_every_steps": 5}
LENGTH = {"dcgan": {"train.epochs": 4.67}, "srresnet": {"train.epochs": 4.67},
          "progan": {"train.epochs_per_stage": 0.7}}
# The share of each moment among the kills before the last (which is always "finishing").
SHARES = {"mid_save": 0.3, "startup": 0.2, "after_save": 0.15, "steps": 0.35}
POLL_S = 0.002
RUN_TIMEOUT_S = 1800


# ---------------------------------------------------------------- what a workdir holds


def logged_steps(workdir: str) -> list[int]:
    """The steps of stats.jsonl's lines, a line cut short by a kill included if its step is whole."""
    try:
        with open(os.path.join(workdir, STATS_FILE)) as f:
            return [int(m.group(1)) for m in re.finditer(r'^\{"step": (\d+),', f.read(), re.MULTILINE)]
    except FileNotFoundError:
        return []


def complete_steps(workdir: str) -> list[int]:
    return checkpoint.complete_steps(os.path.join(workdir, "checkpoints"))


def listed_latest(workdir: str):
    """The step Orbax takes as the latest checkpoint (what a resumed run restores)."""
    ckpt = checkpoint.Checkpointer(workdir)
    try:
        return ckpt.latest_step()
    finally:
        ckpt.close()


def final_state(workdir: str):
    """The latest checkpoint's state, restored as a resumed run restores it."""
    import jax

    from mrigen import models, state as state_lib

    config = run_config.load(workdir)
    ckpt = checkpoint.Checkpointer(workdir)
    try:
        return jax.device_get(state_lib.restore_or_init(ckpt, models.build(config),
                                                        state_lib.create_optimizer(config.train), config))
    finally:
        ckpt.close()


# ---------------------------------------------------------------- running and killing main.py


class Launch:
    """`main.py` started in a subprocess, its stderr in a log file (a pipe could fill up and block it)."""

    def __init__(self, command: list[str], log_path: str, env: dict):
        self.log_path = log_path
        self.started = time.time()
        self.first_write = None  # seconds from the start to its first write of stats.jsonl, once seen
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=log, env=env)

    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def error_line(self) -> str:
        lines = [line for line in self.log().splitlines() if line.startswith("error: ") or "Error" in line]
        return lines[-1].removeprefix("error: ") if lines else f"no error line in {self.log_path}"


def has_written(launch: Launch, workdir: str) -> bool:
    """True once this run has written stats.jsonl: it has removed earlier runs' half-written
    checkpoints by then, and dropped their records after its checkpoint."""
    if launch.first_write is not None:
        return True
    try:
        written = os.stat(os.path.join(workdir, STATS_FILE)).st_mtime >= launch.started
    except FileNotFoundError:
        return False
    if written:
        launch.first_write = time.time() - launch.started
    return written


def wait_until(launch: Launch, condition) -> bool:
    """Polls until condition() (True) or the run ends (False)."""
    while launch.running():
        if condition():
            return True
        time.sleep(POLL_S)
    return False


def sleep_while_running(launch: Launch, seconds: float) -> bool:
    deadline = time.time() + seconds
    while launch.running() and time.time() < deadline:
        time.sleep(POLL_S)
    return launch.running()


def wait_for_moment(launch: Launch, workdir: str, moment: str, target: int, final_step: int,
                    startup_s: float, rng: random.Random) -> bool:
    """Waits for `moment` of the run (at or after step `target`); False if the run ended first."""
    def written_and(condition):
        return lambda: has_written(launch, workdir) and condition()

    if moment == "startup":  # a random delay, cut short at the first step: start-up was quicker than thought
        deadline = time.time() + rng.uniform(0.05, 0.95) * startup_s
        return wait_until(launch, lambda: time.time() >= deadline or has_written(launch, workdir))
    if moment == "mid_save":
        return wait_until(launch, written_and(lambda: any(
            int(name.split(".")[0]) >= target for name in temporary_checkpoints(workdir, launch.started))))
    if moment == "after_save":
        return (wait_until(launch, written_and(lambda: max(complete_steps(workdir), default=0) >= target))
                and sleep_while_running(launch, rng.uniform(0.0, 0.05)))
    last = final_step if moment == "finishing" else target
    delay = rng.uniform(0.0, 1.5) if moment == "finishing" else rng.uniform(0.0, 0.3)
    return (wait_until(launch, written_and(lambda: max(logged_steps(workdir), default=0) >= last))
            and sleep_while_running(launch, delay))


def kill_plan(kills: int, final_step: int, every: int, rng: random.Random) -> list[tuple[str, int]]:
    """(moment, target step) per kill: the moments in SHARES' proportions, shuffled, then "finishing";
    targets rising over steps 1 .. final_step - 3 checkpoint intervals (room for the saves they wait for)."""
    before_last = kills - 1
    moments = [m for m, share in SHARES.items() for _ in range(round(share * before_last))]
    moments = (moments + ["steps"] * before_last)[:before_last]
    rng.shuffle(moments)
    span = max(final_step - 3 * every, before_last)
    lows = [1 + span * i // before_last for i in range(before_last)]
    targets = [rng.randint(low, max(low, span * (i + 1) // before_last)) for i, low in enumerate(lows)]
    return list(zip(moments, targets)) + ([("finishing", final_step)] if kills else [])


def doing(launch: Launch, workdir: str, final_step: int, resumed_from: int) -> str:
    """What a killed run was doing, from what it left: its log and its workdir."""
    last = max(logged_steps(workdir), default=0)
    if not has_written(launch, workdir) or last <= resumed_from:
        return "restoring / compiling" if "Data: " in launch.log() else "starting (imports, data)"
    return "finishing (final save, grid, plots)" if last >= final_step else "training"


def lock_problem(name: str, launch: Launch, left_lock: bool) -> list[str]:
    """A run that got as far as training takes over a lock a killed run left, saying so, and only then."""
    took_over = "taking over the lock of" in launch.log()
    if took_over == left_lock:
        return []
    return [f"{name}: took over a lock no killed run left" if took_over else f"{name}: left a killed run's lock"]


def kill_once(number: int, kills: int, moment: str, launch: Launch, workdir: str, final_step: int,
              resumed_from: int, left_lock: bool) -> tuple[dict, list[str]]:
    """SIGKILLs `launch` now; what it left (printed), and what is wrong with it."""
    launch.process.send_signal(signal.SIGKILL)
    seconds = time.time() - launch.started
    returncode = launch.process.wait(timeout=RUN_TIMEOUT_S)
    written = has_written(launch, workdir)
    saving = temporary_checkpoints(workdir, launch.started)
    latest, listed = max(complete_steps(workdir), default=None), listed_latest(workdir)
    record = {"kill": number, "moment": moment, "seconds": round(seconds, 2), "returncode": returncode,
              "doing": doing(launch, workdir, final_step, resumed_from), "saving": saving,
              "last_logged": max(logged_steps(workdir), default=0), "latest_checkpoint": latest}
    save = f"save in progress: {', '.join(saving)}" if saving else "no save in progress"
    print(f"kill {number:2d}/{kills}  +{seconds:5.1f} s  {moment:10s}  {record['doing']:36s}  last logged step "
          f"{record['last_logged']:3d}  {save}; resumes from {latest if latest is not None else 'scratch'}", flush=True)
    problems = [] if returncode == -signal.SIGKILL else [f"kill {number}: exit status {returncode}, not -9"]
    if listed != latest:
        problems.append(f"kill {number}: Orbax lists checkpoint {listed} as the latest, the latest complete "
                        f"one is {latest}")
    return record, problems + (lock_problem(f"run {number}", launch, left_lock) if written else [])


def soak(command: list[str], workdir: str, kills: int, final_step: int, every: int, startup_s: float,
         env: dict, logs: str, seed: int) -> tuple[list[dict], list[str]]:
    """Kills the run `command` trains in `workdir` as kill_plan says, then lets it finish.
    Returns (one record per kill, what went wrong on the way)."""
    rng = random.Random(seed)
    records, problems = [], []
    lock = os.path.join(workdir, workdir_lock.LOCK_FILE)
    for number, (moment, target) in enumerate(kill_plan(kills, final_step, every, rng), 1):
        resumes_from = max(complete_steps(workdir), default=0)
        left_lock = os.path.exists(lock)
        launch = Launch(command, os.path.join(logs, f"run_{number:02d}.log"), env)
        if not wait_for_moment(launch, workdir, moment, max(target, resumes_from + 1), final_step, startup_s, rng):
            return records, problems + [f"run {number} ended (exit {launch.process.returncode}) before its kill "
                                        f"({moment}, step {target}): {launch.error_line()}"]
        record, found = kill_once(number, kills, moment, launch, workdir, final_step, resumes_from, left_lock)
        records.append({**record, "target": target})
        problems += found
        if launch.first_write is not None:  # start-up kills land within the quickest start-up seen
            startup_s = min(startup_s, launch.first_write)
    left_lock = os.path.exists(lock)
    launch = Launch(command, os.path.join(logs, "run_last.log"), env)
    returncode = launch.process.wait(timeout=RUN_TIMEOUT_S)
    if returncode != 0:
        problems.append(f"the last run exited {returncode}: {launch.error_line()}")
    return records, problems + lock_problem("the last run", launch, left_lock)


def time_to_first_step(command: list[str], workdir: str, env: dict, log_path: str) -> tuple[float, float, Launch]:
    """Runs `command` to its end: (seconds to its first stats.jsonl line, seconds in all, the run)."""
    launch = Launch(command, log_path, env)
    wait_until(launch, lambda: has_written(launch, workdir))
    first = time.time() - launch.started
    launch.process.wait(timeout=RUN_TIMEOUT_S)
    return first, time.time() - launch.started, launch


# ---------------------------------------------------------------- verdict


def check_rows(soaked: str, reference: str, final_step: int, records: list[dict], kills: int,
               problems_on_the_way: list[str]) -> list[tuple[str, bool, str]]:
    """(check, passed, detail) per line of the result table."""
    moments = collections.Counter(r["moment"] for r in records)
    mid_save = sum(1 for r in records if r["saving"])
    rows = [("kills", len(records) == kills and not problems_on_the_way,
             "; ".join(problems_on_the_way) or f"{len(records)} of {kills} SIGKILLs ("
             + ", ".join(f"{n} {m}" for m, n in sorted(moments.items())) + f"), {mid_save} with a save on disk")]
    differences = state_differences(final_state(soaked), reference_state := final_state(reference))
    rows.append(("final state", not differences, "; ".join(differences[:5]) or
                 f"step {int(reference_state['step'])}: {len(flat_leaves(reference_state))} leaves bit for bit "
                 f"the reference's ({', '.join(sorted(reference_state))})"))
    expected = [json.loads(line) for line in file_lines(os.path.join(reference, STATS_FILE))]
    problems = stats_problems(file_lines(os.path.join(soaked, STATS_FILE)), expected, final_step)
    rows.append(("stats.jsonl", not problems, "; ".join(problems) or
                 f"steps 1..{final_step} once each, in order, the reference's values"))
    scalars = scalar_differences(tensorboard.read_scalars(soaked), tensorboard.read_scalars(reference))
    rows.append(("TensorBoard", not scalars, "; ".join(scalars[:3]) or "every scalar once per step, as the reference"))
    kept, kept_reference = complete_steps(soaked), complete_steps(reference)
    rows.append(("checkpoints kept", kept == kept_reference, f"{kept} (reference {kept_reference})"))
    grids = file_differences(os.path.join(soaked, "samples"), os.path.join(reference, "samples"))
    count = len(os.listdir(os.path.join(reference, "samples")))
    rows.append(("sample grids", not grids, "; ".join(grids[:5]) or f"{count} PNGs byte for byte the reference's"))
    left = stray_temporaries(soaked)
    rows.append(("temporary files", not left, ", ".join(left) or "none left"))
    lock = os.path.join(soaked, workdir_lock.LOCK_FILE)
    rows.append(("workdir lock", not os.path.exists(lock), "held: " + lock if os.path.exists(lock) else "released"))
    return rows


def render_table(rows: list[tuple[str, bool, str]]) -> str:
    lines = ["| check | result | detail |", "|---|---|---|"]
    lines += [f"| {name} | {'pass' if ok else '**FAIL**'} | {detail} |" for name, ok, detail in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- command line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="holds reference/, soaked/, logs/, the caches, soak.json")
    parser.add_argument("--config", default="configs/dcgan.py:smoke", help="file.py[:variant], as main.py takes it")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs before the run is let finish")
    parser.add_argument("--seed", type=int, default=0, help="seeds the moments and delays of the kills")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for both runs (after the bench's own: COMMON, LENGTH)")
    parser.add_argument("--jax_cache", default="", help="JAX compilation cache (default: <workdir>/jax-cache)")
    return parser.parse_args(argv)


def overrides(args: argparse.Namespace, model: str) -> dict:
    values = {**COMMON, **LENGTH.get(model, {})}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set: {item!r} is not KEY=VALUE")
        values[key] = value
    return values


def main_command(config: str, workdir: str, values: dict) -> list[str]:
    """`python main.py` as both runs start it, from the repository's root."""
    return [sys.executable, os.path.join(REPO_ROOT, "main.py"), f"--config={config}", f"--workdir={workdir}",
            *(f"--config.{key}={value}" for key, value in values.items())]


def run(args: argparse.Namespace) -> int:
    workdir = os.path.abspath(args.workdir)
    reference, soaked, logs = (os.path.join(workdir, name) for name in ("reference", "soaked", "logs"))
    for folder in (reference, soaked):
        if os.path.exists(folder):
            raise UserError(f"--workdir: {folder} exists; the soak starts from nothing: use a new --workdir")
    if args.kills < 0:
        raise UserError(f"--kills: {args.kills} is negative")
    path, variant = experiment.resolve_config_path(args.config)
    try:
        model = run_config.from_file(path, variant).model
    except ValueError as e:
        raise UserError(f"--config: {e}") from None
    values = overrides(args, model)
    config = os.path.relpath(os.path.abspath(path), REPO_ROOT) + (f":{variant}" if variant else "")
    values.setdefault("data.cache_dir", os.path.join(workdir, "data-cache"))
    every = int(values.get("checkpoint_every_steps", 1000))
    os.makedirs(logs, exist_ok=True)
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=args.jax_cache or os.path.join(workdir, "jax-cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    print(f"reference: {' '.join(main_command(config, reference, values))}", flush=True)
    startup_s, reference_s, launch = time_to_first_step(
        main_command(config, reference, values), reference, env, os.path.join(logs, "reference.log"))
    if launch.process.returncode != 0:
        raise UserError(f"the reference run exited {launch.process.returncode}: {launch.error_line()}")
    final_step = max(logged_steps(reference))
    print(f"reference: {final_step} steps in {reference_s:.0f} s ({startup_s:.0f} s to its first step)", flush=True)
    started = time.time()
    records, problems = soak(main_command(config, soaked, values), soaked, args.kills, final_step, every,
                                startup_s, env, logs, args.seed)
    soaked_s = time.time() - started
    rows = check_rows(soaked, reference, final_step, records, args.kills, problems)
    passed = all(ok for _, ok, _ in rows)
    print(f"\nsoaked: {len(records)} kills and {len(records) + 1} starts in {soaked_s:.0f} s; "
          f"reference {reference_s:.0f} s\n\n{render_table(rows)}\n\n{'PASS' if passed else 'FAIL'}", flush=True)
    with open(os.path.join(workdir, "soak.json"), "w") as f:
        json.dump({"config": args.config, "overrides": values, "seed": args.seed, "final_step": final_step,
                   "reference_seconds": reference_s, "soaked_seconds": soaked_s, "kills": records,
                   "checks": [{"check": n, "passed": ok, "detail": d} for n, ok, d in rows], "passed": passed},
                  f, indent=1)
    return 0 if passed else 1


def main(argv=None) -> int:
    try:
        return run(parse_args(argv))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
