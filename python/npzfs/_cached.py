"""Members without a mount: put in npzfs's cache by the binary, then mapped from there.

``npzfs extract SOURCE MEMBER --into-cache`` decodes a compressed member (or copies a stored
one of a remote archive) into the same cache a mount would use (directory, layout, budget,
CRC-32 check), or finds it there already, and names its complete file. This process maps that file and holds a shared ``flock`` on it for
as long as the map lives: every evictor (a daemon, another ``load()``) passes over a file
someone holds, so a map never loses its file. The binary holds its own shared lock until this
process has taken its lock (``--hold``: until its standard input closes), so there is no
moment in which the file is held by no one.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import weakref
from typing import Any, List, Union

import numpy as np

from ._binary import find_npzfs_bin
from ._errors import from_exit
from ._npy import map_npy

__all__ = ["map_cached", "cache_options", "failure"]


def cache_options(cache_dir: Any, cache_size: Union[int, str, None]) -> List[str]:
    """The extract command's cache options for ``load()``'s arguments."""
    opts: List[str] = []
    if cache_dir is not None:
        opts += ["--cache-dir", os.fspath(cache_dir)]
    if cache_size is not None:
        opts += ["--cache-size", str(cache_size)]
    return opts


def map_cached(source: str, name: str, options: List[str]) -> Any:
    """Member `name` of `source`, decoded into the cache and mapped from there: an
    ``np.memmap`` (or the member's bytes when it is not an ``.npy``)."""
    with subprocess.Popen(
        [find_npzfs_bin(), "extract", source, name, "--into-cache", "--hold", *options],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            # The binary holds its own shared lock on the file until we close its stdin: ours
            # is taken before its goes, so no evictor can come in between.
            line = proc.stdout.readline()
            mapped = _map_locked(json.loads(line)["path"]) if line else None
        finally:
            proc.stdin.close()
            err = proc.stderr.read()
            code = proc.wait()
    if code != 0 or mapped is None:
        raise failure(code, err)
    return mapped


def failure(code: int, stderr: str) -> OSError:
    """The exception for a run of the binary that failed: its one line, its exit code."""
    message = stderr.strip().splitlines()[-1] if stderr.strip() else f"npzfs exited with {code}"
    return from_exit(code or 1, message.removeprefix("npzfs: "))


def _map_locked(path: str) -> Any:
    """The file at `path` mapped under a shared flock that lives as long as the map."""
    f = open(path, "rb")
    try:
        fcntl.flock(f, fcntl.LOCK_SH)
        array: Any = map_npy(f, 0, -1, f)
    except BaseException:
        f.close()
        raise
    if not isinstance(array, np.memmap):
        f.close()
        return array
    # The lock goes when the file closes: when the array (and every view, which holds it as
    # its .base) is gone.
    weakref.finalize(array, f.close)
    return array
