"""mountpoint-s3's fio read shapes (its scripts/fio/read/: bs=256k, ioengine=sync, sequential by
1 and by 4 threads, random) against a remote archive through npzfs, on a link like an object
store's: nginx on the loopback address behind tests/python/servers.py's shaping front end, 25 ms
before each response's first byte and each response paced at 50m (50 MiB/s) per connection
(tests/python/shaper.lua), in the same run as the link's own figures. nginx is the server these figures
are taken from: it seeks to a range, so a range costs the same whatever the object's size.

    .venv/bin/python bench/remote_fio.py [--mib 1024] [--secs 20] [--runs 3]

One archive (np.savez, fixed seed) holding x, float32 noise of --mib MiB, mounted by its
http:// URL. Each job gets a fresh mount with an empty cache directory; the page cache is
dropped just before it and the served archive read back in (the mount starts cold, the server
stays warm: a store's disks are not the link's figure). fio runs with psync, direct=0,
readonly, group_reporting; per job, the median of --runs runs:
* seq 256k, 1 job: x.npy read once from start to end;
* seq 256k, 4 jobs: 4 jobs over disjoint quarters of x.npy (size and offset_increment of a
  quarter), each read once. mountpoint-s3's seq_read_4t gives its 4 jobs one file, one object:
  four handles reading it in a row. From the same offset here the last three would read the
  first one's blocks and page cache; disjoint quarters keep one object and one file with four
  independent sequential readers;
* rand 256k, 1 job and rand 4k, 1 job: random reads, with the latency percentiles p50/p90/p99,
  for at most --secs seconds (fio's runtime). mountpoint-s3 runs every job time_based over a
  100 GiB object, whose random reads never meet and whose sequential jobs never reach its end.
  A --mib member would be read again from the cache (fio wraps; its random map puts 4 reads of
  256k and 256 of 4k in each 1 MiB block), so the sequential jobs read it once and the random
  ones replay a list (fio's read_iolog, with fadvise_hint=random as randread has): one read in
  each MiB of x.npy in random order (fixed seed), at a random bs-aligned place in it (a read
  of 256k there crosses into the archive's next block as often as one anywhere would). The
  GETs/read column (the nginx log's GETs over fio's reads) is below 1 by the reads answered
  from blocks fetched before, above 1 by the reads that cost two requests.

Baselines, each run: for the sequential jobs, 16 curls side by side each fetching a sixteenth of
the archive by one range (aggregate MB/s: what the link gives many connections) and one curl of
the whole archive; for the random jobs, one GET of a 1 MiB range (curl's own time_total,
median of 8 at random places), since npzfs fetches 1 MiB blocks for a random read: a reader
waiting for one such GET per read gets bs / that time (25 ms + 1 MiB at 50 MiB/s = 45 ms).
Ratios are each run's figure over its own baseline, the median and range over the runs.
Run as root (drops the page cache). Needs fio and Debian's libnginx-mod-http-lua.
"""

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from common import build, read_all  # noqa: E402  (first: it sets the path up)
from remote_latency import curls, mb, mount, paired, unmount, write  # noqa: E402

sys.path.insert(1, str(REPO / "tests" / "python"))
from servers import Nginx, have_lua  # noqa: E402

MIB = 1 << 20
# name: fio's rw, bs and numjobs
JOBS = {
    "seq 256k, 1 job": ("read", 256 << 10, 1),
    "seq 256k, 4 jobs": ("read", 256 << 10, 4),
    "rand 256k, 1 job": ("randread", 256 << 10, 1),
    "rand 4k, 1 job": ("randread", 4 << 10, 1),
}
PERCENTILES = ("50.000000", "90.000000", "99.000000")


def cold(served: Path):
    """Drops the page cache, then reads the served archive back into it."""
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    read_all(served)


