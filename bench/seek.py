"""Benchmark of random access into a deflated member through its seek points.

    .venv/bin/python bench/seek.py [--mib 1024] [--reads 200] [--cache-mib 64]

One member of --mib MiB (the int16 data of bench/compressed.py, np.savez_compressed):
* index: the size of the seek index the first full read writes, as a share of the member;
* after the index exists, on a fresh mount whose cache holds nothing but the index (the
  member is larger than --cache-mib, so its data was deleted on its last close): random 4 KiB
  reads (fixed seed), median and 90th percentile, with readahead off (POSIX_FADV_RANDOM: each
  read is one span) and on (the kernel asks for up to 1 MiB: one or two spans);
* against: the same 4 KiB reads on a fresh mount with no index, which wait for the decoder to
  get there from the start (three offsets, at a quarter, half and three quarters);
* np.load(mmap_mode='r') of the mounted member, 1000 random elements, after the index exists.
Prints the cache's own summary of what it decoded, from the daemon's log.
"""

import argparse
import os
import threading
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import build, cleanup, int16_npz, mount, unmount


def wait_for(cond, secs=600):
    deadline = time.monotonic() + secs
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.05)


def timed_preads(path: Path, offsets, fadvise_random: bool):
    fd = os.open(path, os.O_RDONLY)
    try:
        if fadvise_random:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        times = []
        for off in offsets:
            t = time.perf_counter()
            os.pread(fd, 4096, off)
            times.append((time.perf_counter() - t) * 1e3)
        return times
    finally:
        os.close(fd)


class Peak:
    """Samples the bytes allocated by member cache files (seek indexes aside) every 20 ms."""

    def __init__(self, cache: Path):
        self.cache, self.peak, self.stop = cache, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.wait(0.02):
            try:
                now = sum(p.stat().st_blocks * 512 for p in self.cache.glob("*/*")
                          if ".seek" not in p.name and p.name != "archive")
            except OSError:
                continue
            self.peak = max(self.peak, now)

    def done(self) -> int:
        self.stop.set()
        self.thread.join()
        return self.peak


def pct(values, q):
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--reads", type=int, default=200)
    ap.add_argument("--cache-mib", type=int, default=64)
    args = ap.parse_args()
    build()

    work = Path(tempfile.mkdtemp(prefix="npzfs-bench-"))
    try:
        npz = int16_npz(work, args.mib)
        mnt, cache = work / "mnt", work / "cache"
        opts = ("-o", f"cache_dir={cache},cache_size={args.cache_mib}M")
        size = None

        # Without an index: a read waits for the decoder to get there from the start.
        cold = []
        for frac in (0.25, 0.5, 0.75):
            shutil.rmtree(cache, ignore_errors=True)
            mount(npz, mnt, *opts)
            try:
                size = (mnt / "x.npy").stat().st_size
                cold.append(timed_preads(mnt / "x.npy", [int(size * frac) // 4096 * 4096], True)[0])
            finally:
                unmount(mnt)

        # The first full read writes the index.
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir()
        peak = Peak(cache)
        mount(npz, mnt, *opts)
        try:
            t = time.perf_counter()
            with open(mnt / "x.npy", "rb") as f:
                while f.read(1 << 20):
                    pass
            first = time.perf_counter() - t
            wait_for(lambda: any(p.suffix == ".seek" for p in cache.glob("*/*")))
        finally:
            unmount(mnt)
        index = sum(p.stat().st_size for p in cache.glob("*/*.seek"))

        r = random.Random(7)
        offsets = [r.randrange(0, size - 4096) // 4096 * 4096 for _ in range(args.reads)]
        results = {}
        for label, fadv in (("readahead off", True), ("readahead on", False)):
            mount(npz, mnt, *opts)
            try:
                results[label] = timed_preads(mnt / "x.npy", offsets, fadv)
            finally:
                unmount(mnt)
        mount(npz, mnt, *opts)
        try:
            a = np.load(mnt / "x.npy", mmap_mode="r")
            idx = np.random.default_rng(3).integers(0, a.shape[0], 1000)
            t = time.perf_counter()
            total = int(sum(int(a[i]) for i in idx))
            npload = time.perf_counter() - t
            del a
        finally:
            unmount(mnt)
        peak_bytes = peak.done()

        print(f"member: {size / 2**20:.0f} MiB, first full read {size / first / 1e6:.0f} MB/s")
        print(f"seek index: {index / 1e6:.2f} MB = {100 * index / size:.2f}% of the member")
        print(f"4 KiB read, no index (waits for the decoder):   "
              f"{' '.join(f'{c:.0f}' for c in cold)} ms at 1/4, 1/2, 3/4")
        for label, times in results.items():
            print(f"4 KiB random read with index, {label:13s}:  median {statistics.median(times):6.2f} ms,"
                  f" p90 {pct(times, 0.9):6.2f} ms  ({len(times)} reads)")
        print(f"np.load(mmap) 1000 random elements with index: {npload:.2f} s (checksum {total})")
        print(f"cache files at their peak, first read included: {peak_bytes / 2**20:.0f} MiB "
              f"(cache_size {args.cache_mib} MiB)")
        print(f"against decode from the start: median random read is "
              f"{statistics.median(cold) / statistics.median(results['readahead off']):.0f}x faster")
    finally:
        cleanup(work)


if __name__ == "__main__":
    sys.exit(main())
