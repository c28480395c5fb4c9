"""The Debian package (scripts/package), checked by Debian's own tools and installed, used,
upgraded and removed for real with dpkg on this machine, as root.

The package is dist/npzfs_VERSION_amd64.deb, built by scripts/test before this suite runs.
Each test that installs it purges it again, whatever happened, and refuses to start on a
machine where a package or a file it would replace is already there.
"""

import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, is_mounted, wait_until
# dpkg is a fixture: the package, installed by the test and purged after it.
from debs import DEB, VERSION, WHEEL, built, dpkg, installed_status, missing, package_files, run

CONFFILE = Path("/etc/npzfs/npzfs.env.example")
# What a boot-time mount(8) has on PATH: mount.fuse3 runs the `npzfs` it finds there, and
# the installed one must be the one found (not the venv's or /usr/local's).
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="module")
def deb() -> Path:
    return built(DEB, "scripts/package")


def test_lintian_finds_nothing(deb):
    """Errors, warnings and even pedantic and informational tags: none but those overridden in
    packaging/debian/lintian-overrides, each with its reason."""
    if shutil.which("lintian") is None:
        missing("lintian is not installed")
    out = run(
        "lintian", "--pedantic", "--display-info", "--fail-on", "error,warning,info,pedantic",
        str(deb), check=False,
    )
    tags = [line for line in out.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
    assert out.returncode == 0 and not tags, out.stdout + out.stderr


def test_the_package_carries_the_wheels_binary_and_says_what_it_needs(deb, tmp_path):
    fields = {
        key: run("dpkg-deb", "-f", str(deb), key).stdout.strip()
        for key in ("Package", "Version", "Architecture", "Depends", "Description", "Section")
    }
    assert fields["Package"] == "npzfs" and fields["Version"] == VERSION
    assert fields["Architecture"] == "amd64"
    assert "fuse3" in fields["Depends"] and "libc6 (>= 2.28)" in fields["Depends"]
    assert "memory-map" in fields["Description"], fields["Description"]
    run("dpkg-deb", "-e", str(deb), str(tmp_path / "DEBIAN"))
    assert (tmp_path / "DEBIAN" / "conffiles").read_text().split() == [str(CONFFILE)]

    files = set(package_files(deb))
    for path in (
        "/usr/bin/npzfs",
        "/usr/share/man/man1/npzfs.1.gz",
        "/lib/systemd/system/npzfs@.service",
        str(CONFFILE),
        "/usr/share/doc/npzfs/README.md",
        "/usr/share/doc/npzfs/copyright",
        "/usr/share/doc/npzfs/changelog.gz",
        "/usr/share/doc/npzfs/third-party-licenses.txt",
        "/usr/share/doc/npzfs/systemd.md",
        "/usr/share/doc/npzfs/examples/mnt-data.mount",
    ):
        assert path in files, f"{path} not in {sorted(files)}"

    run("dpkg-deb", "-x", str(deb), str(tmp_path / "root"))
    root = tmp_path / "root"
    binary = (root / "usr/bin/npzfs").read_bytes()
    with zipfile.ZipFile(WHEEL) as wheel:
        assert binary == wheel.read(f"npzfs-{VERSION}.data/scripts/npzfs"), "not the wheel's binary"
    # Linked against glibc 2.28 at most: installs on Debian 11 and Ubuntu 20.04.
    needed = {tuple(map(int, v.split(b"."))) for v in re.findall(rb"GLIBC_(2\.[0-9]+)", binary)}
    assert needed and max(needed) <= (2, 28), sorted(needed)

    unit = (root / "lib/systemd/system/npzfs@.service").read_text()
    assert "ExecStart=/usr/bin/npzfs -f " in unit and "/usr/local" not in unit
    licences = (root / "usr/share/doc/npzfs/third-party-licenses.txt").read_text()
    # Every crate the binary links, by name, with its licence text: a few of them.
    for crate in ("fuser ", "zip ", "memmap2 ", "tokio ", "libz-rs-sys ", "rustls "):
        assert f"\n  {crate}" in licences, crate
    assert "Permission is hereby granted" in licences and "Apache License" in licences
    copyright_ = (root / "usr/share/doc/npzfs/copyright").read_text()
    assert copyright_.startswith("Format: https://www.debian.org/doc/packaging-manuals/")
    assert "License: MIT or Apache-2.0" in copyright_


def write_archive(path: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(27)
    arrays = {"x": rng.standard_normal((512, 64)).astype(np.float32), "y": np.arange(4096)}
    np.savez_compressed(path, **arrays)
    return arrays


def numpy_reads(mnt: Path, arrays: dict[str, np.ndarray]) -> None:
    for name, want in arrays.items():
        got = np.load(mnt / f"{name}.npy", mmap_mode="r")
        assert isinstance(got, np.memmap) and np.array_equal(got, want), name


def daemon_exe(mnt: Path) -> str:
    """The executable of the daemon serving `mnt`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if str(mnt).encode() in argv and argv[0].endswith(b"npzfs"):
                return os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
    return ""


def unmount(mnt: Path) -> None:
    run("umount", str(mnt))
    assert wait_until(lambda: not daemon_exe(mnt)), "the daemon outlived its mount"


def test_install_mount_remove_purge(dpkg, tmp_path):
    """dpkg -i, then every way in (the binary, the man page, the unit, mount -t, an fstab
    line), numpy reading through the mounts; dpkg -r leaves only the conffile, dpkg -P not even
    that."""
    files = package_files(dpkg)
    run("dpkg", "-i", str(dpkg))
    assert installed_status().startswith("ii ")
    env = {**os.environ, "PATH": SYSTEM_PATH}
    version = run("npzfs", "--version", env=env).stdout
    assert version.split() == ["npzfs", VERSION], version
    assert run("man", "-w", "npzfs", env=env).stdout.strip() == "/usr/share/man/man1/npzfs.1.gz"
    page = run("man", "-P", "cat", "npzfs", env={**env, "MANWIDTH": "200"}).stdout
    assert "/etc/npzfs/npzfs.env.example" in page.split("FILES", 1)[1], "FILES names the conffile"
    # The installed template, its ExecStart= binary and man page included. Warnings count.
    verify = run("systemd-analyze", "verify", "npzfs@mnt-run42.service", check=False)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    assert run("dpkg", "--verify", "npzfs").stdout == ""

    arrays = write_archive(tmp_path / "data.npz")
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    mnt.mkdir()
    cache.mkdir()
    run(
        "mount", "-t", "fuse.npzfs", str(tmp_path / "data.npz"), str(mnt),
        "-o", f"allow_other,cache_dir={cache},cache_size=64M", env=env,
    )
    try:
        assert daemon_exe(mnt) == "/usr/bin/npzfs"
        numpy_reads(mnt, arrays)
    finally:
        unmount(mnt)

    fstab = tmp_path / "fstab"
    fstab.write_text(
        f"{tmp_path / 'data.npz'}  {mnt}  fuse.npzfs  "
        f"ro,allow_other,cache_dir={cache},cache_size=64M,nofail  0 0\n"
    )
    run("mount", "-a", "--fstab", str(fstab), env=env)
    try:
        assert is_mounted(mnt) and daemon_exe(mnt) == "/usr/bin/npzfs"
        numpy_reads(mnt, arrays)
    finally:
        unmount(mnt)

    CONFFILE.write_text(CONFFILE.read_text() + "ARCHIVE=/data/mine.npz\n")
    run("dpkg", "-r", "npzfs")
    assert installed_status().startswith("rc ")
    left = [p for p in files if Path(p).exists()]
    assert left == [str(CONFFILE)], left
    assert CONFFILE.read_text().endswith("ARCHIVE=/data/mine.npz\n")
    run("dpkg", "-P", "npzfs")
    assert not installed_status().strip()
    assert not CONFFILE.exists() and not CONFFILE.parent.exists()


def previous_version(deb: Path, tmp_path: Path, conffile: str | None) -> Path:
    """The package as a release before this one: the same files with an older version and,
    when `conffile` is given, another example environment file."""
    tree = tmp_path / "old"
    run("dpkg-deb", "-R", str(deb), str(tree))
    control = tree / "DEBIAN" / "control"
    control.write_text(re.sub(r"(?m)^Version: .*$", "Version: 0.0.1", control.read_text()))
    if conffile is not None:
        (tree / CONFFILE.relative_to("/")).write_text(conffile)
    out = tmp_path / "npzfs_0.0.1_amd64.deb"
    run("dpkg-deb", "--root-owner-group", "-b", str(tree), str(out))
    return out


@pytest.mark.parametrize("upstream_changed", [False, True], ids=["same-example", "new-example"])
def test_an_upgrade_keeps_the_administrators_conffile(dpkg, tmp_path, upstream_changed):
    """An administrator's edit survives an upgrade: silently when the packaged file did not
    change; when it did, under apt's non-interactive choice (--force-confold) with the new
    one beside it as .dpkg-dist."""
    old = previous_version(dpkg, tmp_path, "# an older example\nARCHIVE=\n" if upstream_changed else None)
    run("dpkg", "-i", str(old))
    assert installed_status() == "ii 0.0.1"
    mine = "# edited by the administrator\nARCHIVE=/data/run42.npz\nOPTIONS=allow_other\n"
    CONFFILE.write_text(mine)
    force = ["--force-confdef", "--force-confold"] if upstream_changed else []
    run("dpkg", *force, "-i", str(dpkg))
    assert installed_status() == f"ii {VERSION}"
    assert CONFFILE.read_text() == mine
    dist = CONFFILE.with_name(CONFFILE.name + ".dpkg-dist")
    assert dist.exists() == upstream_changed
    if upstream_changed:
        assert dist.read_bytes() == (REPO / "systemd" / "npzfs.env.example").read_bytes()
    run("dpkg", "-P", "npzfs")
    assert not CONFFILE.parent.exists()


def test_the_release_check_names_an_artefact_of_another_version(deb, tmp_path):
    """scripts/release's version check (scripts/artefacts.py) on a release whose .deb says an
    older version: it fails and names that artefact; on the real release it passes."""
    release = REPO / "dist" / "release"
    if not (release / "SHA256SUMS").is_file():
        missing(f"{release} is missing: run scripts/release")
    run("sha256sum", "-c", "SHA256SUMS", cwd=release)
    check = [sys.executable, str(REPO / "scripts" / "artefacts.py"), "check"]
    run(*check, str(release), VERSION)
    bad = tmp_path / "release"
    bad.mkdir()
    for f in release.glob("npzfs-*"):
        shutil.copy(f, bad)
    shutil.copy(previous_version(deb, tmp_path, None), bad / f"npzfs_{VERSION}_amd64.deb")
    out = run(*check, str(bad), VERSION, check=False)
    assert out.returncode == 1
    assert f"npzfs_{VERSION}_amd64.deb control says 0.0.1" in out.stderr, out.stderr
