"""The Python package as an ordinary user (through fusermount3), inside an unprivileged user
namespace, and where FUSE cannot be had at all (an ordinary user with /dev/fuse closed to
them): stored members are then mapped straight from the archive and compressed ones from the
user's cache, with one warning."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from users import dev_fuse_mode, run_as, second_user, shared_dir

# Run as the second user: loads every member, reports what it got as JSON on its last line.
LOAD = """
import json, sys, warnings, numpy as np, npzfs
out = {"warnings": [], "arrays": {}, "errors": {}}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with npzfs.load(sys.argv[1]) as z, npzfs.load(sys.argv[1]) as again:
        out["mounted"] = z.mount is not None
        for key in z.files:
            try:
                a = z[key]
                out["arrays"][key] = [type(a).__name__, str(a.dtype), list(a.shape), a.tolist()]
            except npzfs.FuseUnavailableError as e:
                out["errors"][key] = [type(e).__name__, str(e), e.exit_code]
    out["warnings"] = [str(w.message) for w in caught]
try:
    npzfs.mount(sys.argv[1]).unmount()
    out["mount"] = "ok"
except OSError as e:
    out["mount"] = [type(e).__name__, str(e), getattr(e, "exit_code", None)]
print(json.dumps(out))
"""

WANT = {
    "ints": np.arange(1000, dtype=np.int32),
    "grid": np.arange(60.0).reshape(6, 10).T,  # Fortran order
    "zero_d": np.array(2.5),
}
DEFLATED = {"squeezed": np.arange(5000, dtype=np.int64) // 3}


@pytest.fixture
def shared():
    with shared_dir() as d:
        archive = d / "mixed.npz"
        np.savez(d / "stored.npz", **WANT)
        np.savez_compressed(d / "deflated.npz", **DEFLATED)
        # One archive with both kinds of member, as np.savez and np.savez_compressed write them.
        import zipfile

        with zipfile.ZipFile(archive, "w") as out:
            for name in ("stored.npz", "deflated.npz"):
                with zipfile.ZipFile(d / name) as src:
                    for info in src.infolist():
                        out.writestr(info, src.read(info))
        os.chmod(archive, 0o644)
        yield d, archive


def load_as_user(archive: Path, wrap=()) -> dict:
    run = run_as(second_user(), LOAD, str(archive), wrap=wrap)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


def assert_arrays(got: dict, want: dict):
    for key, a in want.items():
        kind, dtype, shape, values = got[key]
        assert kind == "memmap", key
        assert (dtype, shape) == (str(a.dtype), list(a.shape)), key
        np.testing.assert_array_equal(np.array(values), a)


def test_an_ordinary_user_loads_and_mounts(shared):
    _, archive = shared
    got = load_as_user(archive)
    assert got["mounted"] and not got["warnings"] and not got["errors"]
    assert_arrays(got["arrays"], {**WANT, **DEFLATED})
    assert got["mount"] == "ok"


def test_an_ordinary_user_in_a_user_namespace_loads_without_passthrough(shared):
    _, archive = shared
    # Inside, the daemon is "root" and calls mount(2) itself; passthrough is refused there
    # and complete cache files are served through the daemon.
    got = load_as_user(archive, wrap=("unshare", "-Urm"))
    assert got["mounted"] and not got["warnings"] and not got["errors"]
    assert_arrays(got["arrays"], {**WANT, **DEFLATED})


def test_without_fuse_members_are_mapped_from_the_archive_and_the_cache(shared):
    _, archive = shared
    with dev_fuse_mode(0o600):
        got = load_as_user(archive)
    user = second_user()
    why = (
        f"/dev/fuse is not accessible to user {user} (mode 0600, owner root, group root); as "
        "root, make it usable by everyone as distributions ship it: chmod 0666 /dev/fuse"
    )
    assert not got["mounted"]
    assert len(got["warnings"]) == 1, got["warnings"]
    assert why in got["warnings"][0] and "mapped straight from the archive" in got["warnings"][0]
    # Stored members from the archive, the compressed one decoded into the user's own cache.
    assert_arrays(got["arrays"], {**WANT, **DEFLATED})
    assert not got["errors"], got["errors"]
    kind, message, code = got["mount"]
    assert (kind, code) == ("FuseUnavailableError", 7)
    assert message.startswith("cannot mount on /tmp/npzfs-") and message.endswith(why)


def test_an_archive_the_user_cannot_read_is_a_permission_error(shared):
    d, archive = shared
    os.chmod(archive, 0o600)
    run = run_as(second_user(), "import sys, npzfs; npzfs.load(sys.argv[1])", str(archive))
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith("PermissionError: [Errno 13]")
