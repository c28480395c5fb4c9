"""``npzfs.info()``: what is in an archive, without mounting it (``npzfs --list --json``)."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any, Dict, List, Union

from ._binary import find_npzfs_bin
from ._errors import from_exit

__all__ = ["info"]


def info(file: Union[str, "os.PathLike[str]"]) -> List[Dict[str, Any]]:
    """Describe every member of an ``.npz`` archive without reading its data.

    Parameters
    ----------
    file : str or os.PathLike
        The archive.

    Returns
    -------
    list of dict
        One dict per member, in the archive's order: ``name``, ``dtype`` (the ``.npy``
        header's ``descr`` as numpy wrote it), ``shape`` (a list), ``fortran_order``,
        ``method`` (``"stored"``, ``"deflated"``, ...), ``size``, ``compressed_size`` and
        ``crc32`` (8 hex digits). ``dtype``, ``shape`` and ``fortran_order`` are None for a
        member that is not a valid ``.npy``. A deflated member is inflated only for its
        header's bytes.

    Raises
    ------
    FileNotFoundError, PermissionError
        The archive cannot be opened.
    Error
        It is not a ZIP archive npzfs can read.

    Examples
    --------
    >>> [(m["name"], m["dtype"], m["shape"]) for m in npzfs.info("data.npz")]  # doctest: +SKIP
    [('weights.npy', '<f4', [64, 32]), ...]
    """
    path = os.path.abspath(os.fspath(file))
    with open(path, "rb"):  # the built-in exceptions for a missing or unreadable archive
        pass
    run = subprocess.run(
        [find_npzfs_bin(), "--list", "--json", path],
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    if run.returncode != 0:
        message = run.stderr.decode(errors="replace").strip().splitlines()
        line = message[-1] if message else f"npzfs exited with code {run.returncode}"
        if line.startswith("npzfs: "):
            line = line[len("npzfs: ") :]
        raise from_exit(run.returncode, line)
    members: List[Dict[str, Any]] = json.loads(run.stdout)
    return members
