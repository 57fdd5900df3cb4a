"""stemedb.core.malloc: a pinned mmap threshold returns freed arrays to the system.

Each case runs in a fresh interpreter: the threshold is process-wide state.
"""
import ctypes.util
import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, ctypes.util, sys
from stemedb.core.malloc import pin_mmap_threshold
pinned = pin_mmap_threshold() if sys.argv[1] == "pin" else None
libc = ctypes.CDLL(ctypes.util.find_library("c"))
class MI2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MI2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
big = libc.malloc(8 << 20)          # mmapped by any threshold
libc.free(big)                      # glibc's default now raises its threshold to 8 MiB
before = libc.mallinfo2().hblkhd
grown = libc.malloc(4 << 20)        # an index array outgrown later, say
mmapped = libc.mallinfo2().hblkhd - before >= 4 << 20
libc.free(grown)
print(pinned, mmapped)
"""

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None
    or not hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallinfo2"),
    reason="needs glibc 2.33+ (mallinfo2) to observe the allocator")


def probe(mode: str) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True,
                         text=True, timeout=60, check=True)
    return out.stdout.split()


@glibc
def test_pinned_threshold_keeps_large_blocks_on_mmap():
    assert probe("pin") == ["True", "True"]


@glibc
def test_without_the_pin_glibc_moves_them_to_the_heap():
    # The behaviour the pin exists for: after an 8 MiB block is freed, a 4 MiB
    # one comes from the heap, where its memory stays after free.
    assert probe("none") == ["None", "False"]
