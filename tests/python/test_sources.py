"""A dataset of shards (np.savez and np.savez_compressed) mounted as a directory through the
installed package: every member of every shard through np.load(mmap_mode='r') is what np.load
of the shard says, shards added while mounted appear, and the package's errors for a
directory source."""

import os
from pathlib import Path

import numpy as np
import pytest
from arrays import ARRAYS, assert_same
from conftest import wait_until

import npzfs


def write_dataset(root: Path) -> dict:
    """train/shard_<i>.npz (stored and compressed alternately) and val/nested/v.npz; returns
    the arrays by mounted path."""
    want = {}
    names = sorted(ARRAYS)
    for i in range(6):
        path = root / "train" / f"shard_{i:04d}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {name: ARRAYS[name] for name in names[i::6]}
        (np.savez_compressed if i % 2 else np.savez)(path, **arrays)
        for name, a in arrays.items():
            want[f"train/shard_{i:04d}/{name}.npy"] = a
    nested = root / "val" / "nested"
    nested.mkdir(parents=True)
    np.savez(nested / "v.npz", ramp=np.arange(1000, dtype=np.float32))
    want["val/nested/v/ramp.npy"] = np.arange(1000, dtype=np.float32)
    return want


def test_every_member_of_every_shard_loads_as_np_load_says(tmp_path):
    want = write_dataset(tmp_path / "ds")
    with npzfs.mount(tmp_path / "ds", cache_dir=tmp_path / "cache") as m:
        assert sorted(os.listdir(m.path)) == ["train", "val"]
        assert sorted(os.listdir(m.path / "train")) == [f"shard_{i:04d}" for i in range(6)]
        for rel, a in want.items():
            assert_same(np.load(m.path / rel, mmap_mode="r", allow_pickle=False), a)
        # A shard written while mounted is there within about a second.
        np.savez(tmp_path / "ds" / "train" / "late.npz", z=np.zeros(3))
        assert wait_until(lambda: (m.path / "train" / "late" / "z.npy").exists(), 5)
        assert_same(np.load(m.path / "train" / "late" / "z.npy", mmap_mode="r"), np.zeros(3))


def test_a_missing_or_unreadable_directory_raises_the_builtin_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        npzfs.mount(tmp_path / "nothing")
    if os.geteuid() != 0:
        closed = tmp_path / "closed"
        closed.mkdir(mode=0)
        with pytest.raises(PermissionError):
            npzfs.mount(closed)
