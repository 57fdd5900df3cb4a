"""BLAKE3's SIMD implementations in the compiled ``_canon`` against the pure
twin's hash (the ``blake3`` package).

On x86-64 Linux ``setup.py`` links upstream's SSE2/SSE4.1/AVX2/AVX-512
assembly into ``_canon`` next to the portable C, and ``blake3_dispatch.c``
picks one at run time by cpuid (stemedb/core/blake3/README.md).  So:

* ``_canon.blake3_digest`` (whatever the dispatch picked on this CPU) equals
  the package's digest for every length 0..3,100 (every block and chunk
  boundary of the single-chunk inputs StemeDB hashes, and the first
  parents), at unaligned starts, and on large inputs that take the
  many-chunks-at-once path;
* each implementation the dispatch can pick on this CPU is also called
  directly (through ctypes on the extension's own exported symbols), so one
  the dispatch does not pick here is still checked: the hash of a one-chunk
  input built from its ``compress_in_place``/``compress_xof`` equals the
  package's for every length 0..1,024, and a many-chunk input hashed by its
  ``hash_many`` (then its parents by its own compress) equals the package's;
* on x86-64 Linux the assembly must be in the build (a setup.py that silently
  fell back to the portable build would fail here).

tests/unit/test_blake3_c.py holds the official test vectors and prepare_many.
"""
from __future__ import annotations

import ctypes
import platform
import random
import sys

import blake3
import pytest

try:
    from stemedb.core import _canon as C
except ImportError:  # not built: nothing to compare
    C = None

needs_twin = pytest.mark.skipif(C is None, reason="stemedb.core._canon is not built")

BLOCK, CHUNK = 64, 1024
CHUNK_START, CHUNK_END, PARENT, ROOT = 1, 2, 4, 8
IV = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
      0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)

X86_64_LINUX = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


FLAGS = cpu_flags()
# what each implementation needs, as blake3_dispatch.c checks it (AVX-512: F and VL)
NEEDS = {"portable": set(), "sse2": {"sse2"}, "sse41": {"sse4_1"}, "avx2": {"avx2"},
         "avx512": {"avx512f", "avx512vl"}}
WITH_COMPRESS = ("portable", "sse2", "sse41", "avx512")     # AVX2 has hash_many only
WITH_HASH_MANY = ("portable", "sse2", "sse41", "avx2", "avx512")


def lib():
    return ctypes.CDLL(C.__file__)


def fn(name: str):
    f = getattr(lib(), name, None)
    if f is None:
        if X86_64_LINUX or name.endswith("_portable"):
            pytest.fail(f"{name} is not in {C.__file__}: setup.py did not build it")
        pytest.skip(f"{name} is not built on this platform")
    return f


def runnable(impl: str) -> None:
    if not NEEDS[impl] <= FLAGS:
        pytest.skip(f"this CPU lacks {sorted(NEEDS[impl] - FLAGS)} for {impl}")


def sample(n: int, seed: int = 8) -> bytes:
    return random.Random(seed).randbytes(n)


def compress_fns(impl: str):
    in_place = fn(f"blake3_compress_in_place_{impl}")
    in_place.restype = None
    in_place.argtypes = [ctypes.POINTER(ctypes.c_uint32), ctypes.c_char_p, ctypes.c_uint8,
                         ctypes.c_uint64, ctypes.c_uint8]
    xof = fn(f"blake3_compress_xof_{impl}")
    xof.restype = None
    xof.argtypes = [ctypes.POINTER(ctypes.c_uint32), ctypes.c_char_p, ctypes.c_uint8,
                    ctypes.c_uint64, ctypes.c_uint8, ctypes.c_char_p]
    return in_place, xof


def block_of(data: bytes) -> bytes:
    return data + bytes(BLOCK - len(data))


def one_chunk_hash(impl: str, data: bytes) -> bytes:
    """BLAKE3 of at most one chunk, every compression by ``impl``'s own code."""
    assert len(data) <= CHUNK
    in_place, xof = compress_fns(impl)
    cv = (ctypes.c_uint32 * 8)(*IV)
    blocks = [data[i:i + BLOCK] for i in range(0, len(data), BLOCK)] or [b""]
    for i, b in enumerate(blocks[:-1]):
        in_place(cv, block_of(b), BLOCK, 0, CHUNK_START if i == 0 else 0)
    out = ctypes.create_string_buffer(64)
    last = blocks[-1]
    xof(cv, block_of(last), len(last),
        0, (CHUNK_START if len(blocks) == 1 else 0) | CHUNK_END | ROOT, out)
    return out.raw[:32]


