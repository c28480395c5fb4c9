"""A training epoch over shards under an S3 prefix (moto's S3 server on the loopback address,
behind nginx that adds 25 ms before each response and carries 50 MB/s per connection), read
through an npzfs mount of the prefix against the same workers fetching each whole object with
boto3, in the same run.

    .venv/bin/python bench/remote_epoch.py [--shards 1000] [--runs 3] [--workers 8]

The dataset is `train/shard_<i:05d>.npz`, np.savez of x (float32 [4096, 64]) and y (int64
[4096]), about 1 MiB each. An epoch is --workers processes, each given its share of one
fixed-seed random order of the shards, reading both arrays of each shard and summing every
element:
* npzfs: np.load(MNT/shard/x.npy, mmap_mode='r') and the same for y.npy, on a fresh mount
  with an empty cache; the mount and one os.listdir of it, as a loader would, are timed apart;
* boto3 (the baseline): get_object of the whole shard, np.load(io.BytesIO(body)), one
  client per process made before the clock starts; one list_objects_v2, timed apart.
Per run, baseline then npzfs, through the shaped front end and again straight to moto (no
shaping): each epoch's seconds and their median, the median (and range) of the runs' ratios
boto3 / npzfs (at least 1.0: npzfs as fast or faster), the requests each shard cost through
the front end (from its access log), and the daemon's resident memory after each epoch. The
sums of both readers must agree. Run as root: the page cache is dropped before each epoch.
"""

import argparse
import io
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import BIN, REPO, build, median, timed  # first: it sets the path up
from mounters import daemon_pid, daemon_rss
from remote_latency import drop_caches, unmount  # noqa: E402

from concurrent.futures import ThreadPoolExecutor  # noqa: E402  (after common: see there)

sys.path.insert(1, str(REPO / "tests" / "python"))
from servers import Moto, Nginx, have_lua  # noqa: E402

BUCKET, PREFIX = "bench", "train/"
MIB = 1 << 20


def client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                        aws_secret_access_key="testing", region_name="us-east-1")


def upload(endpoint: str, n: int) -> int:
    """Writes the n shards straight to the bucket; the size of one."""
    import numpy as np

    s3 = client(endpoint)
    s3.create_bucket(Bucket=BUCKET)
    rng = np.random.default_rng(0)
    bodies = []
    for _ in range(n):
        buf = io.BytesIO()
        np.savez(buf, x=rng.standard_normal((4096, 64), dtype=np.float32),
                 y=rng.integers(0, 1000, 4096, dtype=np.int64))
        bodies.append(buf.getvalue())
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}shard_{i:05d}.npz",
                                              Body=bodies[i]), range(n)))
    return len(bodies[0])


def checksum(x, y) -> int:
    """Touches every element of both arrays: the sum of x's bits as int32, plus y's sum."""
    import numpy as np

    return int(np.asarray(x).view(np.int32).sum(dtype=np.int64)) + int(np.asarray(y).sum())


def worker(barrier, sums, k: int, names: list, mnt: Path, endpoint: str):
    """One loader process: reads its shards through `mnt`, or with boto3 from `endpoint`."""
    import numpy as np

    s3 = client(endpoint) if endpoint else None
    barrier.wait()
    total = 0
    for name in names:
        if s3:
            body = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}{name}.npz")["Body"].read()
            with np.load(io.BytesIO(body)) as z:
                total += checksum(z["x"], z["y"])
        else:
            total += checksum(np.load(mnt / name / "x.npy", mmap_mode="r"),
                              np.load(mnt / name / "y.npy", mmap_mode="r"))
    sums[k] = total


def epoch(shares: list, mnt: Path = None, endpoint: str = "") -> tuple:
    """Seconds from the workers' start to the last one's end, and the sum of their sums."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(shares) + 1)
    sums = ctx.Array("q", len(shares))
    procs = [ctx.Process(target=worker, args=(barrier, sums, k, names, mnt, endpoint))
             for k, names in enumerate(shares)]
    for p in procs:
        p.start()
    barrier.wait(timeout=120)
    t = time.perf_counter()
    for p in procs:
        p.join()
    seconds = time.perf_counter() - t
    if any(p.exitcode for p in procs):
        raise SystemExit("a worker failed")
    return seconds, sum(sums)


def mount(mnt: Path, cache: Path, env: dict) -> float:
    mnt.mkdir(parents=True, exist_ok=True)
    return timed(lambda: subprocess.run([BIN, f"s3://{BUCKET}/{PREFIX}", mnt, "-o",
                                         f"cache_dir={cache}"], check=True, env=env))


def requests(front: Nginx, since: int) -> tuple:
    """The front end's requests after its first `since` log lines, by kind; the line count."""
    lines = front.log.read_text().splitlines() if front and front.log.exists() else []
    kinds = Counter()
    for line in lines[since:]:
        method = line.split()[0].lstrip('"')
        kinds["LIST" if "list-type=" in line else method] += 1
    return kinds, len(lines)


