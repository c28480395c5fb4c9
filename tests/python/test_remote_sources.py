"""A prefix of a bucket as a directory source (moto's S3 server on the loopback address), and
remote archives beside local sources: the tree as a directory source shows it, every dtype
through np.load(mmap_mode='r') of shards written by np.savez and np.savez_compressed, plain
objects read by range, shards uploaded, deleted and replaced while mounted, a damaged shard
beside good ones, and the errors at mount."""

import errno
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from arrays import ARRAYS, assert_same
from conftest import is_mounted, npzfs_bin, wait_until
from servers import Flaky, Nginx, have_nginx

import npzfs

pytestmark = pytest.mark.skipif(
    not have_nginx() and os.environ.get("NPZFS_REQUIRE_FUSE") != "1",
    reason="nginx is not installed (scripts/test installs it)",
)

RNG = np.random.default_rng(20261130)


@pytest.fixture
def bucket(moto, tmp_path):
    """A bucket `data` with a small dataset under `ds/`: shards of both kinds in nested
    prefixes, a plain object, and an object beside a prefix of the same stem."""
    s3 = moto.client()
    s3.create_bucket(Bucket="data")
    local = tmp_path / "up"
    local.mkdir()
    shards = {}
    for i in range(4):
        x = RNG.standard_normal(50_000 + i).astype(np.float32)
        path = local / f"shard{i}.npz"
        (np.savez if i % 2 == 0 else np.savez_compressed)(path, x=x, i=np.array(i))
        s3.upload_file(str(path), "data", f"ds/train/shard{i}.npz")
        shards[i] = x
    np.savez(local / "all.npz", **ARRAYS)
    np.savez_compressed(local / "all_c.npz", **ARRAYS)
    s3.upload_file(str(local / "all.npz"), "data", "ds/dtypes/stored.npz")
    s3.upload_file(str(local / "all_c.npz"), "data", "ds/dtypes/compressed.npz")
    s3.put_object(Bucket="data", Key="ds/README.txt", Body=b"four shards\n")
    s3.put_object(Bucket="data", Key="ds/labels.bin", Body=RNG.bytes(3 << 20))
    return s3, shards