def chunk_cvs(impl: str, data: bytes, counter: int) -> bytes:
    """The chaining values of ``data``'s whole chunks, the first numbered
    ``counter``, by one call of ``impl``'s hash_many (as blake3.c calls it)."""
    k = len(data) // CHUNK
    hash_many = fn(f"blake3_hash_many_{impl}")
    hash_many.restype = None
    hash_many.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t, ctypes.c_size_t,
                          ctypes.POINTER(ctypes.c_uint32), ctypes.c_uint64, ctypes.c_bool,
                          ctypes.c_uint8, ctypes.c_uint8, ctypes.c_uint8, ctypes.c_char_p]
    buf = ctypes.create_string_buffer(data, len(data))
    base = ctypes.addressof(buf)
    inputs = (ctypes.c_char_p * k)(*[ctypes.c_char_p(base + i * CHUNK) for i in range(k)])
    out = ctypes.create_string_buffer(32 * k)
    key = (ctypes.c_uint32 * 8)(*IV)
    hash_many(inputs, k, CHUNK // BLOCK, key, counter, True, 0, CHUNK_START, CHUNK_END, out)
    return out.raw


def many_chunk_hash(impl: str, compress_impl: str, data: bytes) -> bytes:
    """BLAKE3 of whole chunks (at least two): their chaining values by
    ``impl``'s hash_many in one call, the tree above them by
    ``compress_impl``'s compressions."""
    k = len(data) // CHUNK
    assert k >= 2 and len(data) == k * CHUNK
    raw = chunk_cvs(impl, data, 0)
    cvs = [raw[32 * i:32 * i + 32] for i in range(k)]
    in_place, xof = compress_fns(compress_impl)

    def parent(left: bytes, right: bytes) -> bytes:
        cv = (ctypes.c_uint32 * 8)(*IV)
        in_place(cv, left + right, BLOCK, 0, PARENT)
        return bytes(cv)

    def subtree(cs: list[bytes]) -> bytes:    # the left subtree is the largest power of 2
        if len(cs) == 1:
            return cs[0]
        split = 1 << ((len(cs) - 1).bit_length() - 1)
        return parent(subtree(cs[:split]), subtree(cs[split:]))

    split = 1 << ((k - 1).bit_length() - 1)
    root = ctypes.create_string_buffer(64)
    xof((ctypes.c_uint32 * 8)(*IV), subtree(cvs[:split]) + subtree(cvs[split:]), BLOCK, 0,
        PARENT | ROOT, root)
    return root.raw[:32]


# -- the dispatched hash, through the extension's Python entry point ----------

@needs_twin
def test_every_length_to_3100_is_the_packages():
    data = sample(3100)
    for n in range(3101):
        assert C.blake3_digest(data[:n]) == blake3.blake3(data[:n]).digest(), \
            f"BLAKE3 of {n} bytes: the compiled hash must be the blake3 package's"


@needs_twin
def test_unaligned_starts_are_the_packages():
    data = sample(2100, seed=9)
    view = memoryview(data)
    for start in range(1, 17):
        for n in (0, 1, 63, 64, 65, 250, 500, 1000, 1024, 1025, 2048):
            assert C.blake3_digest(view[start:start + n]) == \
                blake3.blake3(data[start:start + n]).digest(), (start, n)


@needs_twin
@pytest.mark.parametrize("n", [4 * CHUNK, 8 * CHUNK + 1, 16 * CHUNK, 17 * CHUNK - 1,
                               31 * CHUNK + 7, 64 * CHUNK, (1 << 20) + 3, 5_000_001])
def test_large_inputs_are_the_packages(n):
    data = sample(n, seed=n)
    assert C.blake3_digest(data) == blake3.blake3(data).digest()


# -- each implementation, called directly ------------------------------------

@needs_twin
def test_the_x86_64_assembly_is_built_on_x86_64_linux():
    if not X86_64_LINUX:
        pytest.skip("the assembly is built on x86-64 Linux only")
    so = lib()
    for name in ("blake3_compress_in_place_sse2", "blake3_compress_in_place_sse41",
                 "blake3_compress_in_place_avx512", "blake3_hash_many_avx2",
                 "blake3_hash_many_avx512"):
        assert hasattr(so, name), f"{name} missing: _canon was built portable-only"


@needs_twin
@pytest.mark.parametrize("impl", WITH_COMPRESS)
def test_each_implementations_one_chunk_hash_is_the_packages(impl):
    runnable(impl)
    data = sample(CHUNK, seed=11)
    for n in range(CHUNK + 1):
        assert one_chunk_hash(impl, data[:n]) == blake3.blake3(data[:n]).digest(), \
            f"{impl}: BLAKE3 of {n} bytes"


@needs_twin
@pytest.mark.parametrize("impl", WITH_HASH_MANY)
@pytest.mark.parametrize("k", [2, 3, 4, 5, 8, 9, 16, 17, 33])
def test_each_implementations_hash_many_is_the_packages(impl, k):
    runnable(impl)
    data = sample(k * CHUNK, seed=k)
    want = blake3.blake3(data).digest()
    assert many_chunk_hash(impl, "portable", data) == want, f"{impl} hash_many, {k} chunks"
    compress = impl if impl in WITH_COMPRESS else "sse41"
    runnable(compress)
    assert many_chunk_hash(impl, compress, data) == want, \
        f"{impl} hash_many with {compress} parents, {k} chunks"


@needs_twin
def test_the_chunk_counter_reaches_the_simd_lanes():
    """hash_many with a non-zero starting counter and the counter's high word
    in play (a chunk past 2**32): every implementation gives portable's chaining values."""
    data = sample(16 * CHUNK, seed=5)
    results = {impl: chunk_cvs(impl, data, (1 << 32) - 3)
               for impl in WITH_HASH_MANY if NEEDS[impl] <= FLAGS}
    assert "portable" in results
    for impl, got in results.items():
        assert got == results["portable"], f"{impl}: chaining values across the 2**32 counter"
