"""Benchmark of `-o materialize`: a stored member copied into the cache and served by FUSE
passthrough, against the same bytes in a local file and against the default path.

    .venv/bin/python bench/materialize.py [--mib 1024] [--runs 3]

Run as root (passthrough needs it). Medians of --runs runs, all warm (the archive, the local
file and the copy in the page cache):
* seq read: 1 MiB sequential reads of the whole member;
* random 20k: 20,000 single elements through np.load(mmap_mode='r');
for the local file, npzfs by default, and npzfs with materialize once its copy is complete
(a fresh open: passthrough). Also the first open and read of the whole member on a fresh
mount with an empty cache, with and without the option (the copy runs beside it), and the
copy itself (from an open that reads nothing until the copy is checked, synced and named
complete) against `cp` of the same bytes from an extracted file, and an fsync, on the cache's
file system.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import BIN, cleanup, float32_member, median, random_elements, read_all, timed
from mounters import Npzfs, start


def cp_synced(src: Path, dst: Path):
    subprocess.run(["cp", src, dst], check=True)
    with open(dst, "rb") as f:
        os.fsync(f.fileno())


def complete(cache: Path) -> bool:
    return any(p.name.startswith("0-") for p in cache.glob("*/*"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    args, _, work = start(ap)
    help_text = subprocess.run([BIN, "--help"], capture_output=True, text=True).stdout
    if "materialize" not in help_text:
        print(f"({BIN} has no -o materialize: skipped)")
        cleanup(work)
        return
    try:
        npz, local, n = float32_member(work, args.mib)
        size = local.stat().st_size
        idx = np.random.default_rng(2).integers(0, n, 20_000)
        mnt, cache = work / "mnt", work / "cache"
        plain, mat = Npzfs(), Npzfs("materialize")
        rows = {k: {c: [] for c in ("seq read", "random 20k", "first read", "copy")}
                for k in ("local", "npzfs", "npzfs materialize")}
        for run in range(args.runs):
            read_all(npz), read_all(local)
            rows["local"]["seq read"].append(size / timed(lambda: read_all(local)) / 1e6)
            rows["local"]["random 20k"].append(timed(lambda: random_elements(local, idx)) * 1e3)
            copy_to = work / "cache" / f"cp-{run}"
            copy_to.parent.mkdir(exist_ok=True)
            rows["local"]["copy"].append(timed(lambda: cp_synced(local, copy_to)))
            copy_to.unlink()
            for name, m in (("npzfs", plain), ("npzfs materialize", mat)):
                subprocess.run(["rm", "-rf", cache], check=True)
                read_all(npz)
                m.mount(npz, mnt, cache)
                try:
                    x = mnt / "x.npy"
                    rows[name]["first read"].append(size / timed(lambda: read_all(x)) / 1e6)
                    if m is mat:
                        while not complete(cache):
                            time.sleep(0.005)
                    read_all(x)  # warm: a fresh open, by passthrough once the copy is complete
                    rows[name]["seq read"].append(size / timed(lambda: read_all(x)) / 1e6)
                    random_elements(x, idx)
                    rows[name]["random 20k"].append(timed(lambda: random_elements(x, idx)) * 1e3)
                finally:
                    m.unmount(mnt)
            # The copy alone: an open that reads nothing, until the copy is named complete.
            subprocess.run(["rm", "-rf", cache], check=True)
            read_all(npz)
            mat.mount(npz, mnt, cache)
            try:
                with open(mnt / "x.npy", "rb"):
                    started = time.perf_counter()
                    while not complete(cache):
                        time.sleep(0.002)
                    rows["npzfs materialize"]["copy"].append(time.perf_counter() - started)
            finally:
                mat.unmount(mnt)
        loc = {k: median(v) for k, v in rows["local"].items() if v}
        print(f"member: {size / 2**20:.0f} MiB float32, stored, warm; medians of {args.runs}")
        print(f"{'':18} {'seq read':>16} {'random 20k':>18} {'first read':>12}")
        for name in rows:
            r = {k: median(v) for k, v in rows[name].items() if v}
            seq = f"{r['seq read']:6.0f} MB/s {r['seq read'] / loc['seq read']:4.2f}x"
            rnd = f"{r['random 20k']:6.1f} ms {loc['random 20k'] / r['random 20k']:5.2f}x"
            first = f"{r['first read']:6.0f} MB/s" if "first read" in r else ""
            print(f"{name:18} {seq:>16} {rnd:>18} {first:>12}")
        print(f"copy into the cache, from open to named complete (checked, synced): "
              f"{median(rows['npzfs materialize']['copy']):.2f} s; cp of the same bytes and an "
              f"fsync: {loc['copy']:.2f} s")
    finally:
        cleanup(work)


if __name__ == "__main__":
    sys.exit(main())
