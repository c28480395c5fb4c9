"""Every install line of the README, run as written: from the repository's root, as a new user
would type it, each into a place of its own, then the npzfs it installed asked its version and
put to work.

The lines are the README's code lines that install npzfs or make what installs it. Each
command has a runner below; a line without one fails, and so does a runner whose line the
README no longer has, so the README cannot gain an install line that no test ran. Where to
install is given the way each tool takes it from its environment (a new venv first on PATH
for pip, CARGO_INSTALL_ROOT, DESTDIR), never by changing the line. As root, `sudo` is a shim
that runs its command as it is: root needs no sudo, and sudo's own would drop DESTDIR.
`scripts/release` is the line scripts/test runs before this suite; its test checks what it
left. `pip install npzfs` is not run: nothing is published yet, and its line must say so.
"""

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest
from conftest import REPO
# dpkg is a fixture: a machine without the package, purged again after the test.
from debs import DEB, VERSION, WHEEL, built, dpkg, installed_status, missing, run

README = REPO / "README.md"
INSTALLS = re.compile(r"^(sudo )?(dpkg -i|pip install|cargo install|make\b|scripts/release\b)")
# A build from a new venv (maturin, numpy from the package index) or of the release binary.
BUILD_TIMEOUT = 1200


def install_lines() -> List[Tuple[str, str]]:
    """(command, comment) of every README code line that installs npzfs, each command once."""
    lines: Dict[str, str] = {}
    for line in README.read_text().splitlines():
        if line.startswith("    "):
            command, _, comment = line.strip().partition("  #")
            if INSTALLS.match(command.strip()):
                lines.setdefault(command.strip(), comment.strip(" #"))
    return list(lines.items())


