"""A real Prometheus server (Debian's `prometheus`, which scripts/test installs) scraping a
mount's `-o metrics=` once a second: every series the exporter writes reaches Prometheus as
written, and the scraped series move by exactly what was read through the mount (bytes and
opens by path, FUSE reads, cache misses on the first read of a compressed member and hits on
the second, an ENOENT lookup), and end equal to the mount's own `user.npzfs.stats`.

Each step waits for a scrape that Prometheus began after the step ended (polled with a
deadline, no fixed sleeps): the daemon counts a request once it is answered, so a scrape may
lag the reader by a moment, never by a step."""

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import pytest
from conftest import mounted, wait_until
from servers import free_port, wait_for_port

PROMETHEUS = "/usr/bin/prometheus"

pytestmark = pytest.mark.skipif(
    not os.path.exists(PROMETHEUS)
    and not os.environ.get("CI")
    and os.environ.get("NPZFS_REQUIRE_FUSE") != "1",
    reason=f"{PROMETHEUS} is missing (apt-get install prometheus; scripts/test installs it)",
)

DEADLINE = 30.0  # seconds for Prometheus to start, and for each step's scrape to come

# A series: its name and its labels (job and instance aside), sorted.
Key = Tuple[str, Tuple[Tuple[str, str], ...]]
Series = Dict[Key, float]


def key(name: str, **labels: str) -> Key:
    return name, tuple(sorted(labels.items()))