def fio(path: Path, log: Path, rw: str, bs: int, numjobs: int, secs: int) -> dict:
    """fio's figures (its JSON "read" object, the jobs grouped) for one job shape on `path`;
    a random job's list of reads is written to `log`."""
    size = path.stat().st_size
    cmd = ["fio", "--name=npzfs", "--output-format=json", f"--filename={path}", "--thread",
           "--ioengine=psync", "--direct=0", "--readonly", "--group_reporting",
           f"--rw={rw}", f"--bs={bs}", f"--numjobs={numjobs}"]
    if rw == "randread":
        rng = random.Random(bs)
        reads = [f"{path} read {k * MIB + rng.randrange(MIB // bs) * bs} {bs}"
                 for k in rng.sample(range(size // MIB), size // MIB)]
        log.write_text("\n".join(["fio version 2 iolog", f"{path} add", f"{path} open", *reads,
                                  f"{path} close", ""]))
        cmd += [f"--read_iolog={log}", "--fadvise_hint=random", f"--runtime={secs}"]
    else:
        part = size // numjobs // bs * bs
        cmd += [f"--size={part}", f"--offset_increment={part}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out[out.index("{"):])["jobs"][0]["read"]


def mib_get(url: str, size: int, rng: random.Random, n: int = 8) -> float:
    """Median seconds of `n` GETs of a 1 MiB range at random places, one after another."""
    times = []
    for _ in range(n):
        first = rng.randrange(0, size - MIB)
        cmd = ["curl", "-sf", "-o", "/dev/null", "-w", "%{time_total}",
               "-r", f"{first}-{first + MIB - 1}", url]
        times.append(float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    return statistics.median(times)


def run_job(shaped: Nginx, work: Path, tag: str, shape: tuple, secs: int) -> tuple:
    """One job on a fresh mount: (MB/s, GETs per read, [p50, p90, p99] in ms)."""
    mnt, cache = work / f"mnt-{tag}", work / f"cache-{tag}"
    pid = mount(shaped.url("big.npz"), mnt, cache)
    try:
        cold(shaped.root / "big.npz")
        before = shaped.gets()
        read = fio(mnt / "x.npy", work / f"reads-{tag}.iolog", *shape, secs)
        gets = (shaped.gets() - before) / read["total_ios"]
    finally:
        unmount(mnt, pid)
    return read["bw_bytes"], gets, [read["clat_ns"]["percentile"][p] / 1e6 for p in PERCENTILES]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--secs", type=int, default=20, help="runtime of each random job")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not have_lua():
        raise SystemExit("needs nginx's Lua module: apt-get install libnginx-mod-http-lua")
    if not shutil.which("fio"):
        raise SystemExit("needs fio: apt-get install fio")
    build()
    work = Path(tempfile.mkdtemp(prefix="npzfs-fio-"))
    root = work / "root"
    root.mkdir()
    write(root / "big.npz", args.mib, 3)
    size = (root / "big.npz").stat().st_size
    shaped = Nginx(work / "shaped", latency=0.025, rate="50m", root=root)
    url = shaped.url("big.npz")
    parallel, single, get = [], [], []
    results = {name: [] for name in JOBS}
    try:
        for run in range(args.runs):
            cold(root / "big.npz")
            parallel.append(size / curls(url, size, 16))
            single.append(size / curls(url, size, 1))
            get.append(mib_get(url, size, random.Random(run)))
            for i, (name, shape) in enumerate(JOBS.items()):
                results[name].append(run_job(shaped, work, f"{run}-{i}", shape, args.secs))
    finally:
        shaped.stop()
        shutil.rmtree(work, ignore_errors=True)
    med = statistics.median
    print(f"link: 25 ms before the first byte, 50 MiB/s per connection; {args.mib} MiB member, "
          f"{args.runs} runs, random jobs {args.secs} s")
    print(f"baselines: 16 curls side by side {mb(med(parallel))}, one curl {mb(med(single))}, "
          f"one 1 MiB GET {med(get) * 1000:.1f} ms")
    print(f"{'job':18} {'MB/s':>7}  {'vs link (16 curls / 1 MiB GETs)':32} {'vs one curl':20} "
          f"{'GETs/read':>9}  p50 / p90 / p99 ms")
    for name, (rw, bs, _) in JOBS.items():
        rates = [r[0] for r in results[name]]
        gets = med(r[1] for r in results[name])
        if rw == "read":
            line = f"{paired(rates, parallel):32} {paired(rates, single):20} {gets:9.3f}"
        else:
            line = f"{paired(rates, [bs / g for g in get]):32} {'':20} {gets:9.3f}  " + " / ".join(
                f"{med(r[2][i] for r in results[name]):.1f}" for i in range(3))
        print(f"{name:18} {med(rates) / 1e6:7.2f}  {line}")


if __name__ == "__main__":
    main()
