"""Seed inputs for the fuzz targets: real archives numpy and Python's zipfile write (every
method, zip64, data descriptors, directories, odd names), written to fuzz/corpus/<target>/.

    .venv/bin/python fuzz/seeds.py
"""
import io
import os
import struct
import sys
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def npz(compressed, **arrays):
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def zipped(members, method=zipfile.ZIP_STORED, force_zip64=False, stream=False):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members:
            if stream:  # no seeking back: sizes go into a data descriptor
                with z.open(zipfile.ZipInfo(name), "w", force_zip64=force_zip64) as f:
                    f.write(data)
            else:
                z.writestr(name, data)
    return buf.getvalue()


class Unseekable(io.RawIOBase):
    def __init__(self):
        self.out = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.out += b
        return len(b)


def streamed(members):
    raw = Unseekable()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            with z.open(name, "w") as f:
                f.write(data)
    return bytes(raw.out)


def archive_seeds():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 100, 300, dtype=np.int16)
    b = np.arange(12, dtype=np.float64).reshape(3, 4)
    small = [("x.npy", a.tobytes()), ("d/y.npy", b.tobytes())]
    yield "savez", npz(False, a=a, b=b)
    yield "savez_compressed", npz(True, a=a, b=b)
    yield "empty_arrays", npz(True, e=np.zeros(0, np.uint8), s=np.float32(1.5))
    for name, method in [("stored", zipfile.ZIP_STORED), ("deflated", zipfile.ZIP_DEFLATED),
                         ("bzip2", zipfile.ZIP_BZIP2), ("lzma", zipfile.ZIP_LZMA)]:
        yield name, zipped(small, method)
    yield "zip64", zipped(small, zipfile.ZIP_DEFLATED, force_zip64=True, stream=True)
    yield "descriptor", streamed(small)
    yield "names", zipped([("dir/", b""), ("../up.npy", b"1"), ("/abs.npy", b"2"),
                           ("a\\b.npy", b"3"), ("x", b"4"), ("x/y", b"5"), ("x", b"6"),
                           ("\u00e9t\u00e9.npy", b"7")])
    yield "prefixed", b"#!/bin/sh\nexit 0\n" + npz(False, a=a)
    yield "empty_zip", zipped([])
    yield "comment", zipped(small)[:-2] + struct.pack("<H", 5) + b"hello"


def read_path_seeds():
    # shape, seed, stored_len, deflated_len, then batches of (which, offset, size)
    for shape in range(8):
        head = bytes([shape, 42]) + struct.pack("<II", 70_000, 300_000)
        ops = b"".join(bytes([7]) + b"".join(
            bytes([w]) + struct.pack("<II", o, s)
            for w, o, s in [(1, 250_000 + i, 65536), (0, i * 4099, 4096), (1, i * 77_777, 131072),
                            (2, 0, 10), (1, 0xfffffff, 1 << 20), (0, 69_999, 2), (1, i, 1),
                            (1, 3_000_000 - i, 1 << 20)]) for i in range(3))
        yield f"shape{shape}", head + ops


def main():
    for target, seeds in [("archive", archive_seeds()), ("read_path", read_path_seeds())]:
        out = os.path.join(HERE, "corpus", target)
        os.makedirs(out, exist_ok=True)
        for name, data in seeds:
            with open(os.path.join(out, name), "wb") as f:
                f.write(data)
            print(f"{target}/{name}: {len(data)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
