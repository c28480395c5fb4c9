"""Benchmark of stored members: npzfs against the same bytes in a local file.

    .venv/bin/python bench/stored.py [--mib 1024] [--runs 3]

Medians of --runs runs. The archive and the extracted file are in the page cache, so this
measures the FUSE path itself:
* cold read: 1 MiB sequential reads on a fresh mount (the mount's page cache is empty);
* warm read: the same again (served from the mount's page cache, kept across opens);
* mmap scan: one byte of every 4 KiB page through a shared read-only mapping, fresh mount;
* random: 10,000 single-element reads through np.load(mmap_mode='r'), warm;
and the cold read of the FUSE ceiling (bench/ceiling.rs), a minimal filesystem serving the same
byte range with the same settings.
"""

import argparse
import mmap
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import REPO, build, cleanup, median, mount, read_all, timed, unmount


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


def ceiling_cold_read(npz: Path, mnt: Path) -> float:
    """MB/s of a cold read through bench/ceiling.rs, the minimal FUSE filesystem."""
    import subprocess

    offset, size = data_range(npz, "x.npy")
    mnt.mkdir(exist_ok=True)
    exe = REPO / "target" / "release" / "examples" / "ceiling"
    proc = subprocess.Popen([exe, npz, str(offset), str(size), mnt], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        return size / timed(lambda: read_all(mnt / "x")) / 1e6
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def random_reads(path: Path, idx):
    a = np.load(path, mmap_mode="r")
    for i in idx:
        a[i]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    build()
    work = Path(tempfile.mkdtemp(prefix="npzfs-bench-"))
    try:
        n = args.mib * (1 << 20) // 4
        data = np.random.default_rng(1).standard_normal(n, dtype=np.float32)
        npz, local = work / "data.npz", work / "x.npy"
        np.savez(npz, x=data)
        np.save(local, data)
        del data
        size = local.stat().st_size
        idx = np.random.default_rng(2).integers(0, n, 10_000)
        read_all(npz), read_all(local)  # both in the page cache
        mnt = work / "mnt"
        rows = {"cold read": [], "warm read": [], "mmap scan": [], "random 10k": []}
        base = {k: [] for k in rows}
        ceiling = []
        for _ in range(args.runs):
            ceiling.append(ceiling_cold_read(npz, work / "cmnt"))
            mount(npz, mnt)
            try:
                x = mnt / "x.npy"
                rows["cold read"].append(size / timed(lambda: read_all(x)) / 1e6)
                rows["warm read"].append(size / timed(lambda: read_all(x)) / 1e6)
            finally:
                unmount(mnt)
            mount(npz, mnt)
            try:
                x = mnt / "x.npy"
                rows["mmap scan"].append(size / timed(lambda: scan(x)) / 1e6)
                rows["random 10k"].append(timed(lambda: random_reads(x, idx)) * 1e3)
            finally:
                unmount(mnt)
            base["cold read"].append(size / timed(lambda: read_all(local)) / 1e6)
            base["warm read"].append(base["cold read"][-1])
            base["mmap scan"].append(size / timed(lambda: scan(local)) / 1e6)
            base["random 10k"].append(timed(lambda: random_reads(local, idx)) * 1e3)
        print(f"member: {size / 2**20:.0f} MiB float32, stored; baseline: the same bytes in a local file")
        print(f"{'':12} {'npzfs':>10} {'local':>10} {'ratio':>7}")
        for k in rows:
            unit = "ms" if k.startswith("random") else "MB/s"
            a, b = median(rows[k]), median(base[k])
            ratio = b / a if unit == "ms" else a / b
            print(f"{k:12} {a:8.0f}{unit:>2} {b:8.0f}{unit:>2} {ratio:6.2f}x")
        cold = median(rows["cold read"])
        print(f"cold read against the FUSE ceiling (bench/ceiling.rs): {cold:.0f} / "
              f"{median(ceiling):.0f} MB/s = {cold / median(ceiling):.2f}x")
        print(f"(read_ahead_kb=1024 on the mount: {'yes' if os.geteuid() == 0 else 'no, not root'})")
    finally:
        cleanup(work)


if __name__ == "__main__":
    sys.exit(main())
