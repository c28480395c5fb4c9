"""Benchmark of a dataset of shards under a prefix of a bucket (moto's S3 server on the
loopback address), mounted as a directory source, against the same shards in a local
directory mounted the same way, in the same run.

    .venv/bin/python bench/remote_shards.py [--counts 1000] [--runs 3]

The dataset is bench/shards.py's (`train/shard_<i>.npz`, np.savez, 17 KiB each). Per count,
medians of --runs runs of:
* mount: from the command to a mount that answers (one listing request for the prefix);
* ls: listing `train/` (one request per 1,000 keys);
* ls again within the listing's lifetime;
* every shard's x.npy read once, one after another: per shard (an archive's first open
  reads its end and central directory: for a shard this small, one block, so one ranged GET
  by design; moto keeps no count to check it).
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

from common import BIN, REPO, build  # first: it sets the path up
from mounters import daemon_pid
from shards import dataset

sys.path.insert(1, str(REPO / "tests" / "python"))


def mount(source: str, mnt: Path, cache: Path, env=None) -> float:
    mnt.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    subprocess.run([BIN, source, mnt, "-o", f"cache_dir={cache}"], check=True, env=env)
    return time.perf_counter() - t


def unmount(mnt: Path):
    pid = daemon_pid(mnt)
    subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True)
    while os.path.ismount(mnt) or Path(f"/proc/{pid}").exists():
        time.sleep(0.01)


def figures(source: str, mnt: Path, cache: Path, env=None) -> dict:
    out = {"mount": mount(source, mnt, cache, env)}
    t = time.perf_counter()
    names = os.listdir(mnt / "train")
    out["ls"] = time.perf_counter() - t
    t = time.perf_counter()
    os.listdir(mnt / "train")
    out["ls again"] = time.perf_counter() - t
    t = time.perf_counter()
    for name in names:
        (mnt / "train" / name / "x.npy").read_bytes()
    out["per shard"] = (time.perf_counter() - t) / len(names)
    unmount(mnt)
    shutil.rmtree(cache, ignore_errors=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="1000")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    build()
    from servers import Moto

    work = Path(tempfile.mkdtemp(prefix="npzfs-rshards-"))
    moto = Moto()
    try:
        s3 = moto.client()
        s3.create_bucket(Bucket="bench")
        env = dict(os.environ, **moto.env)
        for n in map(int, args.counts.split(",")):
            root = dataset(work, n)
            files = sorted((root / "train").iterdir())
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda p: s3.upload_file(str(p), "bench", f"ds{n}/train/{p.name}"), files))
            local, remote = [], []
            for run in range(args.runs):
                local.append(figures(str(root), work / "mnt", work / "cache", None))
                remote.append(figures(f"s3://bench/ds{n}/", work / "mnt", work / "cache", env))
            med = statistics.median
            ms = lambda runs, k: f"{med(r[k] for r in runs) * 1000:.1f} ms"  # noqa: E731
            for k in ("mount", "ls", "ls again", "per shard"):
                print(f"{n} shards, {k}: S3 prefix {ms(remote, k)}, local directory {ms(local, k)}")
    finally:
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
