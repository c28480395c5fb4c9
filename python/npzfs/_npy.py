"""One ``.npy`` inside a file, mapped: what ``np.load(..., mmap_mode="r")`` does, for a
``.npy`` that starts anywhere in a file (a stored member in its archive, a member's file in
npzfs's cache)."""

from __future__ import annotations

from typing import IO, Any, Union

import numpy as np
from numpy.lib import format as npy_format

__all__ = ["map_npy"]


def map_npy(f: IO[bytes], start: int, size: int, target: Union[str, IO[bytes]]) -> Any:
    """The ``.npy`` of `size` bytes at `start` of the open file `f`, as an ``np.memmap`` of
    `target` (its path, or `f` itself to map through that descriptor). Bytes that are not a
    ``.npy`` come back as they are, as ``np.load`` gives them."""
    f.seek(start)
    if f.read(len(npy_format.MAGIC_PREFIX)) != npy_format.MAGIC_PREFIX:
        f.seek(start)
        return f.read(size)
    f.seek(start)
    version = npy_format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = npy_format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = npy_format.read_array_header_2_0(f)
    else:
        # Version 3.0 (utf-8 field names) has no public reader.
        shape, fortran, dtype = npy_format._read_array_header(f, version)  # type: ignore[attr-defined]
    if dtype.hasobject:
        raise ValueError("Array can't be memory-mapped: Python objects in dtype.")
    return np.memmap(target, dtype=dtype, mode="r", offset=f.tell(), shape=shape,
                     order="F" if fortran else "C")
