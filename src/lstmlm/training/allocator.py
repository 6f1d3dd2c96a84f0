"""Keep freed memory inside the process while training (glibc malloc settings).

Every training step allocates and frees the same large buffers: gradients, the
decoder's scores, bf16 casts of the weights (a few MB to tens of MB each). With its
default, self-adjusting settings glibc's malloc hands such memory back to the kernel
when the free space at the top of the heap grows past its trim threshold, and the next
step gets it back through page faults (each a 4 KB page zeroed by the kernel).

`keep_freed_memory()` fixes the mmap threshold at glibc's maximum (32 MB on 64-bit
systems; larger blocks are still mapped and unmapped) and turns trimming off: what the
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` environment variables do at
process start. Peak RSS stays what the largest step needs. The CLI calls it for
``lstmlm train``; library users decide for their own process.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)  # glibc's upper limit
NO_TRIM = 2**31 - 1  # mallopt takes an int


def keep_freed_memory() -> bool:
    """Set the two thresholds; True when they were set (glibc only).

    Does nothing when any ``MALLOC_*`` environment variable is set: the user's
    settings win.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name.startswith("MALLOC_") for name in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # this process's C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    mmap_set = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
    return mmap_set and mallopt(M_TRIM_THRESHOLD, NO_TRIM) == 1
