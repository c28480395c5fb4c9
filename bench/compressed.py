"""Benchmark of compressed members: npzfs against in-process inflate, np.load and ext4.

    .venv/bin/python bench/compressed.py [--mib 1024] [--runs 3]

Prints medians of --runs runs, as MB/s and as ratios to baselines measured in the same run:
* header: open + read of the .npy header on a fresh mount with an empty cache;
* first read: 1 MiB sequential reads through a fresh mount (empty cache), against in-process
  inflate of the same member (bench/inflate.rs) and np.load(npz)[key];
* second read: the same member once its cache file is complete (synced and renamed; passthrough
  when root), against reading the same bytes from an extracted file on the local disk.
The archive stays in the page cache throughout, so all figures are CPU-bound, not disk-bound.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import REPO, build, cleanup, int16_signal, median, mount, read_all, timed, unmount


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024, help="member size in MiB")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    build()

    work = Path(tempfile.mkdtemp(prefix="npzfs-bench-"))
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

        inflate = float(
            subprocess.run(
                [REPO / "target" / "release" / "examples" / "inflate", npz, "x.npy", str(args.runs)],
                check=True, capture_output=True, text=True,
            ).stdout
        )
        npload = [size / timed(lambda: np.load(npz)["x"]) / 1e6 for _ in range(args.runs)]

        header, first, second = [], [], []
        for _ in range(args.runs):
            shutil.rmtree(cache, ignore_errors=True)
            mount(npz, mnt, "-o", f"cache_dir={cache},cache_size=8G")
            try:
                def head():
                    with open(mnt / "x.npy", "rb") as f:
                        np.lib.format.read_magic(f)
                header.append(timed(head) * 1e3)
                first.append(size / timed(lambda: read_all(mnt / "x.npy")) / 1e6)
                # Steady state: once the cache file is synced and renamed into place.
                while not any(p.name[0].isdigit() for p in cache.glob("*/*")):
                    time.sleep(0.05)
                second.append(size / timed(lambda: read_all(mnt / "x.npy")) / 1e6)
            finally:
                unmount(mnt)
        read_all(extracted)
        ext4 = [size / timed(lambda: read_all(extracted)) / 1e6 for _ in range(args.runs)]

        med = median
        print(f"in-process inflate        {inflate:8.0f} MB/s")
        print(f"np.load(npz)['x']         {med(npload):8.0f} MB/s")
        print(f"npzfs header (fresh)      {med(header):8.1f} ms")
        print(f"npzfs first read          {med(first):8.0f} MB/s  "
              f"{med(first) / inflate:5.2f}x inflate  {med(first) / med(npload):5.2f}x np.load")
        print(f"npzfs second read         {med(second):8.0f} MB/s  "
              f"{med(second) / med(ext4):5.2f}x ext4 ({med(ext4):.0f} MB/s)"
              f"{'  [passthrough]' if os.geteuid() == 0 else ''}")
    finally:
        cleanup(work)


if __name__ == "__main__":
    sys.exit(main())
