"""Remote sources against real servers on the loopback address: nginx for HTTP ranges, moto's
S3 server, and a misbehaving HTTP server of our own (servers.py). Every member of archives
written by np.savez and np.savez_compressed against np.load; an object replaced while mounted
(ESTALE, never a mix); a server killed and started again; throttling; errors at mount; the block
cache (one request for a random read, none for a second read or a remount); credentials kept
out of /proc/mounts."""

import errno
import mmap
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from arrays import ARRAYS, assert_same
from conftest import is_mounted, npzfs_bin, wait_until
from servers import Flaky, Nginx, have_nginx, make_ca

import npzfs

pytestmark = pytest.mark.skipif(
    not have_nginx() and os.environ.get("NPZFS_REQUIRE_FUSE") != "1",
    reason="nginx is not installed (scripts/test installs it)",
)

BIG = 3_000_000  # float32 elements: 12 MB, a dozen blocks


@pytest.fixture
def nginx(tmp_path):
    server = Nginx(tmp_path / "nginx")
    yield server
    server.stop()


def run_npzfs(*args, timeout=60):
    return subprocess.run([npzfs_bin(), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def big(root: Path, name="big.npz", offset=0.0, n=BIG) -> Path:
    path = root / name
    np.savez(path, x=np.arange(n, dtype=np.float32) + offset, small=np.arange(10))
    return path


def test_http_members_of_every_dtype_are_what_np_load_says(nginx, tmp_path):
    np.savez(nginx.root / "stored.npz", **ARRAYS)
    np.savez_compressed(nginx.root / "compressed.npz", **ARRAYS)
    for name in ("stored.npz", "compressed.npz"):
        with npzfs.mount(nginx.url(name), cache_dir=tmp_path / "cache") as m:
            for key, want in ARRAYS.items():
                assert_same(np.load(m.path / f"{key}.npy", mmap_mode="r"), want)


def test_s3_object_is_served_and_missing_things_are_one_line_exit_9(moto, tmp_path):
    s3 = moto.client()
    s3.create_bucket(Bucket="data")
    local = big(tmp_path)
    s3.upload_file(str(local), "data", "run42/big.npz")
    with npzfs.mount("s3://data/run42/big.npz", cache_dir=tmp_path / "cache") as m:
        got = np.load(m.path / "x.npy", mmap_mode="r")
        assert_same(got, np.arange(BIG, dtype=np.float32))
    with npzfs.load("s3://data/run42/big.npz", cache_dir=tmp_path / "cache") as z:
        assert sorted(z.files) == ["small", "x"]
        assert_same(z["x"], np.arange(BIG, dtype=np.float32))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for url, words in [
        ("s3://data/run42/nothing.npz", "no such object"),
        ("s3://nobucket/big.npz", "no such"),
    ]:
        run = run_npzfs(url, mnt, "-o", f"cache_dir={tmp_path / 'cache'}")
        assert run.returncode == 9, run.stderr
        assert run.stderr.count("\n") == 1 and words in run.stderr, run.stderr
        assert not is_mounted(mnt)


def test_s3_credentials_from_a_profile_and_none_at_all(moto, tmp_path, monkeypatch):
    s3 = moto.client()
    s3.create_bucket(Bucket="data")
    s3.upload_file(str(big(tmp_path)), "data", "big.npz")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.delenv(key)
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = nope\n\n[lab]\naws_access_key_id = lab\n"
        "aws_secret_access_key = labsecret\n"
    )
    (home / ".aws" / "config").write_text("[profile lab]\nregion = us-east-1\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_PROFILE", "lab")
    with npzfs.mount("s3://data/big.npz", cache_dir=tmp_path / "cache") as m:
        assert_same(np.load(m.path / "x.npy", mmap_mode="r"), np.arange(BIG, dtype=np.float32))
    # No keys anywhere: the instance metadata service is asked, and is not there.
    monkeypatch.setenv("HOME", str(tmp_path / "nohome"))
    monkeypatch.delenv("AWS_PROFILE")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    started = time.monotonic()
    run = run_npzfs("s3://data/big.npz", mnt, "-o", "remote_timeout=3")
    assert run.returncode == 9 and "no credentials" in run.stderr, run.stderr
    assert time.monotonic() - started < 30
    assert "labsecret" not in run.stderr


def test_a_replaced_object_gives_estale_and_never_bytes_of_two_versions(nginx, tmp_path):
    n = 8 << 20  # 32 MiB: its end is far from what readahead fetches with the head
    big(nginx.root, n=n)
    with npzfs.mount(nginx.url("big.npz"), cache_dir=tmp_path / "cache") as m:
        with open(m.path / "x.npy", "rb") as f:
            head = f.read(1 << 20)
            # Replaced on the server (a new file renamed over it: a new ETag).
            big(nginx.root, "next.npz", offset=1.0, n=n)
            # nginx's ETag is mtime (in seconds) and size: a different mtime, so that the new
            # version has a new ETag as it would on S3 (an MD5 of the content).
            later = time.time() + 60
            os.utime(nginx.root / "next.npz", (later, later))
            os.replace(nginx.root / "next.npz", nginx.root / "big.npz")
            f.seek(30 << 20)
            with pytest.raises(OSError) as e:
                f.read(1 << 20)
            # The cause reaches the reader: the object changed (ESTALE, as NFS says it).
            assert e.value.errno == errno.ESTALE
            # What was fetched before is still served, and is the old version's.
            f.seek(0)
            assert f.read(1 << 20) == head
    want_head = np.arange(n, dtype=np.float32).tobytes()[: (1 << 20) - 128]
    assert head[128:] == want_head[: len(head) - 128]


def test_a_killed_server_gives_eio_in_bounded_time_and_the_mount_recovers(nginx, tmp_path):
    big(nginx.root, n=8 << 20)
    opts = {"remote_timeout": "2"}
    with npzfs.mount(nginx.url("big.npz"), cache_dir=tmp_path / "cache", options=opts) as m:
        x = m.path / "x.npy"
        with open(x, "rb") as f:
            first = f.read(1 << 20)
        nginx.stop()
        started = time.monotonic()
        with open(x, "rb") as f:
            f.seek(30 << 20)
            with pytest.raises(OSError) as e:
                f.read(4096)
        took = time.monotonic() - started
        assert e.value.errno == 5
        assert took < 2 * 2 + 5, f"EIO after {took:.1f} s"
        # Cached bytes are still served while the server is away.
        with open(x, "rb") as f:
            assert f.read(1 << 20) == first
        nginx.start()
        with open(x, "rb") as f:
            f.seek(30 << 20)
            assert len(f.read(4096)) == 4096
        print(f"a dead server's read failed after {took:.2f} s")


def test_a_response_that_stalls_past_the_timeout_is_asked_again(tmp_path):
    """A request that gets no answer within remote_timeout is retried (GETs are idempotent),
    so one stalled response costs the read the timeout, not an error."""
    local = big(tmp_path)
    server = Flaky(local)
    with npzfs.mount(server.url(), cache_dir=tmp_path / "cache",
                     options={"remote_timeout": "1"}) as m:
        gets = server.gets
        server.stall, server.stalls = 10.0, 1
        started = time.monotonic()
        # O_DIRECT: the kernel would read again a range whose read failed; this asks once.
        fd = os.open(m.path / "x.npy", os.O_RDONLY | os.O_DIRECT)
        try:
            buf = mmap.mmap(-1, 4096)
            assert os.preadv(fd, [buf], 6 << 20) == 4096
            got = bytes(buf)
        finally:
            os.close(fd)
        took = time.monotonic() - started
    want = np.arange(BIG, dtype=np.float32).tobytes()
    at = (6 << 20) - 128  # the .npy header is 128 bytes
    assert got == want[at : at + 4096]
    assert server.stalls == 0 and server.gets >= gets + 2
    assert 1.0 <= took < 2 * 1 + 1, f"the read took {took:.2f} s"


def test_the_first_read_of_a_member_far_from_its_header_costs_one_round_trip(tmp_path):
    """A stored member's first read needs its local header (where its bytes start) and its
    own bytes, here 6 MiB apart: both are asked for at once, so with a store that takes 1 s
    per GET the read takes one round trip, not two."""
    server = Flaky(big(tmp_path))
    try:
        with npzfs.mount(server.url(), cache_dir=tmp_path / "cache") as m:
            server.delay = 1.0
            gets = server.gets
            fd = os.open(m.path / "x.npy", os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                started = time.monotonic()
                got = os.pread(fd, 4096, 6 << 20)
                took = time.monotonic() - started
            finally:
                os.close(fd)
            server.delay = 0
        want = np.arange(BIG, dtype=np.float32).tobytes()
        at = (6 << 20) - 128  # the .npy header is 128 bytes
        assert got == want[at : at + 4096]
        assert server.gets - gets == 2, "the header's block and the read's"
        assert 1.0 <= took < 1.8, f"the first read took {took:.2f} s"
    finally:
        server.shutdown()


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_opening_a_member_never_waits_for_a_slow_server(tmp_path, compressed):
    """The first open of a member needs its local header (where its bytes start); it is
    fetched by the first read (a stored member) or by the decoding thread (a deflated one),
    like any bytes, so the open answers at once even when every GET takes seconds, and the
    read waits for its own range only."""
    local = tmp_path / "big.npz"
    save = np.savez_compressed if compressed else np.savez
    save(local, x=np.arange(BIG, dtype=np.float32), small=np.arange(10))
    server = Flaky(local)
    try:
        with npzfs.mount(server.url(), cache_dir=tmp_path / "cache") as m:
            server.delay = 1.5
            started = time.monotonic()
            with open(m.path / "x.npy", "rb", buffering=0) as f:
                opened = time.monotonic() - started
                head = f.read(4096)
            read = time.monotonic() - started
            assert opened < 1.0, f"open took {opened:.2f} s"
            assert read >= 1.5
            assert head[:6] == b"\x93NUMPY"
            server.delay = 0
            assert_same(np.load(m.path / "x.npy", mmap_mode="r"), np.arange(BIG, dtype=np.float32))
    finally:
        server.shutdown()


def test_what_an_open_archive_holds_answers_while_the_slow_lane_is_full(tmp_path):
    """Operations that may wait on the network are answered on the slow lane (16 threads).
    With more header reads (user.npy.* xattrs, which read each member's first bytes) waiting
    there on a store that takes 3 s per GET than the lane has threads, what the open archive
    holds in memory (its listing, a lookup, attributes, the open of a stored member) still
    answers at once: it never queues behind the network."""
    local = tmp_path / "many.npz"
    n, size = 24, 300_000  # 1.2 MB each: every member starts in a block of its own
    arrays = {f"m{i:02d}": np.full(size, i, dtype=np.float32) for i in range(n)}
    np.savez(local, **arrays, other=np.arange(size, dtype=np.float32))
    server = Flaky(local)
    shapes = {}

    def header(i):
        shapes[i] = os.getxattr(m.path / f"m{i:02d}.npy", "user.npy.shape").decode()

    try:
        with npzfs.mount(server.url(), cache_dir=tmp_path / "cache") as m:
            server.delay = 3.0
            gets = server.gets
            waiting = [threading.Thread(target=header, args=(i,)) for i in range(n)]
            for t in waiting:
                t.start()
            assert wait_until(lambda: server.gets >= gets + 16), "the lane never filled"
            started = time.monotonic()
            assert "other.npy" in os.listdir(m.path)
            assert os.stat(m.path / "other.npy").st_size == 128 + 4 * size
            os.close(os.open(m.path / "other.npy", os.O_RDONLY))
            took = time.monotonic() - started
            for t in waiting:
                t.join(60)
            server.delay = 0
            assert took < 1.5, f"the open archive waited {took:.2f} s behind the slow lane"
            assert shapes == {i: f"[{size}]" for i in range(n)}
            assert_same(np.load(m.path / "other.npy", mmap_mode="r"),
                        np.arange(size, dtype=np.float32))
    finally:
        server.shutdown()


def test_https_is_served_when_its_ca_is_trusted_and_refused_at_once_when_not(tmp_path, monkeypatch):
    ca, cert, key = make_ca(tmp_path / "tls")
    server = Nginx(tmp_path / "nginx", tls=(cert, key))
    try:
        big(server.root)
        url = server.url("big.npz")
        # A certificate the system does not trust: one line naming it, exit 9, no retries.
        (tmp_path / "mnt").mkdir()
        started = time.monotonic()
        run = run_npzfs(url, tmp_path / "mnt")
        took = time.monotonic() - started
        assert run.returncode == 9, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and "certificate is not trusted" in lines[0], run.stderr
        assert "SSL_CERT_FILE" in lines[0]
        assert took < 2.0, f"refused after {took:.1f} s"
        assert server.gets() == 0, "no request went through"
        # The test's CA made trusted: served, every byte right.
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        with npzfs.mount(url, cache_dir=tmp_path / "cache") as m:
            assert_same(np.load(m.path / "x.npy", mmap_mode="r"), np.arange(BIG, dtype=np.float32))
    finally:
        server.stop()


def test_throttling_is_retried_and_a_server_without_ranges_is_refused(tmp_path):
    local = big(tmp_path)
    server = Flaky(local)
    try:
        server.throttle = 3
        with npzfs.mount(server.url(), cache_dir=tmp_path / "cache") as m:
            assert_same(np.load(m.path / "x.npy", mmap_mode="r"), np.arange(BIG, dtype=np.float32))
        assert server.refused == 3
        server.ignore_range = True
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        run = run_npzfs(server.url(), mnt, "-o", f"cache_dir={tmp_path / 'other'}")
        assert run.returncode == 9, run.stderr
        assert "Range" in run.stderr and run.stderr.count("\n") == 1, run.stderr
    finally:
        server.shutdown()


def test_blocks_one_request_for_a_random_read_none_for_a_second_read_or_a_remount(nginx, tmp_path):
    big(nginx.root)
    cache = tmp_path / "cache"
    with npzfs.mount(nginx.url("big.npz"), cache_dir=cache) as m:
        with open(m.path / "x.npy", "rb", buffering=0) as f:
            # The first read also fetches the member's local header (where its bytes start).
            f.seek(3 << 20)
            f.read(4096)
            before = nginx.gets()
            f.seek(7 << 20)
            f.read(4096)
        assert nginx.gets() == before + 1
        whole = (m.path / "x.npy").read_bytes()
        after_first = nginx.gets()
        # Page cache dropped: the second read comes from the block file, not the network.
        subprocess.run(["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"], check=False)
        assert (m.path / "x.npy").read_bytes() == whole
        assert nginx.gets() == after_first
    with npzfs.mount(nginx.url("big.npz"), cache_dir=cache) as m:
        assert (m.path / "x.npy").read_bytes() == whole
    assert nginx.gets() == after_first, "a remount of the same version fetched again"
    want = np.arange(BIG, dtype=np.float32).tobytes()
    assert whole[-len(want):] == want


def test_credentials_stay_out_of_proc_mounts_and_messages(nginx, tmp_path):
    big(nginx.root)
    port = nginx.port
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run = run_npzfs(f"http://someone:s3cret@127.0.0.1:{port}/big.npz", mnt)
    try:
        assert run.returncode == 0, run.stderr
        mounts = Path("/proc/mounts").read_text()
        assert "s3cret" not in mounts
        assert f"http://127.0.0.1:{port}/big.npz {mnt}" in mounts
        assert len((mnt / "x.npy").read_bytes()) == BIG * 4 + 128
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        assert wait_until(lambda: not is_mounted(mnt))
    for url in [
        f"http://someone:s3cret@127.0.0.1:{port}/missing.npz",
        f"http://127.0.0.1:{port}/big.npz?X-Amz-Signature=s3cret",
    ]:
        bad = run_npzfs(url, mnt)
        assert bad.returncode == 9 and "s3cret" not in bad.stderr, bad.stderr
        assert "s3cret" not in Path("/proc/mounts").read_text()


def test_list_reads_a_remote_archive(nginx, tmp_path):
    import json

    big(nginx.root)
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    run = subprocess.run(
        [npzfs_bin(), "--list", "--json", nginx.url("big.npz")],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert run.returncode == 0, run.stderr
    listed = {m["name"]: m for m in json.loads(run.stdout)}
    assert listed["x.npy"]["shape"] == [BIG] and listed["x.npy"]["dtype"] == "<f4"


def test_blocks_stay_within_a_small_cache_and_every_byte_is_right(nginx, tmp_path):
    """A 4 MiB budget for a 12 MB member: blocks are evicted (holes punched) while the member
    is read sequentially, by mmap at random, and by several readers at once; every byte is
    the archive's, and the block file never holds much more than the budget."""
    import threading

    big(nginx.root)
    want = np.arange(BIG, dtype=np.float32)
    cache = tmp_path / "cache"
    with npzfs.mount(nginx.url("big.npz"), cache_dir=cache, cache_size="4M") as m:
        x = m.path / "x.npy"
        assert_same(np.load(x), want)
        mapped = np.load(x, mmap_mode="r")
        rng = np.random.default_rng(7)
        for i in rng.integers(0, BIG - 1000, 200):
            assert_same(mapped[i : i + 1000], want[i : i + 1000])
        errors = []

        def reader(seed):
            r = np.random.default_rng(seed)
            try:
                with open(x, "rb") as f:
                    for _ in range(50):
                        at = int(r.integers(0, BIG - 4096))
                        f.seek(128 + at * 4)
                        got = np.frombuffer(f.read(4096 * 4), dtype=np.float32)
                        assert_same(got, want[at : at + 4096])
            except Exception as e:  # noqa: BLE001 (reported below, with the others)
                errors.append(e)

        threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert not errors, errors[0]
        used = sum(p.stat().st_blocks * 512 for p in cache.rglob("blocks"))
        assert used <= 6 << 20, f"{used} bytes of blocks on disk for a 4 MiB budget"
