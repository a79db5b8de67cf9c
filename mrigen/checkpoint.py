"""Checkpoints of the whole training state with Orbax, plus a JSON record.

Orbax writes each checkpoint to a temporary folder and renames it when it is
complete, so a run killed mid-save leaves the previous checkpoint as latest.
"""

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from mrigen.errors import UserError, first_line


class Checkpointer:
    """Saves and restores `(state, meta)` pairs under `<workdir>/checkpoints`.

    state: the training-state pytree (restored exactly, structure included).
    meta: a small JSON dict (step, stage, model) readable without the state.
    """

    def __init__(self, workdir: str, keep: int = 3):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(n=keep), create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict, force: bool = False) -> None:
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)

    def read_meta(self, step: int) -> dict:
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as e:
            raise UserError(f"{self.directory}: checkpoint {step} is unreadable ({first_line(e)})") from None
        return dict(restored["meta"])

    def restore(self, step: int, target: Any) -> Any:
        """The state saved at `step`, with the structure, dtypes and shardings of `target`."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract)))
        except Exception as e:
            raise UserError(f"{self.directory}: checkpoint {step} does not match this model or is "
                            f"damaged ({first_line(e)})") from None
        return restored["state"]

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

