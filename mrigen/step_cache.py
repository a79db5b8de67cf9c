"""Jitted train steps kept for the life of a process, keyed by what they compute.

Training the same model again in one process (a resumed run, the runs of an
experiment that share a model and loss, a test suite) then reuses the traced
and compiled step instead of tracing it anew, which takes seconds.
"""

import collections
import json
from typing import Callable

from mrigen import run_config

MAX_STEPS = 16  # All 13 phases of ProGAN at 256 px; bounded for an experiment of many runs.

_steps: "collections.OrderedDict[tuple, Callable]" = collections.OrderedDict()


def step_key(config, loss, stage, schedule_start: int, stage_steps: int, num_images: int, mesh,
             class_names: tuple = ()) -> tuple:
    """Everything a train step depends on.

    The whole config except the fields a resumed run may change (its length,
    its outputs, where the data is read from: the data is an argument of the
    step, only its size and its classes are baked in); the loss itself (a
    test may replace its terms); and the step range only for a fade-in, the
    one stage whose alpha depends on it.
    """
    fields = {name: value for name, value in run_config.flatten(json.loads(run_config.to_json(config))).items()
              if name not in run_config.RESUMABLE_CHANGES}
    if not stage.fade_in:
        schedule_start = stage_steps = 0
    return (json.dumps(fields, sort_keys=True), loss, stage.index, schedule_start, stage_steps, num_images,
            tuple(class_names), tuple(device.id for device in mesh.devices.flat), tuple(mesh.axis_names))


def cached(key: tuple, build: Callable[[], Callable]) -> Callable:
    """The step stored under `key`, or build() stored there (the least recently used one is dropped)."""
    if key in _steps:
        _steps.move_to_end(key)
        return _steps[key]
    step = _steps[key] = build()
    if len(_steps) > MAX_STEPS:
        _steps.popitem(last=False)
    return step
