"""Nothing left behind: however the Python process that mounted ends (exit, exception,
Ctrl-C, SIGTERM, SIGKILL), as root or as an ordinary user, its mounts go away, their daemons
exit and their temporary mount points are removed, within a couple of seconds."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import is_mounted, wait_until
from test_package import pid_alive
from users import second_user, shared_dir

HOLDER = """
import os, sys, numpy as np, npzfs
z = npzfs.load(sys.argv[1])
a = z["x"]                       # a live map into the mount
m = npzfs.mount(sys.argv[1])
print(os.getpid(), z.mount.path, z.mount.pid, m.path, m.pid, flush=True)
sys.stdin.readline()             # signalled while it waits here, or told to go on
if sys.argv[2] == "exit":
    sys.exit(0)
raise RuntimeError("the job failed")
"""


@pytest.fixture(scope="module")
def archive():
    with shared_dir() as d:
        path = d / "a.npz"
        np.savez_compressed(path, x=np.arange(100_000))
        os.chmod(path, 0o644)
        yield path


CASES = [(how, "root") for how in ("exit", "exception", "ctrl-c", "sigterm", "sigkill")]
CASES += [("exit", "user"), ("sigkill", "user")]


@pytest.mark.parametrize("how,who", CASES)
def test_mounts_go_away_with_their_process(archive, how, who):
    cmd = [sys.executable, "-c", HOLDER, str(archive), how]
    if who == "user":
        cmd = ["runuser", "-u", second_user(), "--", *cmd]
    holder = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a job in a terminal has
    )
    line = holder.stdout.readline().split()
    assert len(line) == 5, holder.communicate()
    python = int(line[0])
    paths, pids = [Path(line[1]), Path(line[3])], [int(line[2]), int(line[4])]
    assert all(is_mounted(p) for p in paths)
    if how in ("exit", "exception"):
        holder.stdin.write("go\n")
        holder.stdin.flush()
    elif how == "ctrl-c":
        os.killpg(holder.pid, signal.SIGINT)  # what the terminal sends to the job's group
    else:
        os.kill(python, signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    holder.wait(timeout=30)
    for p, pid in zip(paths, pids):
        assert wait_until(lambda: not is_mounted(p), 5), f"{how}: {p} still mounted"
        assert wait_until(lambda: not p.exists(), 5), f"{how}: {p} left behind"
        assert wait_until(lambda: not pid_alive(pid), 5), f"{how}: daemon {pid} still running"
