"""One array per dtype and layout that every numpy test carries: the numpy tier through
the mount, and the Python package."""

import numpy as np

RNG = np.random.default_rng(20261125)


def arrays():
    """One array per dtype and layout the core suite must carry."""
    a = {
        "bool": RNG.integers(0, 2, 1000).astype(bool),
        "float16": RNG.standard_normal(1000).astype(np.float16),
        "float32": RNG.standard_normal((100, 10)).astype(np.float32),
        "float64": RNG.standard_normal(12345),
        "complex64": (RNG.standard_normal(100) + 1j * RNG.standard_normal(100)).astype(np.complex64),
        "complex128": RNG.standard_normal(100) + 1j * RNG.standard_normal(100),
        "datetime64": np.arange("2020-01-01", "2020-03-01", dtype="datetime64[s]"),
        "timedelta64": np.arange(100).astype("timedelta64[ms]"),
        "unicode": np.array(["alpha", "béta", "γάμμα", ""] * 10),
        "bytes": np.array([b"a", b"bc", b"\x00def"] * 10),
        "structured": np.array(
            [(i, i * 0.5, f"n{i}") for i in range(50)],
            dtype=[("id", "<i4"), ("x", "<f8"), ("name", "U8")],
        ),
        "big_endian_i4": np.arange(1000, dtype=">i4"),
        "big_endian_f8": RNG.standard_normal(100).astype(">f8"),
        "fortran": np.asfortranarray(RNG.standard_normal((64, 33))),
        "zero_d": np.array(3.25),
        "empty": np.zeros(0, dtype=np.int32),
        "empty_2d": np.zeros((0, 5)),
        "nested/dir/deep": np.arange(10),
    }
    for bits in (8, 16, 32, 64):
        a[f"int{bits}"] = RNG.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1, 777, dtype=f"int{bits}")
        a[f"uint{bits}"] = RNG.integers(0, 2**bits - 1, 777, dtype=f"uint{bits}", endpoint=True)
    return a


ARRAYS = arrays()


def assert_same(got, want):
    """Same dtype, shape, memory order and values."""
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert got.flags.f_contiguous == want.flags.f_contiguous
    np.testing.assert_array_equal(got, want)
