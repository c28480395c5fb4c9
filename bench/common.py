"""Helpers shared by the benchmark programs."""

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

# bench/concurrent.py would shadow the standard library's `concurrent` (which boto3 and
# ThreadPoolExecutor need) for every program run from this directory: the standard one is
# imported here, first, with this directory out of the path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    _here = sys.path.pop(0)
    import concurrent.futures  # noqa: E402,F401

    sys.path.insert(0, _here)

REPO = Path(__file__).resolve().parents[1]
# NPZFS_BENCH_BIN runs another build (say, the previous commit's) against the same baselines.
BIN = Path(os.environ.get("NPZFS_BENCH_BIN", REPO / "target" / "release" / "npzfs"))


def build():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--examples", "--bins"], cwd=REPO, check=True)


def int16_signal(mib: int):
    """The compressed benchmarks' member: noisy int16 samples of a slow signal (deflate leaves
    about 76% of it), made 64 Mi elements at a time so that 4 GiB needs no float64 copy."""
    import numpy as np

    n = mib * (1 << 20) // 2
    rng = np.random.default_rng(5)
    data = np.empty(n, np.int16)
    step = 1 << 26
    for i in range(0, n, step):
        k = min(step, n - i)
        data[i:i + k] = np.sin(np.arange(i, i + k) / 5000.0) * 8000 + rng.normal(0, 20, k)
    return data


def int16_npz(work: Path, mib: int) -> Path:
    """work/data.npz holding x = int16_signal(mib), written by np.savez_compressed."""
    import numpy as np

    npz = work / "data.npz"
    np.savez_compressed(npz, x=int16_signal(mib))
    return npz


def float32_member(work: Path, mib: int):
    """The stored benchmarks' member: work/data.npz holding x (float32 noise, `mib` MiB,
    written by np.savez) and work/x.npy, the same bytes as a local file. Returns
    (npz, local, element count)."""
    import numpy as np

    n = mib * (1 << 20) // 4
    data = np.random.default_rng(1).standard_normal(n, dtype=np.float32)
    npz, local = work / "data.npz", work / "x.npy"
    np.savez(npz, x=data)
    np.save(local, data)
    return npz, local, n


def random_elements(path: Path, idx):
    """Reads element i of the .npy at `path` through np.load(mmap_mode='r') for each i."""
    import numpy as np

    a = np.load(path, mmap_mode="r")
    for i in idx:
        a[i]


def read_all(path: Path) -> int:
    """Sequential read with 1 MiB reads; returns the byte count."""
    buf = bytearray(1 << 20)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return total


def mount(archive: Path, mnt: Path, *options: str):
    mnt.mkdir(exist_ok=True)
    subprocess.run([BIN, archive, mnt, *options], check=True)


def unmount(mnt: Path):
    subprocess.run(["fusermount3", "-u", mnt], check=True)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


median = statistics.median


def cleanup(work: Path):
    """Unmounts work/mnt if a run left it mounted, then deletes the work directory."""
    for mnt in ("mnt", "cmnt"):
        subprocess.run(["fusermount3", "-u", "-z", work / mnt], capture_output=True)
    shutil.rmtree(work, ignore_errors=True)
