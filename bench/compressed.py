"""Benchmark of compressed members: npzfs against in-process inflate, np.load and ext4.

    .venv/bin/python bench/compressed.py [--mib 1024] [--runs 3] [--peers]

Prints medians of --runs runs, as MB/s and as ratios to baselines measured in the same run:
* header: open + read of the .npy header on a fresh mount with an empty cache;
* first read: 1 MiB sequential reads through a fresh mount (empty cache), against in-process
  inflate of the same member (bench/inflate.rs) and np.load(npz)[key];
* second read: the same member on a fresh mount once its cache file is complete (synced and
  renamed; passthrough
  when root, and through the daemon with nopassthrough), against reading the same bytes from an
  extracted file on the local disk.
With --peers, the same through the peer mounters (their second read is whatever they keep).
The archive is in the page cache (read again before each timed read: this VM pages out page
cache idle for a minute), so all figures are CPU-bound, not disk-bound.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from common import REPO, cleanup, int16_signal, median, read_all, timed
from mounters import Npzfs, start, usable


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024, help="member size in MiB")
    args, mounters, work = start(ap)
    try:
        # Moderately compressible: noisy int16 samples of a slow signal.
        data = int16_signal(args.mib)
        npz = work / "data.npz"
        np.savez_compressed(npz, x=data)
        size = data.nbytes + 128
        print(f"member: {data.nbytes / 2**20:.0f} MiB int16, archive {npz.stat().st_size / 2**20:.0f} MiB")
        extracted = work / "x.npy"
        np.save(extracted, data)
        del data
        mnt, cache = work / "mnt", work / "cache"
        mounters = usable(mounters, npz, work)

        # This VM pages out page cache left idle for a minute (DAMON's pageout scheme): every
        # timed read below is preceded by a read of what it should find in the page cache.
        read_all(npz)
        inflate = float(
            subprocess.run(
                [REPO / "target" / "release" / "examples" / "inflate", npz, "x.npy", str(args.runs)],
                check=True, capture_output=True, text=True,
            ).stdout
        )
        npload = [size / timed(lambda: np.load(npz)["x"]) / 1e6 for _ in range(args.runs)]

        # npzfs twice when root: its second read by passthrough and through the daemon.
        runs_of = [(m, m.name) for m in mounters]
        if os.geteuid() == 0:
            runs_of.insert(1, (Npzfs("nopassthrough"), "npzfs nopassthrough"))
        rows = {}
        for m, label in runs_of:
            header, first, second = [], [], []
            for _ in range(args.runs):
                shutil.rmtree(cache, ignore_errors=True)
                read_all(npz)
                m.mount(npz, mnt, cache)
                try:
                    def head():
                        with open(mnt / "x.npy", "rb") as f:
                            np.lib.format.read_magic(f)
                    header.append(timed(head) * 1e3)
                    first.append(size / timed(lambda: read_all(mnt / "x.npy")) / 1e6)
                    # npzfs's steady state: once the cache file is synced and renamed.
                    while label.startswith("npzfs") and not any(
                            p.name[0].isdigit() and "." not in p.name for p in cache.glob("*/*")):
                        time.sleep(0.05)
                finally:
                    m.unmount(mnt)
                # A fresh mount, so that the mount's page cache (which still holds the first
                # read's pages) does not answer: the cached member as a later user meets it,
                # its cache file in the page cache like the local file it is compared with.
                for p in cache.glob("*/[0-9]*"):
                    read_all(p)
                m.mount(npz, mnt, cache)
                try:
                    second.append(size / timed(lambda: read_all(mnt / "x.npy")) / 1e6)
                finally:
                    m.unmount(mnt)
            rows[label] = (median(header), median(first), median(second))
        read_all(extracted)
        ext4 = median([size / timed(lambda: read_all(extracted)) / 1e6 for _ in range(args.runs)])
        np_load = median(npload)
        print(f"in-process inflate {inflate:.0f} MB/s, np.load(npz)['x'] {np_load:.0f} MB/s, "
              f"local-file read {ext4:.0f} MB/s")
        print(f"{'mounter':20} {'header':>8} {'first read':>11} {'x inflate':>9} {'x np.load':>9} "
              f"{'second read':>12} {'x local':>8}")
        for label, (h, f, s2) in rows.items():
            print(f"{label:20} {h:6.1f}ms {f:6.0f} MB/s {f / inflate:8.2f}x {f / np_load:8.2f}x "
                  f"{s2:7.0f} MB/s {s2 / ext4:7.2f}x")
        if os.geteuid() == 0:
            print("(npzfs: second read by FUSE passthrough; 'npzfs nopassthrough': through the daemon)")
    finally:
        cleanup(work)


if __name__ == "__main__":
    sys.exit(main())
