"""What counting costs: the same reads through a build without the counters, this build, and
this build scraped by Prometheus's client as fast as it answers.

    .venv/bin/python bench/metrics.py --before BIN [--mib 1024] [--cmib 256] [--runs 6]

BIN is npzfs built from a commit before the counters (a git worktree of it, `cargo build
--release`). The daemons take turns within each run, in a rotating order. Cases:
* stored read: 1 MiB reads of a stored member on a fresh mount (the FUSE path, every read
  counted: bytes by path, a request, its latency);
* random 10k: 10,000 single elements of it through np.load(mmap_mode='r') on a fresh mount
  (one FUSE read per page fault: the most requests per byte);
* deflated read: a deflated member on a fresh mount with its cache file complete (decoded in
  an earlier mount), `nopassthrough`: every read a cache hit through the daemon.
"scraped" runs `-o metrics=127.0.0.1:PORT` with a thread fetching /metrics every 100 ms during
the read (each scrape a snapshot and the cache lock once). Ratios are to the build without
counters (>= 1.0: as fast); medians of --runs.
"""

import argparse
import shutil
import socket
import subprocess
import tempfile
import threading
import urllib.request
from pathlib import Path

import numpy as np

from common import BIN, float32_member, int16_npz, median, random_elements, read_all, timed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Scraper:
    """Fetches http://ADDR/metrics every 100 ms (150 times Prometheus's default rate) until
    stopped; counts the scrapes."""

    def __init__(self, addr: str):
        self.url, self.count, self.stop_flag = f"http://{addr}/metrics", 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop_flag.is_set():
            with urllib.request.urlopen(self.url, timeout=10) as r:
                r.read()
            self.count += 1
            self.stop_flag.wait(0.1)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join(30)


def mounted(binary: Path, archive: Path, mnt: Path, options: list):
    mnt.mkdir(exist_ok=True)
    subprocess.run([binary, archive, mnt, *options], check=True)


def one(binary, archive, mnt, options, scrape, work):
    """A fresh mount, `work(path)` timed, then unmounted; with `scrape`, scraped meanwhile."""
    if scrape:
        addr = f"127.0.0.1:{free_port()}"
        options = [*options, "-o", f"metrics={addr}"]
    mounted(binary, archive, mnt, options)
    try:
        if not scrape:
            return timed(work), 0
        with Scraper(addr) as s:
            took = timed(work)
        return took, s.count
    finally:
        subprocess.run(["fusermount3", "-u", mnt], check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, required=True, help="npzfs without the counters")
    ap.add_argument("--mib", type=int, default=1024, help="stored member, MiB")
    ap.add_argument("--cmib", type=int, default=256, help="deflated member, MiB")
    ap.add_argument("--runs", type=int, default=6)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="npzfs-bench-metrics-"))
    try:
        stored, _, n = float32_member(work, args.mib)
        (work / "deflated").mkdir()
        deflated = int16_npz(work / "deflated", args.cmib)  # its own data.npz
        mnt, cache = work / "mnt", work / "cache"
        common = ["-o", f"cache_dir={cache},cache_size=8G,nopassthrough"]
        # Decode the deflated member once: every later mount finds its cache file complete.
        for binary in (args.before, BIN):
            mounted(binary, deflated, mnt, common)
            read_all(mnt / "x.npy")
            subprocess.run(["fusermount3", "-u", mnt], check=True)
        idx = np.random.default_rng(2).integers(0, n, 10_000)
        daemons = [("before", args.before, False), ("counting", BIN, False), ("scraped", BIN, True)]
        cases = {
            "stored read": (stored, lambda: read_all(mnt / "x.npy")),
            "random 10k": (stored, lambda: random_elements(mnt / "x.npy", idx)),
            "deflated read": (deflated, lambda: read_all(mnt / "x.npy")),
        }
        times = {(c, d): [] for c in cases for d, _, _ in daemons}
        scrapes = []
        for run in range(args.runs):
            order = daemons[run % 3:] + daemons[:run % 3]
            for case, (archive, work_fn) in cases.items():
                read_all(archive)  # in the page cache right before (this VM pages out idle cache)
                for name, binary, scrape in order:
                    took, count = one(binary, archive, mnt, common, scrape, work_fn)
                    times[(case, name)].append(took)
                    if scrape:
                        scrapes.append(count / took)
        member = {"stored read": args.mib << 20, "deflated read": (args.cmib << 20)}
        print(f"npzfs {BIN} against {args.before} (no counters); medians of {args.runs} runs, "
              f"daemons in rotating order; scraped {median(scrapes):.1f} times a second")
        print(f"{'':14} {'before':>14} {'counting':>20} {'scraped':>20}")
        for case in cases:
            cells = []
            base = median(times[(case, "before")])
            for name, _, _ in daemons:
                t = median(times[(case, name)])
                value = f"{member[case] / t / 1e6:7.0f} MB/s" if case in member else f"{t * 1e3:7.1f} ms"
                cells.append(value if name == "before" else f"{value} {base / t:5.2f}x")
            print(f"{case:14} {cells[0]:>14} {cells[1]:>20} {cells[2]:>20}")
        print("each run's ratios to before (paired within the run):")
        for case in cases:
            before = times[(case, "before")]
            pairs = [", ".join(f"{b / t:.2f}" for b, t in zip(before, times[(case, name)]))
                     for name in ("counting", "scraped")]
            print(f"  {case:14} counting {pairs[0]}; scraped {pairs[1]}")
    finally:
        subprocess.run(["fusermount3", "-u", "-z", work / "mnt"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
