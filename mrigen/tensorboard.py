"""TensorBoard event files, written with tensorboardX (no TensorFlow needed).

A run's events go into its workdir, beside stats.jsonl, so
`tensorboard --logdir=workdirs` shows every run (and an experiment's folder
shows each of its runs). Scalars are grouped by what they measure (loss/,
penalty/, discriminator/, norms/, progress/, eval/); sample grids go under
samples/.
"""

import glob
import math
import os
import socket
import struct
import time
from typing import Iterator, Optional

import numpy as np

from mrigen.errors import writing

# Record fields that name a place in the schedule rather than a measurement.
_NOT_SCALARS = frozenset({"step", "time"})
_GROUPS = {
    "d_loss": "loss", "g_loss": "loss", "d_adversarial": "loss",
    "penalty": "penalty", "drift": "penalty",
    "real_logit": "discriminator", "fake_logit": "discriminator",
    "d_grad_norm": "norms", "g_grad_norm": "norms", "d_param_norm": "norms", "g_param_norm": "norms",
}


def tag(name: str) -> str:
    """The TensorBoard tag of a stats.jsonl field: 'd_loss' -> 'loss/d_loss'."""
    return f"{_GROUPS.get(name, 'progress')}/{name}"


class Writer:
    """Scalars and images for one workdir's event file, written in the caller's thread.

    resume_step: the checkpoint step a training run continues from (0: from
    scratch); TensorBoard then drops the events an earlier process wrote after
    it (those steps are trained again, also those of a run killed before its
    first checkpoint), so curves have no doubled segments. None (an evaluation
    adding its scalars): nothing is dropped. Events are written as
    they come (tensorboardX's SummaryWriter writes from a thread of its own,
    where a full disk would go unreported), so a failed write raises WriteError
    naming the file; the file is flushed every FLUSH_SECONDS and at close.
    """

    FLUSH_SECONDS = 20.0

    def __init__(self, logdir: str, resume_step: Optional[int] = None):
        from tensorboardX.proto.event_pb2 import Event, SessionLog  # Deferred: importing it takes ~1 s.
        from tensorboardX.record_writer import RecordWriter

        # The names of tensorboardX's SummaryWriter, plus a suffix of the nanoseconds that keeps two writers
        # opened within one second (training, then evaluation) from overwriting each other, in order.
        self.path = os.path.join(logdir, f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
                                         f".{time.time_ns() % 10**9:09d}.{os.getpid()}")
        self._event = Event
        with writing(self.path):
            os.makedirs(logdir, exist_ok=True)
            self._records = RecordWriter(self.path)
        self._flushed_at = time.monotonic()
        self._write(Event(file_version="brain.Event:2"))
        if resume_step is not None:
            self._write(Event(step=resume_step + 1, session_log=SessionLog(status=SessionLog.START)))

    def scalars(self, step: int, record: dict, prefix: Optional[str] = None) -> None:
        """Every finite number in `record` at `step`, tagged by `tag` (or `prefix/name`)."""
        from tensorboardX.summary import scalar

        for name, value in record.items():
            if name in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self._write(self._event(summary=scalar(f"{prefix}/{name}" if prefix else tag(name), value),
                                        step=step))

    def image(self, name: str, image_u8: np.ndarray, step: int) -> None:
        """A 2-D uint8 image (a sample grid) under `name`."""
        from tensorboardX.summary import image

        self._write(self._event(summary=image(name, np.asarray(image_u8, np.uint8), dataformats="HW"), step=step))

    def _write(self, event) -> None:
        event.wall_time = time.time()
        with writing(self.path):
            self._records.write(event.SerializeToString())
        if time.monotonic() - self._flushed_at >= self.FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        with writing(self.path):
            self._records.flush()
        self._flushed_at = time.monotonic()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            with writing(self.path):
                self._records.close()


def write_eval(workdir: str, step: int, results: dict) -> None:
    """The generated set's evaluation (rho, sigma, delta, SWD, MS-SSIM, PCA-FD) as eval/ scalars."""
    row = results["sets"]["generated"]
    values = {"rho": row.get("rho"), "sigma": row.get("sigma"), "delta": row.get("delta"),
              "swd": row.get("swd", {}).get("avg"), "ms_ssim": row.get("ms_ssim"), "pca_fd": row.get("pca_fd")}
    writer = Writer(workdir)
    try:
        writer.scalars(step, {k: float(v) for k, v in values.items() if v is not None}, prefix="eval")
    finally:
        writer.close()


# ---------------------------------------------------------------- reading


def read_events(logdir: str) -> Iterator:
    """Every Event proto in `logdir`'s event files, oldest file first."""
    from tensorboardX.proto import event_pb2

    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            while header := f.read(12):
                # TFRecord framing: uint64 length, uint32 CRC of it, data, uint32 CRC of the data.
                (length,) = struct.unpack("<Q", header[:8])
                payload = f.read(length)
                f.read(4)
                if len(payload) < length:
                    break  # A file still being written ends with a partial record.
                yield event_pb2.Event.FromString(payload)


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every scalar in `logdir`, honouring purges on resume."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for event in read_events(logdir):
        if event.HasField("session_log") and event.session_log.status == event.session_log.START:
            scalars = {k: [(s, v) for s, v in points if s < event.step] for k, points in scalars.items()}
        for value in event.summary.value:
            if value.HasField("simple_value"):
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def read_image_tags(logdir: str) -> dict[str, list[int]]:
    """{tag: [step, ...]} of every image in `logdir`."""
    tags: dict[str, list[int]] = {}
    for event in read_events(logdir):
        for value in event.summary.value:
            if value.HasField("image"):
                tags.setdefault(value.tag, []).append(event.step)
    return tags
