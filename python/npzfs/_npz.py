"""``npzfs.load()``: a read-only mapping like numpy's ``NpzFile`` whose arrays are memory maps.

The archive is mounted (one mount per archive version and cache setting, shared by every
``load()`` of it in this process) and each array is ``np.load(member, mmap_mode="r")`` of its
file in the mount. Where FUSE cannot be had, stored members are mapped straight from the
archive instead (``_direct``), and compressed ones from npzfs's cache (``_cached``).
"""

from __future__ import annotations

import errno
import os
import threading
import warnings
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np

from ._cached import cache_options
from ._direct import DirectReader, RemoteReader
from ._errors import FuseUnavailableError
from ._mount import Mount, mount

__all__ = ["NpzFile", "load"]

_NPY_MAGIC = b"\x93NUMPY"


class _MountReader:
    """Members as files of a shared mount."""

    def __init__(self, shared: "_Shared") -> None:
        self.shared = shared
        self.root = shared.mount.path

    def names(self) -> List[str]:
        """Every file in the mount, in directory order (the archive's order where it is flat)."""
        names: List[str] = []

        def walk(rel: str) -> None:
            with os.scandir(os.path.join(self.root, rel)) as it:
                for e in it:
                    name = f"{rel}/{e.name}" if rel else e.name
                    if e.is_dir(follow_symlinks=False):
                        walk(name)
                    else:
                        names.append(name)

        walk("")
        return names

    def has(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self.root, name))

    def load(self, name: str) -> Any:
        path = os.path.join(self.root, name)
        with open(path, "rb") as f:
            if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
                f.seek(0)
                return f.read()  # not an .npy: its bytes, as numpy's NpzFile returns them
        return np.load(path, mmap_mode="r")

    def close(self) -> None:
        self.shared.release()


_Reader = Union[_MountReader, DirectReader, RemoteReader]


class _Shared:
    """One mount shared by every ``load()`` of the same archive version in this process."""

    lock = threading.Lock()
    table: Dict[Tuple[Any, ...], "_Shared"] = {}

    def __init__(self, key: Tuple[Any, ...], mnt: Mount) -> None:
        self.key = key
        self.mount = mnt
        self.refs = 1

    @classmethod
    def acquire(cls, path: str, cache_dir: Any, cache_size: Any) -> "_Shared":
        key: Tuple[Any, ...]
        if "://" in path:
            key = (path, cache_dir, cache_size)  # its version is the daemon's to check
        else:
            st = os.stat(path)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, cache_dir, cache_size)
        with cls.lock:
            shared = cls.table.get(key)
            if shared is not None and shared.mount.mounted:
                shared.refs += 1
                return shared
            mnt = mount(path, cache_dir=cache_dir, cache_size=cache_size)
            shared = cls.table[key] = _Shared(key, mnt)
            return shared

    def release(self) -> None:
        with self.lock:
            self.refs -= 1
            if self.refs > 0:
                return
            if self.table.get(self.key) is self:
                del self.table[self.key]
        # Lazily, if arrays still map it: they stay valid, and the daemon exits after them.
        self.mount.unmount()


class _Bag:
    """Attribute access to the arrays: ``z.f.weights`` is ``z["weights"]`` (numpy's
    ``NpzFile.f``)."""

    def __init__(self, z: "NpzFile") -> None:
        object.__setattr__(self, "_z", z)

    def __getattr__(self, key: str) -> Any:
        try:
            return object.__getattribute__(self, "_z")[key]
        except KeyError:
            raise AttributeError(key) from None

    def __dir__(self) -> List[str]:
        return list(object.__getattribute__(self, "_z").files)


