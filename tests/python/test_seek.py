"""Seek points through a real mount: np.load(mmap_mode='r') of a deflated member larger than
the cache, random rows exact, the cache within its bound."""

from pathlib import Path

import numpy as np

from conftest import allocated, mounted, wait_until


def test_a_member_larger_than_the_cache_maps_with_random_rows_exact(tmp_path):
    rows = 24_000
    rng = np.random.default_rng(11)
    # 24,000 rows of 256 float32 (24 MiB), smooth enough to deflate to about a third.
    base = np.cumsum(rng.normal(size=(rows, 256)), axis=0).astype(np.float32).round(1)
    npz = tmp_path / "big.npz"
    np.savez_compressed(npz, x=base)
    cache = tmp_path / "cache"
    opts = ("-o", f"cache_dir={cache},cache_size=6M")

    # The first read decodes it from the start and writes its seek index; larger than the
    # cache, its data is deleted on the last close, the index stays.
    with mounted(npz, tmp_path / "m1", *opts) as mnt:
        assert np.array_equal(np.load(mnt / "x.npy"), base)
        assert wait_until(lambda: any(p.name.endswith(".seek") for p in cache.glob("*/*")))
    # Unmounted, the daemon deletes its partial files: only the index stays.
    assert wait_until(lambda: allocated(cache) == 0)

    # A fresh mount: random rows through mmap, each costing about one span.
    with mounted(npz, tmp_path / "m2", *opts) as mnt:
        a = np.load(mnt / "x.npy", mmap_mode="r")
        assert isinstance(a, np.memmap) and a.shape == base.shape
        # The bound, plus the spans being filled at that moment (kernel readahead runs some
        # beside the read that returned; they are 1-2 MiB here), which evict when they land.
        slack = 4 << 20
        for i in np.random.default_rng(5).integers(0, rows, 300):
            assert np.array_equal(a[i], base[i]), i
            assert allocated(cache) <= (6 << 20) + slack
        # Every row, in order, through the same map: the whole member within 6 MiB of cache.
        assert np.array_equal(np.asarray(a), base)
        assert wait_until(lambda: allocated(cache) <= 6 << 20), allocated(cache)
        del a
