"""Finding the npzfs binary that the wheel installed beside this package."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig

__all__ = ["find_npzfs_bin"]


def _candidates() -> list[str]:
    """The scripts directories a wheel's binary lands in: this interpreter's, then the user's."""
    dirs = [sysconfig.get_path("scripts")]
    if sys.version_info >= (3, 10):
        user_scheme = sysconfig.get_preferred_scheme("user")
    else:
        user_scheme = "posix_user"
    try:
        dirs.append(sysconfig.get_path("scripts", scheme=user_scheme))
    except KeyError:
        pass
    return [os.path.join(d, "npzfs") for d in dirs if d]


def find_npzfs_bin() -> str:
    """Return the path of the npzfs binary.

    ``$NPZFS_BIN`` wins when set; then the binary the wheel installed beside this interpreter
    (or in the user's scripts directory); then ``npzfs`` on ``PATH``.

    Raises
    ------
    FileNotFoundError
        If no npzfs binary can be found.
    """
    override = os.environ.get("NPZFS_BIN")
    if override:
        return override
    candidates = _candidates()
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    found = shutil.which("npzfs")
    if found:
        return found
    raise FileNotFoundError(
        2,
        "the npzfs binary is not installed beside the npzfs package "
        "(reinstall it: pip install --force-reinstall npzfs)",
        candidates[0],
    )
