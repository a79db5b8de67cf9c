"""Checkpoints of the whole training state with Orbax, plus a JSON record.

Orbax writes each checkpoint to a temporary folder (`<step>.orbax-checkpoint-tmp-*`)
and renames it to `<step>` when it is complete, and only such complete folders
are listed as checkpoints, so a run killed mid-save leaves the previous
checkpoint as latest. Arrays are stored as Orbax/TensorStore data and the
record as JSON: nothing is pickled.
"""

import contextlib
import logging
import os
import sys
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from etils import epath

from mrigen.errors import UserError, WriteError, first_line, io_error_number, write_error, writing

# Orbax writes this last into a checkpoint's folder; a folder without it is not a whole checkpoint.
CHECKPOINT_METADATA = "_CHECKPOINT_METADATA"


class Checkpointer:
    """Saves and restores `(state, meta)` pairs under `<workdir>/checkpoints`.

    state: the training-state pytree (restored exactly, structure included).
    meta: a small JSON dict (step, stage, model) readable without the state.
    """

    def __init__(self, workdir: str, keep: int = 3, writer: bool = False):
        """`writer`: the training process. It creates the folder and removes the
        temporary folders of saves cut short by a kill; a reader changes nothing
        (a run may be saving)."""
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(n=keep), create=writer,
            cleanup_tmp_directories=writer)
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        except Exception as e:
            failure = write_error(self.directory, e, "the checkpoints' folder") if writer else None
            raise failure or UserError(f"{self.directory}: cannot open the checkpoints ({first_line(e)})") from None
        if writer:
            _drop_orbax_reports_of_write_failures()

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict, force: bool = False) -> None:
        """Starts saving `step` in the background; a failed write (of this save or an earlier one) raises WriteError."""
        with writing(self.directory, "a checkpoint"):
            self._manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)

    def read_meta(self, step: int) -> dict:
        self._check_complete(step)
        _ignore_reads_into_closed_loop()
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as e:
            raise self._damaged(step, e) from None
        return dict(restored["meta"])

    def restore(self, step: int, target: Any) -> Any:
        """The state saved at `step`, with the structure, dtypes and shardings of `target`."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        self._check_complete(step)
        self._check_shapes(step, abstract)
        _ignore_reads_into_closed_loop()
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract)))
        except Exception as e:
            raise self._damaged(step, e) from None
        return restored["state"]

    def _check_complete(self, step: int) -> None:
        path = os.path.join(self.directory, str(step), CHECKPOINT_METADATA)
        if not os.path.isfile(path):
            raise self._damaged(step, detail=f"{path} is missing")

    def _check_shapes(self, step: int, abstract: Any) -> None:
        """Raises UserError naming the first array whose stored shape is not the target's (params first)."""
        path = os.path.join(self.directory, str(step), "state")
        try:
            stored = ocp.StandardCheckpointHandler().metadata(epath.Path(path))
        except Exception as e:
            raise self._damaged(step, e) from None
        difference = first_shape_difference(array_shapes(stored), array_shapes(abstract))
        if difference is not None:
            raise UserError(f"{path}: not a checkpoint of this config: {difference}; use the config it was "
                            f"trained with (its config.json), or a new --workdir")

    def _damaged(self, step: int, error: Optional[Exception] = None, detail: str = "") -> UserError:
        path = os.path.join(self.directory, str(step))
        detail = detail or first_line(_innermost(error), limit=1000).split(" See full TensorStore details")[0]
        return UserError(f"{path}: damaged, or not a checkpoint of this config ({detail}); "
                         f"delete that folder to resume from the checkpoint before it, "
                         f"or use a new --workdir")

    def wait(self) -> None:
        """Waits for the save under way; a failed write raises WriteError."""
        with writing(self.directory, "a checkpoint"):
            self._manager.wait_until_finished()

    def close(self) -> None:
        try:
            self.wait()
        except BaseException:
            with contextlib.suppress(Exception):  # It raises the failed save's error again.
                self._manager.close()
            raise
        self._manager.close()


def complete_steps(directory: str) -> list[int]:
    """The steps of the complete checkpoints in `directory` (a save that failed or is under way is not one)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(int(name) for name in names
                  if name.isdigit() and os.path.isfile(os.path.join(directory, name, CHECKPOINT_METADATA)))


def resume_advice(workdir: str, error: WriteError) -> str:
    """What a run stopped by a failed write keeps, and what to do: '... is checkpoints/40: free space and ...'."""
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    steps = complete_steps(directory)
    kept = (f"the last complete checkpoint is {os.path.join(directory, str(steps[-1]))}" if steps
            else "there is no complete checkpoint yet")
    return (f"{kept}: {'free space' if error.disk_full else 'fix that'} and run the same command to "
            f"{'resume' if steps else 'start again'}")


def array_shapes(tree: Any) -> dict[str, tuple]:
    """{'g.params.Dense_0.kernel': (256, 2048), ...}: every array leaf's shape, named as Orbax names them."""
    return {".".join(_key_name(entry) for entry in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _key_name(entry) -> str:
    for attribute in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    return str(entry)


def first_shape_difference(stored: dict[str, tuple], wanted: dict[str, tuple]) -> Optional[str]:
    """Words for the first array that differs between a checkpoint and a target (weights before the rest)."""
    names = sorted(set(stored) | set(wanted), key=lambda name: (".params." not in name, name))
    differing = [name for name in names if stored.get(name) != wanted.get(name)]
    if not differing:
        return None
    name = differing[0]
    more = f" ({len(differing) - 1} more arrays differ)" if len(differing) > 1 else ""
    if name not in stored:
        return f"it has no {name} (this config needs one of shape {wanted[name]}){more}"
    if name not in wanted:
        return f"it holds {name}, which this config does not have{more}"
    return f"{name} is {stored[name]} in the checkpoint, {wanted[name]} in this config{more}"


def _innermost(error: BaseException) -> BaseException:
    """The exception at the bottom of `error`'s chain: TensorStore's, naming the array and file that failed."""
    seen = {id(error)}
    while (cause := error.__cause__ or error.__context__) is not None and id(cause) not in seen:
        seen.add(id(cause))
        error = cause
    return error


def _drop_orbax_reports_of_write_failures() -> None:
    """Drops Orbax's logged tracebacks of a save that failed to write; the save's caller reports it in one line.

    Orbax logs each failure of its background save threads with a traceback
    (at the failure, at the next save and at the wait); other errors stay logged.
    """
    logger = logging.getLogger("absl")  # Orbax logs through absl.logging
    if any(getattr(f, "mrigen_filter", False) for f in logger.filters):
        return

    def keep(record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not ("orbax" in record.pathname and error is not None and io_error_number(error) is not None)

    keep.mrigen_filter = True
    logger.addFilter(keep)



def _ignore_reads_into_closed_loop() -> None:
    """Silences the reports of reads that outlive a failed restore.

    When one array of a damaged checkpoint fails, Orbax gives up on the others
    and closes its event loop while TensorStore still reads them; each read then
    reports a traceback ("Event loop is closed", "Task exception was never
    retrieved"), some before the restore's own error reaches its caller, some
    after. Installed before every restore, process-wide; it drops only those.
    """
    previous = sys.unraisablehook
    if getattr(previous, "mrigen_filter", False):
        return

    def hook(unraisable):
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
            previous(unraisable)

    hook.mrigen_filter = True
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(
        lambda record: "exception was never retrieved" not in record.getMessage())
