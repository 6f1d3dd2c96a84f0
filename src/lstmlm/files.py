"""The permission bits a new file would get from `open()` here (0666 less the umask).

`tempfile.mkstemp` creates files 0600 whatever the umask. Files written through a temporary
name (checkpoints, downloads) take these bits before they are renamed into place, so a
run folder reads like any other folder of the user's.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_file_mode() -> int:
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it (Linux /proc); else the common 022."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def chmod_like_new(fd: int) -> None:
    """Give the open file `fd` the bits of a newly created file (where chmod exists)."""
    if hasattr(os, "fchmod"):
        os.fchmod(fd, default_file_mode())