class NpzFile(Mapping[str, Any]):
    """The arrays of an ``.npz`` archive, each a read-only memory map; like numpy's NpzFile.

    Keys are member names with or without ``.npy``; :attr:`files` lists them without it.
    ``z[key]`` is an :class:`numpy.memmap` (as ``np.load(..., mmap_mode="r")`` returns),
    nothing is read until it is used, and it stays valid after :meth:`close`. A member that
    is not an ``.npy`` file is returned as its bytes, as numpy does.
    """

    def __init__(self, source: str, reader: _Reader) -> None:
        self.source = source
        self._reader: Optional[_Reader] = reader
        self._names: Optional[List[str]] = None

    def _open_reader(self) -> _Reader:
        if self._reader is None:
            raise ValueError(f"{self.source} is closed")
        return self._reader

    @property
    def mount(self) -> Optional[Mount]:
        """The mount that serves the arrays, or None where FUSE is unavailable."""
        reader = self._open_reader()
        return reader.shared.mount if isinstance(reader, _MountReader) else None

    @property
    def _members(self) -> List[str]:
        if self._names is None:
            self._names = self._open_reader().names()
        return self._names

    @property
    def f(self) -> _Bag:
        """The arrays as attributes: ``z.f.weights`` is ``z["weights"]``."""
        return _Bag(self)

    @property
    def files(self) -> List[str]:
        """The keys: member names, without the ``.npy`` of those that have it."""
        return [n[:-4] if n.endswith(".npy") else n for n in self._members]

    def _member(self, key: str) -> Optional[str]:
        reader = self._open_reader()
        if not isinstance(key, str):
            return None
        # numpy's order: the name as given, then with .npy.
        for name in (key, key + ".npy"):
            if self._names is not None:
                if name in self._names:
                    return name
            elif reader.has(name):
                return name
        return None

    def __getitem__(self, key: str) -> Any:
        name = self._member(key)
        if name is None:
            raise KeyError(f"{key} is not a file in the archive")
        return self._open_reader().load(name)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._member(key) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self._members)

    def close(self) -> None:
        """Let go of the archive; arrays already taken out of it stay valid."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def __enter__(self) -> "NpzFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._reader is None else "open"
        return f"<npzfs.NpzFile {self.source!r} ({state})>"


_warned_lock = threading.Lock()
_warned = False


def load(
    file: Union[str, "os.PathLike[str]"],
    *,
    cache_dir: Union[str, "os.PathLike[str]", None] = None,
    cache_size: Union[int, str, None] = None,
) -> NpzFile:
    """Open an ``.npz`` archive whose arrays are memory maps, like ``np.load(file)``.

    Parameters
    ----------
    file : str or os.PathLike
        The archive: a path, or the URL of a remote one (``s3://bucket/key.npz``,
        ``https://host/x.npz``).
    cache_dir : str or os.PathLike, optional
        Where compressed members are decoded to (default: npzfs's own chain).
    cache_size : int or str, optional
        The decode cache's disk budget, in bytes or with a suffix such as ``"20G"``.

    Returns
    -------
    NpzFile
        A read-only mapping of member names to :class:`numpy.memmap` arrays; use it in a
        ``with`` block or call :meth:`NpzFile.close`.

    Raises
    ------
    FileNotFoundError, PermissionError
        The archive cannot be opened.
    IsADirectoryError
        ``file`` is a directory, or a prefix of a bucket (``s3://bucket/prefix/``): those
        are for :func:`npzfs.mount`.
    Error
        npzfs refuses the archive (not a ZIP archive, ...), or a remote one cannot be read.

    Notes
    -----
    Where FUSE is unavailable (no ``/dev/fuse``, a container that forbids mounting), after
    one warning, stored members (``np.savez``) are mapped straight from the archive, and a
    compressed member is decoded into npzfs's cache on first use (checked against its
    CRC-32, shared with mounts and other processes) and mapped from there; a shared
    ``flock`` on its cache file keeps any evictor from deleting it while mapped. A member
    larger than ``cache_size`` raises :class:`Error`. Members of a remote archive all go
    through the cache (a stored one copied there, fetched by range once).

    Examples
    --------
    >>> with npzfs.load("data.npz") as z:                           # doctest: +SKIP
    ...     w = z["weights"]          # np.memmap: nothing read yet
    ...     print(w[5])
    """
    source = os.fspath(file)
    if "://" in source:
        if source.endswith("/"):
            raise IsADirectoryError(
                errno.EISDIR, f"{source} is a prefix, not an archive: npzfs.mount() mounts it"
            )
        try:
            shared = _Shared.acquire(source, cache_dir, cache_size)
        except FuseUnavailableError as e:
            reader = RemoteReader(source, e, cache_options(cache_dir, cache_size))
            _warn_once(e)
            return NpzFile(source, reader)
        return NpzFile(source, _MountReader(shared))
    path = os.path.abspath(source)
    with open(path, "rb"):  # the built-in exceptions for a missing or unreadable archive
        pass
    try:
        shared = _Shared.acquire(path, cache_dir, cache_size)
    except FuseUnavailableError as e:
        _warn_once(e)
        return NpzFile(path, DirectReader(path, e, cache_options(cache_dir, cache_size)))
    return NpzFile(path, _MountReader(shared))


def _warn_once(e: FuseUnavailableError) -> None:
    global _warned
    with _warned_lock:
        if _warned:
            return
        _warned = True
    warnings.warn(
        f"npzfs: FUSE is unavailable, so stored members are mapped straight from the archive "
        f"and compressed members from npzfs's cache, decoded there first: {e.message}",
        RuntimeWarning,
        stacklevel=3,
    )
