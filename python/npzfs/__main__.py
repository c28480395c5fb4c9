"""``python -m npzfs``: the npzfs command, with the same arguments, output and exit codes."""

import os
import sys

from ._binary import find_npzfs_bin


def main() -> None:
    """Replace this process with the npzfs binary, passing every argument on."""
    npzfs = find_npzfs_bin()
    os.execv(npzfs, [npzfs, *sys.argv[1:]])


if __name__ == "__main__":
    main()
