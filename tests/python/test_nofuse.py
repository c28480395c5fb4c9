"""Without FUSE for real: root in a mount namespace whose /dev has no fuse device (what an
unprivileged pod or a locked-down container looks like), where npzfs.load() maps stored
members from the archive and compressed ones from npzfs's cache, decoded there by the binary
(`npzfs extract --into-cache`). Every dtype, stored and compressed, local and from the test
S3 and HTTP servers; two processes loading at once; eviction passing over a mapped member,
whoever evicts; a daemon and load() sharing one cache directory. (The ordinary user with
/dev/fuse closed to them: test_package_users.py.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from arrays import ARRAYS, assert_same
from conftest import npzfs_bin, wait_until
from servers import Nginx, have_nginx

import npzfs

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 and os.environ.get("NPZFS_REQUIRE_FUSE") != "1",
    reason="a mount namespace without /dev/fuse needs root (scripts/test runs as root)",
)

# Root in a new mount namespace, /dev a fresh tmpfs with /dev/null alone: no /dev/fuse.
NO_FUSE = ["unshare", "-m", "sh", "-c",
           'mount -t tmpfs none /dev && mknod -m 666 /dev/null c 1 3 && exec "$0" "$@"']

# Loads every member of argv[1] (cache_dir argv[2]); prints one JSON line: warnings, and per
# member "ok" (same dtype, shape, order and values as arrays.ARRAYS) or its error.
LOAD_ALL = """
import json, sys, warnings
sys.path.insert(0, sys.argv[3])
import npzfs
from arrays import ARRAYS, assert_same
out = {"ok": [], "errors": {}, "warnings": []}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with npzfs.load(sys.argv[1], cache_dir=sys.argv[2]) as z:
        out["mounted"] = z.mount is not None
        for key in z.files:
            try:
                got = z[key]
                assert_same(got, ARRAYS[key])
                out["ok"].append(key)
            except npzfs.FuseUnavailableError as e:
                out["errors"][key] = [type(e).__name__, e.exit_code]
    out["warnings"] = [str(w.message) for w in caught]
