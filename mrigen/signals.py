"""SIGINT and SIGTERM as a request to stop training at the next step boundary."""

import os
import signal
import threading
from typing import Optional

from mrigen.errors import UserError


class Interrupted(UserError):
    """SIGINT or SIGTERM stopped the run after saving a checkpoint; exit status 128 + signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopSignals:
    """Turns SIGINT and SIGTERM into a request to stop at the next step boundary.

    `received` holds the first signal's number (None until one arrives); in a
    multi-process run the training loop combines it with the other processes'
    (mrigen.distributed.agreed_stop), so a signal to any one stops them all. A
    second signal ends the process at once, which is safe: a checkpoint being
    written is left as a temporary folder that is never taken for a finished one.
    A signal the process inherited as ignored (SIGINT of a job started in the
    background by a shell) stays ignored.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: Optional[int] = None
        self._previous = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # Python handles signals only there.
            for signum in self.SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum
        # os.write, not logging or print: the handler may interrupt either mid-write.
        os.write(2, f"\n{signal.Signals(signum).name}: saving a checkpoint after this step, then "
                    f"stopping (send it again to stop at once)\n".encode())