def compare(label: str, env: dict, front: Nginx, shares: list, work: Path, runs: int):
    """`runs` pairs of epochs (boto3, then npzfs) at `env`'s endpoint; prints the figures."""
    endpoint, n = env["AWS_ENDPOINT_URL"], sum(map(len, shares))
    r = {k: [] for k in ("boto3", "npzfs", "list", "mount", "ls", "rss")}
    asked = {"boto3": Counter(), "npzfs": Counter()}
    _, seen = requests(front, 0)
    for run in range(runs):
        drop_caches()
        s3 = client(endpoint)
        r["list"].append(timed(lambda: s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)))
        seconds, want = epoch(shares, endpoint=endpoint)
        r["boto3"].append(seconds)
        kinds, seen = requests(front, seen)
        asked["boto3"] += kinds

        drop_caches()
        mnt, cache = work / f"mnt-{run}", work / f"cache-{run}"
        r["mount"].append(mount(mnt, cache, env))
        pid = daemon_pid(mnt)
        t = time.perf_counter()
        names = os.listdir(mnt)
        r["ls"].append(time.perf_counter() - t)
        assert len(names) == n, f"{len(names)} entries in the mount, not {n}"
        seconds, got = epoch(shares, mnt)
        r["npzfs"].append(seconds)
        r["rss"].append(daemon_rss(pid)["VmRSS"] * 1024)
        unmount(mnt, pid)
        shutil.rmtree(cache, ignore_errors=True)
        kinds, seen = requests(front, seen)
        asked["npzfs"] += kinds
        if got != want:
            raise SystemExit(f"{label} run {run}: npzfs read sums {got}, boto3 {want}")
        print(f"  ({label}, run {run + 1}: boto3 {r['boto3'][-1]:.2f} s, npzfs {seconds:.2f} s)",
              flush=True)

    secs = lambda k: f"{median(r[k]):.2f} s (runs: {', '.join(f'{s:.2f}' for s in r[k])})"  # noqa: E731
    ms = lambda k: f"{median(r[k]) * 1000:.0f} ms"  # noqa: E731
    ratios = sorted(b / z for b, z in zip(r["boto3"], r["npzfs"]))
    print(f"{label}:")
    print(f"  listing: npzfs mount {ms('mount')} + os.listdir {ms('ls')}; "
          f"boto3 list_objects_v2 {ms('list')}")
    print(f"  epoch: npzfs {secs('npzfs')}; boto3 {secs('boto3')}")
    print(f"  boto3 / npzfs: {median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f}x)")
    if front:
        for who, kinds in asked.items():
            per = ", ".join(f"{k} {v / (n * runs):.3f}" for k, v in sorted(kinds.items()))
            print(f"  requests per shard, {who}: {per}")
    print(f"  npzfs daemon VmRSS after each epoch: "
          f"{', '.join(f'{b / MIB:.0f}' for b in r['rss'])} MiB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args()
    if not have_lua():
        raise SystemExit("needs nginx's Lua module: apt-get install libnginx-mod-http-lua")
    build()
    work = Path(tempfile.mkdtemp(prefix="npzfs-epoch-"))
    moto = Moto()
    front = None
    try:
        size = upload(moto.env["AWS_ENDPOINT_URL"], args.shards)
        direct = {**os.environ, **moto.env}
        front = Nginx(work / "front", latency=0.025, rate="50m", upstream=direct["AWS_ENDPOINT_URL"])
        order = [f"shard_{i:05d}" for i in range(args.shards)]
        random.Random(1).shuffle(order)
        shares = [order[k::args.workers] for k in range(args.workers)]
        print(f"{args.shards} shards of {size / MIB:.2f} MiB, {args.workers} workers, {args.runs} runs")
        shaped = {**direct, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{front.port}"}
        compare("link 25 ms, 50 MB/s per connection", shaped, front, shares, work, args.runs)
        compare("loopback, no shaping", direct, None, shares, work, args.runs)
    finally:
        for mnt in work.glob("mnt-*"):
            subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True)
        if front:
            front.stop()
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
