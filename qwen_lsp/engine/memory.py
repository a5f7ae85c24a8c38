"""How freed memory goes back to the system: saved prompt states are megabytes each and come and go.

glibc serves a large allocation from its own mapping and unmaps it when it is freed, but after the
first such free it raises that threshold (up to 32 MB), so later prompt states come from the heap,
where freed ones stay part of the process: the server's resident memory grew by ~20 MB over 60
places with a full prompt cache. A fixed threshold keeps every state in a mapping of its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 1 << 20


def return_large_blocks_promptly() -> bool:
    """Allocations of 1 MiB and more are mapped and unmapped on their own (glibc only; elsewhere
    nothing changes). True if the allocator took the setting."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
