"""The Python package as a user installs it (the wheel, in this venv): npzfs.load() and
npzfs.mount() against np.load, the command it carries, and the errors it raises."""

import gc
import os
import subprocess
import sys
import sysconfig
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from arrays import ARRAYS
from arrays import assert_same as same_array
from conftest import is_mounted, npzfs_bin, wait_until

import npzfs

REPO = Path(__file__).resolve().parents[2]


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def assert_same(got, want):
    assert isinstance(got, np.memmap), type(got)
    same_array(got, want)


def test_the_package_is_the_installed_wheel_with_its_own_binary():
    site = Path(sysconfig.get_path("purelib")).resolve()
    assert Path(npzfs.__file__).resolve().is_relative_to(site), npzfs.__file__
    binary = Path(npzfs.find_npzfs_bin())
    assert binary == Path(sysconfig.get_path("scripts")) / "npzfs", binary
    cargo = (REPO / "Cargo.toml").read_text()
    version = next(line.split('"')[1] for line in cargo.splitlines() if line.startswith("version"))
    assert npzfs.__version__ == version
    assert (Path(npzfs.__file__).parent / "py.typed").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["--help"],
        ["--print-man-page"],
        ["-o", "bogus", "a.npz", "/mnt"],
        ["/nonexistent.npz", "/tmp"],
        [],
    ],
)
def test_the_command_and_python_m_are_the_binary(args):
    """Same output and exit code from the wheel's npzfs, python -m npzfs and the cargo build."""
    runs = [
        subprocess.run([cmd, *args], capture_output=True, text=True)
        for cmd in (npzfs.find_npzfs_bin(), npzfs_bin())
    ]
    runs.append(subprocess.run([sys.executable, "-m", "npzfs", *args], capture_output=True, text=True))
    first = runs[0]
    for other in runs[1:]:
        assert (other.returncode, other.stdout, other.stderr) == (
            first.returncode,
            first.stdout,
            first.stderr,
        )


@pytest.mark.parametrize("which", ["stored", "compressed"])
def test_load_gives_what_np_load_gives_as_memory_maps(which, request):
    path = request.getfixturevalue(which)
    want = np.load(path)
    with npzfs.load(path) as z:
        assert sorted(z.files) == sorted(want.files)
        assert len(z) == len(want.files) and sorted(z) == sorted(want.files)
        for key in want.files:
            assert key in z and f"{key}.npy" in z
            assert_same(z[key], want[key])
            assert_same(z[f"{key}.npy"], want[key])
        assert "nope" not in z and 3 not in z
        assert_same(z.f.float64, want["float64"])
        assert "int8" in dir(z.f)
        with pytest.raises(KeyError, match="nope is not a file in the archive"):
            z["nope"]
        assert dict(z.items()).keys() == set(want.files)


def test_members_that_are_not_npy_come_back_as_bytes(tmp_path):
    path = tmp_path / "mixed.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("notes.txt", b"hello")
        zf.writestr("x.npy", _npy(np.arange(3)))
    want = np.load(path)
    with npzfs.load(path) as z:
        assert z["notes.txt"] == want["notes.txt"] == b"hello"
        assert_same(z["x"], want["x"])


def _npy(a):
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_arrays_outlive_close_and_the_daemon_outlives_them(stored):
    z = npzfs.load(stored)
    m = z.mount
    a = z["float64"]
    z.close()
    with pytest.raises(ValueError, match="closed"):
        z["float64"]
    assert wait_until(lambda: not is_mounted(m.path)), "detached at close"
    assert not m.path.exists(), "the temporary mount point is removed"
    np.testing.assert_array_equal(a, ARRAYS["float64"])  # served by the detached mount
    assert pid_alive(m.pid)
    del a
    assert wait_until(lambda: not pid_alive(m.pid)), "the daemon exits after the last map"


