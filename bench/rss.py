"""Benchmark of the daemon's memory while it serves one large stored member: it must not grow
with the member's size.

    .venv/bin/python bench/rss.py [--gib 1,8] [--peers]

For each size, an archive with one stored `.npy` member of that many GiB (written in 64 MiB
chunks, never held in memory), read once end to end with 1 MiB reads (or for --limit seconds, for a slow peer) through a fresh mount while
the daemon's /proc/PID/status is sampled every 20 ms. Reported: the peak resident set, and of
it the private (anonymous) memory and the pages mapped from files. npzfs replies from its
mapping of the archive, so those pages (the page cache's own, shared and reclaimable) show up
as RssFile while they are being handed to the kernel; the private part is what npzfs holds.
"""

import argparse
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

from common import cleanup
from mounters import daemon_rss, start, usable

CHUNK = 64 << 20


def archive(work: Path, gib: float) -> Path:
    path = work / "big.npz"
    n = int(gib * (1 << 30)) // 4
    header = np.lib.format.header_data_from_array_1_0(np.zeros(0, np.float32))
    header["shape"] = (n,)
    block = np.random.default_rng(3).standard_normal(CHUNK // 4, dtype=np.float32).tobytes()
    with zipfile.ZipFile(path, "w") as z, z.open("x.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, header)
        left = n * 4
        while left:
            f.write(block[: min(left, CHUNK)])
            left -= min(left, CHUNK)
    return path


def read_for(path: Path, seconds: float) -> int:
    """Reads `path` with 1 MiB reads to its end or for `seconds` (a slow peer); byte count."""
    buf = bytearray(1 << 20)
    total, deadline = 0, time.monotonic() + seconds
    with open(path, "rb", buffering=0) as f:
        while (n := f.readinto(buf)) and time.monotonic() < deadline:
            total += n
    return total


class Sampler:
    """The daemon's memory every 20 ms, keeping the sample with the largest VmRSS."""

    def __init__(self, pid: int):
        self.pid, self.peak, self.stop = pid, daemon_rss(pid), threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.wait(0.02):
            now = daemon_rss(self.pid)
            if now["VmRSS"] > self.peak["VmRSS"]:
                self.peak = now

    def done(self) -> dict:
        self.stop.set()
        self.thread.join()
        return self.peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", default="1,8", help="member sizes in GiB")
    ap.add_argument("--limit", type=float, default=120, help="seconds a read may take")
    args, all_mounters, work = start(ap, runs=False)
    try:
        print(f"{'member':>8} {'mounter':13} {'MB/s':>6} {'peak RSS':>9} {'private':>8} {'file':>8}  (MiB)")
        for gib in (float(g) for g in args.gib.split(",")):
            npz = archive(work, gib)
            for m in usable(all_mounters, npz, work):
                mnt = work / "mnt"
                m.mount(npz, mnt, work / "cache")
                try:
                    sampler = Sampler(m.pid(mnt))
                    t = time.perf_counter()
                    size = read_for(mnt / "x.npy", args.limit)
                    rate = size / (time.perf_counter() - t) / 1e6
                    peak = sampler.done()
                finally:
                    m.unmount(mnt)
                part = "" if size >= gib * (1 << 30) else f"  (stopped after {args.limit:.0f} s)"
                print(f"{gib:6g}GiB {m.name:13} {rate:6.0f} {peak['VmRSS'] / 1024:9.0f} "
                      f"{peak.get('RssAnon', 0) / 1024:8.0f} {peak.get('RssFile', 0) / 1024:8.0f}{part}")
            npz.unlink()
    finally:
        cleanup(work)


if __name__ == "__main__":
    sys.exit(main())
