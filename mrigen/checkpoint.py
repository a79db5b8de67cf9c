"""Checkpoints of the whole training state with Orbax, plus a JSON record.

Orbax writes each checkpoint to a temporary folder (`<step>.orbax-checkpoint-tmp-*`)
and renames it to `<step>` when it is complete, and only such complete folders
are listed as checkpoints, so a run killed mid-save leaves the previous
checkpoint as latest. Arrays are stored as Orbax/TensorStore data and the
record as JSON: nothing is pickled.
"""

import logging
import os
import sys
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from mrigen.errors import UserError, first_line


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
            raise UserError(f"{self.directory}: cannot open the checkpoints ({first_line(e)})") from None

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict, force: bool = False) -> None:
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)

    def read_meta(self, step: int) -> dict:
        _ignore_reads_into_closed_loop()
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as e:
            raise self._damaged(step, e) from None
        return dict(restored["meta"])

    def restore(self, step: int, target: Any) -> Any:
        """The state saved at `step`, with the structure, dtypes and shardings of `target`."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        _ignore_reads_into_closed_loop()
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract)))
        except Exception as e:
            raise self._damaged(step, e) from None
        return restored["state"]

    def _damaged(self, step: int, error: Exception) -> UserError:
        path = os.path.join(self.directory, str(step))
        detail = first_line(error, limit=160).split(" See full TensorStore details")[0]
        return UserError(f"{path}: damaged, or not a checkpoint of this config ({detail}); "
                         f"delete that folder to resume from the checkpoint before it, "
                         f"or use a new --workdir")

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()



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
