"""Builds the optional compiled twins ``stemedb/core/_fast.pyx``, ``_canon.pyx``, ``_query.pyx``.

``_canon`` links the vendored BLAKE3 C sources (``stemedb/core/blake3/``).

The extension is optional: without a compiler StemeDB runs on the pure-Python
reference (``stemedb/core/codec.py``).  ``cythonize()`` drops ``optional=True``
from the Extension it is given, so it is set again on what it returns.
"""
from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # a build without Cython: pure Python only
    ext_modules = []
else:
    import numpy
    BLAKE3_DIR = "stemedb/core/blake3"
    BLAKE3_SOURCES = [f"{BLAKE3_DIR}/{n}.c" for n in ("blake3", "blake3_dispatch",
                                                      "blake3_portable")]
    BLAKE3_HEADERS = [f"{BLAKE3_DIR}/blake3.h", f"{BLAKE3_DIR}/blake3_impl.h"]
    BLAKE3_MACROS = [("BLAKE3_NO_SSE2", None), ("BLAKE3_NO_SSE41", None),
                     ("BLAKE3_NO_AVX2", None), ("BLAKE3_NO_AVX512", None),
                     ("BLAKE3_USE_NEON", "0")]
    ext_modules = cythonize(
        [Extension("stemedb.core._fast", ["stemedb/core/_fast.pyx"],
                   depends=["stemedb/core/crc32c.h"],   # rebuilt when it changes; in the sdist
                   include_dirs=[numpy.get_include()],
                   define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]),
         # the assertion hash path: RFC 8785 canonical form (pure twin: canonical.py)
         # and BLAKE3 by the vendored C implementation, portable build only
         # (stemedb/core/blake3/README.md says why; pure twin: the blake3 package)
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

setup(ext_modules=ext_modules)
