"""Benchmark of remote sources against local servers started here: nginx (HTTP ranges) and
moto's S3 server, in the same run as their baselines.

    .venv/bin/python bench/remote.py [--mib 512] [--runs 5] [--s3-mib 64] [--members N] [--peers]

Per figure, medians of --runs runs, and the median of the ratios of each run to its baseline
measured just before it (the pairs share the machine's state, which on a small, noisy machine
moves more than the medians do):
* first read: a fresh mount (empty cache) reads x.npy (a float32 member of --mib MiB, written
  by np.savez) sequentially in 1 MiB reads; against fetching the whole object with curl from
  the same nginx into /dev/null, and into a file beside the cache (throughput ratios: the
  first read copies each byte three times, from the socket, into the block file, and from
  it to the reader; curl into /dev/null once, into a file twice);
* second read: the page cache dropped, the same read again, from the block cache; against
  reading the same bytes from a local .npy with its page cache dropped;
* random 4 KiB reads of uncached regions: GET requests each costs (nginx's access log);
* the daemon's resident memory after the first read, for the object and one a quarter its
  size (flat in object size);
* mounting an archive of --members members (bench/metadata.py's archive): from the HTTP
  server against the same file on local disk (npzfs returns once the mount answers), with the
  GET requests the remote mount made;
* S3 (moto, --s3-mib): the first read against boto3's get_object of the whole object, and
  against boto3 fetching it in 8 MiB ranges one after another (what a range reader must do;
  moto's time per ranged GET grows with the object's size, which no real store's does).
* with --peers, ratarmount over fsspec (aiohttp for HTTP, s3fs for S3) mounting the same
  objects: its mount time and first read of the member. It runs from its own venv,
  .venv-peers (bench/run --install-peers makes it: s3fs pins a botocore that moto's boto3
  does not take).
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

from common import BIN, build, read_all  # noqa: E402  (first: it sets the path up)
from metadata import archive  # noqa: E402

sys.path.insert(1, str(REPO / "tests" / "python"))
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


PEER = REPO / ".venv-peers" / "bin" / "ratarmount"


def ratarmount(url: str, mnt: Path, env=None):
    """ratarmount over fsspec mounting `url` (in the foreground: it refuses to daemonize with
    fsspec's threads running): (seconds until the mount answered, MB/s of its first read of
    x.npy), or None when it fails."""
    mnt.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    proc = subprocess.Popen([PEER, "-f", url, mnt], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = t + 300
    while not os.path.ismount(mnt):
        if proc.poll() is not None or time.perf_counter() > deadline:
            proc.kill()
            return None
        time.sleep(0.01)
    mounted = time.perf_counter() - t
    drop_caches()
    n = (mnt / "x.npy").stat().st_size
    rate = n / timed(lambda: read_all(mnt / "x.npy"))
    subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
    proc.wait()
    return mounted, rate


def peer_line(what: str, runs, npzfs_mounts, npzfs_reads):
    """What ratarmount did, beside npzfs's figures of the same object."""
    runs = [r for r in runs if r]
    if not runs:
        print(f"ratarmount over fsspec, {what}: did not mount")
        return
    med = statistics.median
    print(f"ratarmount over fsspec, {what}: mount {med(r[0] for r in runs) * 1000:.0f} ms "
          f"(npzfs {med(npzfs_mounts) * 1000:.0f} ms), first read {med(r[1] for r in runs) / 1e6:.0f} MB/s "
          f"(npzfs {med(npzfs_reads) / 1e6:.0f} MB/s)")


def paired(runs, baselines) -> str:
    """The median of each run's ratio to its own baseline, and their range."""
    ratios = sorted(r / b for r, b in zip(runs, baselines))
    return f"{statistics.median(ratios):.2f}x, {ratios[0]:.2f}-{ratios[-1]:.2f}x"


