"""Builds the optional compiled twins ``stemedb/core/_fast.pyx``, ``_canon.pyx``, ``_query.pyx``.

``_canon`` links the vendored BLAKE3 C sources (``stemedb/core/blake3/``): on
x86-64 Linux/BSD with gcc or clang also upstream's SSE2/SSE4.1/AVX2/AVX-512
assembly, which BLAKE3's own dispatch (``blake3_dispatch.c``, cpuid) picks
from at run time; everywhere else the portable C alone
(``stemedb/core/blake3/README.md``).

The extension is optional: without a compiler StemeDB runs on the pure-Python
reference (``stemedb/core/codec.py``).  ``cythonize()`` drops ``optional=True``
from the Extension it is given, so it is set again on what it returns.
"""
import struct
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

BLAKE3_DIR = "stemedb/core/blake3"
BLAKE3_ASM = [f"{BLAKE3_DIR}/blake3_{isa}_x86-64_unix.S"
              for isa in ("sse2", "sse41", "avx2", "avx512")]


def blake3_asm_target() -> bool:
    """Whether this build's target can take upstream's unix x86-64 assembly:
    a 64-bit x86 non-Windows target (sysconfig's platform, which a cross
    build sets) other than macOS (a universal2 build compiles every source for
    arm64 too).  The compiler is checked in ``BuildExt``."""
    plat = sysconfig.get_platform().lower()
    return (plat.endswith(("x86_64", "amd64")) and struct.calcsize("P") == 8
            and not plat.startswith(("win", "mingw", "macosx", "cygwin")))


class BuildExt(build_ext):
    """setuptools' build_ext, but the unix compiler (gcc/clang: both
    preprocess and assemble a ``.S`` as upstream's CMake and Makefile do) also
    takes ``.S`` sources; any other compiler gets them dropped, and the
    BLAKE3 dispatch then compiled portable-only, as on other targets."""

    def build_extension(self, ext):
        asm = [s for s in ext.sources if s.endswith(".S")]
        if asm:
            if self.compiler.compiler_type == "unix":
                if ".S" not in self.compiler.src_extensions:   # the instance's, not the class list
                    self.compiler.src_extensions = [*self.compiler.src_extensions, ".S"]
            else:
                ext.sources = [s for s in ext.sources if not s.endswith(".S")]
                ext.define_macros = ext.define_macros + BLAKE3_NO_SIMD
        super().build_extension(ext)


# without the assembly, blake3_dispatch.c must not reference it
BLAKE3_NO_SIMD = [("BLAKE3_NO_SSE2", None), ("BLAKE3_NO_SSE41", None),
                  ("BLAKE3_NO_AVX2", None), ("BLAKE3_NO_AVX512", None)]

try:
    from Cython.Build import cythonize
except ImportError:  # a build without Cython: pure Python only
    ext_modules = []
else:
    import numpy
    BLAKE3_SOURCES = [f"{BLAKE3_DIR}/{n}.c" for n in ("blake3", "blake3_dispatch",
                                                      "blake3_portable")]
    BLAKE3_HEADERS = [f"{BLAKE3_DIR}/blake3.h", f"{BLAKE3_DIR}/blake3_impl.h"]
    BLAKE3_MACROS = [("BLAKE3_USE_NEON", "0")]
    if blake3_asm_target():
        BLAKE3_SOURCES += BLAKE3_ASM
    else:
        BLAKE3_MACROS += BLAKE3_NO_SIMD
    ext_modules = cythonize(
        [Extension("stemedb.core._fast", ["stemedb/core/_fast.pyx"],
                   depends=["stemedb/core/crc32c.h"],   # rebuilt when it changes; in the sdist
                   include_dirs=[numpy.get_include()],
                   define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]),
         # the assertion hash path: RFC 8785 canonical form (pure twin: canonical.py)
         # and BLAKE3 by the vendored C implementation, its x86-64 assembly
         # where the target takes it (stemedb/core/blake3/README.md; pure
         # twin: the blake3 package)
         Extension("stemedb.core._canon", ["stemedb/core/_canon.pyx", *BLAKE3_SOURCES],
                   depends=BLAKE3_HEADERS, include_dirs=["stemedb/core"],
                   define_macros=BLAKE3_MACROS),
         # the query path's per-candidate loops (pure twin: qpure.py; chosen by qfast.py)
         Extension("stemedb.core._query", ["stemedb/core/_query.pyx"],
                   depends=["stemedb/core/crc32c.h"],
                   include_dirs=[numpy.get_include()],     # the columns' data pointers
                   define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")])],
        compiler_directives={"language_level": "3", "boundscheck": False,
                             "wraparound": False, "cdivision": True},
    )
    for ext in ext_modules:
        ext.optional = True

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})
