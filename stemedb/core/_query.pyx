# cython: language_level=3
"""The query path's per-candidate loops, compiled: the twin of
``stemedb/core/qpure.py`` (read that module for what each function means;
``stemedb.core.qfast`` chooses which runs, and tests/unit/test_query_parity.py
holds the two equal, damaged input included).

Each function here earned its place by a measured gain on the query path
(bench/results/query-compiled-2026-11-26.md).
"""
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy
from libc.math cimport pow
from cpython.list cimport PyList_GET_SIZE, PyList_GET_ITEM

cdef extern from "crc32c.h" nogil:
    void stemedb_crc32c_init()
    uint32_t stemedb_crc32c(const uint8_t* p, size_t n)

stemedb_crc32c_init()

# The byte layout, named as in format.py (tests/unit/test_query_parity.py
# holds FORMAT equal to it)
DEF FRAME_SIZE = 20
DEF FRAME_CRC_OFF = 4
DEF FRAME_CRC_FROM = 8
DEF FRAME_TYPE_OFF = 8
DEF REC_ASSERT = 1
DEF HEAD_SIZE = 76
DEF TIMESTAMP_OFF = 40
DEF CONFIDENCE_OFF = 48
DEF SOURCE_CLASS_OFF = 56
DEF FIELDS_OFF = 58
DEF LENGTHS_OFF = 60        # path, predicate, source, epoch lengths, derived count: uint16 each
DEF VALUE_LEN_OFF = 72
DEF F_SOURCE = 0x01
DEF F_PARENT = 0x02
DEF F_DERIVED = 0x04
DEF F_EPOCH = 0x08
DEF F_SIGNED = 0x10
# Below 2**53 an int64 converts to a double exactly, so one IEEE division
# gives Python's correctly rounded int / int; beyond it Python's own runs.
DEF EXACT = 9007199254740992
DEF LOC_BITS = 40           # index.pack_loc: segment number << 40 | byte offset
DEF READ_AHEAD = 512        # qpure.READ_AHEAD

FORMAT = {"FRAME_SIZE": FRAME_SIZE, "FRAME_CRC_OFF": FRAME_CRC_OFF,
          "FRAME_CRC_FROM": FRAME_CRC_FROM, "FRAME_TYPE_OFF": FRAME_TYPE_OFF,
          "REC_ASSERT": REC_ASSERT, "ASSERT_HEAD_SIZE": HEAD_SIZE,
          "ASSERT_TIMESTAMP_OFF": TIMESTAMP_OFF, "F_SOURCE": F_SOURCE, "F_PARENT": F_PARENT,
          "F_DERIVED": F_DERIVED, "F_EPOCH": F_EPOCH, "F_SIGNED": F_SIGNED,
          "LOC_BITS": LOC_BITS, "READ_AHEAD": READ_AHEAD}


cdef inline uint32_t rd32(const uint8_t* p) nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline uint16_t rd16(const uint8_t* p) nogil:
    cdef uint16_t v
    memcpy(&v, p, 2)
    return v


cdef inline int64_t rd64(const uint8_t* p) nogil:
    cdef int64_t v
    memcpy(&v, p, 8)
    return v


cdef inline double rdf64(const uint8_t* p) nogil:
    cdef double v
    memcpy(&v, p, 8)
    return v

from . import qpure as _pure

from .qpure import INT64_MAX, INT64_MIN

cdef inline bytes _table(object table):
    """A table of allowed ids as bytes (1 allowed, 0 not); None stays None."""
    if table is None:
        return None
    return bytes([1 if x else 0 for x in table])


def filter_ords(list ords, ts, rec, seq, lc, ep, as_of, known_at, since, seq_bound,
                lc_ok, ep_ok):
    """See qpure.filter_ords.  Only the columns an active filter reads are
    taken as buffers (each costs a buffer acquisition, most of a query of
    one or two candidates)."""
    cdef Py_ssize_t n = len(ts), i, m = PyList_GET_SIZE(ords)
    cdef Py_ssize_t o
    cdef int64_t v_as_of = 0, v_known = 0, v_since = 0, v_seq = 0
    cdef bint h_as_of = as_of is not None, h_known = known_at is not None
    cdef bint h_since = since is not None, h_seq = seq_bound is not None
    cdef bytes lct, ept
    cdef const unsigned char* lcp = NULL
    cdef const unsigned char* epp = NULL
    cdef Py_ssize_t nlc = 0, nep = 0, idv
    cdef const int64_t[:] tsv
    cdef const int64_t[:] recv
    cdef const int64_t[:] seqv
    cdef const int8_t[:] lcv
    cdef const int32_t[:] epv
    for b in (as_of, known_at, since, seq_bound):
        if b is not None and not INT64_MIN <= b <= INT64_MAX:
            # a bound no column value can reach: the reference decides (a
            # query's bounds are times and seqs, always inside int64)
            return _pure.filter_ords(ords, ts, rec, seq, lc, ep, as_of, known_at, since,
                                     seq_bound, lc_ok, ep_ok)
    if h_as_of or h_since:
        tsv = ts
    if h_as_of:
        v_as_of = as_of
    if h_since:
        v_since = since
    if h_known:
        recv = rec
        v_known = known_at
        if recv.shape[0] < n:
            raise ValueError("the columns differ in length")
    if h_seq:
        seqv = seq
        v_seq = seq_bound
        if seqv.shape[0] < n:
            raise ValueError("the columns differ in length")
    if lc_ok is not None:
        lcv = lc
        if lcv.shape[0] < n:
            raise ValueError("the columns differ in length")
        lct = _table(lc_ok)
        lcp = lct
        nlc = len(lct)
    if ep_ok is not None:
        epv = ep
        if epv.shape[0] < n:
            raise ValueError("the columns differ in length")
        ept = _table(ep_ok)
        epp = ept
        nep = len(ept)
    cdef list kept = []
    for i in range(m):
        ob = <object>PyList_GET_ITEM(ords, i)
        o = ob
        if o < 0 or o >= n:
            raise IndexError(f"ordinal {o} outside the columns ({n})")
        if lcp != NULL:
            idv = lcv[o]
            if idv < 0 or idv >= nlc:
                raise IndexError(f"id {idv} outside its table of {nlc}")
            if not lcp[idv]:
                continue
        if epp != NULL:
            idv = epv[o]
            if idv < 0 or idv >= nep:
                raise IndexError(f"id {idv} outside its table of {nep}")
            if not epp[idv]:
                continue
        if h_as_of and tsv[o] > v_as_of:
            continue
        if h_known and recv[o] > v_known:
            continue
        if h_since and tsv[o] <= v_since:
            continue
        if h_seq and seqv[o] > v_seq:
            continue
        kept.append(ob)
    return kept


