"""What a training run reports as it goes: the progress bar, stats.jsonl, TensorBoard, the time budget."""

import json
import os
import time
from typing import Optional

import numpy as np

from mrigen import tensorboard
from mrigen.errors import writing
from mrigen.models.base import Stage
from mrigen.plots import STATS_FILE


class ProgressReporter:
    """The progress bar, stats.jsonl and TensorBoard: images seen, img/s, losses, ETA; the time budget.

    While a stage's step compiles the bar says so (and names the stage); the
    compile time is left out of img/s and the ETA. writes=False (processes other
    than 0 of a multi-process run) keeps the counters and the time budget but
    shows and writes nothing.
    """

    def __init__(self, workdir: str, total_images: int, images_seen: int, step: int = 0,
                 time_budget_s: Optional[float] = None, writes: bool = True):
        from tqdm import tqdm

        self.writes = writes
        self.stats_path = os.path.join(workdir, STATS_FILE)
        if writes:
            truncate_stats(self.stats_path, step)
        self.tensorboard = tensorboard.Writer(workdir, resume_step=step) if writes else None
        self._deadline = None if time_budget_s is None else time.monotonic() + time_budget_s
        # smoothing=0: img/s and the ETA are averages over the run, less the compile pauses.
        self.bar = tqdm(total=total_images, initial=images_seen, unit="img", unit_scale=True,
                        dynamic_ncols=True, mininterval=1.0, smoothing=0, disable=not writes)
        self.stage_label = ""
        self.images_at_start = images_seen
        self._last_time, self._last_images = time.perf_counter(), images_seen
        self._start = time.time()
        self._compile_seconds = 0.0
        self._compile_started: Optional[float] = None

    def compiling(self, stage_label: str) -> None:
        """The next step compiles: say so until `compiled()`."""
        self.stage_label = stage_label
        self._compile_started = time.perf_counter()
        self.bar.set_description_str(f"compiling{' ' + stage_label if stage_label else ''}", refresh=True)

    def compiled(self) -> None:
        """The first step of the stage is done: back to counting images."""
        if self._compile_started is not None:
            paused = time.perf_counter() - self._compile_started
            self._compile_seconds += paused
            if not self.bar.disable:  # The bar's elapsed time, rate and ETA leave the compile out.
                self.bar.start_t += paused
                # tqdm takes a bar last drawn before its start for one never drawn, and would end it
                # without a newline: the next line (an error, the summary) would follow on the bar's line.
                self.bar.last_print_t = max(self.bar.last_print_t, self.bar.start_t)
            self._compile_started = None
        self._last_time, self._last_images = time.perf_counter(), self.bar.n
        self.bar.set_description_str(self.stage_label, refresh=False)

    def advance(self, batch_size: int) -> None:
        self.bar.update(batch_size)

    def log(self, step: int, stage: Stage, metrics: dict) -> None:
        now, seen = time.perf_counter(), self.bar.n
        rate = (seen - self._last_images) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_images = now, seen
        record = {"step": step, "images_seen": int(seen), "stage": stage.index,
                  "resolution": stage.resolution, "img_per_sec": rate,
                  "elapsed_sec": time.time() - self._start, "time": time.time(), **metrics}
        if not self.writes:
            return
        with writing(self.stats_path), open(self.stats_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.tensorboard.scalars(step, record)
        postfix = {"D": f"{metrics['d_loss']:.3f}", "G": f"{metrics['g_loss']:.3f}", "img/s": f"{rate:.0f}"}
        if self.stage_label:
            postfix["a"] = f"{metrics['alpha']:.2f}"
        self.bar.set_postfix(postfix, refresh=False)

    def add_grid(self, step: int, grid_u8: np.ndarray) -> None:
        self.tensorboard.image("samples/fixed_latents", grid_u8, step)

    def out_of_time(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def summary(self, workdir: str) -> str:
        """One line: images shown in this session, wall time, img/s, where the outputs are."""
        shown = int(self.bar.n) - self.images_at_start
        wall = time.time() - self._start
        training = max(wall - self._compile_seconds, 1e-9)
        return (f"done: {shown:,} images shown in {format_duration(wall)} "
                f"({format_duration(self._compile_seconds)} compiling, {shown / training:.1f} img/s after); "
                f"samples in {os.path.join(workdir, 'samples')}, "
                f"checkpoints in {os.path.join(workdir, 'checkpoints')}, plots in {workdir}")

    def close(self) -> None:
        self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def format_duration(seconds: float) -> str:
    """'45 s', '7 min 20 s', '2 h 05 min'."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def truncate_stats(path: str, step: int) -> None:
    """Drops the records after `step` from a stats.jsonl, and a line cut short by a kill.

    A run killed after its last checkpoint logged steps it will redo on resume;
    without this they would appear twice.
    """
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = [line for line in lines if (recorded := _record_step(line)) is not None and recorded <= step]
    if len(kept) != len(lines):
        temporary = f"{path}.tmp"
        with writing(path):
            with open(temporary, "w") as f:
                f.writelines(kept)
            os.replace(temporary, path)


def _record_step(line: str) -> Optional[int]:
    try:
        return int(json.loads(line)["step"]) if line.endswith("\n") else None
    except (ValueError, KeyError, TypeError):
        return None
