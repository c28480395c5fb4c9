"""Writes examples/demo.npz: stored members (as np.savez writes) and deflated ones (as
np.savez_compressed writes) in one archive, with fixed content."""

import io
import sys
import zipfile
from pathlib import Path

import numpy as np


def npy_bytes(array):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array)
    return buf.getvalue()


def main(out: Path):
    rng = np.random.default_rng(2026)
    stored = {
        "weights.npy": rng.standard_normal((64, 32)).astype(np.float32),
        "labels.npy": np.arange(1000, dtype=np.int64) % 10,
        "meta/names.npy": np.array(["alpha", "beta", "gamma"]),
    }
    deflated = {
        "compressed/counts.npy": (np.arange(20000, dtype=np.int32) // 7),
        "compressed/grid.npy": np.indices((50, 50)).sum(axis=0).astype(np.int16),
    }
    with zipfile.ZipFile(out, "w") as z:
        for name, arr in stored.items():
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), npy_bytes(arr))
        for name, arr in deflated.items():
            info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, npy_bytes(arr))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("demo.npz"))