def frame_rows(list locs, dict sealed, read, list ords, list seqs, at_us, bint decay,
               tuple half_life_us, tuple tier):
    """See qpure.frame_rows."""
    cdef Py_ssize_t m = PyList_GET_SIZE(locs), i, nt = len(tier)
    cdef Py_ssize_t off, end, v, blen
    cdef int64_t loc, segno, mask = (1 << LOC_BITS) - 1
    cdef const uint8_t[:] mv
    cdef const uint8_t* b
    cdef const uint8_t* p
    cdef uint32_t length
    cdef uint8_t fields
    cdef Py_ssize_t rank
    cdef int64_t ts, at = 0, age, hl
    cdef double c
    cdef bint small_at
    if PyList_GET_SIZE(ords) != m or PyList_GET_SIZE(seqs) != m:
        raise ValueError("locs, ords and seqs differ in length")
    if len(half_life_us) < nt:
        raise ValueError("half_life_us is shorter than tier")
    small_at = -EXACT < at_us < EXACT
    if small_at:
        at = at_us
    cdef list rows = []
    for i in range(m):
        loc = <object>PyList_GET_ITEM(locs, i)
        segno = loc >> LOC_BITS
        off = loc & mask
        buf = sealed.get(segno) if sealed else None
        if buf is None:
            buf = read(segno, off, READ_AHEAD)
            mv = buf
            if mv.shape[0] >= FRAME_SIZE:
                length = rd32(&mv[0])
                if FRAME_SIZE + <Py_ssize_t>length > mv.shape[0]:
                    buf = read(segno, off, FRAME_SIZE + <Py_ssize_t>length)
            off = 0
        mv = buf
        blen = mv.shape[0]
        if off + FRAME_SIZE > blen:
            return None, i
        b = &mv[0]
        length = rd32(b + off)
        end = off + FRAME_SIZE + <Py_ssize_t>length
        if end > blen or b[off + FRAME_TYPE_OFF] != REC_ASSERT or length < HEAD_SIZE:
            return None, i
        if stemedb_crc32c(b + off + FRAME_CRC_FROM, end - off - FRAME_CRC_FROM) \
                != rd32(b + off + FRAME_CRC_OFF):
            return None, i
        p = b + off + FRAME_SIZE
        fields = p[FIELDS_OFF]
        v = off + FRAME_SIZE + HEAD_SIZE + rd16(p + LENGTHS_OFF) + rd16(p + LENGTHS_OFF + 2)
        if fields & F_SOURCE:
            v += rd16(p + LENGTHS_OFF + 4)
        if fields & F_EPOCH:
            v += rd16(p + LENGTHS_OFF + 6)
        if fields & F_PARENT:
            v += 32
        if fields & F_DERIVED:
            v += 32 * <Py_ssize_t>rd16(p + LENGTHS_OFF + 8)
        if fields & F_SIGNED:
            v += 96
        if v + <Py_ssize_t>rd32(p + VALUE_LEN_OFF) > end:
            return None, i
        ts = rd64(p + TIMESTAMP_OFF)
        c = rdf64(p + CONFIDENCE_OFF)
        rank = p[SOURCE_CLASS_OFF]
        if rank >= nt:
            raise IndexError(f"source class {rank} outside the tier table ({nt})")
        if decay:
            hl_o = <object>(<tuple>half_life_us)[rank]
            if hl_o is not None:
                if small_at and -EXACT < ts < EXACT:
                    age = at - ts
                    if age > 0:
                        hl = hl_o
                        if age < EXACT and 0 < hl < EXACT:
                            c *= pow(2.0, -(<double>age) / <double>hl)
                        else:
                            c *= 2.0 ** (-(at_us - ts) / hl_o)
                else:
                    age_o = at_us - ts
                    if age_o > 0:
                        c *= 2.0 ** (-age_o / hl_o)
        t = <object>(<tuple>tier)[rank]
        rows.append((ts, <object>PyList_GET_ITEM(seqs, i), c, c * <double>t, rank,
                     (<const char*>(b + v))[:rd32(p + VALUE_LEN_OFF)],
                     <object>PyList_GET_ITEM(ords, i)))
    return rows, -1
