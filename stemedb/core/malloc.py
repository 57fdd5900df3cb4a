"""Give the memory of outgrown index arrays back to the system (glibc only).

The engine's indexes are numpy arrays that grow by copying: a column doubles,
a sorted run is merged into a new array every 65,536 additions.  glibc hands
out such blocks with ``mmap`` and returns them on ``free`` -- but only while a
block is above its *mmap threshold*, and that threshold is dynamic: each time
an mmapped block is freed, glibc raises the threshold to that block's size
(up to 32 MiB).  After the first few merges every later array of up to 32 MiB
therefore comes from the heap arenas instead, and the freed copies stay in
the process as free heap that a long-running server never returns.

Measured with ``python -m bench.soak --mixed 150`` (a real server, 2 writer
and 6 reader threads): the worker's heap held 339 MiB at 555,545 assertions
with glibc's default, and 204 MiB at 558,555 with the threshold pinned
(``bench/results/soak-2026-11-26-session4.md``).

Pinning the threshold (any ``mallopt(M_MMAP_THRESHOLD, n)`` turns the dynamic
adjustment off) keeps blocks of ``n`` bytes and more on ``mmap``, so a freed
array is returned at once.  The cost is an ``mmap``/``munmap`` pair (and fresh
page faults) per large allocation, which the engine makes rarely: a large
array is an index that grows, not a per-query temporary.

The server's worker calls :func:`pin_mmap_threshold` once at start; an
embedded application that keeps a store open for long may call it too.
It changes the whole process's allocator, which is why the engine does not
call it on its own.
"""
from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["DEFAULT_THRESHOLD", "pin_mmap_threshold"]

M_MMAP_THRESHOLD = -3          # <malloc.h>
# glibc's own starting value: small and medium blocks stay on the heap as
# before, every array of 128 KiB and more is mmapped and returned on free.
DEFAULT_THRESHOLD = 128 * 1024


def pin_mmap_threshold(nbytes: int = DEFAULT_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold at ``nbytes``; False where the C library has
    no ``mallopt`` (musl, macOS) or refuses the value, True when it is set."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, int(nbytes)) == 1
