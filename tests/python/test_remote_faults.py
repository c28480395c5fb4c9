"""Remote sources through a link that fails the way object stores do, at their latency: nginx
in front of the files (HTTP) and in front of moto's S3 server adds 25 ms before each
response, limits each connection to 50 MB/s, and fails 5 % of requests each way (503 with S3's
SlowDown body, a body cut after 64 KiB, a response stalled for seconds). Eight
readers check every byte they read, for a bounded soak, while a small cache makes the daemon
fetch again and again: nothing wrong is served, every read ends within the documented bound,
the faults really happened (the front end's log), and the daemon's memory and descriptors do
not grow."""

import json
import os
import random
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import is_mounted, npzfs_bin, wait_until
from servers import Nginx, have_lua, have_nginx

pytestmark = pytest.mark.skipif(
    not (have_nginx() and have_lua()) and os.environ.get("NPZFS_REQUIRE_FUSE") != "1",
    reason="nginx or its Lua module is not installed (scripts/test installs them)",
)

TIMEOUT = 2  # remote_timeout=, seconds
STALL = 1.5  # seconds: a stall as long as the timeout is retried (test_remote.py); two in a
# row (one request in 400) would end a read with ETIMEDOUT, as documented
READERS = 8
SOAK = 12.0  # seconds of reading per source


def archives(root: Path) -> dict:
    """A stored and a compressed archive in `root` (fixed seed), and each member's bytes as
    the archive holds them, by path under the mount."""
    rng = np.random.default_rng(24)
    stored = {f"s{i}": rng.standard_normal(1_500_000).astype(np.float32) for i in range(4)}
    packed = {f"c{i}": rng.integers(0, 50, 2_000_000, dtype=np.int32) for i in range(2)}
    np.savez(root / "stored.npz", **stored)
    np.savez_compressed(root / "packed.npz", **packed)
    want = {}
    for name in ("stored", "packed"):
        with zipfile.ZipFile(root / f"{name}.npz") as z:
            for member in z.namelist():
                want[f"{name}/{member}"] = z.read(member)
    return want