def test_a_mount_dropped_while_its_daemon_serves_warns_nothing_and_leaves_no_zombie(stored):
    """A detached mount's daemon outlives its Mount object: dropping the object says nothing
    of a subprocess still running, and the daemon, once its last map goes, is reaped."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = npzfs.mount(stored)
        a = np.load(m.path / "float64.npy", mmap_mode="r")
        pid = m.pid
        m.unmount()  # busy: detached
        del m
        gc.collect()
        assert pid_alive(pid)
        del a
        gc.collect()
        assert wait_until(lambda: not Path(f"/proc/{pid}").exists()), "a zombie, never reaped"
    assert not [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


def test_loading_twice_shares_one_mount(stored, compressed):
    with npzfs.load(stored) as a, npzfs.load(str(stored)) as b, npzfs.load(compressed) as c:
        assert a.mount is b.mount and a.mount is not c.mount
        m = a.mount
    # The shared mount went when the last of them closed.
    assert wait_until(lambda: not is_mounted(m.path))


def test_mount_on_a_temporary_directory_and_unmount_on_leaving(compressed):
    with npzfs.mount(compressed) as m:
        assert isinstance(m.path, Path) and m.mounted
        assert oct(m.path.stat().st_mode & 0o777) == oct(0o555)
        got = np.load(m.path / "int32.npy", mmap_mode="r")
        assert_same(got, ARRAYS["int32"])
    # Busy (the map) when leaving: detached lazily, still readable, the directory gone.
    assert not is_mounted(m.path) and not m.path.exists()
    np.testing.assert_array_equal(got, ARRAYS["int32"])
    m.unmount()  # again: nothing to do
    assert "unmounted" in repr(m)


def test_stats_are_the_mounts_own_figures(compressed, tmp_path):
    with npzfs.mount(compressed, cache_dir=tmp_path / "cache", options="nopassthrough") as m:
        before = m.stats()
        data = (m.path / "int32.npy").read_bytes()
        after = m.stats()
    assert after["version"] == npzfs.__version__
    assert after["read"]["cache"]["bytes"] - before["read"]["cache"]["bytes"] == len(data)
    assert after["read"]["cache"]["opens"] == before["read"]["cache"]["opens"] + 1
    assert after["cache"]["decoded_bytes"] >= len(data) > 0
    assert after["cache"]["misses"] + after["cache"]["hits"] > 0
    assert after["fuse"]["read"]["requests"] > 0
    with pytest.raises(npzfs.Error, match="cannot read the figures"):
        m.stats()


def test_mount_on_a_given_directory_with_options(stored, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = npzfs.mount(stored, mnt, cache_size="64M", options={"umask": "077", "threads": 1})
    try:
        assert m.path == mnt.resolve() and is_mounted(mnt)
        assert (mnt / "float32.npy").stat().st_mode & 0o777 == 0o400
        with open("/proc/self/mountinfo") as f:
            assert any(f" {mnt} " in line and "fuse.npzfs" in line for line in f)
    finally:
        m.unmount()
    assert not is_mounted(mnt) and mnt.is_dir(), "a given mount point stays"


def test_errors_are_pythons(tmp_path, stored):
    with pytest.raises(FileNotFoundError):
        npzfs.load(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError):
        npzfs.mount(stored, tmp_path / "no-such-dir")
    with pytest.raises(NotADirectoryError):
        npzfs.mount(stored, stored)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(npzfs.Error) as e:
        npzfs.load(bad)
    assert isinstance(e.value, OSError) and e.value.exit_code == 4
    assert str(e.value).startswith(f"cannot read archive {bad}: "), str(e.value)
    with pytest.raises(npzfs.Error) as e:
        npzfs.mount(stored, options="no_such_option")
    assert e.value.exit_code == 2
    assert str(e.value) == "mount option 'no_such_option' is unknown (see npzfs --help)"
    busy = tmp_path / "busy"
    busy.mkdir()
    with npzfs.mount(stored, busy):
        with pytest.raises(npzfs.Error) as e:
            npzfs.mount(stored, busy)
        assert e.value.exit_code == 6 and not isinstance(e.value, npzfs.FuseUnavailableError)


def test_elements_of_a_large_deflated_member_are_exact(tmp_path):
    """First, last and strided elements of a 16 MiB deflated member through load(). That the
    first one needs only the first chunk is a timing: bench/python_load.py measures it."""
    path = tmp_path / "big.npz"
    big = np.arange(1 << 22, dtype=np.int32)  # 16 MiB
    np.savez_compressed(path, big=big)
    with npzfs.load(path, cache_dir=tmp_path / "cache") as z:
        a = z["big"]
        assert isinstance(a, np.memmap) and a.shape == big.shape
        assert a[0] == 0 and a[-1] == big[-1]
        np.testing.assert_array_equal(a[::4096], big[::4096])
