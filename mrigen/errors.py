"""The exception types that reach the user as one-line messages, and the wrapping of failed writes."""

import contextlib
import errno
import os
import re
from typing import Optional


class UserError(Exception):
    """Bad input or a config that cannot work.

    The message names the file or field and what is wrong; `main.py` prints it
    on one line and exits with status 2, without a traceback.
    """


class WriteError(UserError):
    """A file or folder could not be written (a full disk, a read-only or failing one); exit status 4.

    errno: the failure's error number (errno.ENOSPC for a full disk).
    """

    exit_code = 4

    def __init__(self, message: str, errno_code: Optional[int] = None):
        super().__init__(message)
        self.errno = errno_code

    @property
    def disk_full(self) -> bool:
        return self.errno in (errno.ENOSPC, errno.EDQUOT)


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, for one-line error reports."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__


# How TensorStore (Orbax's array writer) reports the OS error under a failed write.
_TENSORSTORE_OS_ERROR = re.compile(r"os_error_code='?(\d+)")


def io_error_number(error: BaseException) -> Optional[int]:
    """The OS error number of an I/O failure: `error`'s, or that of an exception it was raised from.

    None when the failure is not an I/O failure (a bug, bad input).
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno:
            return error.errno
        found = _TENSORSTORE_OS_ERROR.search(str(error))
        if found:
            return int(found.group(1))
        error = error.__cause__ or error.__context__
    return None


def write_error(path: str, error: BaseException, what: str = "") -> Optional[WriteError]:
    """WriteError('<path>: cannot write <what> (<the OS's words>)') if `error` is an I/O failure, else None."""
    number = io_error_number(error)
    if number is None:
        return None
    return WriteError(f"{path}: cannot write{' ' + what if what else ''} ({os.strerror(number)})", number)


@contextlib.contextmanager
def writing(path: str, what: str = ""):
    """Turns an I/O failure inside the block into a WriteError naming `path` (and `what` was written there)."""
    try:
        yield
    except WriteError:
        raise
    except Exception as e:
        failure = write_error(path, e, what)
        if failure is None:
            raise
        raise failure from None
