"""Fixtures for the numpy suite: the npzfs binary and real mounts unmounted in a guard."""

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def npzfs_bin() -> str:
    return os.environ.get("NPZFS_BIN", str(REPO / "target" / "debug" / "npzfs"))


def fuse_usable() -> bool:
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
        return True
    except OSError:
        return False


def is_mounted(path: Path) -> bool:
    want = str(path.resolve())
    with open("/proc/self/mountinfo") as f:
        return any(line.split(" ")[4] == want for line in f)


def wait_until(cond, secs=10.0) -> bool:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def allocated(cache: Path) -> int:
    """Bytes allocated by member cache files (seek indexes aside); a file evicted while we
    look counts as gone."""
    total = 0
    for p in cache.glob("*/*"):
        if ".seek" in p.name or p.name == "archive":
            continue
        try:
            total += p.stat().st_blocks * 512
        except FileNotFoundError:
            pass
    return total


@pytest.fixture(scope="session")
def stored(tmp_path_factory):
    """Every dtype of arrays.ARRAYS, written by np.savez."""
    from arrays import ARRAYS
    import numpy as np

    path = tmp_path_factory.mktemp("npz") / "stored.npz"
    np.savez(path, **ARRAYS)
    return path


@pytest.fixture(scope="session")
def compressed(tmp_path_factory):
    """Every dtype of arrays.ARRAYS, written by np.savez_compressed."""
    from arrays import ARRAYS
    import numpy as np

    path = tmp_path_factory.mktemp("npz") / "compressed.npz"
    np.savez_compressed(path, **ARRAYS)
    return path


@pytest.fixture(scope="session", autouse=True)
def _require_fuse():
    if not fuse_usable():
        if os.environ.get("NPZFS_REQUIRE_FUSE") == "1":
            pytest.fail("/dev/fuse is unusable and NPZFS_REQUIRE_FUSE=1")
        pytest.skip("/dev/fuse is unusable")
    if not os.access(npzfs_bin(), os.X_OK):
        pytest.fail(f"{npzfs_bin()} is missing: run cargo build first")


@contextlib.contextmanager
def mounted(archive: Path, mnt: Path, *options: str):
    """Mounts `archive` on `mnt` (created) and unmounts it afterwards, whatever happened."""
    mnt.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(
        [npzfs_bin(), str(archive), str(mnt), *options], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    try:
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        assert wait_until(lambda: not is_mounted(mnt)), f"{mnt} still mounted"


@pytest.fixture
def mount(tmp_path):
    """mount(archive, *options) -> mount point, unmounted at teardown."""
    with contextlib.ExitStack() as stack:
        count = iter(range(1000))

        def do(archive, *options):
            return stack.enter_context(mounted(archive, tmp_path / f"mnt{next(count)}", *options))

        yield do


@pytest.fixture
def moto(monkeypatch):
    """moto's S3 server on the loopback address, and the AWS_* environment that points npzfs
    (and boto3) at it."""
    from servers import Moto

    server = Moto()
    for k, v in server.env.items():
        monkeypatch.setenv(k, v)
    yield server
    server.stop()
