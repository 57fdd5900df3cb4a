# cython: language_level=3
"""The query path's per-candidate loops, compiled: the twin of
``stemedb/core/qpure.py`` (read that module for what each function means;
``stemedb.core.qfast`` chooses which runs, and tests/unit/test_query_parity.py
holds the two equal, damaged input included).

Each function here earned its place by a measured gain on the query path
(bench/results/query-compiled-2026-11-26.md).
"""
from libc.stdint cimport int8_t, int32_t, int64_t
from cpython.list cimport PyList_GET_SIZE, PyList_GET_ITEM

from . import qpure as _pure

from .qpure import INT64_MAX, INT64_MIN

cdef inline bytes _table(object table):
    """A table of allowed ids as bytes (1 allowed, 0 not); None stays None."""
    if table is None:
        return None
    return bytes([1 if x else 0 for x in table])


def filter_ords(list ords, const int64_t[:] ts, const int64_t[:] rec, const int64_t[:] seq,
                const int8_t[:] lc, const int32_t[:] ep, as_of, known_at, since, seq_bound,
                lc_ok, ep_ok):
    """See qpure.filter_ords."""
    cdef Py_ssize_t n = ts.shape[0], i, m = PyList_GET_SIZE(ords)
    cdef Py_ssize_t o
    cdef int64_t v_as_of = 0, v_known = 0, v_since = 0, v_seq = 0
    cdef bint h_as_of = as_of is not None, h_known = known_at is not None
    cdef bint h_since = since is not None, h_seq = seq_bound is not None
    cdef bytes lct = _table(lc_ok), ept = _table(ep_ok)
    cdef const unsigned char* lcp = NULL
    cdef const unsigned char* epp = NULL
    cdef Py_ssize_t nlc = 0, nep = 0, idv
    if rec.shape[0] < n or seq.shape[0] < n or lc.shape[0] < n or ep.shape[0] < n:
        raise ValueError("the columns differ in length")
    if lct is not None:
        lcp = lct
        nlc = len(lct)
    if ept is not None:
        epp = ept
        nep = len(ept)
    for b in (as_of, known_at, since, seq_bound):
        if b is not None and not INT64_MIN <= b <= INT64_MAX:
            # a bound no column value can reach: the reference decides (a
            # query's bounds are times and seqs, always inside int64)
            return _pure.filter_ords(ords, ts.base, rec.base, seq.base, lc.base, ep.base,
                                     as_of, known_at, since, seq_bound, lc_ok, ep_ok)
    if h_as_of:
        v_as_of = as_of
    if h_known:
        v_known = known_at
    if h_since:
        v_since = since
    if h_seq:
        v_seq = seq_bound
    cdef list kept = []
    for i in range(m):
        ob = <object>PyList_GET_ITEM(ords, i)
        o = ob
        if o < 0 or o >= n:
            raise IndexError(f"ordinal {o} outside the columns ({n})")
        if lcp != NULL:
            idv = lc[o]
            if idv < 0 or idv >= nlc:
                raise IndexError(f"id {idv} outside its table of {nlc}")
            if not lcp[idv]:
                continue
        if epp != NULL:
            idv = ep[o]
            if idv < 0 or idv >= nep:
                raise IndexError(f"id {idv} outside its table of {nep}")
            if not epp[idv]:
                continue
        if h_as_of and ts[o] > v_as_of:
            continue
        if h_known and rec[o] > v_known:
            continue
        if h_since and ts[o] <= v_since:
            continue
        if h_seq and seq[o] > v_seq:
            continue
        kept.append(ob)
    return kept

