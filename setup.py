"""Builds the optional compiled twins ``stemedb/core/_fast.pyx``, ``_canon.pyx``, ``_query.pyx``.

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
    ext_modules = cythonize(
        [Extension("stemedb.core._fast", ["stemedb/core/_fast.pyx"],
                   depends=["stemedb/core/crc32c.h"],   # rebuilt when it changes; in the sdist
                   include_dirs=[numpy.get_include()],
                   define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]),
         # the assertion hash path: RFC 8785 canonical form (pure twin: canonical.py)
         Extension("stemedb.core._canon", ["stemedb/core/_canon.pyx"]),
         # the query path's per-candidate loops (pure twin: qpure.py; chosen by qfast.py)
         Extension("stemedb.core._query", ["stemedb/core/_query.pyx"],
                   depends=["stemedb/core/crc32c.h"])],
        compiler_directives={"language_level": "3", "boundscheck": False,
                             "wraparound": False, "cdivision": True},
    )
    for ext in ext_modules:
        ext.optional = True

setup(ext_modules=ext_modules)
