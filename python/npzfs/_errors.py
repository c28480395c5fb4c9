"""The exceptions npzfs raises, and how the npzfs command's exit codes become them."""

from __future__ import annotations

import errno
import os
from typing import Tuple

__all__ = ["Error", "FuseUnavailableError", "from_exit"]

#: Exit codes of the npzfs command (``npzfs --help`` lists them all).
EXIT_ARCHIVE_OPEN = 3
EXIT_MOUNT = 7


class Error(OSError):
    """npzfs refused to mount: carries the command's one-line message and its exit code.

    Parameters
    ----------
    message : str
        The one line npzfs printed, without its ``npzfs:`` prefix.
    exit_code : int
        The exit code of the npzfs command (see ``npzfs --help``).
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> Tuple[type, Tuple[str, int]]:
        # Exceptions cross process boundaries (multiprocessing) by pickling.
        return (type(self), (self.message, self.exit_code))


class FuseUnavailableError(Error):
    """FUSE cannot be used here: the message names the missing piece and how to get it.

    Raised when ``/dev/fuse`` is absent or not accessible, ``fusermount3`` is missing or not
    setuid, or this container or namespace does not permit mounting.
    """


def from_exit(exit_code: int, message: str) -> OSError:
    """The exception for a failed ``npzfs`` run.

    An archive that cannot be opened raises the built-in exception of its cause
    (:class:`FileNotFoundError`, :class:`PermissionError`, ...), as ``open()`` would; a mount
    that FUSE refused raises :class:`FuseUnavailableError`; anything else :class:`Error`.
    """
    if exit_code == EXIT_MOUNT:
        return FuseUnavailableError(message, exit_code)
    if exit_code == EXIT_ARCHIVE_OPEN:
        # The message ends in the system's own words for the cause (strerror).
        for code in (errno.ENOENT, errno.EACCES, errno.EISDIR, errno.ENOTDIR, errno.ELOOP):
            if message.endswith(os.strerror(code)):
                return OSError(code, message)  # OSError picks the subclass from the errno
    return Error(message, exit_code)
