"""Running code as a second, ordinary user, and changing /dev/fuse for a while, for the tests
that need them. Each needs root: without it a test is skipped, and with NPZFS_REQUIRE_FUSE=1
(CI) it fails instead, so CI never passes by skipping."""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

USER = "npzfs-test"


def need_root(what: str) -> None:
    """Skips (or, with NPZFS_REQUIRE_FUSE=1, fails) a test that needs root for `what`."""
    if os.geteuid() != 0:
        if os.environ.get("NPZFS_REQUIRE_FUSE") == "1":
            pytest.fail(f"{what} needs root, and NPZFS_REQUIRE_FUSE=1")
        pytest.skip(f"{what} needs root")


def second_user() -> str:
    """The throwaway ordinary user (no home directory), created when missing."""
    need_root("a second user")
    if subprocess.run(["id", USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", USER], check=True)
    return USER


def run_as(user: str, code: str, *args: str, timeout: float = 120, wrap=()):
    """Runs `code` in this venv's Python as `user` (optionally under a wrapper such as
    ``unshare -Urm``); returns the CompletedProcess with text output."""
    cmd = ["runuser", "-u", user, "--", *wrap, sys.executable, "-c", code, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def shared_dir():
    """A temporary directory every user can read and write."""
    d = Path(tempfile.mkdtemp(prefix="npzfs-shared-"))
    os.chmod(d, 0o777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def dev_fuse_mode(mode: int):
    """/dev/fuse with `mode` (0600: only root may use FUSE), put back afterwards."""
    need_root("changing /dev/fuse")
    old = os.stat("/dev/fuse").st_mode & 0o7777
    os.chmod("/dev/fuse", mode)
    try:
        yield
    finally:
        os.chmod("/dev/fuse", old)
