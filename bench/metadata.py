"""Benchmark of archives with many members: mount time, a listing and stat of every entry, and
the daemon's memory, for 10^4, 10^5 and 10^6 members (and the peer mounters with --peers).

    .venv/bin/python bench/metadata.py [--counts 10000,100000,1000000] [--runs 3] [--peers]

Members are tiny `.npy` files in 1000 directories (`d<i % 1000>/m<i>.npy`), written once with
Python's zipfile. Per mounter and count, medians of --runs runs of:
* mount: from the command to a mount that answers (npzfs returns only once it serves);
* walk: os.walk of the whole tree plus an os.stat of every file (the kernel's caches cold);
* RSS: the daemon's peak resident set (VmHWM) after the walk, and that per member.
A peer that takes more than --limit seconds to mount is reported as such and not waited for.
"""

import argparse
import os
import sys
import time
import zipfile
from pathlib import Path

from common import cleanup, median, timed
from mounters import daemon_rss, start, usable


def archive(work: Path, n: int) -> Path:
    path = work / f"m{n}.npz"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(n):
            z.writestr(zipfile.ZipInfo(f"d{i % 1000}/m{i}.npy"), b"\x93NUMPY" + bytes([i % 256]))
    return path


def walk(mnt: Path) -> int:
    files = 0
    for root, _, names in os.walk(mnt):
        for name in names:
            os.stat(os.path.join(root, name))
            files += 1
    return files


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="10000,100000,1000000")
    ap.add_argument("--limit", type=float, default=120, help="seconds a mount may take")
    args, mounters, work = start(ap)
    rows = []
    try:
        for n in (int(c) for c in args.counts.split(",")):
            npz = archive(work, n)
            for m in usable(mounters, npz, work, args.limit):
                mounts, walks, rss = [], [], []
                for _ in range(args.runs):
                    mnt, cache = work / "mnt", work / "cache"
                    try:
                        mounts.append(timed(lambda: m.mount(npz, mnt, cache, args.limit)))
                    except TimeoutError:
                        mounts = None
                        break
                    try:
                        t = time.perf_counter()
                        assert walk(mnt) == n
                        walks.append(time.perf_counter() - t)
                        rss.append(daemon_rss(m.pid(mnt))["VmHWM"])
                    finally:
                        m.unmount(mnt)
                rows.append((n, m.name, mounts, walks, rss))
            npz.unlink()
        print(f"{'members':>8} {'mounter':13} {'mount':>9} {'walk+stat':>10} {'peak RSS':>9} {'per member':>11}")
        for n, name, mounts, walks, rss in rows:
            if mounts is None:
                print(f"{n:8} {name:13} {'> ' + str(int(args.limit)) + ' s':>9}")
                continue
            r = median(rss)
            print(f"{n:8} {name:13} {median(mounts):8.2f}s {median(walks):9.2f}s "
                  f"{r / 1024:7.0f}MiB {r * 1024 / n:9.0f} B")
        print("targets (npzfs): mount of 10^5 <= 0.2 s, of 10^6 <= 2 s; RSS <= 64 MiB + 300 B per member")
    finally:
        cleanup(work)


if __name__ == "__main__":
    sys.exit(main())
