"""Live mounts: the npzfs daemon run as a child of this process, and taken down with it.

The daemon runs in the foreground (``npzfs -f``) as a child in its own session (so a Ctrl-C
meant for Python does not reach it). It says it is ready the way it tells systemd
(``READY=1`` on ``$NOTIFY_SOCKET``), its log lines go to the ``npzfs`` logger, and a failure is
its one line on stderr plus its exit code. ``-o owner_pid=`` makes it unmount and exit when
this process ends, however it ends (``atexit`` cannot see SIGKILL); ``-o rmdir`` makes it
remove a temporary mount point it leaves behind.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from ._binary import find_npzfs_bin
from ._errors import Error, from_exit

__all__ = ["Mount", "mount", "Options"]

#: ``-o`` options: ``"allow_other,uid=1000"``, ``["allow_other", "uid=1000"]`` or
#: ``{"allow_other": True, "uid": 1000}``.
Options = Union[str, Iterable[str], Mapping[str, Union[str, int, bool]]]

#: How long the daemon may take to mount before it is given up on.
READY_TIMEOUT = 60.0
#: How long ``unmount()`` waits for the mount to leave the mount table.
UNMOUNT_TIMEOUT = 10.0
#: The mount root's extended attribute that holds its figures (JSON).
STATS_XATTR = "user.npzfs.stats"

log = logging.getLogger("npzfs")
# A library adds no handler of its own: the application decides what is shown.
log.addHandler(logging.NullHandler())

_LEVELS = {
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}

_live_lock = threading.Lock()
_live: Dict[int, "Mount"] = {}


class Mount:
    """A live npzfs mount, owned by this process.

    Use it as a context manager, or call :meth:`unmount`. It also goes away when this process
    ends, in any way.

    Attributes
    ----------
    path : pathlib.Path
        Where the archive is mounted; each member ``X.npy`` is the file ``path / "X.npy"``.
    source : str
        The archive (or other source) that is mounted.
    """

    def __init__(
        self, source: str, path: Path, proc: "subprocess.Popen[bytes]", temporary: bool
    ) -> None:
        self.source = source
        self.path = path
        self._proc = proc
        self._temporary = temporary
        self._owner = os.getpid()
        self._unmounted = False

    @property
    def pid(self) -> int:
        """The pid of the daemon serving this mount."""
        return self._proc.pid

    @property
    def mounted(self) -> bool:
        """Whether the mount is still in this process's mount table."""
        return _is_mounted(self.path)

    def stats(self) -> Dict[str, Any]:
        """What the mount has done and holds, as ``npzfs --stats --json`` prints it.

        Keys: ``read`` (opens and bytes by the path that served them: ``archive``, ``cache``,
        ``passthrough``, ``source``), ``cache`` (``budget_bytes``, ``used_bytes``, ``hits``,
        ``misses``, ``decoded_bytes``, evictions, ...; None when nothing mounted uses the
        cache), ``remote`` (requests by kind and outcome, bytes, retries, latencies), ``fuse``
        (requests, errors by errno and latency by operation), ``sources``, ``warnings``,
        ``version``. Counters count from the mount's start.

        Raises
        ------
        Error
            If the mount is gone.
        """
        try:
            raw = os.getxattr(self.path, STATS_XATTR)
        except OSError as e:
            raise Error(f"cannot read the figures of {self.path}: {e.strerror}", 5) from e
        figures: Dict[str, Any] = json.loads(raw)
        return figures

    def unmount(self, timeout: float = UNMOUNT_TIMEOUT) -> None:
        """Unmount, lazily if the mount is busy; safe to call more than once.

        A busy mount (open files, memory maps) is detached: its users keep reading, and the
        daemon exits when the last of them is gone. A temporary mount point is removed.

        Parameters
        ----------
        timeout : float
            Seconds to wait for the mount to leave the mount table.

        Raises
        ------
        Error
            If the mount is still there after `timeout` seconds.
        """
        if self._unmounted:
            return
        self._unmounted = True
        with _live_lock:
            _live.pop(id(self), None)
        if self._proc.poll() is None:
            try:
                # The daemon unmounts on SIGTERM (detaching the mount if it is busy).
                os.kill(self._proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        gone = _wait(lambda: not _is_mounted(self.path), timeout)
        if self._proc.poll() is None:
            # Detached while busy: the daemon exits after its last user. A thread of its own
            # waits for it, holding the Popen until then: no zombie once it exits, and no
            # "subprocess is still running" warning when this object goes first.
            threading.Thread(
                target=self._proc.wait, name=f"npzfs-reap-{self.pid}", daemon=True
            ).start()
        if self._temporary:
            try:
                self.path.rmdir()
            except OSError:
                pass  # the daemon removes it (-o rmdir) when it is done with it
        if not gone:
            raise Error(f"cannot unmount {self.path}: still mounted after {timeout:g} s", 1)

    def __enter__(self) -> "Mount":
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmount()

    def __repr__(self) -> str:
        state = "unmounted" if self._unmounted else f"pid {self.pid}"
        return f"<npzfs.Mount {self.source!r} on {str(self.path)!r} ({state})>"


def mount(
    file: Union[str, "os.PathLike[str]"],
    mountpoint: Union[str, "os.PathLike[str]", None] = None,
    *,
    cache_dir: Union[str, "os.PathLike[str]", None] = None,
    cache_size: Union[int, str, None] = None,
    options: Optional[Options] = None,
) -> Mount:
    """Mount an ``.npz`` archive read-only; each member ``X.npy`` becomes a regular file.

    Parameters
    ----------
    file : str or os.PathLike
        The archive; or a directory, mounted as a tree in which each ``x.npz`` is a folder
        ``x`` of its members (a dataset of shards: each opened only when used); or the URL
        of a remote archive, ``s3://bucket/key.npz`` or ``https://host/x.npz``, or of a
        prefix of a bucket, ``s3://bucket/dataset/``, mounted like a directory; read by
        range (credentials from the usual ``AWS_*`` variables or ``~/.aws``).
    mountpoint : str or os.PathLike, optional
        An existing directory to mount on. By default a private temporary directory is
        created, and removed again on unmount.
    cache_dir : str or os.PathLike, optional
        Where compressed members are decoded to (``-o cache_dir=``; default: npzfs's own
        chain, ending in ``/var/tmp/npzfs-UID``).
    cache_size : int or str, optional
        The cache's disk budget, in bytes or with a suffix such as ``"20G"``
        (``-o cache_size=``; default 4 GiB).
    options : str, iterable of str or mapping, optional
        Further ``-o`` options of the npzfs command, e.g. ``"allow_other"``.

    Returns
    -------
    Mount
        The live mount; use it in a ``with`` block, or call :meth:`Mount.unmount`.

    Raises
    ------
    FileNotFoundError, PermissionError
        The archive or the mount point cannot be opened.
    FuseUnavailableError
        FUSE cannot be used here; the message says which piece is missing and how to get it.
    Error
        Anything else npzfs refuses (not a ZIP archive, a bad option, ...).

    Examples
    --------
    >>> with npzfs.mount("data.npz") as m:                          # doctest: +SKIP
    ...     w = np.load(m.path / "weights.npy", mmap_mode="r")
    >>> with npzfs.mount("/data/dataset") as m:                     # doctest: +SKIP
    ...     x = np.load(m.path / "train" / "shard_0000" / "x.npy", mmap_mode="r")
    """
    source = os.fspath(file)
    if "://" not in source:
        source = os.path.abspath(source)
        if os.path.isdir(source):
            os.listdir(source)  # the built-in exception for an unreadable directory
        else:
            with open(source, "rb"):  # the built-in exceptions for a missing or unreadable file
                pass
    opts = _option_list(options)
    if cache_dir is not None:
        opts.append(f"cache_dir={os.fspath(cache_dir)}")
    if cache_size is not None:
        opts.append(f"cache_size={cache_size}")
    opts.append(f"owner_pid={os.getpid()}")
    temporary = mountpoint is None
    if mountpoint is None:
        path = Path(tempfile.mkdtemp(prefix="npzfs-")).resolve()
        opts.append("rmdir")
    else:
        path = Path(mountpoint).resolve()
        if not path.is_dir():
            os.listdir(path)  # the built-in exception: missing, not a directory, no access
    try:
        proc = _start(source, path, opts)
    except BaseException:
        if temporary:
            path.rmdir()
        raise
    m = Mount(source, path, proc, temporary)
    with _live_lock:
        _live[id(m)] = m
    return m


def _option_list(options: Optional[Options]) -> List[str]:
    if options is None:
        return []
    if isinstance(options, str):
        items = options.split(",")
    elif isinstance(options, Mapping):
        items = []
        for key, value in options.items():
            if value is True:
                items.append(key)
            elif value is not False and value is not None:
                items.append(f"{key}={value}")
    else:
        items = list(options)
    return [o.strip() for o in items if o.strip()]


def _start(source: str, path: Path, opts: List[str]) -> "subprocess.Popen[bytes]":
    """Runs ``npzfs -f`` and returns once the mount answers, or raises its failure."""
    args = [find_npzfs_bin(), "-f", source, str(path)]
    for opt in opts:
        args += ["-o", opt]
    with tempfile.TemporaryDirectory(prefix="npzfs-ready-") as d:
        notify = os.path.join(d, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(notify)
            # Short waits first: a daemon that cannot mount here (no FUSE) exits within a few
            # milliseconds, and load() falls back at once; then up to 50 ms between looks.
            wait = 0.002
            sock.settimeout(wait)
            env = dict(os.environ, NOTIFY_SOCKET=notify)
            env.pop("JOURNAL_STREAM", None)
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
            deadline = time.monotonic() + READY_TIMEOUT
            while True:
                try:
                    if b"READY=1" in sock.recv(4096).split(b"\n"):
                        break
                except socket.timeout:
                    wait = min(wait * 2, 0.05)
                    sock.settimeout(wait)
                if proc.poll() is not None:
                    raise _failure(proc)
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    raise Error(f"cannot mount on {path}: npzfs did not answer in time", 1)
    assert proc.stderr is not None
    threading.Thread(
        target=_forward_log, args=(proc.stderr,), name=f"npzfs-log-{proc.pid}", daemon=True
    ).start()
    return proc


def _failure(proc: "subprocess.Popen[bytes]") -> OSError:
    """The exception for a daemon that exited before its mount was live."""
    assert proc.stderr is not None
    lines = proc.stderr.read().decode(errors="replace").splitlines()
    proc.stderr.close()
    message = ""
    for line in lines:
        level, text = _parse_line(line)
        if level is None:
            message = text  # the one failure line: "npzfs: cannot <verb> <what>: <cause>"
        else:
            log.log(level, "%s", text)
    code = proc.returncode if proc.returncode is not None else 1
    if code < 0:
        return Error(message or f"npzfs was killed by signal {-code}", 1)
    return from_exit(code, message or f"npzfs exited with code {code}")


def _parse_line(line: str) -> Tuple[Optional[int], str]:
    """``npzfs: warning: x`` -> (WARNING, "x"); ``npzfs: cannot ...`` -> (None, "cannot ...")."""
    text = line[len("npzfs: ") :] if line.startswith("npzfs: ") else line
    label, sep, rest = text.partition(": ")
    if sep and label in _LEVELS:
        return _LEVELS[label], rest
    return None, text


def _forward_log(stream: IO[bytes]) -> None:
    """Passes the daemon's log lines on to the ``npzfs`` logger while it runs."""
    with stream:
        for raw in stream:
            level, text = _parse_line(raw.decode(errors="replace").rstrip("\n"))
            log.log(logging.INFO if level is None else level, "%s", text)


def _is_mounted(path: Path) -> bool:
    """Whether something is mounted exactly at `path` (from /proc/self/mountinfo, which never
    touches the mount itself)."""
    want = os.fsencode(str(path))
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            return any(_unescape(line.split(b" ")[4]) == want for line in f)
    except OSError:
        return False


def _unescape(field: bytes) -> bytes:
    """mountinfo writes space, tab, newline and backslash as ``\\ooo``."""
    out = bytearray()
    i = 0
    while i < len(field):
        octal = field[i + 1 : i + 4]
        if field[i : i + 1] == b"\\" and len(octal) == 3 and all(48 <= c <= 55 for c in octal):
            out.append(int(octal, 8))
            i += 4
        else:
            out += field[i : i + 1]
            i += 1
    return bytes(out)


def _wait(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return cond()
        time.sleep(0.01)
    return True


@atexit.register
def _unmount_all() -> None:
    """Unmounts what this process mounted (a forked child leaves its parent's mounts alone)."""
    with _live_lock:
        mine = [m for m in _live.values() if m._owner == os.getpid()]
    for m in mine:
        try:
            m.unmount(timeout=2.0)
        except OSError:
            pass