def footprint(pid: int) -> tuple:
    """The daemon's resident set (bytes) and open descriptors."""
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def soak(mnt: Path, want: dict, secs: float) -> list:
    """READERS threads read random ranges of random members for `secs`, each range checked
    against `want`, dropping the pages they read so that the next pass asks the daemon again;
    returns every reader's failures, its longest read (seconds) and how many it made."""
    names = sorted(want)
    out = []

    def reader(seed: int):
        rng = random.Random(seed)
        deadline = time.monotonic() + secs
        bad, longest, reads = [], 0.0, 0
        while time.monotonic() < deadline:
            reads += 1
            name = rng.choice(names)
            data = want[name]
            length = rng.choice([4096, 65536, 1 << 20, 4 << 20])
            at = rng.randrange(0, max(1, len(data) - length))
            t = time.monotonic()
            try:
                fd = os.open(mnt / name, os.O_RDONLY)
            except OSError as e:
                bad.append(f"open {name}: {e}")
                continue
            try:
                got = os.pread(fd, length, at)
                longest = max(longest, time.monotonic() - t)
                if got != data[at : at + length]:
                    bad.append(f"{name} @{at}+{length}: wrong bytes")
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError as e:
                bad.append(f"{name} @{at}+{length}: {e}")
            finally:
                os.close(fd)
        out.append((bad, longest, reads))

    threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(READERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(secs + 10 * TIMEOUT + 60)
    assert not any(t.is_alive() for t in threads), "a reader hung"
    return out


def check_counted(mnt: Path, front: Nginx) -> dict:
    """The daemon's own count of its requests (the root's user.npzfs.stats) against the front
    end's log, once nothing is in flight: every attempt counted once, 503s as throttled."""
    def figures() -> dict:
        return json.loads(os.getxattr(mnt, "user.npzfs.stats"))["remote"]

    def by_status(f: dict) -> dict:
        total: dict = {}
        for statuses in f["requests"].values():
            for status, n in statuses.items():
                total[status] = total.get(status, 0) + n
        return total

    def agree() -> bool:
        f = figures()
        lines = front.log.read_text().splitlines()
        return f["in_flight"] == 0 and sum(by_status(f).values()) == len(lines)

    assert wait_until(agree, 30), (figures(), len(front.log.read_text().splitlines()))
    f, seen = figures(), faults_seen(front)
    counted = by_status(f)
    assert counted.get("throttled", 0) == seen["503"], (counted, seen)
    # A response shorter than the cut's 64 KiB arrives whole: cut by the front end, not for us.
    assert 0 < counted.get("cut", 0) <= seen["cut"], (counted, seen)
    failed = sum(counted.get(k, 0) for k in ("throttled", "server_error", "cut", "timeout"))
    assert f["retries"] == failed, (f["retries"], counted)
    return {"requests": counted, "retries": f["retries"],
            "GET first byte p50": f["first_byte_seconds"]["get"]["p50"]}


def faults_seen(front: Nginx) -> dict:
    """What the front end's log shows of the faults: 503s, bodies cut short, stalls."""
    lines = front.log.read_text().splitlines()
    return {
        "503": sum(1 for line in lines if '" 503 ' in line),
        "cut": sum(1 for line in lines if line.endswith(" cut")),
        "stall": sum(1 for line in lines if line.endswith(" stall")),
        "GET": sum(1 for line in lines if '"GET ' in line),
    }


@pytest.fixture
def front(tmp_path):
    """The failing front end: over nginx's own files, or over moto (set by the test)."""
    started = []

    def make(**kw):
        server = Nginx(tmp_path / f"front{len(started)}", latency=0.025, rate="50m",
                       faults=0.05, stall=STALL, **kw)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def check_soak(sources: list, mnt: Path, cache: Path, want: dict, front: Nginx, env=None):
    mnt.mkdir()
    log = mnt.parent / "npzfs.log"
    options = f"cache_dir={cache},cache_size=24M,remote_timeout={TIMEOUT}"
    with open(log, "w") as stderr:
        daemon = subprocess.Popen([npzfs_bin(), *sources, mnt, "-f", "-o", options],
                                  stderr=stderr, env=env)
    try:
        assert wait_until(lambda: is_mounted(mnt), 60), log.read_text()
        first = soak(mnt, want, SOAK / 3)
        before = footprint(daemon.pid)
        rest = soak(mnt, want, SOAK)
        after = footprint(daemon.pid)
        counted = check_counted(mnt, front)
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        assert daemon.wait(30) == 0, log.read_text()[-2000:]
    failures = [f for bad, _, _ in first + rest for f in bad]
    assert not failures, f"{len(failures)} bad reads, e.g. {failures[:3]}\n{log.read_text()}"
    # A read waits for at most its own request's retries: within about twice remote_timeout
    # (README), plus the transfer of a 4 MiB read at 50 MB/s.
    longest = max(longest for _, longest, _ in first + rest)
    assert longest < 2 * TIMEOUT + 2, f"a read took {longest:.1f} s"
    seen = faults_seen(front)
    reads = sum(n for _, _, n in first + rest)
    print(f"{reads} reads checked, longest {longest:.2f} s; front end: {seen}; daemon RSS "
          f"{before[0] >> 20} -> {after[0] >> 20} MiB, descriptors {before[1]} -> {after[1]}; "
          f"the daemon counted {counted}")
    assert seen["503"] > 0 and seen["cut"] > 0 and seen["stall"] > 0, seen
    assert after[0] - before[0] < 24 << 20, f"RSS grew from {before[0]} to {after[0]} bytes"
    assert after[1] - before[1] <= READERS, f"descriptors grew from {before[1]} to {after[1]}"


def test_http_readers_check_every_byte_through_faults_at_latency(front, tmp_path):
    server = front()
    want = archives(server.root)
    sources = [server.url("stored.npz"), server.url("packed.npz")]
    check_soak(sources, tmp_path / "mnt", tmp_path / "cache", want, server)


def test_s3_readers_check_every_byte_through_faults_at_latency(moto, front, tmp_path):
    s3 = moto.client()
    s3.create_bucket(Bucket="data")
    local = tmp_path / "local"
    local.mkdir()
    want = archives(local)
    for name in ("stored.npz", "packed.npz"):
        s3.upload_file(str(local / name), "data", f"set/{name}")
    server = front(upstream=moto.env["AWS_ENDPOINT_URL"])
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.port}"}
    check_soak(["s3://data/set/"], tmp_path / "mnt", tmp_path / "cache", want, server, env)
