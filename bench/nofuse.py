"""npzfs.load() where FUSE cannot be had: a compressed member decoded into the cache by the
binary and mapped from there, against numpy decoding it in the process.

    .venv/bin/python bench/nofuse.py [--mib 256] [--runs 3]        # as root (unshare)

Each case runs in a fresh Python inside a mount namespace whose /dev has no fuse device:
* np.load: `np.load(npz)["x"]` (zipfile's inflate into memory), then its first element;
* load, cold: `npzfs.load(npz)["x"][0]` with an empty cache directory;
* load, warm: the same again (the member complete in the cache).
Each prints its seconds and the Python process's peak RSS (VmHWM: the binary that decodes is
another process). Medians of --runs; the ratio is np.load's seconds / load's.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import BIN, REPO, int16_npz, median

NO_FUSE = ["unshare", "-m", "sh", "-c",
           'mount -t tmpfs none /dev && mknod -m 666 /dev/null c 1 3 && exec "$0" "$@"']

CASE = """
import json, sys, time, warnings
sys.path.insert(0, sys.argv[3])
import numpy as np, npzfs
warnings.simplefilter("ignore")
t = time.perf_counter()
if sys.argv[1] == "np.load":
    x = np.load(sys.argv[2])["x"]
else:
    x = npzfs.load(sys.argv[2], cache_dir=sys.argv[4])["x"]
x[0]
took = time.perf_counter() - t
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({"seconds": took, "rss": int(hwm.split()[1]) * 1024}))
"""


def case(kind: str, npz: Path, cache: Path) -> dict:
    run = subprocess.run([*NO_FUSE, sys.executable, "-c", CASE, kind, npz, REPO / "python", cache],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "NPZFS_BIN": str(BIN)})
    return json.loads(run.stdout.splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="npzfs-bench-nofuse-"))
    try:
        small = work / "small"
        small.mkdir()
        sizes = {args.mib: int16_npz(work, args.mib), args.mib // 4: int16_npz(small, args.mib // 4)}
        print(f"deflated int16 member; no /dev/fuse; medians of {args.runs} runs")
        print(f"{'member':>8} {'np.load':>16} {'load, cold':>24} {'load, warm':>12} "
              f"{'peak RSS: np.load / load':>26}")
        for mib, npz in sizes.items():
            rows = {"np.load": [], "cold": [], "warm": []}
            rss = {"np.load": [], "load": []}
            for _ in range(args.runs):
                cache = work / "cache"
                shutil.rmtree(cache, ignore_errors=True)
                base = case("np.load", npz, cache)
                cold = case("load", npz, cache)
                warm = case("load", npz, cache)
                rows["np.load"].append(base["seconds"])
                rows["cold"].append(cold["seconds"])
                rows["warm"].append(warm["seconds"])
                rss["np.load"].append(base["rss"])
                rss["load"].append(max(cold["rss"], warm["rss"]))
            b, c, w = (median(rows[k]) for k in ("np.load", "cold", "warm"))
            print(f"{mib:>5} MiB {b:>14.3f} s {c:>10.3f} s ({c / b:4.2f}x the time) "
                  f"{w * 1e3:>8.1f} ms {median(rss['np.load']) / 2**20:>12.0f} / "
                  f"{median(rss['load']) / 2**20:.0f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