def run_npzfs(*args, timeout=60):
    return subprocess.run([npzfs_bin(), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def listing(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_prefix_is_a_directory_source(bucket, tmp_path):
    s3, shards = bucket
    with npzfs.mount("s3://data/ds/", cache_dir=tmp_path / "cache") as m:
        assert sorted(os.listdir(m.path)) == ["README.txt", "dtypes", "labels.bin", "train"]
        assert sorted(os.listdir(m.path / "train")) == [f"shard{i}" for i in range(4)]
        for i, x in shards.items():
            got = np.load(m.path / "train" / f"shard{i}" / "x.npy", mmap_mode="r")
            assert_same(got, x)
            assert int(np.load(m.path / "train" / f"shard{i}" / "i.npy")) == i
        for name in ("stored", "compressed"):
            for key, want in ARRAYS.items():
                assert_same(np.load(m.path / "dtypes" / name / f"{key}.npy", mmap_mode="r"), want)
        # Plain objects are files, read by range (the middle of one, then all of it).
        body = s3.get_object(Bucket="data", Key="ds/labels.bin")["Body"].read()
        with open(m.path / "labels.bin", "rb") as f:
            f.seek(2 << 20)
            assert f.read(4096) == body[2 << 20 : (2 << 20) + 4096]
        assert (m.path / "labels.bin").read_bytes() == body
        assert (m.path / "README.txt").read_text() == "four shards\n"
        st = (m.path / "labels.bin").stat()
        assert st.st_size == len(body) and st.st_mode & 0o777 == 0o444
        assert (m.path / "train").stat().st_mode & 0o777 == 0o555
        with pytest.raises(OSError) as e:
            (m.path / "README.txt").write_text("no")
        assert e.value.errno in (errno.EROFS, errno.EACCES)
        # The same tree without the trailing slash, and the whole bucket.
    for url, sub in [("s3://data/ds", ""), ("s3://data", "ds")]:
        with npzfs.mount(url, cache_dir=tmp_path / "cache") as m:
            got = np.load(m.path / sub / "train" / "shard2" / "x.npy", mmap_mode="r")
            assert_same(got, shards[2])


def test_shards_uploaded_deleted_and_replaced_while_mounted(bucket, tmp_path):
    s3, shards = bucket
    with npzfs.mount("s3://data/ds/train/", cache_dir=tmp_path / "cache") as m:
        assert len(os.listdir(m.path)) == 4
        x0 = np.load(m.path / "shard0" / "x.npy")
        new = tmp_path / "new.npz"
        np.savez(new, x=np.arange(10, dtype=np.int64))
        s3.upload_file(str(new), "data", "ds/train/shard9.npz")
        # A name never seen is looked for in a listing at most a second old.
        assert wait_until(lambda: (m.path / "shard9").exists(), secs=10)
        assert_same(np.load(m.path / "shard9" / "x.npy"), np.arange(10, dtype=np.int64))
        assert "shard9" in os.listdir(m.path)
        s3.delete_object(Bucket="data", Key="ds/train/shard1.npz")
        assert "shard1" not in os.listdir(m.path)  # opendir lists anew
        # Replaced under the same key: a new version, new inode numbers, its own bytes.
        before = (m.path / "shard0").stat().st_ino
        replaced = tmp_path / "replaced.npz"
        np.savez(replaced, x=x0 + 1, i=np.array(0))
        s3.upload_file(str(replaced), "data", "ds/train/shard0.npz")

        def new_version():
            os.listdir(m.path)
            return (m.path / "shard0").stat().st_ino != before

        assert wait_until(new_version, secs=15)
        assert_same(np.load(m.path / "shard0" / "x.npy"), x0 + 1)


def test_a_damaged_shard_is_eio_and_the_rest_is_served(bucket, tmp_path):
    s3, shards = bucket
    s3.put_object(Bucket="data", Key="ds/train/broken.npz", Body=b"PK\x03\x04" + RNG.bytes(5000))
    with npzfs.mount("s3://data/ds/train/", cache_dir=tmp_path / "cache") as m:
        assert "broken" in os.listdir(m.path)
        with pytest.raises(OSError) as e:
            os.listdir(m.path / "broken")
        assert e.value.errno == errno.EIO
        assert_same(np.load(m.path / "shard3" / "x.npy", mmap_mode="r"), shards[3])


def test_remote_and_local_sources_side_by_side(bucket, tmp_path):
    nginx = Nginx(tmp_path / "nginx")
    try:
        _, shards = bucket
        np.savez(nginx.root / "weights.npz", w=np.arange(7))
        local = tmp_path / "local"
        local.mkdir()
        np.savez(local / "l.npz", q=np.arange(3))
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        sources = [local, "s3://data/ds/train/", "s3://data/ds/train/shard1.npz", nginx.url("weights.npz")]
        run = run_npzfs(*sources, mnt, "-o", f"cache_dir={tmp_path / 'cache'}")
        assert run.returncode == 0, run.stderr
        try:
            assert sorted(os.listdir(mnt)) == ["local", "shard1", "train", "weights"]
            assert_same(np.load(mnt / "local" / "l" / "q.npy"), np.arange(3))
            assert_same(np.load(mnt / "train" / "shard2" / "x.npy", mmap_mode="r"), shards[2])
            assert_same(np.load(mnt / "shard1" / "x.npy", mmap_mode="r"), shards[1])
            assert_same(np.load(mnt / "weights" / "w.npy", mmap_mode="r"), np.arange(7))
        finally:
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
            assert wait_until(lambda: not is_mounted(mnt))
    finally:
        nginx.stop()


def test_a_slow_store_never_holds_up_local_sources(tmp_path):
    """With one request thread, four first opens of a remote archive whose every GET takes
    3 s are in flight, and the local source beside it still answers at once: operations that
    may wait on the network are answered off the request threads."""
    np.savez(tmp_path / "w.npz", w=np.arange(7), v=np.arange(5))
    server = Flaky(tmp_path / "w.npz")
    local = tmp_path / "local"
    local.mkdir()
    np.savez(local / "l.npz", q=np.arange(3))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run = run_npzfs(local, server.url(), mnt, "-o", f"cache_dir={tmp_path / 'cache'},threads=1")
    assert run.returncode == 0, run.stderr
    try:
        server.delay = 3.0
        slow = []

        def first_open(name):
            slow.append(np.load(mnt / "w" / name, mmap_mode="r").tolist())

        threads = [threading.Thread(target=first_open, args=(n,)) for n in ("w.npy", "v.npy") * 2]
        for t in threads:
            t.start()
        assert wait_until(lambda: server.gets >= 1), "the remote archive was never asked for"
        started = time.monotonic()
        assert sorted(os.listdir(mnt / "local" / "l")) == ["q.npy"]
        assert_same(np.load(mnt / "local" / "l" / "q.npy", mmap_mode="r"), np.arange(3))
        took = time.monotonic() - started
        for t in threads:
            t.join(30)
        assert took < 1.5, f"the local source waited {took:.2f} s behind the slow store"
        assert sorted(slow) == [list(range(5))] * 2 + [list(range(7))] * 2
    finally:
        server.delay = 0
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        assert wait_until(lambda: not is_mounted(mnt))


def test_errors_at_mount_are_one_line_exit_9(bucket, tmp_path):
    nginx = Nginx(tmp_path / "nginx")
    try:
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        local = tmp_path / "local"
        local.mkdir()
        for sources, words in [
            (["s3://data/nothing/"], "no objects under this prefix"),
            (["s3://data/ds/train/shard7.npz"], "no such object"),
            (["s3://nobucket/ds/"], "no such bucket"),
            ([nginx.url("")], "names a file"),
            ([local, "s3://data/nothing/"], "no objects under this prefix"),
        ]:
            run = run_npzfs(*sources, mnt, "-o", f"cache_dir={tmp_path / 'cache'}")
            assert run.returncode == 9, (sources, run.stderr)
            assert run.stderr.count("\n") == 1 and words in run.stderr, (sources, run.stderr)
            assert not is_mounted(mnt)
        listed = run_npzfs("--list", "s3://data/ds/")
        assert listed.returncode == 9 and "a prefix" in listed.stderr, listed.stderr
        with pytest.raises(IsADirectoryError, match="npzfs.mount"):
            npzfs.load("s3://data/ds/")
    finally:
        nginx.stop()


def test_an_fstab_line_with_a_url_mounts_through_mount_fuse3(tmp_path):
    """mount(8) runs mount.fuse3, which runs `npzfs` from its own PATH: the binary under test
    is put at /usr/local/bin in a private mount namespace."""
    nginx = Nginx(tmp_path / "nginx")
    try:
        np.savez(nginx.root / "w.npz", w=np.arange(7))
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        os.symlink(os.path.abspath(npzfs_bin()), bin_dir / "npzfs")
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        fstab = tmp_path / "fstab"
        fstab.write_text(
            f"{nginx.url('w.npz')}  {mnt}  fuse.npzfs  "
            f"ro,allow_other,_netdev,nofail,cache_dir={tmp_path / 'cache'}  0 0\n"
        )
        out = tmp_path / "w.npy"
        script = (
            f"set -eu\ntrap 'umount -l {mnt} 2>/dev/null || true' EXIT\n"
            f"mount --bind {bin_dir} /usr/local/bin\n"
            f"mount --fstab {fstab} {mnt}\n"
            f"findmnt -n -o SOURCE,FSTYPE {mnt}\n"
            f"cat {mnt}/w.npy > {out}\n"
            f"umount {mnt}\n"
        )
        run = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
            capture_output=True, text=True, timeout=60,
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.split() == [nginx.url("w.npz"), "fuse.npzfs"]
        assert_same(np.load(out), np.arange(7))
    finally:
        nginx.stop()
