"""npzfs: memory-map the arrays of NumPy ``.npz`` archives.

``np.load("data.npz", mmap_mode="r")`` reads every array into memory: numpy cannot map the
members of a ZIP archive. npzfs mounts the archive read-only (a FUSE daemon, shipped in this
package), so that each member is a regular file that numpy maps::

    import npzfs
    with npzfs.load("data.npz") as z:       # like np.load(npz), but every array is a memmap
        w = z["weights"]                    # nothing read yet
    with npzfs.mount("data.npz") as m:      # a live mount in a private temporary directory
        w = np.load(m.path / "weights.npy", mmap_mode="r")

``npzfs.info("data.npz")`` describes every member (dtype, shape, method, sizes) without
reading its data. The ``npzfs`` command (and ``python -m npzfs``) is the daemon itself:
``npzfs --help``.
"""

from importlib.metadata import PackageNotFoundError, version

from ._binary import find_npzfs_bin
from ._errors import Error, FuseUnavailableError
from ._info import info
from ._mount import Mount, Options, mount
from ._npz import NpzFile, load

try:
    __version__ = version("npzfs")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Error",
    "FuseUnavailableError",
    "Mount",
    "NpzFile",
    "Options",
    "find_npzfs_bin",
    "info",
    "load",
    "mount",
]
