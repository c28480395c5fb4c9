"""Benchmark of a dataset of many shards: a directory of small .npz files mounted as one
tree, beside ratarmount's union mount of the same shards (with --peers).

    .venv/bin/python bench/shards.py [--counts 1000,10000] [--runs 3] [--peers]

The dataset is `train/shard_<i>.npz`, each written by np.savez with two arrays (17 KiB). Per
count, medians of --runs runs of:
* mount: from the command to a mount that answers (both return only once they serve);
* ls -l: listing `train/` and stat-ing every entry (no archive is opened by npzfs);
* memory per shard seen: the daemon's private resident memory (RssAnon) after that listing
  minus after the mount, per shard (the entries it now knows, none of them opened);
* first listing of one shard: its time, and the bytes the daemon read for it (/proc/PID/io
  rchar) beside the size of that shard's central directory (what it must read);
* every shard's x.npy read once (npzfs opens each, at most max_archives at once), and the
  daemon's open descriptors after.
ratarmount indexes every archive at mount: its mount is timed cold (--recreate-index) and
warm (the indexes kept), with its resident set, and given --limit seconds at most; from 10^4
shards on it is run once (a cold mount takes minutes).
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from common import BIN, build, median
from mounters import Ratarmount, daemon_pid, daemon_rss


def dataset(work: Path, n: int) -> Path:
    import numpy as np

    root = work / f"ds{n}"
    (root / "train").mkdir(parents=True)
    for i in range(n):
        np.savez(root / "train" / f"shard_{i:05d}.npz", x=np.arange(2048) + i, y=np.ones(64))
    return root


def mount(cmd: list, mnt: Path, limit: float) -> float:
    """Runs a mounter that returns once mounted; the seconds it took (inf past `limit`)."""
    mnt.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = t + limit
    while proc.poll() is None or not os.path.ismount(mnt):
        if proc.poll() not in (None, 0) or time.perf_counter() > deadline:
            proc.kill()
            unmount(mnt)
            return float("inf")
        time.sleep(0.002)
    return time.perf_counter() - t


def unmount(mnt: Path):
    subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True)
    deadline = time.monotonic() + 60
    while os.path.ismount(mnt) and time.monotonic() < deadline:
        time.sleep(0.01)


def rchar(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def central_directory_bytes(npz: Path) -> int:
    """The bytes from the central directory's start to the end of the archive."""
    with zipfile.ZipFile(npz) as z:
        ends = [i.header_offset + 30 + len(i.filename.encode()) + len(i.extra) + i.compress_size
                for i in z.infolist()]
    return npz.stat().st_size - max(ends)


def ls_l(path: Path) -> int:
    names = os.listdir(path)
    for name in names:
        os.lstat(path / name)
    return len(names)


def npzfs_run(root: Path, work: Path, n: int, limit: float) -> dict:
    mnt = work / "mnt"
    cache = work / "cache"
    out = {"mount": mount([BIN, root, mnt, "-o", f"cache_dir={cache}"], mnt, limit)}
    try:
        pid = daemon_pid(mnt)
        before = daemon_rss(pid)["RssAnon"]
        t = time.perf_counter()
        assert ls_l(mnt / "train") == n
        out["ls"] = time.perf_counter() - t
        out["per_shard"] = (daemon_rss(pid)["RssAnon"] - before) * 1024 / n
        one = f"shard_{n // 2:05d}"
        r = rchar(pid)
        t = time.perf_counter()
        assert sorted(os.listdir(mnt / "train" / one)) == ["x.npy", "y.npy"]
        out["first"] = time.perf_counter() - t
        out["read_for_first"] = rchar(pid) - r
        out["cd"] = central_directory_bytes(root / "train" / f"{one}.npz")
        out["size"] = (root / "train" / f"{one}.npz").stat().st_size
        t = time.perf_counter()
        for i in range(n):
            with open(mnt / "train" / f"shard_{i:05d}" / "x.npy", "rb") as f:
                f.read()
        out["read_all"] = time.perf_counter() - t
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    finally:
        unmount(mnt)
        shutil.rmtree(cache, ignore_errors=True)
    return out


def ratarmount_run(root: Path, work: Path, n: int, limit: float, cold: bool) -> dict:
    mnt = work / "rmnt"
    shards = sorted((root / "train").iterdir())
    index = work / "rindex"
    index.mkdir(exist_ok=True)
    cmd = [Ratarmount().exe(), "--index-folders", str(index), *(["--recreate-index"] if cold else []),
           *shards, mnt]
    out = {"mount": mount(cmd, mnt, limit)}
    if out["mount"] != float("inf"):
        try:
            out["rss"] = daemon_rss(daemon_pid(mnt))["VmRSS"]
        except LookupError:
            pass
        unmount(mnt)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="1000,10000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--limit", type=float, default=300, help="seconds a mount may take")
    ap.add_argument("--peers", action="store_true")
    args = ap.parse_args()
    build()
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="npzfs-shards-"))
    peer = args.peers and Ratarmount().available()
    if args.peers and not peer:
        print("(ratarmount is not installed: skipped; bench/run --install-peers)")
    try:
        for n in (int(c) for c in args.counts.split(",")):
            root = dataset(work, n)
            runs = [npzfs_run(root, work, n, args.limit) for _ in range(args.runs)]
            m = {k: median(r[k] for r in runs) for k in runs[0]}
            print(f"{n} shards, npzfs: mount {m['mount'] * 1000:.0f} ms; ls -l of train/ "
                  f"{m['ls'] * 1000:.0f} ms; {m['per_shard']:.0f} bytes of daemon memory per "
                  f"shard listed (none opened); first listing of one shard {m['first'] * 1000:.2f} "
                  f"ms, reading {m['read_for_first']:.0f} bytes of its {m['size']:.0f} (central "
                  f"directory and end record: {m['cd']:.0f}); x.npy of every shard "
                  f"{m['read_all'] / n * 1e6:.0f} us per shard, {m['fds']:.0f} descriptors after")
            if peer:
                k = args.runs if n < 10_000 else 1
                cold = [ratarmount_run(root, work, n, args.limit, True) for _ in range(k)]
                warm = [ratarmount_run(root, work, n, args.limit, False) for _ in range(k)]
                c, w = median(r["mount"] for r in cold), median(r["mount"] for r in warm)
                rss = median(r.get("rss", 0) for r in warm)
                ratio = c / m["mount"] if c != float("inf") else float("inf")
                print(f"{n} shards, ratarmount union mount: {c:.2f} s cold ({ratio:.0f}x npzfs), "
                      f"{w:.2f} s with its indexes kept; {rss / 1024:.0f} MiB resident")
            shutil.rmtree(root, ignore_errors=True)
    finally:
        for mnt in ("mnt", "rmnt"):
            unmount(work / mnt)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
