"""The filesystems a benchmark can run its cases against: npzfs and the peer ZIP mounters the
machine has (fuse-zip and archivemount from Debian, ratarmount from PyPI). A peer that is not
installed is skipped with one line; `bench/run --install-peers` installs them.

Every mounter mounts read-only in the background and returns once the mount answers."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BIN, build


def alive(pid) -> bool:
    """Whether process `pid` runs (a zombie waiting for its reaper does not)."""
    try:
        return pid is not None and Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def raise_it(e: OSError):
    raise e


class Unusable(Exception):
    """The mounter mounted, but cannot serve this archive (its files fail)."""


class Mounter:
    name = "?"

    def command(self, archive: Path, mnt: Path, cache: Path) -> list:
        raise NotImplementedError

    def available(self) -> bool:
        return True

    def mount(self, archive: Path, mnt: Path, cache: Path, limit: float = 600):
        """Mounts and waits until the mount answers; TimeoutError (mount undone) after
        `limit` seconds."""
        mnt.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(self.command(archive, mnt, cache), stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + limit
        # Every mounter here forks its daemon and returns: both must have happened.
        while not os.path.ismount(mnt) or proc.poll() is None:
            if proc.poll() not in (None, 0):
                self.unmount(mnt)
                raise TimeoutError(f"{self.name}: the mount of {mnt} failed (exit {proc.returncode})")
            if time.monotonic() > deadline:
                proc.kill()
                self.unmount(mnt)
                raise TimeoutError(f"{self.name}: {mnt} not mounted after {limit:.0f} s")
            time.sleep(0.005)
        try:
            # The first file found stats and reads.
            for root, _, names in os.walk(mnt, onerror=raise_it):
                if names:
                    path = os.path.join(root, names[0])
                    os.stat(path)
                    with open(path, "rb") as f:
                        f.read(1)
                    break
        except OSError as e:
            self.unmount(mnt)
            raise Unusable(f"{self.name} mounts but its files fail: {e.strerror}") from e

    def unmount(self, mnt: Path):
        """Unmounts and waits for the daemon to exit, so the next mount starts clean."""
        try:
            pid = self.pid(mnt)
        except LookupError:
            pid = None
        subprocess.run(["fusermount3", "-u", "-z", mnt], check=False, capture_output=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (os.path.ismount(mnt) or alive(pid)):
            time.sleep(0.01)

    def pid(self, mnt: Path) -> int:
        return daemon_pid(mnt)


class Npzfs(Mounter):
    name = "npzfs"

    def __init__(self, *options: str):
        self.options = options

    def command(self, archive, mnt, cache):
        opts = f"cache_dir={cache},cache_size=16G"
        return [BIN, archive, mnt, "-o", ",".join([opts, *self.options])]


class FuseZip(Mounter):
    name = "fuse-zip"

    def available(self):
        return shutil.which("fuse-zip") is not None

    def command(self, archive, mnt, cache):
        return ["fuse-zip", "-r", archive, mnt]


class Archivemount(Mounter):
    name = "archivemount"

    def available(self):
        return shutil.which("archivemount") is not None

    def command(self, archive, mnt, cache):
        return ["archivemount", "-o", "readonly", archive, mnt]


class Ratarmount(Mounter):
    name = "ratarmount"

    def exe(self):
        here = Path(sys.executable).parent / "ratarmount"
        return str(here) if here.exists() else shutil.which("ratarmount")

    def available(self):
        return self.exe() is not None

    def command(self, archive, mnt, cache):
        # Its index goes beside the archive's cache, and is recreated each mount: the mount
        # time includes building it, as for the others.
        index = cache / "ratarmount.index.sqlite"
        cache.mkdir(parents=True, exist_ok=True)
        return [self.exe(), "--index-file", index, "--recreate-index", archive, mnt]


PEERS = [FuseZip(), Archivemount(), Ratarmount()]


def start(ap, runs: bool = True):
    """Adds the options every program shares (--runs, --peers), parses, builds npzfs, and
    returns (args, the mounters to run, a fresh work directory)."""
    if runs:
        ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--peers", action="store_true")
    args = ap.parse_args()
    build()
    return args, selected(args.peers), Path(tempfile.mkdtemp(prefix="npzfs-bench-"))


def selected(peers: bool) -> list:
    """npzfs, then the peers that are installed when `peers`; says which are skipped."""
    out = [Npzfs()]
    if peers:
        for p in PEERS:
            if p.available():
                out.append(p)
            else:
                print(f"({p.name} is not installed: skipped; bench/run --install-peers)")
    return out


def usable(mounters: list, archive: Path, work: Path, limit: float = 600) -> list:
    """The mounters that can serve `archive` (one trial mount each, of at most `limit`
    seconds); says which cannot."""
    out = []
    for m in mounters:
        try:
            m.mount(archive, work / "probe", work / "probe-cache", limit)
            m.unmount(work / "probe")
            out.append(m)
        except (Unusable, TimeoutError) as e:
            print(f"({e}: skipped for {archive.name})")
    return out


def daemon_pid(mnt: Path) -> int:
    """The daemon serving `mnt` (the process whose command line names it)."""
    me = os.getpid()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == me:
            continue
        try:
            args = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(mnt).encode() in args:
            return int(p.name)
    raise LookupError(f"no daemon for {mnt}")


def daemon_rss(pid: int) -> dict:
    """The daemon's memory from /proc: peak and current resident set, and of it the private
    (anonymous) part and the part mapped from files (the archive's pages, shared with the
    page cache), in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out
