"""Load: many readers, threads and processes, read() and mmap, over stored, deflated and sparse
members with a cache far smaller than the working set. Every byte verified; a watchdog fails
the test instead of hanging; the daemon's descriptors and memory stay flat."""

import mmap
import multiprocessing as mp
import os
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

from conftest import allocated, mounted, wait_until

SECONDS = float(os.environ.get("NPZFS_LOAD_SECONDS", "20"))  # longer runs: set it
CACHE_MIB = 8


def content(seed: int, n: int) -> np.ndarray:
    """Compressible, different per member, computable anywhere: a noisy ramp."""
    i = np.arange(n, dtype=np.uint32)
    return (((i >> 12) + seed * 7) % 251 + (i * seed) % 3).astype(np.uint8)


MEMBERS = {
    # name: (bytes, stored?)
    "s0.bin": (6 << 20, True),
    "s1.bin": (3 << 20, True),
    "d0.bin": (20 << 20, False),  # larger than the cache: windowed first pass, then sparse
    "d4.bin": (14 << 20, False),  # another, so that two sparse members compete for spans
    "d1.bin": (5 << 20, False),
    "d2.bin": (2 << 20, False),
    "d3.bin": (300_000, False),
}


def build(path: Path):
    with zipfile.ZipFile(path, "w") as z:
        for seed, (name, (n, stored)) in enumerate(MEMBERS.items(), start=1):
            method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            z.writestr(zipfile.ZipInfo(name), content(seed, n).tobytes(), compress_type=method)


def expected(name: str) -> np.ndarray:
    seed = list(MEMBERS).index(name) + 1
    return content(seed, MEMBERS[name][0])


def reader(mnt: str, worker: int, seconds: float, use_mmap: bool) -> int:
    """Random reads for `seconds`; returns how many were checked, raises on a wrong byte."""
    rng = np.random.default_rng(worker)
    names = list(MEMBERS)
    truth = {n: expected(n) for n in names}
    deadline = time.monotonic() + seconds
    checked = 0
    while time.monotonic() < deadline:
        name = names[rng.integers(len(names))]
        size = MEMBERS[name][0]
        off = int(rng.integers(0, size))
        length = int(min(size - off, rng.integers(1, 300_000)))
        with open(os.path.join(mnt, name), "rb") as f:
            if use_mmap:
                with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
                    got = m[off:off + length]
            else:
                got = os.pread(f.fileno(), length, off)
        if got != truth[name][off:off + length].tobytes():
            raise AssertionError(f"wrong bytes: {name} at {off} (+{length}), worker {worker}")
        checked += 1
    return checked


def process_reader(args):
    return reader(*args)


def daemon_pid(mnt: Path) -> int:
    out = subprocess.run(["pgrep", "-f", f" {mnt} "], capture_output=True, text=True).stdout.split()
    assert len(out) == 1, out
    return int(out[0])


def fds_and_rss(pid: int):
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return fds, rss


def test_sixteen_readers_threads_and_processes_read_and_mmap(tmp_path):
    npz = tmp_path / "load.zip"
    build(npz)
    cache = tmp_path / "cache"
    with mounted(npz, tmp_path / "mnt", "-o", f"cache_dir={cache},cache_size={CACHE_MIB}M") as mnt:
        pid = daemon_pid(mnt)
        # Warm-up round, so that first decodes and seek indexes are behind us.
        reader(str(mnt), 99, 3, False)
        before = fds_and_rss(pid)

        errors, counts = [], []
        peak = [0]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.05):
                peak[0] = max(peak[0], allocated(cache))

        def thread_reader(worker, use_mmap):
            try:
                counts.append(reader(str(mnt), worker, SECONDS, use_mmap))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        threads = [threading.Thread(target=thread_reader, args=(w, w % 2 == 0), daemon=True) for w in range(8)]
        for t in threads:
            t.start()
        ctx = mp.get_context("spawn")
        with ctx.Pool(8) as pool:
            result = pool.map_async(process_reader, [(str(mnt), 100 + w, SECONDS, w % 2 == 1) for w in range(8)])
            # The watchdog: a deadlock fails here instead of hanging the suite.
            counts.extend(result.get(timeout=SECONDS * 1.5 + 120))
        for t in threads:
            t.join(timeout=SECONDS * 1.5 + 120)
            assert not t.is_alive(), "a reader thread hung"
        stop.set()
        sampler.join()

        assert not errors, errors
        assert len(counts) == 16 and all(c > 0 for c in counts), counts
        after = fds_and_rss(pid)
        # Flat: no descriptor leak, memory within a few MiB of the warmed-up daemon.
        assert after[0] <= before[0] + 4, (before, after)
        assert after[1] <= before[1] + 32 * 1024, (before, after)
        # The bound, plus spans being filled at that moment (several, with 16 readers).
        assert peak[0] <= (CACHE_MIB + 16) << 20, peak[0]
        assert wait_until(lambda: allocated(cache) <= (CACHE_MIB + 4) << 20), allocated(cache)
        print(f"{sum(counts)} checked reads, daemon fds {before[0]}->{after[0]}, "
              f"RSS {before[1]}->{after[1]} KiB, cache peak {peak[0] >> 20} MiB")
