"""Data parallelism: one device mesh with a 'data' axis over all devices.

Training is written for one global batch; `jax.jit` with these shardings
splits the batch across devices, and XLA inserts the cross-device means that
gradients and batch-norm statistics need. One device runs the same code.
"""

from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mrigen.errors import UserError

DATA_AXIS = "data"


def data_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state, the dataset)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis is split across the mesh's devices."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """The global batch must split evenly across the devices."""
    if batch_size % mesh.size:
        raise UserError(f"train.batch_size: {batch_size} is not divisible by the "
                        f"{mesh.size} devices; use a multiple of {mesh.size}")
