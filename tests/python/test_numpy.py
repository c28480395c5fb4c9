"""numpy through the mount: np.load, with and without mmap_mode, equals np.load of the npz."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
from arrays import ARRAYS, assert_same

RNG = np.random.default_rng(20261126)


@pytest.mark.parametrize("key", sorted(ARRAYS))
def test_every_dtype_loads_with_and_without_mmap(stored, mount, key):
    mnt = mount(stored)
    want = np.load(stored)[key]
    path = mnt / f"{key}.npy"
    assert_same(np.load(path), want)
    mapped = np.load(path, mmap_mode="r")
    assert_same(mapped, want)
    if want.size and want.dtype.kind != "O":
        assert isinstance(mapped, np.memmap), type(mapped)


@pytest.mark.parametrize("key", sorted(ARRAYS))
def test_every_dtype_loads_from_savez_compressed(compressed, mount, tmp_path, key):
    mnt = mount(compressed, "-o", f"cache_dir={tmp_path / 'cache'}")
    want = np.load(compressed)[key]
    path = mnt / f"{key}.npy"
    assert_same(np.load(path), want)
    assert_same(np.load(path, mmap_mode="r"), want)


def test_a_large_compressed_member_streams_and_maps(tmp_path, mount):
    data = (np.arange(40_000_000, dtype=np.int64) // 3).reshape(4_000_000, 10)
    npz = tmp_path / "big.npz"
    np.savez_compressed(npz, x=data)
    mnt = mount(npz, "-o", f"cache_dir={tmp_path / 'cache'},cache_size=1G")
    a = np.load(mnt / "x.npy", mmap_mode="r")
    assert a.shape == data.shape and a.dtype == data.dtype
    for i in [3_999_999, 0, 2_000_000] + list(RNG.integers(0, 4_000_000, 50)):
        assert np.array_equal(a[i], data[i])
    assert np.array_equal(np.asarray(a), data)


def test_sizes_match_the_members(stored, mount):
    import zipfile

    mnt = mount(stored)
    with zipfile.ZipFile(stored) as z:
        for info in z.infolist():
            assert os.stat(mnt / info.filename).st_size == info.file_size, info.filename


def test_several_processes_map_the_same_member(tmp_path, mount):
    data = RNG.standard_normal((2048, 1024))
    npz = tmp_path / "shared.npz"
    np.savez(npz, x=data)
    mnt = mount(npz)
    code = (
        "import hashlib, sys, numpy as np;"
        "a = np.load(sys.argv[1], mmap_mode='r');"
        "print(hashlib.sha256(a.tobytes()).hexdigest(), a[1000, 7])"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(mnt / "x.npy")], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    want = hashlib.sha256(data.tobytes()).hexdigest()
    assert {o[0] for o in outs} == {want}
    assert {float(o[1]) for o in outs} == {data[1000, 7]}


def test_a_member_over_4_gib_needs_zip64_and_maps(tmp_path, mount):
    n = (4 << 30) // 8 + 12345  # int64 elements: just past 4 GiB
    npz = tmp_path / "big.npz"
    np.savez(npz, big=np.arange(n, dtype=np.int64))
    mnt = mount(npz)
    path = mnt / "big.npy"
    assert os.stat(path).st_size > 4 << 30
    a = np.load(path, mmap_mode="r")
    assert a.shape == (n,)
    for i in [0, 1, (1 << 29) - 1, 1 << 29, n // 2, n - 1] + list(RNG.integers(0, n, 100)):
        assert a[i] == i
    step = 1 << 26
    for start in range(0, n, step):
        chunk = np.asarray(a[start : start + step])
        assert chunk[0] == start and chunk[-1] == start + len(chunk) - 1
        assert np.array_equal(chunk, np.arange(start, start + len(chunk)))


@pytest.mark.parametrize("method", ["ZIP_BZIP2", "ZIP_LZMA"])
def test_other_methods_python_writes(tmp_path, mount, method):
    import io
    import zipfile

    arrays = {"a.npy": np.arange(300_000, dtype=np.int32) // 7, "b.npy": RNG.standard_normal((100, 100))}
    path = tmp_path / f"{method}.npz"
    with zipfile.ZipFile(path, "w", compression=getattr(zipfile, method)) as z:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr)
            z.writestr(name, buf.getvalue())
    mnt = mount(path, "-o", f"cache_dir={tmp_path / 'cache'}")
    for name, arr in arrays.items():
        assert_same(np.load(mnt / name, mmap_mode="r"), arr)


def test_a_duplicate_name_before_a_bzip2_member(tmp_path, mount):
    # The zip crate, which decodes bzip2, keeps one entry per name: its indexes skip the
    # duplicate, so the member must be found by its place in the archive, not its index.
    import io
    import warnings
    import zipfile

    arr = np.arange(50_000, dtype=np.int32) // 3
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr)
    path = tmp_path / "dup.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("dup.npy", b"first")
            z.writestr("dup.npy", b"second")
            z.writestr("b.npy", buf.getvalue(), compress_type=zipfile.ZIP_BZIP2)
    mnt = mount(path, "-o", f"cache_dir={tmp_path / 'cache'}")
    assert_same(np.load(mnt / "b.npy", mmap_mode="r"), arr)
    assert (mnt / "dup.npy").read_bytes() == b"second"
