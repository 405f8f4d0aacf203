"""The one error convention of every command-line tool of the project.

A *user error* (wrong input, configuration or environment that the user can fix) is an instance of
:class:`UserError`; its message names the file / row / field / key. :func:`run_cli` wraps every ``main``: a user
error becomes exactly one line ``error: <message>`` on stderr and exit status 2; disk-full and permission errors
count as user errors; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Callable, Iterator, Sequence

EXIT_USER_ERROR = 2

# OSError numbers that say "your disk / your permissions", not "our bug".
_USER_OS_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})


class UserError(Exception):
    """An error the user can fix; ``str(exc)`` is one line naming the file / row / field / key at fault."""


def error_line(exc: BaseException) -> str:
    """The single stderr line for a user error: ``error: <message>`` with newlines folded."""
    message = " ".join(str(exc).split("\n")).strip() or type(exc).__name__
    return f"error: {message}"


def is_user_os_error(exc: BaseException) -> bool:
    """True for disk-full / permission / read-only OSErrors, which the user fixes, not the code."""
    return isinstance(exc, OSError) and exc.errno in _USER_OS_ERRNOS


@contextlib.contextmanager
def user_errors(*types: type[Exception]) -> Iterator[None]:
    """Treat ``types`` raised inside the block as user errors (re-raised as :class:`UserError`, same message).

    For a command whose input checks raise builtin exceptions (a ``ValueError`` from a parser of its input, a
    ``FileNotFoundError`` for a path it was given); keep the block around the input handling it describes.
    """
    try:
        yield
    except UserError:
        raise
    except types as exc:
        if isinstance(exc, OSError) and exc.filename and exc.strerror:  # "path: No such file or directory"
            raise UserError(f"{exc.filename}: {exc.strerror}") from exc
        raise UserError(str(exc)) from exc


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` under the convention above; returns the exit status (0, main's own, or 2)."""
    try:
        status = main(argv)
    except UserError as exc:
        print(error_line(exc), file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        if not is_user_os_error(exc):
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USER_ERROR
    return int(status or 0)