def write(path: Path, mib: int):
    import numpy as np

    data = np.random.default_rng(3).standard_normal(mib * (1 << 20) // 4, dtype=np.float32)
    np.savez(path, x=data)
    return data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--s3-mib", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--peers", action="store_true")
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
        curl, curl_file, first, second, disk, rss, mounts = [], [], [], [], [], {}, []
        for run in range(args.runs):
            drop_caches()
            curl.append(size / timed(lambda: subprocess.run(
                ["curl", "-s", "-o", "/dev/null", url], check=True)))
            drop_caches()
            kept = work / "curl.npz"
            curl_file.append(size / timed(lambda: subprocess.run(
                ["curl", "-s", "-o", kept, url], check=True)))
            kept.unlink()
            cache, mnt = work / f"cache{run}", work / "mnt"
            t = time.perf_counter()
            pid = mount(url, mnt, cache)
            mounts.append(time.perf_counter() - t)
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
              f"object {mb(med(curl))} (paired ratio {paired(first, curl)}), curl to a file "
              f"{mb(med(curl_file))} ({paired(first, curl_file)}); second read from "
              f"the block cache {mb(med(second))}, local .npy from disk {mb(med(disk))} "
              f"(paired ratio {paired(second, disk)})")
        print(f"random 4 KiB reads of uncached regions: GET requests each {counts}")
        if args.peers and PEER.exists():
            peer = [ratarmount(url, work / "pmnt") for _ in range(args.runs)]
            peer_line(f"HTTP, {args.mib} MiB member", peer, mounts, first)
        elif args.peers:
            print("(ratarmount over fsspec is not installed: skipped; bench/run --install-peers)")
        print(f"daemon RSS after reading the whole member: {rss['big'] / 1024:.0f} MiB "
              f"({args.mib} MiB object), {rss['quarter'] / 1024:.0f} MiB ({args.mib // 4} MiB)")
        many = archive(nginx.root, args.members)
        local_mount, remote_mount, gets = [], [], []
        for run in range(args.runs):
            for source, times in [(many, local_mount), (nginx.url(many.name), remote_mount)]:
                before = nginx.gets()
                t = time.perf_counter()
                pid = mount(str(source), mnt, work / f"mcache{run}")
                times.append(time.perf_counter() - t)
                if times is remote_mount:
                    gets.append(nginx.gets() - before)
                unmount(mnt, pid)
        print(f"mount of a {args.members}-member archive ({many.stat().st_size >> 20} MiB): "
              f"local {med(local_mount) * 1000:.0f} ms, HTTP {med(remote_mount) * 1000:.0f} ms "
              f"(paired ratio {paired(remote_mount, local_mount)}), GET requests {gets}")
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
        boto, ranged, first, mounts = [], [], [], []

        def by_range():
            step = 8 << 20
            for at in range(0, size, step):
                r = f"bytes={at}-{min(at + step, size) - 1}"
                s3.get_object(Bucket="bench", Key="s3.npz", Range=r)["Body"].read()

        for run in range(args.runs):
            boto.append(size / timed(lambda: s3.get_object(Bucket="bench", Key="s3.npz")["Body"].read()))
            ranged.append(size / timed(by_range))
            mnt = work / "smnt"
            t = time.perf_counter()
            pid = mount("s3://bench/s3.npz", mnt, work / f"scache{run}", env=env)
            mounts.append(time.perf_counter() - t)
            n = (mnt / "x.npy").stat().st_size
            first.append(n / timed(lambda: read_all(mnt / "x.npy")))
            unmount(mnt, pid)
        med = statistics.median
        print(f"S3 (moto), {args.s3_mib} MiB member: first read {med(first) / 1e6:.0f} MB/s, "
              f"boto3 get_object {med(boto) / 1e6:.0f} MB/s (paired ratio {paired(first, boto)}), "
              f"boto3 get_object in 8 MiB ranges one after another {med(ranged) / 1e6:.0f} MB/s "
              f"(paired ratio {paired(first, ranged)}; moto's cost per ranged GET grows with "
              f"the object's size)")
        if args.peers and PEER.exists():
            peer = [ratarmount("s3://bench/s3.npz", work / "pmnt", env) for _ in range(args.runs)]
            peer_line(f"S3 (moto), {args.s3_mib} MiB member", peer, mounts, first)
    finally:
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