print(json.dumps(out))
"""


def no_fuse(code: str, *args, env=None, timeout=120) -> subprocess.CompletedProcess:
    run = [*NO_FUSE, sys.executable, "-c", code, *map(str, args)]
    return subprocess.run(run, capture_output=True, text=True, timeout=timeout, env=env)


def load_all(source, cache: Path, env=None) -> dict:
    run = no_fuse(LOAD_ALL, source, cache, HERE, env=env)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    d = tmp_path_factory.mktemp("nofuse")
    np.savez(d / "stored.npz", **ARRAYS)
    np.savez_compressed(d / "compressed.npz", **ARRAYS)
    return d


def complete_files(cache: Path) -> list:
    """The complete member files in a cache directory (no partial files, no seek indexes)."""
    return sorted(p for p in cache.glob("*/*") if p.is_file() and not p.name.startswith(".")
                  and ".seek" not in p.name and p.name != "archive")


def test_every_dtype_stored_and_compressed_without_the_device(archives, tmp_path):
    cache = tmp_path / "cache"
    for name in ("stored.npz", "compressed.npz"):
        got = load_all(archives / name, cache)
        assert not got["mounted"] and not got["errors"], got
        assert sorted(got["ok"]) == sorted(ARRAYS), got
        assert len(got["warnings"]) == 1 and "FUSE is unavailable" in got["warnings"][0]
    # Decoded once into the cache, as a mount would have: one complete file per member.
    assert len(complete_files(cache)) == len(ARRAYS)


@pytest.mark.skipif(not have_nginx(), reason="nginx is not installed (scripts/test installs it)")
def test_remote_members_come_through_the_cache(archives, tmp_path, moto):
    nginx = Nginx(tmp_path / "nginx", root=archives)
    try:
        for name in ("compressed.npz", "stored.npz"):
            got = load_all(nginx.url(name), tmp_path / "cache")
            assert sorted(got["ok"]) == sorted(ARRAYS) and not got["errors"], (name, got)
    finally:
        nginx.stop()
    s3 = moto.client()
    s3.create_bucket(Bucket="data")
    for name in ("compressed.npz", "stored.npz"):
        s3.upload_file(str(archives / name), "data", f"run/{name}")
        got = load_all(f"s3://data/run/{name}", tmp_path / "cache", env=dict(os.environ))
        assert sorted(got["ok"]) == sorted(ARRAYS) and not got["errors"], (name, got)


def signal(seed: int, mib: int) -> np.ndarray:
    """`mib` MiB of int16 that deflate shrinks but not to nothing."""
    rng = np.random.default_rng(seed)
    n = mib << 19
    return (np.sin(np.arange(n) / 700.0) * 3000 + rng.normal(0, 30, n)).astype(np.int16)


def big_member(path: Path, seed: int, mib: int) -> np.ndarray:
    """A compressed archive of one member x of `mib` MiB."""
    a = signal(seed, mib)
    np.savez_compressed(path, x=a)
    return a


# Maps member argv[5] of argv[1] (cache argv[2], budget argv[3]), prints its file, then waits
# for a line on stdin and checks every element against argv[4] (an .npy of what it holds).
HOLD = """
import sys, numpy as np, npzfs
z = npzfs.load(sys.argv[1], cache_dir=sys.argv[2], cache_size=sys.argv[3])
x = z[sys.argv[5]]
print(x.filename, flush=True)
sys.stdin.readline()
print("same" if np.array_equal(x, np.load(sys.argv[4])) else "DIFFERENT", flush=True)
"""

# Loads member argv[4] of argv[1] (cache argv[2], budget argv[3]); prints a checksum.
TOUCH = """
import sys, npzfs
z = npzfs.load(sys.argv[1], cache_dir=sys.argv[2], cache_size=sys.argv[3])
print(int(z[sys.argv[4]][::4096].sum()))
"""


def test_two_processes_load_at_once_and_eviction_passes_over_a_map(tmp_path):
    # Three members of one archive, 24 MiB each; the budget holds two.
    cache, budget, archive = tmp_path / "cache", "60M", tmp_path / "abc.npz"
    want = {k: signal(i, 24) for i, k in enumerate("xyz")}
    np.savez_compressed(archive, **want)
    np.save(tmp_path / "x_want.npy", want["x"])

    def touch(key, budget=budget):
        got = no_fuse(TOUCH, archive, cache, budget, key)
        assert got.returncode == 0, got.stderr
        assert int(got.stdout) == int(want[key][::4096].sum())

    # Two processes load x at once: one file, both right.
    holders = [subprocess.Popen([*NO_FUSE, sys.executable, "-c", HOLD, archive, cache, budget,
                                 tmp_path / "x_want.npy", "x"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    try:
        paths = {h.stdout.readline().strip() for h in holders}
        assert len(paths) == 1, paths
        mapped = Path(paths.pop())
        assert mapped.is_file()
        # A budget that x fills, and y needs the room: x is passed over (the budget is
        # exceeded rather than a map losing its file).
        touch("y", "30M")
        assert mapped.is_file(), "load() evicted a mapped member"
        # A member larger than the whole budget: one clear error.
        big = no_fuse(TOUCH, archive, cache, "16M", "z")
        assert big.returncode == 1 and "raise cache_size" in big.stderr, big.stderr
        # A daemon that needs the room for z passes over it too: y goes instead.
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        subprocess.run([npzfs_bin(), archive, mnt, "-o",
                        f"cache_dir={cache},cache_size={budget},nopassthrough"], check=True)
        try:
            assert np.array_equal(np.load(mnt / "z.npy", mmap_mode="r"), want["z"])
        finally:
            subprocess.run(["fusermount3", "-u", mnt], check=True)
        assert mapped.is_file(), "the daemon evicted a mapped member"
        for h in holders:
            h.stdin.write("\n")
            h.stdin.flush()
        assert [h.stdout.readline().strip() for h in holders] == ["same", "same"]
    finally:
        for h in holders:
            h.kill()
            h.wait()
    # Its maps gone, it goes like any other when a member needs the room (a budget that
    # holds y alone: everything else goes).
    touch("y", "30M")
    assert not mapped.exists()


def test_a_daemon_and_load_share_one_cache(tmp_path):
    cache = tmp_path / "cache"
    a = big_member(tmp_path / "a.npz", 4, 8)
    # Decoded by load() without FUSE, then served by a mount from the same file.
    got = no_fuse("import sys, npzfs; z = npzfs.load(sys.argv[1], cache_dir=sys.argv[2]); "
                  "print(z['x'].filename)", tmp_path / "a.npz", cache)
    assert got.returncode == 0, got.stderr
    decoded = got.stdout.strip()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with npzfs.mount(tmp_path / "a.npz", mnt, cache_dir=cache, options="nopassthrough") as m:
        assert np.array_equal(np.load(m.path / "x.npy", mmap_mode="r"), a)
        stats = m.stats()["cache"]
    assert (stats["reused"], stats["decoded_members"]) == (1, 0), stats
    # And the other way round: a mount decodes, load() finds it decoded.
    b = big_member(tmp_path / "b.npz", 5, 8)
    with npzfs.mount(tmp_path / "b.npz", mnt, cache_dir=cache) as m:
        assert np.array_equal(np.load(m.path / "x.npy", mmap_mode="r"), b)
        assert wait_until(lambda: os.getxattr(m.path / "x.npy", "user.npzfs.state")
                          in (b"cached", b"passthrough"))
    # The daemon names its file complete once synced, possibly after the unmount returned.
    assert wait_until(lambda: len(complete_files(cache)) == 2, 30), complete_files(cache)
    before = {p: p.stat().st_mtime_ns for p in complete_files(cache)}
    got = no_fuse("import sys, npzfs, numpy as np; z = npzfs.load(sys.argv[1], cache_dir="
                  "sys.argv[2]); print(z['x'].filename)", tmp_path / "b.npz", cache)
    assert got.returncode == 0, got.stderr
    assert Path(got.stdout.strip()) in before
    assert {p: p.stat().st_mtime_ns for p in complete_files(cache)} == before
    assert Path(decoded) in before


def test_extract_writes_what_np_save_writes(archives, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([npzfs_bin(), "extract", archives / "compressed.npz", "--all", "-o",
                          out], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    import io

    for key, a in ARRAYS.items():
        want = io.BytesIO()
        np.save(want, a)
        assert (out / f"{key}.npy").read_bytes() == want.getvalue(), key
    assert not list(out.rglob(".*")), "no temporary file is left"
    one = tmp_path / "one.npy"
    run = subprocess.run([npzfs_bin(), "extract", archives / "stored.npz", "float32", "-o", one],
                         capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == str(one), run.stderr
    assert_same(np.load(one), ARRAYS["float32"])


@pytest.mark.skipif(not have_nginx(), reason="nginx is not installed (scripts/test installs it)")
def test_extract_from_a_server_and_a_damaged_member_leaves_nothing(archives, tmp_path):
    import io

    nginx = Nginx(tmp_path / "nginx", root=archives)
    try:
        out = tmp_path / "remote"
        run = subprocess.run([npzfs_bin(), "extract", nginx.url("compressed.npz"), "float64",
                              "nested/dir/deep", "-o", out], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        for key in ("float64", "nested/dir/deep"):
            want = io.BytesIO()
            np.save(want, ARRAYS[key])
            assert (out / f"{key}.npy").read_bytes() == want.getvalue(), key
    finally:
        nginx.stop()
    # A member whose bytes were damaged in the archive: one line, exit 4, no file.
    damaged = tmp_path / "damaged.npz"
    np.savez_compressed(damaged, x=np.arange(200_000, dtype=np.int64))
    data = bytearray(damaged.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    damaged.write_bytes(bytes(data))
    dest = tmp_path / "x.npy"
    run = subprocess.run([npzfs_bin(), "extract", damaged, "x", "-o", dest, "--cache-dir",
                          tmp_path / "cache"], capture_output=True, text=True)
    assert run.returncode == 4, run.stderr
    assert run.stderr.count("\n") == 1 and "x.npy" in run.stderr, run.stderr
    assert not dest.exists() and not list(tmp_path.glob(".x.npy*"))
