"""One trainer per workdir: a lock file, held from before a run's first write until it ends.

The lock is `<workdir>/train.lock`, a JSON record of who holds it (host, PID,
since when, the command), on which the holder keeps an flock. It is created
whole (written under another name, flocked, then hard-linked into place), so
no process ever sees a lock without its record. A lock on this host that no
live process holds (its trainer was SIGKILLed) is taken over with a warning;
one written on another host cannot be checked from here and is refused.
"""

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
from typing import Iterator, Optional

from mrigen import distributed
from mrigen.errors import UserError, writing

LOCK_FILE = "train.lock"


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock, as its record says."""

    host: str
    pid: int
    since: str
    command: str = ""

    def describe(self) -> str:
        return f"PID {self.pid} on {self.host} since {self.since}" + (f" ({self.command})" if self.command else "")


def this_process(command: Optional[str] = None) -> Holder:
    since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return Holder(socket.gethostname(), os.getpid(), since, command if command is not None else shlex.join(sys.argv))


def read_holder(path: str) -> Optional[Holder]:
    """The record of the lock file at `path`; None if it is missing or not a lock record."""
    try:
        with open(path) as f:
            record = json.load(f)
        return Holder(str(record["host"]), int(record["pid"]), str(record["since"]), str(record.get("command", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Someone else's process.
        return True
    return True


def _try_flock(fd: int) -> Optional[bool]:
    """True if this process now holds the flock on fd, False if another does, None if the filesystem has none."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise


class WorkdirLock:
    """The lock on one workdir; `acquire` raises UserError naming the holder if another run holds it."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        with writing(self.workdir, "the lock"):
            os.makedirs(self.workdir, exist_ok=True)
        for _ in range(3):  # Another process may take over a stale lock between our looks.
            if self._create():
                return
            self._take_over_if_stale()
        raise UserError(f"{self.path}: another process keeps taking this lock; is a second run starting here?")

    def _create(self) -> bool:
        """Writes the record under a temporary name, flocks it and links it into place; False if a lock exists."""
        temporary = f"{self.path}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
        try:
            with writing(temporary, "the lock"):
                _try_flock(fd)
                os.write(fd, (json.dumps(dataclasses.asdict(this_process())) + "\n").encode())
                os.fsync(fd)
            try:
                os.link(temporary, self.path)
            except FileExistsError:
                os.close(fd)
                return False
            self._fd = fd
            return True
        except BaseException:
            if self._fd != fd:
                with contextlib.suppress(OSError):
                    os.close(fd)
            raise
        finally:
            with contextlib.suppress(OSError):
                os.remove(temporary)

    def _take_over_if_stale(self) -> None:
        """Removes a lock no live process on this host holds (with a warning); raises UserError if one is held."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return  # Released meanwhile.
        try:
            holder = read_holder(self.path)
            refusal = _refusal(self.workdir, self.path, holder, _try_flock(fd))
            if refusal is not None:
                raise refusal
            if not _same_file(fd, self.path):
                return  # Another process replaced it meanwhile: look again.
            os.remove(self.path)
            logging.warning("%s: taking over the lock of %s, which no live process holds", self.path,
                            holder.describe() if holder is not None else "an unreadable lock record")
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if _same_file(self._fd, self.path):
                os.remove(self.path)
        finally:
            os.close(self._fd)
            self._fd = None


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _refusal(workdir: str, path: str, holder: Optional[Holder], flocked: Optional[bool]) -> Optional[UserError]:
    """Why the lock at `path` cannot be taken over (None: it is stale). flocked: as _try_flock found it."""
    if holder is not None and holder.host != socket.gethostname() and flocked is not False:
        return UserError(f"workdir: {workdir} is locked by {holder.describe()}, which cannot be checked "
                         f"from {socket.gethostname()}; if that run is gone, delete {path}")
    if flocked is False or (flocked is None and holder is not None and pid_alive(holder.pid)):
        who = holder.describe() if holder is not None else "another process"
        return UserError(f"workdir: {workdir} is in use: {who} is training there (lock {path}); "
                         f"wait for it to end or stop it, or use another --workdir")
    return None


def check_free(workdir: str, enabled: bool = True) -> None:
    """Raises UserError if another run holds `workdir`'s lock; changes nothing (a stale lock passes).

    enabled=False: a process other than the lock's (several processes), which raises process 0's refusal.
    """
    _raise_on_every_process(_refusal_of(lambda: _check_free(workdir)) if enabled else None)


def _check_free(workdir: str) -> None:
    path = os.path.join(workdir, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        refusal = _refusal(workdir, path, read_holder(path), _try_flock(fd))
    finally:
        os.close(fd)  # Drops the flock _try_flock may have taken.
    if refusal is not None:
        raise refusal


def _refusal_of(attempt) -> Optional[UserError]:
    try:
        attempt()
    except UserError as e:
        return e
    return None


def _raise_on_every_process(refusal: Optional[UserError]) -> None:
    """Process 0's refusal (None: none) raised on every process of a run, instead of the others waiting for
    process 0 in their first collective; one process: `refusal`."""
    shared = distributed.main_outcome("workdir lock", str(refusal) if refusal is not None else "")
    if refusal is not None:
        raise refusal
    if shared:
        raise UserError(shared)


@contextlib.contextmanager
def held(workdir: str, enabled: bool = True) -> Iterator[None]:
    """The workdir's lock, held for the block and released however it ends; enabled=False: no lock.

    Several processes (process 0 holds the lock, the others pass enabled=False): when process 0 is refused,
    every process raises its one-line error.
    """
    lock = WorkdirLock(workdir) if enabled else None
    _raise_on_every_process(_refusal_of(lock.acquire) if lock is not None else None)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
