"""The release's files in dist/ and the Debian package installed with dpkg for a test, for
test_deb.py and test_install.py. scripts/test builds them (scripts/release) before the suite;
without them, or without root and dpkg, a test is skipped, and with NPZFS_REQUIRE_FUSE=1
(CI) it fails instead."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

VERSION = re.search(r'^version = "(.*)"$', (REPO / "Cargo.toml").read_text(), re.M).group(1)
DEB = REPO / "dist" / f"npzfs_{VERSION}_amd64.deb"
WHEEL = REPO / "dist" / f"npzfs-{VERSION}-py3-none-manylinux_2_28_x86_64.whl"


def run(*cmd: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw
    )
    if check:
        assert done.returncode == 0, f"{cmd}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    return done


def missing(what: str):
    if os.environ.get("NPZFS_REQUIRE_FUSE") == "1":
        pytest.fail(what)
    pytest.skip(what)


def built(path: Path, by: str) -> Path:
    """`path`, which `by` makes; a test without it is skipped (failed in CI)."""
    if not path.is_file():
        missing(f"{path} is missing: run {by}")
    return path


def package_files(deb: Path) -> list[str]:
    """The absolute paths of the regular files in the package."""
    tar = subprocess.run(
        f"dpkg-deb --fsys-tarfile '{deb}' | tar -t -v", shell=True, capture_output=True, text=True
    )
    assert tar.returncode == 0, tar.stderr
    return [
        line.split()[-1].lstrip(".") for line in tar.stdout.splitlines() if line.startswith("-")
    ]


def installed_status() -> str:
    return run("dpkg-query", "-W", "-f=${db:Status-Abbrev}${Version}", "npzfs", check=False).stdout


@pytest.fixture
def dpkg():
    """Root, dpkg, the package, and a machine without npzfs: purged again after the test."""
    deb = built(DEB, "scripts/package")
    if os.geteuid() != 0:
        missing("installing a package needs root")
    if shutil.which("dpkg") is None:
        missing("dpkg is not installed")
    if installed_status().strip():
        missing(f"a package npzfs is already on this machine: {installed_status()}")
    foreign = [p for p in package_files(deb) if Path(p).exists()]
    if foreign:
        missing(f"files the package would replace are already here: {foreign}")
    try:
        yield deb
    finally:
        run("dpkg", "--purge", "npzfs", check=False)