class Prometheus:
    """Prometheus on a free loopback port, scraping `target` (ADDR:PORT) as job "npzfs" every
    second, its storage and log in `work`; stopped (and waited for) on leaving."""

    def __init__(self, work: Path, target: str):
        work.mkdir(parents=True)
        self.work = work
        self.log = work / "prometheus.log"
        config = work / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "scrape_configs:\n"
            "  - job_name: npzfs\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        with open(self.log, "wb") as log:
            self.proc: Optional[subprocess.Popen] = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={work / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def __enter__(self) -> "Prometheus":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def tail(self) -> str:
        """The end of its log, for a failure's message."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, (
            f"prometheus exited ({self.proc and self.proc.returncode}):\n{self.tail()}"
        )

    def get(self, path: str, **params: str) -> Tuple[int, bytes]:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError:
            return 0, b""

    def api(self, path: str, **params: str) -> dict:
        status, body = self.get(path, **params)
        assert status == 200, f"{path} {params}: {status} {body[:500]!r}"
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        return answer["data"]

    def wait_ready(self) -> None:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            self.alive()
            if self.get("/-/ready")[0] == 200:
                return
            time.sleep(0.05)
        pytest.fail(f"prometheus not ready in {DEADLINE} s:\n{self.tail()}")

    def wait_up(self) -> None:
        """Until a scrape of the target succeeded: up{job="npzfs"} == 1."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            self.alive()
            result = self.api("/api/v1/query", query='up{job="npzfs"}')["result"]
            if result and result[0]["value"][1] == "1":
                return
            time.sleep(0.05)
        targets = self.api("/api/v1/targets")["activeTargets"]
        pytest.fail(f"target never up in {DEADLINE} s: {targets}\n{self.tail()}")

    def scrape_after(self, t: float) -> Tuple[float, Series]:
        """The latest scrape, if Prometheus began it after wall-clock time `t` (its timestamp,
        the scrape's start, ms precision; 50 ms spare): (timestamp, every series of the job
        at that scrape), else (timestamp, {})."""
        data = self.api("/api/v1/query", query='{job="npzfs"}[10s]')
        newest: Dict[Key, Tuple[float, float]] = {}
        for s in data["result"]:
            labels = dict(s["metric"])
            name = labels.pop("__name__")
            labels.pop("job", None)
            labels.pop("instance", None)
            ts, value = s["values"][-1]
            newest[key(name, **labels)] = (float(ts), float(value))
        up = newest.get(key("up"))
        if up is None or up[0] < t + 0.05 or up[1] != 1:
            return (up[0] if up else 0.0), {}
        # One scrape is committed as a whole; a series whose newest sample is older than up's
        # would be half a scrape: taken again.
        if any(ts != up[0] for ts, _ in newest.values()):
            return up[0], {}
        return up[0], {k: v for k, (_, v) in newest.items()}

    def settled(self, t: float, check: Callable[[Series], List[str]]) -> Series:
        """Polls the scrapes begun after `t` until `check` finds nothing wrong in one (they
        only move towards what was done: a request is counted once answered); fails with the
        last complaints at the deadline."""
        deadline = time.monotonic() + DEADLINE
        complaints = ["no scrape after the step"]
        while time.monotonic() < deadline:
            self.alive()
            _, series = self.scrape_after(t)
            if series:
                complaints = check(series)
                if not complaints:
                    return series
            time.sleep(0.05)
        pytest.fail("Prometheus never saw what was done:\n  " + "\n  ".join(complaints))


def value(series: Series, name: str, **labels: str) -> float:
    """A series' value; an absent counter (an error never seen) is 0."""
    return series.get(key(name, **labels), 0.0)


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def exposition(addr: str) -> Series:
    """The exporter's own text at http://addr/metrics, parsed (no timestamps, exemplars or
    escapes in ours)."""
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert text.rstrip().endswith("# EOF"), text[-200:]
    got: Series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = dict(LABEL.findall(m.group(2) or ""))
        got[key(m.group(1), **labels)] = float(m.group(3))
    return got


def stats(mnt: Path) -> dict:
    return json.loads(os.getxattr(mnt, "user.npzfs.stats"))


def same_bytes(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape)
    assert got.tobytes() == want.tobytes()


def test_prometheus_scrapes_exactly_what_was_read(tmp_path):
    # A stored member (np.savez) and a compressed one (np.savez_compressed), a few MiB each,
    # in one directory source: one mount, one target.
    rng = np.random.default_rng(20261206)
    stored = rng.standard_normal(1 << 20).astype(np.float32)  # 4 MiB
    # 32 MiB: its reader catches up with its decoder (the first read waits) on any machine.
    deflated = rng.integers(0, 1000, 1 << 23, dtype=np.int32)  # 32 MiB, decoded at open
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "stored.npz", x=stored)
    np.savez_compressed(src / "compressed.npz", y=deflated)
    with zipfile.ZipFile(src / "stored.npz") as z:
        assert z.getinfo("x.npy").compress_type == zipfile.ZIP_STORED
        stored_size = z.getinfo("x.npy").file_size
    with zipfile.ZipFile(src / "compressed.npz") as z:
        assert z.getinfo("y.npy").compress_type == zipfile.ZIP_DEFLATED
        deflated_size = z.getinfo("y.npy").file_size

    addr = f"127.0.0.1:{free_port()}"
    options = f"metrics={addr},nopassthrough,cache_dir={tmp_path / 'cache'}"
    with mounted(src, tmp_path / "mnt", "-o", options) as mnt, Prometheus(
        tmp_path / "prometheus", addr
    ) as prom:
        x, y = mnt / "stored" / "x.npy", mnt / "compressed" / "y.npy"
        assert (x.stat().st_size, y.stat().st_size) == (stored_size, deflated_size)
        prom.wait_ready()
        prom.wait_up()

        # Nothing read yet: every series the exporter writes reaches Prometheus as written
        # (names, labels, values), once a scrape after our own look at the text is in.
        version = stats(mnt)["version"]
        t = time.time()
        text = exposition(addr)
        assert text[key("npzfs_build_info", version=version)] == 1
        for name, labels in [
            ("npzfs_read_bytes_total", {"path": "archive"}),
            ("npzfs_read_bytes_total", {"path": "cache"}),
            ("npzfs_fuse_requests_total", {"op": "read"}),
            ("npzfs_cache_hits_total", {}),
            ("npzfs_cache_misses_total", {}),
            ("npzfs_cache_budget_bytes", {}),
            ("npzfs_remote_requests_in_flight", {}),
        ]:
            assert key(name, **labels) in text, (name, labels)

        def as_written(s: Series) -> List[str]:
            ours = {k: v for k, v in s.items() if k[0].startswith("npzfs_")}
            if ours == text:
                return []
            return [
                f"{k}: exporter {text.get(k)}, prometheus {ours.get(k)}"
                for k in sorted(set(ours) | set(text))
                if ours.get(k) != text.get(k)
            ]

        before = prom.settled(t, as_written)
        assert value(before, "npzfs_read_bytes_total", path="archive") == 0
        assert value(before, "npzfs_read_bytes_total", path="cache") == 0
        assert value(before, "npzfs_fuse_requests_total", op="read") == 0

        def moved(since: Series, want: Dict[Key, float]) -> Callable[[Series], List[str]]:
            """A check: each of `want`'s series moved by exactly that much since `since`."""

            def check(s: Series) -> List[str]:
                return [
                    f"{k}: moved by {s.get(k, 0.0) - since.get(k, 0.0)}, not {d}"
                    for k, d in want.items()
                    if s.get(k, 0.0) - since.get(k, 0.0) != d
                ]

            return check

        def delta(a: Series, b: Series, k: Key) -> float:
            return b.get(k, 0.0) - a.get(k, 0.0)

        reads = key("npzfs_fuse_requests_total", op="read")
        read_count = key("npzfs_fuse_request_duration_seconds_count", op="read")
        hits, misses = key("npzfs_cache_hits_total"), key("npzfs_cache_misses_total")

        def reads_timed(s: Series) -> List[str]:
            """Every read answered is in the latency histogram too."""
            if s.get(read_count) == s.get(reads):
                return []
            return [f"read histogram count {s.get(read_count)}, requests {s.get(reads)}"]

        # 1. The stored member, whole, through np.load; and a name that is not there.
        same_bytes(np.load(x), stored)
        assert not (mnt / "stored" / "nothing.npy").exists()
        t = time.time()
        check = moved(
            before,
            {
                key("npzfs_read_bytes_total", path="archive"): stored_size,
                key("npzfs_read_bytes_total", path="cache"): 0,
                key("npzfs_opens_total", path="archive"): 1,
                key("npzfs_opens_total", path="cache"): 0,
                key("npzfs_fuse_errors_total", op="lookup", errno="ENOENT"): 1,
                hits: 0,
                misses: 0,
            },
        )
        after_stored = prom.settled(t, lambda s: check(s) + reads_timed(s))
        assert delta(before, after_stored, reads) > 0

        # 2. The compressed member, whole: decoded from its open; every read of it is a hit
        # (its range was decoded already) or a miss (it waited: a race with the decoder).
        same_bytes(np.load(y), deflated)
        t = time.time()
        check = moved(
            after_stored,
            {
                key("npzfs_read_bytes_total", path="archive"): 0,
                key("npzfs_read_bytes_total", path="cache"): deflated_size,
                key("npzfs_opens_total", path="cache"): 1,
                key("npzfs_cache_decoded_bytes_total", how="whole"): deflated_size,
                key("npzfs_cache_decoded_bytes_total", how="span"): 0,
            },
        )

        def every_read_hit_or_missed(s: Series) -> List[str]:
            got = delta(after_stored, s, hits) + delta(after_stored, s, misses)
            want = delta(after_stored, s, reads)
            return [] if got == want else [f"{got} hits and misses for {want} reads"]

        first = prom.settled(
            t, lambda s: check(s) + reads_timed(s) + every_read_hit_or_missed(s)
        )
        assert value(first, "npzfs_cache_used_bytes") == deflated_size

        # 3. Again, its pages dropped first (on the same descriptor: one open), so the daemon
        # answers every read: from the decoded file, all hits.
        with open(y, "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            same_bytes(np.load(f), deflated)
        t = time.time()
        check = moved(
            first,
            {
                key("npzfs_read_bytes_total", path="archive"): 0,
                key("npzfs_read_bytes_total", path="cache"): deflated_size,
                key("npzfs_opens_total", path="cache"): 1,
                key("npzfs_cache_decoded_bytes_total", how="whole"): 0,
                misses: 0,
            },
        )

        def all_hits(s: Series) -> List[str]:
            got, want = delta(first, s, hits), delta(first, s, reads)
            return [] if got == want else [f"{got} hits for {want} reads"]

        second = prom.settled(t, lambda s: check(s) + reads_timed(s) + all_hits(s))
        assert delta(first, second, hits) > 0
        assert value(second, "npzfs_read_bytes_total", path="cache") == 2 * deflated_size
        assert value(second, "npzfs_read_bytes_total", path="archive") == stored_size

        # 4. What Prometheus holds is what the mount says of itself.
        own = stats(mnt)
        t = time.time()
        figures = {
            key("npzfs_read_bytes_total", path=p): own["read"][p]["bytes"]
            for p in ("archive", "cache", "source")
        }
        figures.update(
            {
                key("npzfs_opens_total", path=p): own["read"][p]["opens"]
                for p in ("archive", "cache", "passthrough", "source")
            }
        )
        cache = own["cache"]
        figures.update(
            {
                reads: own["fuse"]["read"]["requests"],
                read_count: own["fuse"]["read"]["seconds"]["count"],
                key("npzfs_fuse_errors_total", op="lookup", errno="ENOENT"): own["fuse"][
                    "lookup"
                ]["errors"]["ENOENT"],
                hits: cache["hits"],
                misses: cache["misses"],
                key("npzfs_cache_used_bytes"): cache["used_bytes"],
                key("npzfs_cache_budget_bytes"): cache["budget_bytes"],
                key("npzfs_cache_decoded_bytes_total", how="whole"): cache["decoded_bytes"],
                key("npzfs_cache_decoded_bytes_total", how="span"): cache["span_bytes"],
                key("npzfs_cache_members", state="kept"): cache["members_kept"],
                key("npzfs_remote_received_bytes_total"): own["remote"]["bytes"],
                key("npzfs_archives_opened_total"): own["sources"]["archives_opened"],
                key("npzfs_build_info", version=own["version"]): 1,
            }
        )

        def as_the_mount_says(s: Series) -> List[str]:
            return [
                f"{k}: prometheus {s.get(k)}, user.npzfs.stats {v}"
                for k, v in figures.items()
                if s.get(k) != v
            ]

        last = prom.settled(t, as_the_mount_says)
        assert value(last, "npzfs_read_bytes_total", path="cache") == 2 * deflated_size
        prom_port = prom.port
    # Both gone: Prometheus waited for, the daemon's port closed with the mount.
    assert wait_until(lambda: not wait_for_port(int(addr.rsplit(":", 1)[1]), 0.05), 15)
    assert not wait_for_port(prom_port, 0.05)
