"""Remote archives where users live: an HTTP server tens of milliseconds away that carries
50 MB/s per connection, on the loopback address (nginx with its Lua module in front of the
files, tests/python/shaper.lua: a sleep before each response's first byte, each response
paced at --rate), in the same run as its baselines.

    .venv/bin/python bench/remote_latency.py [--mib 256] [--latency-ms 25] [--rate 50m] [--runs 3]

Per run, with the median of the runs and of the ratios of each run to the baseline measured
just before it:
* first sequential read of x.npy (a float32 member of --mib MiB, np.savez) through a fresh
  npzfs mount (empty cache), in 1 MiB reads; against 16 curls side by side, each fetching a
  sixteenth of the same object by one range (what the link gives many connections), and
  against one plain curl of the whole object from the same files with no shaping (the
  loopback figure that must not fall);
* 4 members of --mib/4 MiB read at once by 4 threads: the slowest and fastest reader's MB/s
  (requests shared fairly: the slowest near the fastest);
* uncached random 4 KiB reads: the median latency and GET requests each, against the link's
  first-byte latency plus one block's transfer;
* the daemon's resident memory after the first read.
Run as root (drops the page cache). Needs Debian's libnginx-mod-http-lua.
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from common import BIN, build, read_all  # noqa: E402  (first: it sets the path up)

sys.path.insert(1, str(REPO / "tests" / "python"))
from mounters import daemon_pid, daemon_rss  # noqa: E402
from servers import Nginx, have_lua  # noqa: E402

MIB = 1 << 20


def drop_caches():
    subprocess.run(["sync"], check=False)
    Path("/proc/sys/vm/drop_caches").write_text("1\n")


def mount(url: str, mnt: Path, cache: Path) -> int:
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run([BIN, url, mnt, "-o", f"cache_dir={cache},cache_size=8G"], check=True)
    return daemon_pid(mnt)


def unmount(mnt: Path, pid: int):
    subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True)
    while os.path.ismount(mnt) or Path(f"/proc/{pid}").exists():
        time.sleep(0.01)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def curls(url: str, size: int, n: int) -> float:
    """Seconds for `n` curls side by side, each fetching one nth of `url` by one range."""
    part = -(-size // n)
    procs = []
    t = time.perf_counter()
    for i in range(n):
        first, last = i * part, min(size, (i + 1) * part) - 1
        cmd = ["curl", "-sf", "-o", "/dev/null", "-r", f"{first}-{last}", url]
        procs.append(subprocess.Popen(cmd))
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("a curl failed")
    return time.perf_counter() - t


def write(path: Path, mib: int, seed: int):
    import numpy as np

    np.savez(path, x=np.random.default_rng(seed).standard_normal(mib * MIB // 4, dtype=np.float32))


def paired(runs, baselines) -> str:
    ratios = sorted(r / b for r, b in zip(runs, baselines))
    return f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f}x)"


def mb(rate: float) -> str:
    return f"{rate / 1e6:.0f} MB/s"


def together(paths) -> list:
    """Reads `paths` at once, one thread each: each one's MB/s."""
    rates = [0.0] * len(paths)

    def one(i):
        rates[i] = paths[i].stat().st_size / timed(lambda: read_all(paths[i]))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return rates