def shell(line: str, tmp: Path, path: Tuple[Path, ...] = (), **env: str) -> None:
    """Runs `line` with bash from the repository's root; `path` goes first on PATH. Fails the
    test with its output if the line fails."""
    if "sudo " in line:
        if os.geteuid() != 0:
            missing(f"{line!r} needs root")
        shim = tmp / "shim"
        shim.mkdir(exist_ok=True)
        (shim / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
        (shim / "sudo").chmod(0o755)
        path = (shim, *path)
    full = {
        **os.environ,
        "PATH": os.pathsep.join([*map(str, path), os.environ["PATH"]]),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        **env,
    }
    done = subprocess.run(
        ["bash", "-c", line], cwd=REPO, env=full, capture_output=True, text=True,
        timeout=BUILD_TIMEOUT, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"{line!r}: exit {done.returncode}\n{done.stdout}{done.stderr}"


def says_its_version(binary: Path) -> None:
    out = run(str(binary), "--version").stdout
    assert out.split() == ["npzfs", VERSION], out


def lists_an_archive(binary: Path, tmp: Path) -> None:
    """The installed binary at work: `--list` of an np.savez_compressed archive names its
    arrays."""
    np.savez_compressed(tmp / "data.npz", weights=np.arange(12.0).reshape(3, 4))
    out = run(str(binary), "--list", str(tmp / "data.npz")).stdout
    row = next((line.split() for line in out.splitlines() if line.startswith("weights.npy")), [])
    assert row[:4] == ["weights.npy", "<f8", "[3,4]", "deflated"], out


def into_a_new_venv(line: str, tmp: Path) -> None:
    """A pip line in a venv of its own (numpy comes from the package index), then the
    Python package loads an archive from it through a mount."""
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    shell(line, tmp, (venv / "bin",))
    says_its_version(venv / "bin" / "npzfs")
    np.savez(tmp / "data.npz", x=np.arange(1000, dtype=np.int32))
    script = (
        "import sys, numpy as np, npzfs\n"
        "with npzfs.load(sys.argv[1]) as z:\n"
        "    x = z['x']\n"
        "    assert isinstance(x, np.memmap) and int(x.sum()) == 499500, x\n"
        "print(npzfs.__version__, npzfs.__file__, npzfs.find_npzfs_bin())\n"
    )
    out = run(str(venv / "bin" / "python"), "-c", script, str(tmp / "data.npz"), cwd=tmp).stdout
    version, module, binary = out.split()
    assert version == VERSION and module.startswith(f"{venv}/"), out
    assert binary == str(venv / "bin" / "npzfs"), out


def the_package(line: str, tmp: Path, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("dpkg")
    shell(line, tmp)
    assert installed_status() == f"ii {VERSION}"
    says_its_version(Path("/usr/bin/npzfs"))
    lists_an_archive(Path("/usr/bin/npzfs"), tmp)


def the_release_wheel(line: str, tmp: Path, request: pytest.FixtureRequest) -> None:
    built(WHEEL, "scripts/wheel")
    into_a_new_venv(line, tmp)


def a_checkout(line: str, tmp: Path, request: pytest.FixtureRequest) -> None:
    into_a_new_venv(line, tmp)


def cargo_install(line: str, tmp: Path, request: pytest.FixtureRequest) -> None:
    root = tmp / "cargo"
    shell(line, tmp, CARGO_INSTALL_ROOT=str(root))
    says_its_version(root / "bin" / "npzfs")
    lists_an_archive(root / "bin" / "npzfs", tmp)


def make_install(line: str, tmp: Path, request: pytest.FixtureRequest) -> None:
    dest = tmp / "dest"
    shell(line, tmp, DESTDIR=str(dest))
    prefix = dest / "usr" / "local"
    says_its_version(prefix / "bin" / "npzfs")
    assert ".TH npzfs 1 " in (prefix / "share" / "man" / "man1" / "npzfs.1").read_text()
    unit = (prefix / "lib" / "systemd" / "system" / "npzfs@.service").read_text()
    assert "ExecStart=/usr/local/bin/npzfs -f " in unit


def the_release(line: str, tmp: Path, request: pytest.FixtureRequest) -> None:
    """Run by scripts/test before this suite: what it left."""
    built(REPO / "dist" / "release" / "SHA256SUMS", line)
    run("sha256sum", "-c", "SHA256SUMS", cwd=REPO / "dist" / "release")
    built(DEB, line)
    built(WHEEL, line)


# Lines that cannot run yet, each with what its README comment must say: not run.
NOT_YET = {"pip install npzfs": "not yet"}

RUNNERS: Dict[str, Callable[[str, Path, pytest.FixtureRequest], None]] = {
    "sudo dpkg -i dist/npzfs_*_amd64.deb": the_package,
    "pip install dist/npzfs-*.whl": the_release_wheel,
    "pip install .": a_checkout,
    "cargo install --locked --path .": cargo_install,
    "make && sudo make install": make_install,
    "scripts/release": the_release,
}


def test_the_readme_leads_with_lines_that_work_and_each_line_has_a_runner():
    lines = install_lines()
    commands = [command for command, _ in lines]
    assert sorted(commands) == sorted([*RUNNERS, *NOT_YET]), "a line without a runner, or the reverse"
    for command, comment in lines:
        if command in NOT_YET:
            assert NOT_YET[command] in comment, f"{command!r} does not say it is not published"
    # The first install line a reader meets, and the Install section's first (for servers).
    assert commands[0] in RUNNERS, commands[0]
    section = README.read_text().split("\n## Install\n", 1)[1]
    first = next(line for line in section.splitlines() if line.startswith("    "))
    assert RUNNERS.get(first.partition("  #")[0].strip()) is the_package, first


RUNNABLE = [command for command, _ in install_lines() if command not in NOT_YET]


@pytest.mark.parametrize("command", RUNNABLE, ids=RUNNABLE)
def test_the_readme_install_line_works_as_written(command, tmp_path, request):
    if command not in RUNNERS:
        pytest.fail(f"the README's {command!r} has no runner in {__file__}")
    RUNNERS[command](command, tmp_path, request)
