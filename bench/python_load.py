"""Benchmark of the Python package: npzfs.load() plus the first element of a deflated member.

    .venv/bin/python bench/python_load.py [--mib 256] [--runs 3]

The member is the compressed benchmarks' int16 signal (deflate leaves about 76% of it).
Prints medians of --runs runs, each with an empty cache: `npzfs.load(npz)["x"][0]` (mount,
the member's .npy header, its first chunk: the decode goes on in the background) against
`np.load(npz)["x"][0]` (numpy inflates the whole member into memory first), measured in the
same run. Uses the package from python/ with the npzfs binary of this checkout's release
build (or NPZFS_BENCH_BIN).
"""

import argparse
import os
import shutil
import sys

import numpy as np

from common import BIN, REPO, int16_npz, median, timed
from mounters import start

sys.path.insert(0, str(REPO / "python"))
os.environ["NPZFS_BIN"] = str(BIN)
import npzfs  # noqa: E402  (after the path above)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256, help="member size in MiB")
    args, _, work = start(ap)
    try:
        npz = int16_npz(work, args.mib)
        ours, numpy_s = [], []
        for run in range(args.runs):
            cache = work / f"cache{run}"

            def first_element():
                with npzfs.load(npz, cache_dir=cache) as z:
                    z["x"][0]

            ours.append(timed(first_element))
            numpy_s.append(timed(lambda: np.load(npz)["x"][0]))
            shutil.rmtree(cache, ignore_errors=True)
        print(f"{args.mib} MiB deflated int16 member (bench/common.py's signal), first element, median of {args.runs}:")
        print(f"  npzfs.load(npz)['x'][0]   {median(ours) * 1000:8.1f} ms")
        print(f"  np.load(npz)['x'][0]      {median(numpy_s) * 1000:8.1f} ms")
        print(f"  ratio                     {median(numpy_s) / median(ours):8.1f}x faster")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
