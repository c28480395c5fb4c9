"""Benchmark of remote sources against local servers started here: nginx (HTTP ranges) and
moto's S3 server, in the same run as their baselines.

    .venv/bin/python bench/remote.py [--mib 512] [--runs 3] [--s3-mib 64]

Per figure, medians of --runs runs:
* first read: a fresh mount (empty cache) reads x.npy (a float32 member of --mib MiB, written
  by np.savez) sequentially in 1 MiB reads; against fetching the whole object with curl from
  the same nginx (throughput ratio);
* second read: the page cache dropped, the same read again, from the block cache; against
  reading the same bytes from a local .npy with its page cache dropped;
* random 4 KiB reads of uncached regions: GET requests each costs (nginx's access log);
* the daemon's resident memory after the first read, for the object and one a quarter its
  size (flat in object size);
* S3 (moto, --s3-mib): the first read against boto3's get_object of the whole object.
Run as root (it drops the page cache).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# bench/concurrent.py would shadow the standard library's `concurrent`, which boto3 imports:
# that one is imported first, with this directory out of the path.
_here = sys.path.pop(0)
import concurrent.futures  # noqa: E402,F401

sys.path.insert(0, _here)
sys.path.insert(0, str(REPO / "tests" / "python"))

from common import BIN, build, read_all  # noqa: E402
from mounters import daemon_pid, daemon_rss  # noqa: E402
from servers import Moto, Nginx  # noqa: E402


def drop_caches():
    subprocess.run(["sync"], check=False)
    Path("/proc/sys/vm/drop_caches").write_text("1\n")


def mount(url: str, mnt: Path, cache: Path, env=None) -> int:
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run([BIN, url, mnt, "-o", f"cache_dir={cache},cache_size=64G"], check=True, env=env)
    return daemon_pid(mnt)


def unmount(mnt: Path, pid: int):
    """Unmounts and waits for the daemon to exit (it syncs its block file on the way out)."""
    subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True)
    while os.path.ismount(mnt) or Path(f"/proc/{pid}").exists():
        time.sleep(0.01)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def write(path: Path, mib: int):
    import numpy as np

    data = np.random.default_rng(3).standard_normal(mib * (1 << 20) // 4, dtype=np.float32)
    np.savez(path, x=data)
    return data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--s3-mib", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    build()
    work = Path(tempfile.mkdtemp(prefix="npzfs-remote-"))
    nginx = Nginx(work / "nginx")
    try:
        data = write(nginx.root / "big.npz", args.mib)
        write(nginx.root / "quarter.npz", args.mib // 4)
        local = work / "x.npy"
        import numpy as np

        np.save(local, data)
        url = nginx.url("big.npz")
        size = (nginx.root / "big.npz").stat().st_size
        nbytes = local.stat().st_size
        curl, first, second, disk, rss = [], [], [], [], {}
        for run in range(args.runs):
            drop_caches()
            curl.append(size / timed(lambda: subprocess.run(
                ["curl", "-s", "-o", "/dev/null", url], check=True)))
            cache, mnt = work / f"cache{run}", work / "mnt"
            pid = mount(url, mnt, cache)
            drop_caches()
            first.append(nbytes / timed(lambda: read_all(mnt / "x.npy")))
            rss["big"] = daemon_rss(pid)["VmRSS"]
            drop_caches()
            second.append(nbytes / timed(lambda: read_all(mnt / "x.npy")))
            drop_caches()
            disk.append(nbytes / timed(lambda: read_all(local)))
            unmount(mnt, pid)
            shutil.rmtree(cache)
        # Random 4 KiB reads of uncached regions, one at a time.
        cache, mnt = work / "rcache", work / "mnt"
        pid = mount(url, mnt, cache)
        with open(mnt / "x.npy", "rb", buffering=0) as f:
            f.read(4096)
            counts = []
            for k in range(10):
                before = nginx.gets()
                f.seek((k * 37 + 11) % (args.mib - 2) * (1 << 20) + 8192)
                f.read(4096)
                counts.append(nginx.gets() - before)
        unmount(mnt, pid)
        pid = mount(nginx.url("quarter.npz"), mnt, work / "qcache")
        read_all(mnt / "x.npy")
        rss["quarter"] = daemon_rss(pid)["VmRSS"]
        unmount(mnt, pid)
        med = statistics.median
        mb = lambda v: f"{v / 1e6:.0f} MB/s"  # noqa: E731
        print(f"HTTP (nginx), {args.mib} MiB member: first read {mb(med(first))}, curl of the "
              f"object {mb(med(curl))} ({med(first) / med(curl):.2f}x); second read from the "
              f"block cache {mb(med(second))}, local .npy from disk {mb(med(disk))} "
              f"({med(second) / med(disk):.2f}x)")
        print(f"random 4 KiB reads of uncached regions: GET requests each {counts}")
        print(f"daemon RSS after reading the whole member: {rss['big'] / 1024:.0f} MiB "
              f"({args.mib} MiB object), {rss['quarter'] / 1024:.0f} MiB ({args.mib // 4} MiB)")
    finally:
        nginx.stop()
    moto = Moto()
    try:
        s3 = moto.client()
        s3.create_bucket(Bucket="bench")
        write(work / "s3.npz", args.s3_mib)
        s3.upload_file(str(work / "s3.npz"), "bench", "s3.npz")
        size = (work / "s3.npz").stat().st_size
        env = dict(os.environ, **moto.env)
        boto, first = [], []
        for run in range(args.runs):
            boto.append(size / timed(lambda: s3.get_object(Bucket="bench", Key="s3.npz")["Body"].read()))
            mnt = work / "smnt"
            pid = mount("s3://bench/s3.npz", mnt, work / f"scache{run}", env=env)
            n = (mnt / "x.npy").stat().st_size
            first.append(n / timed(lambda: read_all(mnt / "x.npy")))
            unmount(mnt, pid)
        med = statistics.median
        print(f"S3 (moto), {args.s3_mib} MiB member: first read {med(first) / 1e6:.0f} MB/s, "
              f"boto3 get_object {med(boto) / 1e6:.0f} MB/s ({med(first) / med(boto):.2f}x)")
    finally:
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
