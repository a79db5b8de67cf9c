"""Several processes (hosts) as one JAX runtime, through `jax.distributed`.

A run is multi-process when main.py gets --coordinator_address,
--num_processes and --process_id, or when a cluster launcher (SLURM, Open MPI,
...) started several processes; otherwise nothing here happens and the run
uses the local devices only. After `initialize`, `jax.devices()` lists the
devices of every process, the training mesh spans all of them, and only
process 0 writes logs, sample grids and reports. Every process stops after
the same step: after each step they combine their reasons to stop
(`agreed_stop`).
"""

import dataclasses
import os
import signal
import socket
import time
from typing import Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from mrigen.errors import UserError, first_line

# Launchers whose environment says how many processes were started.
PROCESS_COUNT_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "JAX_NUM_PROCESSES")


def launched_as_several_processes() -> bool:
    """True when a cluster launcher's environment reports more than one process."""
    for name in PROCESS_COUNT_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return True
    return False


def wait_for_coordinator(address: str, timeout_s: float) -> None:
    """Polls a TCP connection to host:port until it opens; UserError after timeout_s.

    jax.distributed aborts the whole process (no Python exception) when its
    coordinator cannot be reached, so processes other than 0 check first.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--coordinator_address: {address!r} is not host:port")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise UserError(f"--coordinator_address: {address} could not be reached within "
                                f"{timeout_s:.0f} s ({e.strerror or e})") from None
            time.sleep(0.5)


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, timeout_s: int = 120) -> bool:
    """Joins the multi-process runtime if this is one of several processes.

    Must run before anything touches a JAX device. Returns True when
    jax.distributed was initialized.
    """
    explicit = {"--coordinator_address": coordinator_address, "--num_processes": num_processes,
                "--process_id": process_id}
    given = [name for name, value in explicit.items() if value is not None]
    if given and len(given) < 3:
        missing = sorted(set(explicit) - set(given))
        raise UserError(f"{', '.join(missing)}: required with {', '.join(given)}")
    if not given and not launched_as_several_processes():
        return False
    if given:
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise UserError(f"--process_id: {process_id} is not in [0, {num_processes})")
        if process_id > 0:
            wait_for_coordinator(coordinator_address, timeout_s)
    # CPU backends need a collectives implementation to talk across processes.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=timeout_s)
    return True


_barriers_passed = 0  # Appended to barrier names: every process passes the same barriers in the same order.


def wait_for_all(name: str, timeout_s: float = 1800) -> None:
    """Blocks until every process has reached the barrier `name`; nothing in one process.

    A name may come again (each run of an experiment compiles stage 0 at step 0): the
    barrier's number in this process makes each one new.

    Through the coordination service, not a collective: XLA:CPU's gloo
    collectives give up after 30 s when processes reach the first one
    further apart than that, as they do when one host compiles a step much
    later than another.
    """
    if jax.process_count() == 1:
        return
    from jax._src import distributed as jax_distributed  # the client jax.distributed.initialize started

    global _barriers_passed
    _barriers_passed += 1
    jax_distributed.global_state.client.wait_at_barrier(f"{name} #{_barriers_passed}", int(timeout_s * 1000))


_outcomes_shared = 0  # Numbers the keys of main_outcome, as _barriers_passed numbers barriers.


def main_outcome(name: str, outcome: str = "", timeout_s: float = 1800) -> str:
    """Process 0's `outcome` of the step `name` ('' when it went well), returned on every process.

    Every process calls it at the same point; the others wait for process 0's (through the coordination
    service's key-value store, like wait_for_all). One process: `outcome`.
    """
    if jax.process_count() == 1:
        return outcome
    from jax._src import distributed as jax_distributed

    global _outcomes_shared
    _outcomes_shared += 1
    key, client = f"mrigen/{name} #{_outcomes_shared}", jax_distributed.global_state.client
    if jax.process_index() == 0:
        client.key_value_set(key, "+" + outcome)  # never empty
        return outcome
    return client.blocking_key_value_get(key, int(timeout_s * 1000))[1:]


class PeerLost(UserError):
    """Another process of the run ended (a crash, a kill, a second signal) while this one waited for it.

    Exit status 5. main.py ends the process without JAX's shutdown, which would wait for the lost process
    and then abort.
    """

    exit_code = 5


@dataclasses.dataclass(frozen=True)
class Stop:
    """Why every process of a run stops after a step (or not): each one's own reasons, combined.

    signum: the signal they all stop for, the largest any process received (None: none).
    signalled: the processes that received one. out_of_time: some process's time budget ran out.
    """

    signum: Optional[int] = None
    signalled: tuple[int, ...] = ()
    out_of_time: bool = False

    @property
    def source(self) -> str:
        """'SIGTERM', or in a multi-process run 'SIGTERM to process 1' (the processes that got a signal)."""
        name = signal.Signals(self.signum).name
        if jax.process_count() == 1:
            return name
        return f"{name} to process{'es' if len(self.signalled) > 1 else ''} {', '.join(map(str, self.signalled))}"


def agreed_stop(signum: Optional[int], out_of_time: bool) -> Stop:
    """This process's reasons to stop combined with every other's, so that all stop after the same step.

    Several processes: a collective that every process must call at the same point (after each step);
    it waits for the step. One process: this process's reasons, with no device sync.
    """
    if jax.process_count() == 1:
        return Stop(signum, (0,) if signum is not None else (), out_of_time)
    local = np.array([signum or 0, int(out_of_time)], np.int32)
    try:
        gathered = multihost_utils.process_allgather(local)  # [processes, 2], the same on every process
    except jax.errors.JaxRuntimeError as e:  # The step's collectives failed, or this one: a process is gone.
        raise PeerLost(f"another process of this run ended while this one waited for it (a crash, a kill or a "
                       f"second signal); its checkpoints are kept, and once every process can run, the same "
                       f"command resumes ({first_line(e)})") from None
    signals, clocks = gathered[:, 0], gathered[:, 1]
    received = tuple(int(i) for i in np.flatnonzero(signals))
    return Stop(int(signals.max()) if received else None, received, bool(clocks.any()))


def is_main_process() -> bool:
    """Only process 0 writes files other than checkpoints."""
    return jax.process_index() == 0
