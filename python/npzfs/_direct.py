"""Where FUSE cannot be had: stored members mapped straight from the archive, compressed
ones from npzfs's cache.

A stored member's bytes lie unchanged in the archive, at its local header's offset plus that
header's length, so its ``.npy`` header can be read there and its data mapped with
``np.memmap`` at the right offset: the same array the mount would serve, with no daemon. A
compressed member is decoded into the cache by the binary (``_cached``) and mapped from its
complete, checked file, never decoded into memory.

For remote archives (``RemoteReader``) the members are listed by the binary
(``npzfs --list --json``) and every member goes through the cache: a compressed one decoded,
a stored one copied (fetched by range, once).

This is the one place the package reads an archive itself; everything else is the daemon's.
"""

from __future__ import annotations

import json
import struct
import subprocess
import zipfile
from typing import Any, Dict, List

from ._cached import failure, map_cached
from ._errors import Error, FuseUnavailableError
from ._binary import find_npzfs_bin
from ._npy import map_npy

__all__ = ["DirectReader", "RemoteReader"]

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, 22 bytes, name length, extra length
_LOCAL_SIGNATURE = b"PK\x03\x04"


class DirectReader:
    """Members of an archive read without a mount (stored ones only)."""

    def __init__(self, path: str, why: FuseUnavailableError, cache: List[str]) -> None:
        self.path = path
        self.why = why
        self.cache = cache
        try:
            with zipfile.ZipFile(path) as z:
                infos = z.infolist()
        except (zipfile.BadZipFile, ValueError) as e:
            raise Error(f"cannot read archive {path}: {e}", 4) from None
        # As Python's zipfile (and numpy) read duplicates: the last entry of a name wins.
        self.infos: Dict[str, zipfile.ZipInfo] = {i.filename: i for i in infos if not i.is_dir()}

    def names(self) -> List[str]:
        return list(self.infos)

    def has(self, name: str) -> bool:
        return name in self.infos

    def load(self, name: str) -> Any:
        info = self.infos[name]
        if info.compress_type != zipfile.ZIP_STORED:
            return map_cached(self.path, name, self.cache)
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            sig, name_len, extra_len = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
            if sig != _LOCAL_SIGNATURE:
                raise Error(f"cannot read {name}: its local header is missing", 4)
            start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
            return map_npy(f, start, info.file_size, self.path)

    def close(self) -> None:
        pass


class RemoteReader:
    """Members of a remote archive without a mount, each through the cache."""

    def __init__(self, url: str, why: FuseUnavailableError, cache: List[str]) -> None:
        self.url = url
        self.why = why
        self.cache = cache
        run = subprocess.run([find_npzfs_bin(), "--list", "--json", url], capture_output=True,
                             text=True)
        if run.returncode != 0:
            raise failure(run.returncode, run.stderr)
        self.methods: Dict[str, str] = {m["name"]: m["method"] for m in json.loads(run.stdout)}

    def names(self) -> List[str]:
        return list(self.methods)

    def has(self, name: str) -> bool:
        return name in self.methods

    def load(self, name: str) -> Any:
        return map_cached(self.url, name, self.cache)

    def close(self) -> None:
        pass
