"""Benchmark of stored members: npzfs against the same bytes in a local file.

    .venv/bin/python bench/stored.py [--mib 1024] [--runs 3] [--peers]

Medians of --runs runs. The archive and the extracted file are in the page cache (each read
again right before its cold read: this VM pages out page cache idle for a minute), so this
measures the FUSE path itself:
* cold read: 1 MiB sequential reads on a fresh mount (the mount's page cache is empty);
* warm read: the same again (served from the mount's page cache, kept across opens);
* mmap scan: one byte of every 4 KiB page through a shared read-only mapping, fresh mount;
* random: 10,000 single-element reads through np.load(mmap_mode='r'), warm;
and the cold and warm reads of the FUSE ceiling (bench/ceiling.rs), a minimal filesystem serving the same
byte range with the same settings. With --peers, the same cases through the peer mounters.
"""

import argparse
import mmap
import os
import sys
from pathlib import Path

import numpy as np

from common import REPO, cleanup, float32_member, median, random_elements, read_all, timed
from mounters import start, usable


def scan(path: Path):
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        np.frombuffer(m, dtype=np.uint8)[::4096].sum()


def data_range(npz: Path, name: str):
    """(offset, size) of a stored member's bytes in the archive, from its local header."""
    import struct
    import zipfile

    info = zipfile.ZipFile(npz).getinfo(name)
    with open(npz, "rb") as f:
        f.seek(info.header_offset)
        n, m = struct.unpack("<HH", f.read(30)[26:30])
    return info.header_offset + 30 + n + m, info.file_size


def ceiling_reads(npz: Path, mnt: Path):
    """MB/s of a cold and then a warm read through bench/ceiling.rs, the minimal FUSE
    filesystem."""
    import subprocess

    offset, size = data_range(npz, "x.npy")
    mnt.mkdir(exist_ok=True)
    exe = REPO / "target" / "release" / "examples" / "ceiling"
    proc = subprocess.Popen([exe, npz, str(offset), str(size), mnt], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        read_all(npz)  # in the page cache right before the cold read (see main)
        cold = size / timed(lambda: read_all(mnt / "x")) / 1e6
        return cold, size / timed(lambda: read_all(mnt / "x")) / 1e6
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    args, mounters, work = start(ap)
    try:
        npz, local, n = float32_member(work, args.mib)
        size = local.stat().st_size
        mounters = usable(mounters, npz, work)
        idx = np.random.default_rng(2).integers(0, n, 10_000)
        read_all(npz), read_all(local)  # both in the page cache
        mnt, cache = work / "mnt", work / "cache"
        cases = ("cold read", "warm read", "mmap scan", "random 10k")
        rows = {m.name: {k: [] for k in cases} for m in mounters}
        base = {k: [] for k in cases}
        ceiling, ceiling_warm = [], []
        for _ in range(args.runs):
            cold, warm = ceiling_reads(npz, work / "cmnt")
            ceiling.append(cold)
            ceiling_warm.append(warm)
            for m in mounters:
                row = rows[m.name]
                m.mount(npz, mnt, cache)
                try:
                    x = mnt / "x.npy"
                    # This VM pages out page cache left idle for a minute (DAMON's pageout
                    # scheme), so "cold" would sometimes mean "from disk": read it again first.
                    read_all(npz)
                    row["cold read"].append(size / timed(lambda: read_all(x)) / 1e6)
                    row["warm read"].append(size / timed(lambda: read_all(x)) / 1e6)
                finally:
                    m.unmount(mnt)
                m.mount(npz, mnt, cache)
                try:
                    x = mnt / "x.npy"
                    row["mmap scan"].append(size / timed(lambda: scan(x)) / 1e6)
                    row["random 10k"].append(timed(lambda: random_elements(x, idx)) * 1e3)
                finally:
                    m.unmount(mnt)
            read_all(local)
            base["cold read"].append(size / timed(lambda: read_all(local)) / 1e6)
            base["warm read"].append(base["cold read"][-1])
            base["mmap scan"].append(size / timed(lambda: scan(local)) / 1e6)
            base["random 10k"].append(timed(lambda: random_elements(local, idx)) * 1e3)
        print(f"member: {size / 2**20:.0f} MiB float32, stored; baseline: the same bytes in a local file")
        names = [m.name for m in mounters]
        print(f"{'':12} {'local':>10} " + " ".join(f"{n:>19}" for n in names))
        for k in cases:
            unit = "ms" if k.startswith("random") else "MB/s"
            b = median(base[k])
            cells = []
            for n in names:
                a = median(rows[n][k])
                ratio = b / a if unit == "ms" else a / b
                cells.append(f"{a:8.0f}{unit:>4} {ratio:5.2f}x")
            print(f"{k:12} {b:6.0f}{unit:>4} " + " ".join(f"{c:>19}" for c in cells))
        cold = median(rows["npzfs"]["cold read"])
        print(f"npzfs cold read against the FUSE ceiling (bench/ceiling.rs): {cold:.0f} / "
              f"{median(ceiling):.0f} MB/s = {cold / median(ceiling):.2f}x")
        warm = median(rows["npzfs"]["warm read"])
        print(f"npzfs warm read against the FUSE ceiling: {warm:.0f} / "
              f"{median(ceiling_warm):.0f} MB/s = {warm / median(ceiling_warm):.2f}x")
        print(f"(read_ahead_kb=1024 on the mount: {'yes' if os.geteuid() == 0 else 'no, not root'})")
    finally:
        cleanup(work)


if __name__ == "__main__":
    sys.exit(main())
