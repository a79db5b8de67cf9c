"""The one exception type that reaches the user as a one-line message."""


class UserError(Exception):
    """Bad input or a config that cannot work.

    The message names the file or field and what is wrong; `main.py` prints it
    on one line and exits with status 2, without a traceback.
    """


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, for one-line error reports."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__
