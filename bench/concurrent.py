"""Benchmark of concurrent readers on different members: does throughput scale with readers?

    .venv/bin/python bench/concurrent.py [--mib 256] [--runs 3] [--peers]

Four members of --mib MiB each, stored (float32, np.savez) in one archive and deflated (the
int16 data of bench/compressed.py, np.savez_compressed) in another. For 1, 2 and 4 readers,
each reading a different member with 1 MiB reads on a fresh mount (empty cache), the aggregate
MB/s (all bytes over the wall time), median of --runs, and its ratio to one reader. The machine
has 2 cores: 2 readers can at best double, 4 cannot do better than 2.
"""

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

from common import cleanup, int16_signal, median, read_all
from mounters import start, usable

READERS = (1, 2, 4)


def archives(work: Path, mib: int):
    n = mib * (1 << 20) // 4
    rng = np.random.default_rng(11)
    stored = {f"s{i}": rng.standard_normal(n, dtype=np.float32) for i in range(4)}
    np.savez(work / "stored.npz", **stored)
    del stored
    signal = int16_signal(mib)
    np.savez_compressed(work / "deflated.npz", **{f"s{i}": np.roll(signal, i * 4099) for i in range(4)})
    return {"stored": work / "stored.npz", "deflated": work / "deflated.npz"}


def aggregate(mnt: Path, k: int) -> float:
    """MB/s of k readers, each reading its own member, all started together."""
    totals = [0] * k
    start = threading.Barrier(k + 1)

    def one(i):
        start.wait()
        totals[i] = read_all(mnt / f"s{i}.npy")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(k)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return sum(totals) / (time.perf_counter() - t0) / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256, help="size of each member")
    args, mounters, work = start(ap)
    try:
        paths = archives(work, args.mib)
        for p in paths.values():
            read_all(p)  # the archives in the page cache
        print(f"4 members of {args.mib} MiB each; aggregate MB/s of k readers on different members, "
              "fresh mount and empty cache each run")
        print(f"{'kind':9} {'mounter':13} " + " ".join(f"{f'{k} reader(s)':>17}" for k in READERS))
        for kind, npz in paths.items():
            for m in usable(mounters, npz, work):
                figures = []
                for k in READERS:
                    runs = []
                    for r in range(args.runs):
                        mnt, cache = work / "mnt", work / f"cache{k}-{r}"
                        read_all(npz)  # this VM pages out page cache idle for a minute
                        m.mount(npz, mnt, cache)
                        try:
                            runs.append(aggregate(mnt, k))
                        finally:
                            m.unmount(mnt)
                    figures.append(median(runs))
                cells = [f"{f:8.0f} ({f / figures[0]:4.2f}x)" for f in figures]
                print(f"{kind:9} {m.name:13} " + " ".join(f"{c:>17}" for c in cells))
    finally:
        cleanup(work)


if __name__ == "__main__":
    sys.exit(main())