def random_reads(path: Path, nginx: Nginx, count: int) -> tuple:
    """`count` 4 KiB reads at random MiB-aligned places of a fresh mount: their latencies and
    the GETs each cost."""
    size = path.stat().st_size
    rng = random.Random(7)
    blocks = rng.sample(range(2, size // MIB - 2), count)
    latencies, gets = [], []
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for k in blocks:
            before = nginx.gets()
            latencies.append(timed(lambda: os.pread(fd, 4096, k * MIB + 64 * 1024)))
            gets.append(nginx.gets() - before)
    finally:
        os.close(fd)
    return latencies, gets


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--latency-ms", type=float, default=25)
    ap.add_argument("--rate", default="50m")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not have_lua():
        raise SystemExit("needs nginx's Lua module: apt-get install libnginx-mod-http-lua")
    build()
    work = Path(tempfile.mkdtemp(prefix="npzfs-latency-"))
    root = work / "root"
    root.mkdir()
    write(root / "big.npz", args.mib, 3)
    for i in range(4):
        write(root / f"part{i}.npz", args.mib // 4, 10 + i)
    size = (root / "big.npz").stat().st_size
    shaped = Nginx(work / "shaped", latency=args.latency_ms / 1000, rate=args.rate, root=root)
    plain = Nginx(work / "plain", root=root)
    first, parallel, single, loopback, plain_curl = [], [], [], [], []
    fair, rss, lat, gets = [], [], [], []
    try:
        for run in range(args.runs):
            parallel.append(size / curls(shaped.url("big.npz"), size, 16))
            single.append(size / curls(shaped.url("big.npz"), size, 1))
            mnt, cache = work / f"mnt{run}", work / f"cache{run}"
            pid = mount(shaped.url("big.npz"), mnt, cache)
            first.append((mnt / "x.npy").stat().st_size / timed(lambda: read_all(mnt / "x.npy")))
            rss.append(daemon_rss(pid)["VmRSS"] * 1024)
            unmount(mnt, pid)

            plain_curl.append(size / curls(plain.url("big.npz"), size, 1))
            mnt, cache = work / f"lmnt{run}", work / f"lcache{run}"
            pid = mount(plain.url("big.npz"), mnt, cache)
            loopback.append((mnt / "x.npy").stat().st_size / timed(lambda: read_all(mnt / "x.npy")))
            unmount(mnt, pid)

            mnts = []
            for i in range(4):
                m, c = work / f"pmnt{run}-{i}", work / f"pcache{run}-{i}"
                mnts.append((m, mount(shaped.url(f"part{i}.npz"), m, c)))
            rates = together([m / "x.npy" for m, _ in mnts])
            fair.append((min(rates), max(rates), sum(rates)))
            for m, p in mnts:
                unmount(m, p)

            mnt, cache = work / f"rmnt{run}", work / f"rcache{run}"
            pid = mount(shaped.url("big.npz"), mnt, cache)
            drop_caches()
            ls, gs = random_reads(mnt / "x.npy", shaped, 10)
            lat.extend(ls)
            gets.extend(gs)
            unmount(mnt, pid)
    finally:
        shaped.stop()
        plain.stop()
    med = statistics.median
    link = f"{args.latency_ms:.0f} ms, {args.rate}B/s per connection"
    print(f"link: {link}; {args.mib} MiB member, {args.runs} runs")
    print(f"first sequential read: {mb(med(first))} (runs: {', '.join(mb(r) for r in first)})")
    print(f"  16 curls side by side: {mb(med(parallel))}; ratio {paired(first, parallel)}")
    print(f"  one curl: {mb(med(single))}; ratio {paired(first, single)}")
    print(f"no shaping: first read {mb(med(loopback))}, one curl {mb(med(plain_curl))}; "
          f"ratio {paired(loopback, plain_curl)}")
    slow, fast, total = (med(f[i] for f in fair) for i in range(3))
    print(f"4 members at once: slowest {mb(slow)}, fastest {mb(fast)}, together {mb(total)}")
    block = MIB / (float(args.rate.rstrip("mM")) * 1e6)
    print(f"random 4 KiB reads: median {med(lat) * 1000:.1f} ms, p90 "
          f"{sorted(lat)[int(len(lat) * 0.9)] * 1000:.1f} ms, GETs each {sorted(set(gets))}; "
          f"link first byte + one block {args.latency_ms + block * 1000:.1f} ms")
    print(f"daemon RSS after the first read: {', '.join(f'{r / MIB:.0f}' for r in rss)} MiB")


if __name__ == "__main__":
    main()
