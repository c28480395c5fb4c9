"""Member metadata without reading the data: xattrs on mounted members, `npzfs --list
[--json]` and `npzfs.info()`, each checked against numpy's own headers and Python's zipfile for
every dtype the numpy tier carries, stored and deflated."""

import ast
import json
import os
import subprocess
import zipfile

import numpy as np
import pytest
from arrays import ARRAYS
from conftest import npzfs_bin, wait_until

import npzfs

METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}


def numpy_header(z: zipfile.ZipFile, name: str) -> dict:
    """The header dict numpy wrote for member `name`, and its descr as written."""
    with z.open(name) as f:
        version = np.lib.format.read_magic(f)
        length = int.from_bytes(f.read(2 if version == (1, 0) else 4), "little")
        header = ast.literal_eval(f.read(length).decode("latin1"))
    d = header["descr"]
    return {
        "dtype": d if isinstance(d, str) else repr(d),
        "shape": list(header["shape"]),
        "fortran_order": header["fortran_order"],
    }


def expected(path) -> list:
    """What zipfile and numpy say of every member, in the archive's order."""
    with zipfile.ZipFile(path) as z:
        return [
            {
                "name": i.filename,
                **numpy_header(z, i.filename),
                "method": METHODS[i.compress_type],
                "size": i.file_size,
                "compressed_size": i.compress_size,
                "crc32": f"{i.CRC:08x}",
            }
            for i in z.infolist()
        ]


@pytest.mark.parametrize("which", ["stored", "compressed"])
def test_xattrs_of_every_dtype(which, request, mount, tmp_path):
    path = request.getfixturevalue(which)
    mnt = mount(path, "-o", f"cache_dir={tmp_path / 'cache'}")
    for want in expected(path):
        member = mnt / want["name"]
        names = os.listxattr(member)
        got = {n: os.getxattr(member, n).decode() for n in names}
        assert got["user.npy.dtype"] == want["dtype"], want["name"]
        assert json.loads(got["user.npy.shape"]) == want["shape"]
        assert got["user.npy.fortran_order"] == str(want["fortran_order"]).lower()
        assert got["user.zip.method"] == want["method"]
        assert int(got["user.zip.compressed_size"]) == want["compressed_size"]
        assert got["user.zip.crc32"] == want["crc32"]
        if which == "stored":
            assert "user.npzfs.cached" not in got
            assert got["user.npzfs.state"] == "archive"
        else:
            assert 0 <= int(got["user.npzfs.cached"]) <= want["size"]
            assert got["user.npzfs.state"] in ("archive", "decoding", "cached", "passthrough")
    assert os.listxattr(mnt / "nested") == []


def test_cached_counts_what_the_cache_holds_and_headers_start_no_decode(mount, tmp_path):
    path = tmp_path / "big.npz"
    np.savez_compressed(path, big=np.arange(1 << 22, dtype=np.int32) % 1000)
    mnt = mount(path, "-o", f"cache_dir={tmp_path / 'cache'}")
    big = mnt / "big.npy"
    assert os.getxattr(big, "user.npy.shape") == b"[4194304]"
    assert os.getxattr(big, "user.npzfs.cached") == b"0", "the header read decoded nothing"
    assert os.getxattr(big, "user.npzfs.state") == b"archive"
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name != "archive"]
    with open(big, "rb") as f:
        while f.read(1 << 20):
            pass
    size = big.stat().st_size
    assert wait_until(lambda: int(os.getxattr(big, "user.npzfs.cached")) == size)
    # Complete and verified: served from the cache file (by the kernel itself where the mount
    # has passthrough: root on Linux 6.9+).
    assert os.getxattr(big, "user.npzfs.state") in (b"cached", b"passthrough")


def test_members_that_are_not_npy_have_zip_facts_only(mount, tmp_path):
    path = tmp_path / "mixed.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", b"not an array")
        z.writestr("fake.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}    \n")
    mnt = mount(path)
    for name in ("notes.txt", "fake.npy"):
        assert [n for n in os.listxattr(mnt / name) if n.startswith("user.npy.")] == []
        assert os.getxattr(mnt / name, "user.zip.method") == b"stored"
    listed = {m["name"]: m for m in npzfs.info(path)}
    assert listed["notes.txt"]["dtype"] is None and listed["fake.npy"]["shape"] is None
    assert listed["notes.txt"]["size"] == len(b"not an array")


@pytest.mark.parametrize("which", ["stored", "compressed"])
def test_list_json_and_info_agree_with_numpy_and_zipfile(which, request):
    path = request.getfixturevalue(which)
    want = expected(path)
    run = subprocess.run([npzfs_bin(), "--list", "--json", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == want
    assert npzfs.info(path) == want


def test_list_table_is_one_line_per_member(compressed):
    run = subprocess.run([npzfs_bin(), "--list", str(compressed)], capture_output=True, text=True)
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["name", "dtype", "shape", "method", "size", "compressed", "ratio"]
    assert len(lines) == 1 + len(ARRAYS)
    row = next(line for line in lines if line.startswith("float64.npy "))
    size = f"{(12345 * 8 + 128) / 1024:.1f} KiB"  # the data and numpy's 128-byte header
    assert "<f8" in row and "[12345]" in row and "deflated" in row and size in row


def test_list_exit_codes_are_the_mount_ones(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    for path, code in [(tmp_path / "missing.npz", 3), (bad, 4)]:
        run = subprocess.run([npzfs_bin(), "--list", str(path)], capture_output=True, text=True)
        assert run.returncode == code and len(run.stderr.splitlines()) == 1, run.stderr
    with pytest.raises(FileNotFoundError):
        npzfs.info(tmp_path / "missing.npz")
    with pytest.raises(npzfs.Error) as e:
        npzfs.info(bad)
    assert e.value.exit_code == 4
