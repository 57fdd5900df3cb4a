# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled twins of the measured hot loops: codec's scan_frames,
decode_assert, encode_assert_frames; records.index_records (and
timeutil.format_time, index.str64).

Same arguments, same answers (tests/unit/test_fast_parity.py,
tests/unit/test_index_records.py); the pure functions are the reference.  CRC32C is computed in C inside the
loops (crc32c.h: the SSE4.2 instruction where the CPU has it, a table
otherwise), with google-crc32c as the reference in the parity tests.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING as _bytes_data, PyBytes_GET_SIZE as _bytes_size
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset

from ..errors import CorruptionError

cdef extern from "crc32c.h" nogil:
    void stemedb_crc32c_init()
    uint32_t stemedb_crc32c(const uint8_t* p, size_t n)
    int stemedb_crc32c_set_hw(int on)
    int stemedb_crc32c_hw_active()

stemedb_crc32c_init()


def crc32c(data):
    """CRC-32C of a bytes-like object (what ``google_crc32c.value`` gives)."""
    cdef const uint8_t[::1] mv = data
    if mv.shape[0] == 0:
        return stemedb_crc32c(NULL, 0)
    return stemedb_crc32c(&mv[0], mv.shape[0])


def crc32c_implementation():
    """``"sse4.2"`` (the CPU's crc32 instruction) or ``"table"`` (portable C)."""
    return "sse4.2" if stemedb_crc32c_hw_active() else "table"


def _crc32c_use_hardware(bint on):
    """Test hook: False forces the table; True uses the instruction if the CPU
    has it.  Returns the implementation now in use."""
    stemedb_crc32c_set_hw(on)
    return crc32c_implementation()

# The byte layout, named as in format.py (the only other place that knows
# it); FORMAT below exposes these so a test holds the two equal.
DEF FRAME_SIZE = 20
DEF FRAME_CRC_OFF = 4
DEF FRAME_CRC_FROM = 8
DEF FRAME_TYPE_OFF = 8
DEF FRAME_FLAGS_OFF = 9
DEF FRAME_RESERVED_OFF = 10
DEF FRAME_SEQ_OFF = 12
DEF REC_ASSERT = 1
DEF HEAD_SIZE = 76
DEF RECORDED_AT_OFF = 32
DEF TIMESTAMP_OFF = 40
DEF CONFIDENCE_OFF = 48
DEF SOURCE_CLASS_OFF = 56
DEF VALUE_INLINE = 15       # index.VALUE_INLINE
DEF VALUE_HASHED = 0xFF     # index.VALUE_HASHED
DEF MAX_PAYLOAD = 268435456
DEF F_SOURCE = 0x01
DEF F_PARENT = 0x02
DEF F_DERIVED = 0x04
DEF F_EPOCH = 0x08
DEF F_SIGNED = 0x10
DEF FLAG_MORE = 0x01

FORMAT = {"FRAME_SIZE": FRAME_SIZE, "FRAME_CRC_OFF": FRAME_CRC_OFF,
          "FRAME_CRC_FROM": FRAME_CRC_FROM, "FRAME_TYPE_OFF": FRAME_TYPE_OFF,
          "FRAME_FLAGS_OFF": FRAME_FLAGS_OFF, "FRAME_RESERVED_OFF": FRAME_RESERVED_OFF,
          "FRAME_SEQ_OFF": FRAME_SEQ_OFF, "REC_ASSERT": REC_ASSERT,
          "ASSERT_HEAD_SIZE": HEAD_SIZE, "ASSERT_RECORDED_AT_OFF": RECORDED_AT_OFF,
          "ASSERT_TIMESTAMP_OFF": TIMESTAMP_OFF, "ASSERT_CONFIDENCE_OFF": CONFIDENCE_OFF,
          "ASSERT_SOURCE_CLASS_OFF": SOURCE_CLASS_OFF, "VALUE_INLINE": VALUE_INLINE,
          "VALUE_HASHED": VALUE_HASHED, "MAX_PAYLOAD": MAX_PAYLOAD,
          "F_SOURCE": F_SOURCE, "F_PARENT": F_PARENT, "F_DERIVED": F_DERIVED,
          "F_EPOCH": F_EPOCH, "F_SIGNED": F_SIGNED, "FLAG_MORE": FLAG_MORE}


cdef inline uint32_t rd32(const uint8_t* p) nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v

cdef inline uint16_t rd16(const uint8_t* p) nogil:
    cdef uint16_t v
    memcpy(&v, p, 2)
    return v

cdef inline uint64_t fnv1a(const uint8_t* p, Py_ssize_t n) nogil:
    cdef uint64_t h = 0xCBF29CE484222325ULL
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ p[i]) * 0x100000001B3ULL
    return h


def fnv1a64(s):
    """See index.str64."""
    b = s.encode("utf-8", "surrogatepass")
    return fnv1a(<const uint8_t*><const char*>b, len(b))


cdef inline int64_t rd64(const uint8_t* p) nogil:
    cdef int64_t v
    memcpy(&v, p, 8)
    return v


def scan_frames(buf, Py_ssize_t start, Py_ssize_t end):
    """See codec.scan_frames."""
    cdef const uint8_t[:] mv = buf
    cdef const uint8_t* base = &mv[0] if mv.shape[0] else NULL
    cdef Py_ssize_t pos = start, stop
    cdef uint32_t length, crc
    cdef int reason = 0
    offsets, types, flags, seqs = [], [], [], []
    while pos < end:
        if end - pos < FRAME_SIZE:
            reason = 1
            break
        length = rd32(base + pos)
        crc = rd32(base + pos + FRAME_CRC_OFF)
        if length > MAX_PAYLOAD:
            reason = 3
            break
        stop = pos + FRAME_SIZE + length
        if stop > end:
            reason = 1
            break
        if stemedb_crc32c(base + pos + FRAME_CRC_FROM, <size_t>(stop - pos - FRAME_CRC_FROM)) != crc:
            reason = 2
            break
        offsets.append(pos)
        types.append(base[pos + FRAME_TYPE_OFF])
        flags.append(base[pos + FRAME_FLAGS_OFF])
        seqs.append(<uint64_t>rd64(base + pos + FRAME_SEQ_OFF))
        pos = stop
    return offsets, types, flags, seqs, pos, reason


cimport numpy as cnp
import numpy as np
cnp.import_array()


# The interner of extract_segment: raw UTF-8 bytes -> id, for one call.  Laid
# out for the cache, since a rebuild looks up a concept path per record and
# the paths come in no order: an 8-byte slot (hash tag, arena offset) in a
# table at most half full, and the arena holding each entry's id, length and
# bytes together.  The lookup touches one slot and one arena entry, never the
# segment buffer (a memcmp against a path's first occurrence there cost a
# cache miss per record: 0.12 us).
ctypedef struct _Slot:
    uint32_t tag            # high half of the hash
    uint32_t off            # arena offset of the entry + 1; 0: empty


cdef struct _Interner:
    _Slot* slots
    Py_ssize_t mask
    Py_ssize_t used
    uint8_t* arena          # entries: int64 id, int64 length, the bytes (8-aligned)
    Py_ssize_t arena_used
    Py_ssize_t arena_cap


DEF ARENA_LIMIT = 0xFFFFFFF0    # offsets are 32-bit; past this, names are not cached


cdef int _it_init(_Interner* t, Py_ssize_t cap) except -1:
    t.slots = <_Slot*>calloc(cap, sizeof(_Slot))
    t.arena = <uint8_t*>malloc(4096)
    if t.slots == NULL or t.arena == NULL:
        free(t.slots); free(t.arena)
        t.slots = NULL; t.arena = NULL
        raise MemoryError()
    t.mask = cap - 1
    t.used = 0
    t.arena_used = 0
    t.arena_cap = 4096
    return 0


cdef void _it_free(_Interner* t) noexcept:
    free(t.slots); free(t.arena)
    t.slots = NULL; t.arena = NULL


cdef inline long _it_find(_Interner* t, uint64_t h, const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i = <Py_ssize_t>(h & <uint64_t>t.mask)
    cdef uint32_t tag = <uint32_t>(h >> 32)
    cdef const uint8_t* e
    while t.slots[i].off:
        if t.slots[i].tag == tag:
            e = t.arena + t.slots[i].off - 1
            if (<const int64_t*>e)[1] == n and memcmp(e + 16, p, n) == 0:
                return <long>(<const int64_t*>e)[0]
        i = (i + 1) & t.mask
    return -1


cdef int _it_add(_Interner* t, uint64_t h, const uint8_t* p, Py_ssize_t n, long id) except -1:
    cdef Py_ssize_t need = 16 + ((n + 7) & ~7), cap, i, j, k
    cdef _Slot* bigger
    cdef uint8_t* grown
    cdef int64_t* e
    if t.arena_used + need > ARENA_LIMIT:
        return 0                                # not cached: found through the dict again
    if t.arena_used + need > t.arena_cap:
        cap = max(t.arena_cap * 2, t.arena_used + need)
        grown = <uint8_t*>realloc(t.arena, cap)
        if grown == NULL:
            raise MemoryError()
        t.arena, t.arena_cap = grown, cap
    if (t.used + 1) * 2 > t.mask + 1:          # keep the table at most half full
        cap = (t.mask + 1) * 2
        bigger = <_Slot*>calloc(cap, sizeof(_Slot))
        if bigger == NULL:
            raise MemoryError()
        for j in range(t.mask + 1):
            if t.slots[j].off:
                e = <int64_t*>(t.arena + t.slots[j].off - 1)
                k = <Py_ssize_t>(_table_hash(<const uint8_t*>(e + 2), e[1]) & <uint64_t>(cap - 1))
                while bigger[k].off:
                    k = (k + 1) & (cap - 1)
                bigger[k] = t.slots[j]
        free(t.slots)
        t.slots, t.mask = bigger, cap - 1
    e = <int64_t*>(t.arena + t.arena_used)
    e[0] = id
    e[1] = n
    memcpy(<uint8_t*>(e + 2), p, n)
    i = <Py_ssize_t>(h & <uint64_t>t.mask)
    while t.slots[i].off:
        i = (i + 1) & t.mask
    t.slots[i].tag = <uint32_t>(h >> 32)
    t.slots[i].off = <uint32_t>(t.arena_used + 1)
    t.arena_used += need
    t.used += 1
    return 0


cdef inline uint64_t _table_hash(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """A hash for _Interner only (never stored): 8 bytes per multiply."""
    cdef uint64_t h = 0x9E3779B97F4A7C15ULL ^ <uint64_t>n, w
    while n >= 8:
        memcpy(&w, p, 8)
        h = (h ^ w) * 0xFF51AFD7ED558CCDULL
        h ^= h >> 29
        p += 8
        n -= 8
    if n:
        w = 0
        memcpy(&w, p, n)
        h = (h ^ w) * 0xC4CEB9FE1A85EC53ULL
    return h ^ (h >> 32)


cdef long _intern(_Interner* t, const uint8_t* q, Py_ssize_t n, dict ids, list names) except -2:
    """The id of the UTF-8 string at ``q``: from this call's table of raw bytes
    when seen before (no str is made), else through ``ids`` (new ids in order
    of first appearance, as records.index_records gives them).  ``t`` NULL:
    the dicts only."""
    cdef uint64_t h = 0
    cdef long v
    if t != NULL:
        h = _table_hash(q, n)
        v = _it_find(t, h, q, n)
        if v >= 0:
            return v
    name = PyUnicode_DecodeUTF8(<const char*>q, n, NULL)
    o = ids.get(name)
    if o is None:
        v = len(names)
        ids[name] = v
        names.append(name)
    else:
        v = o
    if t != NULL:
        _it_add(t, h, q, n, v)
    return v


cdef inline void _value_id(const uint8_t* v, Py_ssize_t n, uint64_t* va,
                           uint64_t* vb) noexcept nogil:
    """index.value_id of the ``n`` value bytes at ``v``."""
    cdef uint8_t b[16]
    if n <= VALUE_INLINE:
        memset(b, 0, 16)
        b[0] = <uint8_t>n
        if n:
            memcpy(b + 1, v, n)
        memcpy(va, b, 8)
        memcpy(vb, b + 8, 8)
    else:
        va[0] = (<uint64_t>VALUE_HASHED | (<uint64_t>(n & 0xFFFFFF) << 8)
                 | (<uint64_t>stemedb_crc32c(v, n) << 32))
        memcpy(vb, v + n - 8, 8)


def value_id(v):
    """See index.value_id (the twin inside index_records, for the parity test)."""
    cdef const uint8_t[::1] mv = v
    cdef uint64_t a = 0, b = 0
    cdef Py_ssize_t n = mv.shape[0]
    _value_id(&mv[0] if n else <const uint8_t*>b"", n, &a, &b)
    return a, b


cdef inline void* _column(cnp.ndarray arr, int typenum, Py_ssize_t need, str name) except NULL:
    """The data pointer of a state column, after checking what C will write."""
    if (cnp.PyArray_TYPE(arr) != typenum or not cnp.PyArray_IS_C_CONTIGUOUS(arr)
            or not cnp.PyArray_ISWRITEABLE(arr) or cnp.PyArray_DIM(arr, 0) < need):
        raise ValueError(f"index_records: column {name} is not a writable contiguous "
                         f"array of {need} rows of the column's type")
    return cnp.PyArray_DATA(arr)


cdef struct _Head:
    # an assertion frame's payload and its variable parts' lengths
    const uint8_t* p
    int fields
    Py_ssize_t lpath, lpred, lsrc, lep, nd, lval, need


cdef inline int _read_head(const uint8_t* base, Py_ssize_t off, Py_ssize_t size, _Head* h) except -1:
    """Check the assertion frame at ``off`` (its length inside the buffer,
    its parts inside its length) and read its lengths into ``h``; raises
    ``records.payload_overrun``'s error otherwise.  index_records and
    index_one both read a frame through it."""
    cdef int64_t length = rd32(base + off) if 0 <= off and off + FRAME_SIZE <= size else -1
    if length < HEAD_SIZE or off + FRAME_SIZE + length > size:
        raise _overrun(off, length, size)
    cdef const uint8_t* p = base + off + FRAME_SIZE
    h.p = p
    h.fields = p[58]
    h.lpath = rd16(p + 60); h.lpred = rd16(p + 62); h.lsrc = rd16(p + 64)
    h.lep = rd16(p + 66); h.nd = rd16(p + 68); h.lval = rd32(p + 72)
    h.need = HEAD_SIZE + h.lpath + h.lpred + h.lval
    if h.fields & F_SOURCE:
        h.need += h.lsrc
    if h.fields & F_EPOCH:
        h.need += h.lep
    if h.fields & F_PARENT:
        h.need += 32
    if h.fields & F_DERIVED:
        h.need += 32 * h.nd
    if h.fields & F_SIGNED:
        h.need += 96
    if h.need > length:
        raise _overrun(off, length, size)
    return 0


def index_records(buf, offsets, types, seqs, int64_t loc_base, Py_ssize_t first,
                  cnp.ndarray seq_c, cnp.ndarray loc_c, cnp.ndarray ts_c, cnp.ndarray rec_c,
                  cnp.ndarray key_c, cnp.ndarray path_c, cnp.ndarray epoch_c,
                  cnp.ndarray lc_c, cnp.ndarray conf_c, cnp.ndarray rank_c,
                  cnp.ndarray va_c, cnp.ndarray vb_c, cnp.ndarray hash_c, cnp.ndarray hkey_out,
                  cnp.ndarray src_out, cnp.ndarray src_ord_out, dict path_ids,
                  list path_names, dict pred_ids, list pred_names, dict epoch_ids):
    """See records.index_records.

    A concept path or predicate is decoded to ``str`` once per call: later
    records find its id by their raw bytes in a small C table (a hash, then
    a byte compare), which halves the cost per record of a rebuild.  The
    rows are written through the columns' data pointers (checked for type,
    layout and length first), so a call allocates no array: a single put's
    call costs ~1 us.  Below 8 records no byte table is built (the dicts
    alone are cheaper than setting one up).
    """
    cdef list offs = offsets if type(offsets) is list else list(offsets)
    cdef list typs = types if type(types) is list else list(types)
    cdef list sqs = seqs if type(seqs) is list else list(seqs)
    cdef Py_ssize_t total = len(offs), n = 0, k, i = 0, r
    for k in range(total):
        if typs[k] == REC_ASSERT:
            n += 1
    if first < 0:
        raise ValueError("index_records: first must be >= 0")
    cdef int64_t* seq_a = <int64_t*>_column(seq_c, cnp.NPY_INT64, first + n, "seq")
    cdef int64_t* loc_a = <int64_t*>_column(loc_c, cnp.NPY_INT64, first + n, "loc")
    cdef int64_t* ts_a = <int64_t*>_column(ts_c, cnp.NPY_INT64, first + n, "ts")
    cdef int64_t* rec_a = <int64_t*>_column(rec_c, cnp.NPY_INT64, first + n, "rec")
    cdef int64_t* key_a = <int64_t*>_column(key_c, cnp.NPY_INT64, first + n, "key")
    cdef int32_t* path_a = <int32_t*>_column(path_c, cnp.NPY_INT32, first + n, "path")
    cdef int32_t* ep_a = <int32_t*>_column(epoch_c, cnp.NPY_INT32, first + n, "epoch")
    cdef int8_t* lc_a = <int8_t*>_column(lc_c, cnp.NPY_INT8, first + n, "lc")
    cdef double* conf_a = <double*>_column(conf_c, cnp.NPY_FLOAT64, first + n, "conf")
    cdef uint8_t* rank_a = <uint8_t*>_column(rank_c, cnp.NPY_UINT8, first + n, "rank")
    cdef uint64_t* va_a = <uint64_t*>_column(va_c, cnp.NPY_UINT64, first + n, "va")
    cdef uint64_t* vb_a = <uint64_t*>_column(vb_c, cnp.NPY_UINT64, first + n, "vb")
    if cnp.PyArray_NDIM(hash_c) != 2 or cnp.PyArray_DIM(hash_c, 1) != 32:
        raise ValueError("index_records: column hashes is not an array of 32-byte rows")
    cdef uint8_t* hb_a = <uint8_t*>_column(hash_c, cnp.NPY_UINT8, first + n, "hashes")
    cdef uint64_t* hk = <uint64_t*>_column(hkey_out, cnp.NPY_UINT64, n, "hkey_out")
    cdef uint64_t* sk = <uint64_t*>_column(src_out, cnp.NPY_UINT64, n, "src_out")
    cdef int32_t* so = <int32_t*>_column(src_ord_out, cnp.NPY_INT32, n, "src_ord_out")
    cdef Py_buffer view
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    cdef const uint8_t* base = <const uint8_t*>view.buf
    cdef Py_ssize_t size = view.len
    cdef _Interner* tp = NULL
    cdef _Interner* tq = NULL
    cdef const uint8_t* p
    cdef const uint8_t* q
    cdef Py_ssize_t off, lpath, lpred, lsrc, lep, nd, lval, j, need, cap
    cdef int64_t rec, max_rec = 0
    cdef int fields, rtype
    cdef _Head h
    cdef long pid, qid
    cdef _Interner paths, preds
    cdef Py_ssize_t ns = 0
    edges, metas = [], []
    paths.slots = preds.slots = NULL
    paths.arena = preds.arena = NULL
    try:
        if n >= 8:
            # a table sized to the call: a group of ten does not clear 8 KB
            cap = 16
            while cap < 2 * n and cap < 1024:
                cap *= 2
            _it_init(&paths, cap)
            tp = &paths
            _it_init(&preds, min(cap, 256))
            tq = &preds
        for k in range(total):
            off = offs[k]
            rtype = typs[k]
            if rtype != REC_ASSERT:
                metas.append((rtype, sqs[k], off))
                continue
            _read_head(base, off, size, &h)
            p, fields, need = h.p, h.fields, h.need
            lpath, lpred, lsrc, lep, nd, lval = h.lpath, h.lpred, h.lsrc, h.lep, h.nd, h.lval
            q = p + HEAD_SIZE
            pid = _intern(tp, q, lpath, path_ids, path_names); q += lpath
            qid = _intern(tq, q, lpred, pred_ids, pred_names); q += lpred
            r = first + i
            if fields & F_SOURCE:
                sk[ns] = fnv1a(q, lsrc)
                so[ns] = r
                ns += 1
                q += lsrc
            if fields & F_EPOCH:
                name = PyUnicode_DecodeUTF8(<const char*>q, lep, NULL)
                eid = epoch_ids.get(name)
                if eid is None:
                    raise CorruptionError(f"the assertion record at offset {off} names epoch "
                                          f"{name!r}, which no earlier record creates",
                                          offset=off)
                ep_a[r] = eid
                q += lep
            else:
                ep_a[r] = 0
            if fields & (F_PARENT | F_DERIVED):
                parent = derived = None
                if fields & F_PARENT:
                    parent = (<const char*>q)[:32]; q += 32
                if fields & F_DERIVED:
                    derived = [(<const char*>(q + 32 * j))[:32] for j in range(nd)]
                edges.append((r, parent, derived))
            rec = rd64(p + RECORDED_AT_OFF)
            if i == 0 or rec > max_rec:
                max_rec = rec
            seq_a[r] = <int64_t>sqs[k]
            loc_a[r] = loc_base + off
            rec_a[r] = rec
            ts_a[r] = rd64(p + TIMESTAMP_OFF)
            key_a[r] = (<int64_t>pid << 24) | qid
            path_a[r] = pid
            lc_a[r] = p[57]
            memcpy(&conf_a[r], p + CONFIDENCE_OFF, 8)
            rank_a[r] = p[SOURCE_CLASS_OFF]
            _value_id(p + need - lval, lval, &va_a[r], &vb_a[r])
            memcpy(hb_a + 32 * r, p, 32)
            hk[i] = <uint64_t>rd64(p)
            i += 1
    finally:
        _it_free(&paths)
        _it_free(&preds)
        PyBuffer_Release(&view)
    return n, ns, max_rec, edges, metas


def _overrun(off, length, size):
    from .records import payload_overrun
    return payload_overrun(off, length, size)


def _extract_segment():
    from .records import extract_with
    return extract_with(index_records)


# the older one-segment interface, over index_records (records.extract_with)
extract_segment = _extract_segment()


from libc.time cimport time_t
from ..model import AssertionRecord as _Record



cdef extern from "<time.h>" nogil:
    struct tm:
        int tm_sec, tm_min, tm_hour, tm_mday, tm_mon, tm_year
    tm* gmtime_r(const time_t* t, tm* out)


def decode_assert(buf, Py_ssize_t off):
    """See codec.decode_assert.  A ``bytes`` buffer (what read_frames and
    the reader pass, once per record) is read through its data pointer; any
    other buffer through a typed memoryview, whose acquisition costs ~0.6 us
    a call.  A record that does not fit in ``buf`` from ``off`` (short or
    damaged input, a negative offset) goes to the pure reference, so the
    answer or the error is its own and nothing is read past the buffer."""
    if type(buf) is bytes:
        return _decode_assert_at(<const uint8_t*>_bytes_data(buf),
                                 _bytes_size(buf), off, buf)
    return _decode_assert_view(buf, off)


cdef object _decode_assert_view(buf, Py_ssize_t off):
    cdef const uint8_t[:] mv = buf
    cdef Py_ssize_t size = mv.shape[0]
    if size == 0:
        return _decode_assert_ref(buf, off)
    return _decode_assert_at(&mv[0], size, off, buf)


cdef object _decode_assert_ref(buf, Py_ssize_t off):
    from .codec import decode_assert as ref
    return ref(buf, off)


cdef object _decode_assert_at(const uint8_t* base, Py_ssize_t size, Py_ssize_t off, buf):
    if off < 0 or size - off < HEAD_SIZE:
        return _decode_assert_ref(buf, off)
    cdef const uint8_t* p = base + off
    cdef int fields = p[58]
    cdef Py_ssize_t lpath = rd16(p + 60), lpred = rd16(p + 62), lsrc = rd16(p + 64)
    cdef Py_ssize_t lep = rd16(p + 66), nd = rd16(p + 68), lval = rd32(p + 72), j
    cdef Py_ssize_t need = HEAD_SIZE + lpath + lpred + lval
    if fields & F_SOURCE:
        need += lsrc
    if fields & F_EPOCH:
        need += lep
    if fields & F_PARENT:
        need += 32
    if fields & F_DERIVED:
        need += 32 * nd
    if fields & F_SIGNED:
        need += 96
    if size - off < need:
        return _decode_assert_ref(buf, off)
    cdef double conf
    memcpy(&conf, p + 48, 8)
    cdef const uint8_t* q = p + HEAD_SIZE
    path = PyUnicode_DecodeUTF8(<const char*>q, lpath, NULL); q += lpath
    pred = PyUnicode_DecodeUTF8(<const char*>q, lpred, NULL); q += lpred
    src = ep = parent = derived = agent = sig = None
    if fields & F_SOURCE:
        src = PyUnicode_DecodeUTF8(<const char*>q, lsrc, NULL); q += lsrc
    if fields & F_EPOCH:
        ep = PyUnicode_DecodeUTF8(<const char*>q, lep, NULL); q += lep
    if fields & F_PARENT:
        parent = (<const char*>q)[:32]; q += 32
    if fields & F_DERIVED:
        derived = [(<const char*>(q + 32 * j))[:32] for j in range(nd)]
        q += 32 * nd
    if fields & F_SIGNED:
        agent = (<const char*>q)[:32]; sig = (<const char*>(q + 32))[:64]; q += 96
    return _Record((<const char*>p)[:32], rd64(p + RECORDED_AT_OFF), rd64(p + TIMESTAMP_OFF), conf, p[56], p[57],
                   path, pred, (<const char*>q)[:lval], src, ep, parent, derived, agent, sig)


def format_time(int64_t us):
    """See timeutil.format_time."""
    if us < 0:
        from ..timeutil import _slow_format
        return _slow_format(us)
    cdef int64_t secs = us // 1000000
    cdef int64_t frac = us - secs * 1000000
    cdef time_t t = secs
    cdef tm out
    if gmtime_r(&t, &out) == NULL:
        from ..timeutil import _slow_format
        return _slow_format(us)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (
        out.tm_year + 1900, out.tm_mon + 1, out.tm_mday, out.tm_hour, out.tm_min,
        out.tm_sec, frac)


from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_AsUTF8AndSize



cdef inline void wr16(uint8_t* p, uint16_t v) nogil:
    memcpy(p, &v, 2)

cdef inline void wr32(uint8_t* p, uint32_t v) nogil:
    memcpy(p, &v, 4)

cdef inline void wr64(uint8_t* p, int64_t v) nogil:
    memcpy(p, &v, 8)


cdef int64_t _stamp_value(object v) except? -1:
    """A recorded_at stamp: an int within int64 (what the payload holds),
    else ValueError (the pure twin's check, with its message)."""
    if type(v) is not int or not -9223372036854775808 <= v <= 9223372036854775807:
        raise ValueError(f"recorded_at must be an int64 microsecond time, not {v!r}")
    return <int64_t>v


cdef inline Py_ssize_t put(uint8_t* p, const char* src, Py_ssize_t n) nogil:
    memcpy(p, src, n)
    return n


from cpython.ref cimport PyObject


cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        int type
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member
    PyObject* _tuple_item "PyTuple_GET_ITEM" (object t, Py_ssize_t i)

# model.AssertionRecord's fields, in its order; encode_assert_frames reads
# them at their slot offsets when the record's type is the one
# use_record_type took (a msgspec Struct keeps each field in a slot that a
# member descriptor names), instead of 13 attribute lookups (~25 ns each).
_REC_FIELDS = ("hash", "recorded_at", "timestamp", "confidence", "source_class", "lifecycle",
               "concept_path", "predicate", "value_json", "source", "epoch", "parent_hash",
               "derived_from", "agent_id", "signature")
DEF R_HASH = 0
DEF R_REC = 1
DEF R_TS = 2
DEF R_CONF = 3
DEF R_SC = 4
DEF R_LC = 5
DEF R_PATH = 6
DEF R_PRED = 7
DEF R_VAL = 8
DEF R_SRC = 9
DEF R_EP = 10
DEF R_PARENT = 11
DEF R_DERIVED = 12
DEF R_AGENT = 13
DEF R_SIG = 14
DEF N_REC = 15
DEF T_OBJECT_EX = 16
cdef object _rec_type = None
cdef Py_ssize_t _rec_off[N_REC]


def use_record_type(cls, probe):
    """Read the fields of ``cls`` (``model.AssertionRecord``) at their slot
    offsets from now on, when every field is a plain object slot
    (``T_OBJECT_EX`` member descriptor) and reading ``probe`` (an instance
    with every field set) that way gives each attribute itself; else keep
    the attribute lookups.  Returns whether it took them."""
    global _rec_type
    cdef Py_ssize_t offs[N_REC]
    cdef Py_ssize_t i
    cdef PyObject* v
    _rec_type = None
    if type(probe) is not cls or len(_REC_FIELDS) != N_REC:
        return False
    for i in range(N_REC):
        d = cls.__dict__.get(_REC_FIELDS[i])
        if type(d).__name__ != "member_descriptor" or (<PyMemberDescrObject*>d).d_member.type != T_OBJECT_EX:
            return False
        offs[i] = (<PyMemberDescrObject*>d).d_member.offset
        if offs[i] < <Py_ssize_t>sizeof(PyObject) or offs[i] + <Py_ssize_t>sizeof(PyObject*) > cls.__basicsize__:
            return False
        v = (<PyObject**>((<char*><PyObject*>probe) + offs[i]))[0]
        if v == NULL or <object>v is not getattr(probe, _REC_FIELDS[i]):
            return False
    for i in range(N_REC):
        _rec_off[i] = offs[i]
    _rec_type = cls
    return True


def record_type_in_use():
    """The record type whose fields encode_assert_frames reads by offset, or None."""
    return _rec_type


cdef inline bint _read_slots(object r, PyObject** fv) noexcept:
    """``r``'s fields (borrowed) at the offsets use_record_type took; False
    when a slot is unset (the attribute lookups then raise for it)."""
    cdef Py_ssize_t i
    for i in range(N_REC):
        fv[i] = (<PyObject**>((<char*><PyObject*>r) + _rec_off[i]))[0]
        if fv[i] == NULL:
            return False
    return True


cdef tuple _fields_by_lookup(object r, PyObject** fv):
    """``r``'s fields by attribute lookups, into ``fv`` (borrowed from the
    tuple returned, which the caller keeps while it reads them)."""
    cdef tuple got = tuple([getattr(r, name) for name in _REC_FIELDS])
    cdef Py_ssize_t i
    for i in range(N_REC):
        fv[i] = _tuple_item(got, i)
    return got


def no_refs(records):
    """See fast.no_refs_py: whether no record of ``records`` (a list of
    ``model.AssertionRecord``) names a parent, a source assertion or an
    epoch (its parent_hash, derived_from and epoch are all None), read in
    that order, field by field, as the twin reads them.  The record type
    use_record_type took is read at its slot offsets; any other by
    attribute lookups (which raise AttributeError as the twin's do)."""
    cdef list recs = records
    cdef object rtype = _rec_type
    cdef Py_ssize_t i, k, n = len(recs)
    cdef int slots[3]
    slots[0] = R_PARENT
    slots[1] = R_DERIVED
    slots[2] = R_EP
    names = ("parent_hash", "derived_from", "epoch")
    cdef bint named
    cdef PyObject* v
    cdef Py_ssize_t off
    for k in range(3):
        named = False           # every record's field is read, as the twin's map does
        off = _rec_off[slots[k]]
        for i in range(n):
            r = recs[i]
            if type(r) is rtype:
                v = (<PyObject**>((<char*><PyObject*>r) + off))[0]
                if v == NULL:   # unset slot: the lookup raises AttributeError
                    getattr(r, names[k])
                elif <object>v is not None:
                    named = True
            elif getattr(r, names[k]) is not None:
                named = True
        if named:
            return False
    return True


cdef struct _Out:
    uint8_t* p
    Py_ssize_t n
    Py_ssize_t cap


cdef uint8_t* _reserve(_Out* o, Py_ssize_t need) except NULL:
    """Room for ``need`` more bytes at ``o.p + o.n``."""
    cdef Py_ssize_t cap = o.cap
    cdef uint8_t* q
    if o.n + need > cap:
        cap = max(2 * cap, o.n + need)
        q = <uint8_t*>realloc(o.p, cap)
        if q == NULL:
            raise MemoryError()
        o.p = q
        o.cap = cap
    return o.p + o.n


def encode_assert_frames(records, seqs, recorded_at=None):
    """See codec.encode_assert_frames; ``recorded_at`` (an int64), when
    given, is written as every record's recorded_at instead of its own (the
    writer's stamp, known only under its mutex: a struct copy per record
    cost ~0.3 us; the pure twin is ``fast.encode_assert_frames_py``).

    The frames are written one after the other into one buffer (no bytes
    object per frame and no join), and a record of the type
    use_record_type took has its fields read at their slot offsets."""
    cdef list recs = list(records)
    cdef Py_ssize_t n = len(recs), k, lpath, lpred, lsrc, lep, nd, lval, size, j
    cdef int64_t stamp = 0
    cdef bint stamped = recorded_at is not None
    if stamped:
        stamp = _stamp_value(recorded_at)
    cdef const char* cpath
    cdef const char* cpred
    cdef const char* csrc = NULL
    cdef const char* cep = NULL
    cdef uint8_t* f
    cdef uint8_t* q
    cdef int fields
    cdef double conf
    cdef PyObject* fv[N_REC]
    cdef _Out out
    cdef list sizes = []
    cdef object rtype = _rec_type
    cdef tuple got
    cdef int64_t seq, rec_v, ts_v
    cdef uint8_t sc_v, lc_v
    if len(seqs) < n:
        raise IndexError("encode_assert_frames: fewer seqs than records")
    out.p = NULL
    out.n = 0
    out.cap = 0
    try:
        _reserve(&out, 256 * n + 64)
        for k in range(n):
            r = recs[k]
            seq = seqs[k]
            got = None
            if rtype is None or type(r) is not rtype or not _read_slots(r, fv):
                got = _fields_by_lookup(r, fv)
            # the numbers first: a conversion may run Python code (__index__,
            # __float__), so a record's slots are read again after them
            rec_v = stamp if stamped else <object>fv[R_REC]
            ts_v = <object>fv[R_TS]
            conf = <object>fv[R_CONF]
            sc_v = <object>fv[R_SC]
            lc_v = <object>fv[R_LC]
            if got is None and not _read_slots(r, fv):
                got = _fields_by_lookup(r, fv)
            cpath = PyUnicode_AsUTF8AndSize(<object>fv[R_PATH], &lpath)
            cpred = PyUnicode_AsUTF8AndSize(<object>fv[R_PRED], &lpred)
            fields = 0
            lsrc = lep = nd = 0
            if <object>fv[R_SRC] is not None:
                fields |= F_SOURCE
                csrc = PyUnicode_AsUTF8AndSize(<object>fv[R_SRC], &lsrc)
            if <object>fv[R_EP] is not None:
                fields |= F_EPOCH
                cep = PyUnicode_AsUTF8AndSize(<object>fv[R_EP], &lep)
            if <object>fv[R_PARENT] is not None:
                fields |= F_PARENT
            if <object>fv[R_DERIVED] is not None:
                fields |= F_DERIVED
                nd = len(<object>fv[R_DERIVED])
            if <object>fv[R_SIG] is not None:
                fields |= F_SIGNED
            value = <object>fv[R_VAL]
            lval = len(value)
            size = (FRAME_SIZE + HEAD_SIZE + lpath + lpred + lsrc + lep
                    + (32 if fields & F_PARENT else 0) + 32 * nd
                    + (96 if fields & F_SIGNED else 0) + lval)
            f = _reserve(&out, size)
            # frame head: length, crc (filled below), type, flags, reserved, seq
            wr32(f, <uint32_t>(size - FRAME_SIZE))
            f[FRAME_TYPE_OFF] = REC_ASSERT
            f[FRAME_FLAGS_OFF] = FLAG_MORE if k < n - 1 else 0
            wr16(f + FRAME_RESERVED_OFF, 0)
            wr64(f + FRAME_SEQ_OFF, seq)
            q = f + FRAME_SIZE
            memcpy(q, PyBytes_AS_STRING(<object>fv[R_HASH]), 32)
            wr64(q + RECORDED_AT_OFF, rec_v)
            wr64(q + TIMESTAMP_OFF, ts_v)
            memcpy(q + 48, &conf, 8)
            q[56] = sc_v
            q[57] = lc_v
            q[58] = fields
            q[59] = 0
            wr16(q + 60, <uint16_t>lpath); wr16(q + 62, <uint16_t>lpred); wr16(q + 64, <uint16_t>lsrc)
            wr16(q + 66, <uint16_t>lep); wr16(q + 68, <uint16_t>nd); wr16(q + 70, 0)
            wr32(q + 72, <uint32_t>lval)
            q += HEAD_SIZE
            q += put(q, cpath, lpath)
            q += put(q, cpred, lpred)
            if fields & F_SOURCE:
                q += put(q, csrc, lsrc)
            if fields & F_EPOCH:
                q += put(q, cep, lep)
            if fields & F_PARENT:
                q += put(q, PyBytes_AS_STRING(<object>fv[R_PARENT]), 32)
            for j in range(nd):
                q += put(q, PyBytes_AS_STRING((<object>fv[R_DERIVED])[j]), 32)
            if fields & F_SIGNED:
                q += put(q, PyBytes_AS_STRING(<object>fv[R_AGENT]), 32)
                q += put(q, PyBytes_AS_STRING(<object>fv[R_SIG]), 64)
            q += put(q, PyBytes_AS_STRING(value), lval)
            wr32(f + FRAME_CRC_OFF, stemedb_crc32c(f + FRAME_CRC_FROM, <size_t>(size - FRAME_CRC_FROM)))
            out.n += size
            sizes.append(size)
        return PyBytes_FromStringAndSize(<char*>out.p, out.n), sizes
    finally:
        free(out.p)


from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.list cimport PyList_Append
from cpython.long cimport PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.ref cimport PyObject

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void* op)


cdef inline object _ord_list(object o):
    """``[o]`` for a MultiMap's recent dict, not tracked by the garbage
    collector: it only ever holds ints (ordinals), so it can be in no
    reference cycle.  Tracked, the up to ~65,000 lists per map between two
    merges are what survive into the oldest generation, and every full
    collection they set off walked them and the rest of the heap (W3 at
    200,000: ~1.7 us of GC per assertion)."""
    lst = [o]
    PyObject_GC_UnTrack(<void*>lst)
    return lst


def ord_list(o):
    """``[o]``, untracked (see _ord_list)."""
    return _ord_list(o)


from stemedb.core import index as _index     # its MERGE_AT, read per call as MultiMap does


cdef inline int _recent_add(dict recent, object key, object o) except -1:
    """``o`` under ``key`` in a MultiMap's recent dict (map_add without the
    count and the merge)."""
    cdef PyObject* lst = PyDict_GetItem(recent, key)
    if lst == NULL:
        PyDict_SetItem(recent, key, _ord_list(o))
    else:
        PyList_Append(<object>lst, o)
    return 0


def map_add(m, key, o):
    """``MultiMap.add(m, key, o)`` (its pure twin): ordinal ``o`` under
    ``key`` in ``m``'s recent dict, a new key's list untracked; then the
    merge when the recent dict reaches ``MERGE_AT``."""
    _add1(m, key, o, _index.MERGE_AT)


def map_add_many(m, list keys, ords):
    """``MultiMap.add_many(m, keys, ords)`` (its pure twin): ``keys[i]`` to
    ``ords[i]`` (a list or a range of ascending ordinals), new keys' lists
    untracked, then at most one merge."""
    cdef dict recent = m.recent
    cdef Py_ssize_t i, n = len(keys)
    if len(ords) < n:
        raise ValueError("map_add_many: fewer ordinals than keys")
    for i in range(n):
        _recent_add(recent, keys[i], ords[i])
    total = m.n_recent + n
    m.n_recent = total
    if total >= _index.MERGE_AT:
        m.merge()


cdef inline int _add1(object m, object key, object o, object merge_at) except -1:
    """map_add's body: ``o`` under ``key`` in ``m``'s recent dict, then the
    merge at ``merge_at`` additions."""
    _recent_add(m.recent, key, o)
    n = m.n_recent + 1
    m.n_recent = n
    if n >= merge_at:
        m.merge()
    return 0


def add_one(hmap, hk, kmap, key, pmap, pid, smap, src, o, list kgen, list pgen,
            int64_t mix, int pred_bits):
    """See records.add_one: one applied assertion's map entries (hash, index
    key, path, and source unless ``src`` is None, each ``map_add``) and its
    two answer generation steps, in one call (a single put's apply, W1)."""
    cdef Py_ssize_t s, slots = len(kgen)
    if slots == 0 or slots & (slots - 1) or len(pgen) != slots:
        raise ValueError("add_one: kgen and pgen must be lists of one power-of-two length")
    if not 0 <= pred_bits < 63:
        raise ValueError("add_one: pred_bits must be from 0 to 62")
    cdef uint64_t mask = <uint64_t>(slots - 1), qmask = (<uint64_t>1 << pred_bits) - 1
    cdef uint64_t p = <uint64_t>(<int64_t>pid), k = <uint64_t>(<int64_t>key)
    merge_at = _index.MERGE_AT
    _add1(hmap, hk, o, merge_at)
    _add1(kmap, key, o, merge_at)
    _add1(pmap, pid, o, merge_at)
    if src is not None:
        _add1(smap, src, o, merge_at)
    s = <Py_ssize_t>((p * <uint64_t>mix + (k & qmask)) & mask)
    kgen[s] = kgen[s] + 1
    s = <Py_ssize_t>(p & mask)
    pgen[s] = pgen[s] + 1


from cpython.dict cimport PyDict_Next
from cpython.long cimport PyLong_AsLongLong, PyLong_AsUnsignedLongLong


def recent_items(dict recent, Py_ssize_t n, dtype):
    """``(keys, ordinals)`` of a MultiMap's recent dict as two arrays of
    ``n`` rows (``dtype`` int64 or uint64; int32), key by key in the dict's
    order and each key's ordinals in list order: what ``MultiMap.merge``
    builds with two ``np.fromiter`` over generators (~0.1 us a pair in
    Python), in one C loop.  Fewer than ``n`` pairs: ValueError; more: the
    first ``n`` (as fromiter's count); a key outside ``dtype`` or an
    ordinal outside int32: OverflowError."""
    cdef cnp.ndarray ks = np.empty(n, dtype=dtype)
    cdef cnp.ndarray vs = np.empty(n, dtype=np.int32)
    cdef int typenum = cnp.PyArray_TYPE(ks)
    cdef int64_t* kp = <int64_t*>cnp.PyArray_DATA(ks)
    cdef int32_t* vp = <int32_t*>cnp.PyArray_DATA(vs)
    cdef Py_ssize_t pos = 0, j = 0, i, m
    cdef PyObject* key
    cdef PyObject* lst
    cdef int64_t kv
    cdef long long o
    if typenum != cnp.NPY_INT64 and typenum != cnp.NPY_UINT64:
        raise ValueError("recent_items: dtype must be int64 or uint64")
    while j < n and PyDict_Next(recent, &pos, &key, &lst):
        if typenum == cnp.NPY_INT64:
            kv = PyLong_AsLongLong(<object>key)
        else:
            kv = <int64_t>PyLong_AsUnsignedLongLong(<object>key)
        ords = <list>lst
        m = len(ords)
        for i in range(m):
            if j >= n:
                break
            o = PyLong_AsLongLong(ords[i])
            if o < -2147483648 or o > 2147483647:
                raise OverflowError(f"recent_items: ordinal {o} does not fit int32")
            kp[j] = kv
            vp[j] = <int32_t>o
            j += 1
    if j < n:
        raise ValueError(f"recent_items: the dict holds {j} pairs, not {n}")
    return ks, vs


def merge_runs(cnp.ndarray keys, cnp.ndarray vals, cnp.ndarray ks, cnp.ndarray vs):
    """See index.merge_runs_py (searchsorted + two np.insert): the sorted
    run ``keys``/``vals`` (int64 or uint64 keys, int32 values) with the
    sorted ``ks``/``vs`` (the same dtypes) merged in after equal keys, in
    one pass into two new arrays (a snapshot's mapped run, or one in
    another byte order or not contiguous, is read as a native contiguous
    copy).  Arrays of other shapes or dtypes: ValueError."""
    keys, vals, ks, vs = [np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("="))
                          for x in (keys, vals, ks, vs)]
    cdef int typenum = cnp.PyArray_TYPE(keys)
    cdef Py_ssize_t n, k, i = 0, j = 0, o = 0
    if (typenum not in (cnp.NPY_INT64, cnp.NPY_UINT64) or cnp.PyArray_TYPE(ks) != typenum
            or cnp.PyArray_TYPE(vals) != cnp.NPY_INT32 or cnp.PyArray_TYPE(vs) != cnp.NPY_INT32
            or cnp.PyArray_NDIM(keys) != 1 or cnp.PyArray_NDIM(vals) != 1
            or cnp.PyArray_NDIM(ks) != 1 or cnp.PyArray_NDIM(vs) != 1
            or not cnp.PyArray_IS_C_CONTIGUOUS(keys) or not cnp.PyArray_IS_C_CONTIGUOUS(vals)
            or not cnp.PyArray_IS_C_CONTIGUOUS(ks) or not cnp.PyArray_IS_C_CONTIGUOUS(vs)
            or cnp.PyArray_DIM(keys, 0) != cnp.PyArray_DIM(vals, 0)
            or cnp.PyArray_DIM(ks, 0) != cnp.PyArray_DIM(vs, 0)):
        raise ValueError("merge_runs: keys/ks contiguous 1-d int64 or uint64 (one dtype), "
                         "vals/vs int32 of their lengths")
    n = cnp.PyArray_DIM(keys, 0)
    k = cnp.PyArray_DIM(ks, 0)
    cdef cnp.ndarray okeys = np.empty(n + k, dtype=keys.dtype)
    cdef cnp.ndarray ovals = np.empty(n + k, dtype=np.int32)
    cdef const int64_t* a = <const int64_t*>cnp.PyArray_DATA(keys)
    cdef const int64_t* b = <const int64_t*>cnp.PyArray_DATA(ks)
    cdef const int32_t* av = <const int32_t*>cnp.PyArray_DATA(vals)
    cdef const int32_t* bv = <const int32_t*>cnp.PyArray_DATA(vs)
    cdef int64_t* ok = <int64_t*>cnp.PyArray_DATA(okeys)
    cdef int32_t* ov = <int32_t*>cnp.PyArray_DATA(ovals)
    cdef bint unsigned_keys = typenum == cnp.NPY_UINT64
    cdef bint take_run
    with nogil:
        while i < n and j < k:
            if unsigned_keys:
                take_run = <uint64_t>a[i] <= <uint64_t>b[j]
            else:
                take_run = a[i] <= b[j]
            if take_run:
                ok[o] = a[i]; ov[o] = av[i]; i += 1
            else:
                ok[o] = b[j]; ov[o] = bv[j]; j += 1
            o += 1
        if i < n:
            memcpy(ok + o, a + i, (n - i) * 8); memcpy(ov + o, av + i, (n - i) * 4)
        elif j < k:
            memcpy(ok + o, b + j, (k - j) * 8); memcpy(ov + o, bv + j, (k - j) * 4)
    return okeys, ovals


def pending_add(dict pending, recs, seqs, req):
    """``pending[recs[i].hash] = (seqs[i], req)`` for every ``i`` (the
    writer's in-flight hashes; pure twin ``fast.pending_add_py``).  The
    tuples are not tracked by the garbage collector: each holds an int and
    the request, which holds no reference back to ``pending`` or to a
    tuple, so none is in a cycle.  Tracked, the 1,000 of a batch in flight
    were promoted at every collection that met them, and their count set
    off the full collections that walk the whole heap."""
    cdef list rl = recs if type(recs) is list else list(recs)
    cdef list sl = seqs if type(seqs) is list else list(seqs)
    cdef Py_ssize_t i, n = len(rl)
    if len(sl) != n:
        raise ValueError("pending_add: one seq per record")
    for i in range(n):
        t = (sl[i], req)
        PyObject_GC_UnTrack(<void*>t)
        PyDict_SetItem(pending, rl[i].hash, t)


def add_recent(dict recent, cnp.ndarray keys, Py_ssize_t first, vals=None):
    """See index.add_recent: ``keys[i]`` to ordinal ``first + i`` (or
    ``vals[i]``) in a MultiMap's recent dict, in one C loop (the Python loop
    cost ~0.12 us a key, four maps per assertion of a bulk group)."""
    cdef Py_ssize_t n = cnp.PyArray_DIM(keys, 0) if cnp.PyArray_NDIM(keys) == 1 else -1, i
    cdef int typenum = cnp.PyArray_TYPE(keys)
    cdef const int32_t* va = NULL
    cdef const int64_t* ks = NULL
    cdef cnp.ndarray varr
    if n < 0 or not cnp.PyArray_IS_C_CONTIGUOUS(keys) or typenum not in (cnp.NPY_INT64, cnp.NPY_UINT64):
        raise ValueError("add_recent: keys must be a contiguous 1-d int64 or uint64 array")
    ks = <const int64_t*>cnp.PyArray_DATA(keys)
    if vals is not None:
        varr = vals
        if (cnp.PyArray_NDIM(varr) != 1 or cnp.PyArray_TYPE(varr) != cnp.NPY_INT32
                or not cnp.PyArray_IS_C_CONTIGUOUS(varr) or cnp.PyArray_DIM(varr, 0) < n):
            raise ValueError(f"add_recent: vals must be a contiguous int32 array of {n} rows")
        va = <const int32_t*>cnp.PyArray_DATA(varr)
    for i in range(n):
        if typenum == cnp.NPY_INT64:
            k = PyLong_FromLongLong(ks[i])
        else:
            k = PyLong_FromUnsignedLongLong(<uint64_t>ks[i])
        _recent_add(recent, k, va[i] if va != NULL else first + i)
    return n


def bump_gens(list kgen, list pgen, cnp.ndarray keys, int64_t mix, int pred_bits):
    """See records.bump_gens: one answer generation step per index key of a
    group, for its (path, predicate) slot in ``kgen`` and its path slot in
    ``pgen`` (both of a power-of-two length)."""
    cdef Py_ssize_t n, i, s, slots = len(kgen)
    cdef uint64_t mask = <uint64_t>(slots - 1), pid, qmask = (<uint64_t>1 << pred_bits) - 1
    cdef int64_t key
    if slots == 0 or slots & (slots - 1) or len(pgen) != slots:
        raise ValueError("bump_gens: kgen and pgen must be lists of one power-of-two length")
    if (cnp.PyArray_NDIM(keys) != 1 or cnp.PyArray_TYPE(keys) != cnp.NPY_INT64
            or not cnp.PyArray_IS_C_CONTIGUOUS(keys)):
        raise ValueError("bump_gens: keys must be a contiguous 1-d int64 array")
    cdef const int64_t* ks = <const int64_t*>cnp.PyArray_DATA(keys)
    n = cnp.PyArray_DIM(keys, 0)
    for i in range(n):
        key = ks[i]
        pid = <uint64_t>(key >> pred_bits)      # arithmetic shift: Python's >> on a negative
        s = <Py_ssize_t>((pid * <uint64_t>mix + (<uint64_t>key & qmask)) & mask)
        kgen[s] = kgen[s] + 1
        s = <Py_ssize_t>(pid & mask)
        pgen[s] = pgen[s] + 1


cdef struct _Cols:
    # the 13 state columns' data pointers, in Columns.rows' order
    int64_t* seq
    int64_t* loc
    int64_t* ts
    int64_t* rec
    int64_t* key
    int32_t* path
    int32_t* ep
    int8_t* lc
    double* conf
    uint8_t* rank
    uint64_t* va
    uint64_t* vb
    uint8_t* hb


cdef int _cols_of(tuple cols, Py_ssize_t need_rows, _Cols* c, str fn) except -1:
    """``c`` <- the data pointers of ``cols`` (``Columns.rows``), each checked
    for type, layout and at least ``need_rows`` rows."""
    if len(cols) != 13:
        raise ValueError(f"{fn}: cols must be Columns.rows (13 arrays)")
    c.seq = <int64_t*>_column(cols[0], cnp.NPY_INT64, need_rows, "seq")
    c.loc = <int64_t*>_column(cols[1], cnp.NPY_INT64, need_rows, "loc")
    c.ts = <int64_t*>_column(cols[2], cnp.NPY_INT64, need_rows, "ts")
    c.rec = <int64_t*>_column(cols[3], cnp.NPY_INT64, need_rows, "rec")
    c.key = <int64_t*>_column(cols[4], cnp.NPY_INT64, need_rows, "key")
    c.path = <int32_t*>_column(cols[5], cnp.NPY_INT32, need_rows, "path")
    c.ep = <int32_t*>_column(cols[6], cnp.NPY_INT32, need_rows, "epoch")
    c.lc = <int8_t*>_column(cols[7], cnp.NPY_INT8, need_rows, "lc")
    c.conf = <double*>_column(cols[8], cnp.NPY_FLOAT64, need_rows, "conf")
    c.rank = <uint8_t*>_column(cols[9], cnp.NPY_UINT8, need_rows, "rank")
    c.va = <uint64_t*>_column(cols[10], cnp.NPY_UINT64, need_rows, "va")
    c.vb = <uint64_t*>_column(cols[11], cnp.NPY_UINT64, need_rows, "vb")
    cdef cnp.ndarray hash_c = cols[12]
    if cnp.PyArray_NDIM(hash_c) != 2 or cnp.PyArray_DIM(hash_c, 1) != 32:
        raise ValueError(f"{fn}: column hashes is not an array of 32-byte rows")
    c.hb = <uint8_t*>_column(hash_c, cnp.NPY_UINT8, need_rows, "hashes")
    return 0


cdef struct _Row:
    # what the maps and generations take of one indexed assertion
    uint64_t hkey
    int64_t key
    long pid
    bint has_src
    uint64_t src
    int64_t rec


cdef object _index_row(const uint8_t* base, Py_ssize_t size, Py_ssize_t off, int64_t seq,
                       int64_t loc_base, Py_ssize_t r, _Cols* c, dict path_ids,
                       list path_names, dict pred_ids, list pred_names, dict epoch_ids,
                       _Row* out):
    """index_records' row of the one assertion framed at ``off``, into row
    ``r`` of ``c``; its map keys and recorded_at into ``out``.  Returns its
    ``(r, parent, derived)`` citation, or None.  index_one and apply_puts
    read a frame through it."""
    cdef _Head h
    cdef const uint8_t* p
    cdef const uint8_t* q
    cdef Py_ssize_t j
    cdef long pid, qid
    edge = None
    _read_head(base, off, size, &h)
    p = h.p
    q = p + HEAD_SIZE
    pid = _intern(NULL, q, h.lpath, path_ids, path_names); q += h.lpath
    qid = _intern(NULL, q, h.lpred, pred_ids, pred_names); q += h.lpred
    out.has_src = False
    if h.fields & F_SOURCE:
        out.has_src = True
        out.src = fnv1a(q, h.lsrc)
        q += h.lsrc
    if h.fields & F_EPOCH:
        name = PyUnicode_DecodeUTF8(<const char*>q, h.lep, NULL)
        eid = epoch_ids.get(name)
        if eid is None:
            raise CorruptionError(f"the assertion record at offset {off} names epoch "
                                  f"{name!r}, which no earlier record creates", offset=off)
        c.ep[r] = eid
        q += h.lep
    else:
        c.ep[r] = 0
    if h.fields & (F_PARENT | F_DERIVED):
        parent = derived = None
        if h.fields & F_PARENT:
            parent = (<const char*>q)[:32]; q += 32
        if h.fields & F_DERIVED:
            derived = [(<const char*>(q + 32 * j))[:32] for j in range(h.nd)]
        edge = (r, parent, derived)
    out.rec = rd64(p + RECORDED_AT_OFF)
    out.key = (<int64_t>pid << 24) | qid
    out.pid = pid
    out.hkey = <uint64_t>rd64(p)
    c.seq[r] = seq
    c.loc[r] = loc_base + off
    c.rec[r] = out.rec
    c.ts[r] = rd64(p + TIMESTAMP_OFF)
    c.key[r] = out.key
    c.path[r] = pid
    c.lc[r] = p[57]
    memcpy(&c.conf[r], p + CONFIDENCE_OFF, 8)
    c.rank[r] = p[SOURCE_CLASS_OFF]
    _value_id(p + h.need - h.lval, h.lval, &c.va[r], &c.vb[r])
    memcpy(c.hb + 32 * r, p, 32)
    return edge


def index_one(buf, Py_ssize_t off, int64_t seq, int64_t loc_base, Py_ssize_t first,
              tuple cols, dict path_ids, list path_names, dict pred_ids, list pred_names,
              dict epoch_ids):
    """See records.index_one: index_records of the one assertion at ``off``
    (a single put's durable group, W1), its map keys returned as ints
    instead of written to scratch arrays."""
    if len(cols) != 13:
        raise ValueError("index_one: cols must be Columns.rows (13 arrays)")
    if first < 0:
        raise ValueError("index_one: first must be >= 0")
    cdef _Cols c
    _cols_of(cols, first + 1, &c, "index_one")
    cdef Py_buffer view
    cdef _Row row
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        edge = _index_row(<const uint8_t*>view.buf, view.len, off, seq, loc_base, first, &c,
                          path_ids, path_names, pred_ids, pred_names, epoch_ids, &row)
    finally:
        PyBuffer_Release(&view)
    return (row.hkey, row.key, row.pid, row.src if row.has_src else None, row.rec, edge)


cdef dict _map_merged(object m, Py_ssize_t* count):
    """_map_put's merge (once in ``MERGE_AT`` additions): the count written
    back to map ``m``, the merge, the map's new recent dict returned and its
    new count read into ``count[0]``."""
    m.n_recent = count[0]
    m.merge()
    recent = m.recent
    count[0] = m.n_recent
    return recent


cdef inline dict _map_put(object m, dict recent, Py_ssize_t* count, object key, object o,
                          Py_ssize_t merge_at):
    """apply_puts' MultiMap.add of ``o`` under ``key`` into map ``m``, whose
    recent dict the caller holds as ``recent`` and whose count as
    ``count[0]`` (read once per group): merged (``_map_merged``) once the
    count reaches ``merge_at``.  Returns the recent dict to go on with (the
    map's new one after a merge)."""
    _recent_add(recent, key, o)
    count[0] += 1
    if count[0] >= merge_at:
        return _map_merged(m, count)
    return recent


def apply_puts(state, list group, Py_ssize_t limit, int64_t mix, int pred_bits):
    """See records.apply_puts: a durable group of single puts (each request
    one assertion's frame, as Writer._put_one queues it), applied request by
    request as ``State._apply_one`` applies each, in one call: the rows
    through ``_index_row`` (index_one's), the map entries into the recent
    dicts read once per group (each map's count written back before a
    merge and at the end), the generation steps, the counters, and each
    citation through ``State._link`` right after its record.  Returns the
    records applied, or 0, having done nothing, unless the group is 1 to
    ``limit`` such requests and the state is not replaying."""
    cdef Py_ssize_t n = len(group), i, applied = 0, s, slots, first, r, checked = -1
    if n == 0 or n > limit or state._replay is not None:
        return 0
    for req in group:
        fr = req.frames
        if fr is None or len(fr[1]) != 1 or fr[1][0] != REC_ASSERT:
            return 0
    if not 0 <= pred_bits < 63:
        raise ValueError("apply_puts: pred_bits must be from 0 to 62")
    cols = state.cols
    cdef dict path_ids = state.path_ids
    cdef list path_names = state.path_names
    cdef dict pred_ids = state.pred_ids
    cdef list pred_names = state.pred_names
    cdef dict epoch_ids = state.epoch_ids
    cdef list kgen = state.key_gen
    cdef list pgen = state.path_gen
    slots = len(kgen)
    if slots == 0 or slots & (slots - 1) or len(pgen) != slots:
        raise ValueError("apply_puts: key_gen and path_gen must be lists of one power-of-two length")
    cdef uint64_t mask = <uint64_t>(slots - 1), qmask = (<uint64_t>1 << pred_bits) - 1, pid
    m0, m1, m2, m3 = state.by_hash, state.by_key, state.by_path, state.by_source
    cdef dict r0 = m0.recent, r1 = m1.recent, r2 = m2.recent, r3 = m3.recent
    cdef Py_ssize_t c0 = m0.n_recent, c1 = m1.n_recent, c2 = m2.n_recent, c3 = m3.n_recent
    cdef Py_ssize_t merge_at = _index.MERGE_AT
    cdef _Cols c
    cdef _Row row
    cdef Py_buffer view
    cdef int64_t max_rec = 0, seq
    cdef bint any_rec = False
    max_seq = None
    first = cols.n
    try:
        for i in range(n):
            req = group[i]
            loc = req.locs[0]
            seq_o = req.frames[2][0]
            if type(seq_o) is not int or not -9223372036854775808 <= seq_o <= 9223372036854775807:
                raise TypeError(f"apply_puts: seq {seq_o!r} is not an int64")
            seq = seq_o
            r = first + i
            if r >= checked:            # once a group, unless the columns grow
                if r >= cols.cap:
                    cols._grow(r + 1)
                checked = min(first + n, <Py_ssize_t>cols.cap)
                _cols_of(cols.rows, checked, &c, "apply_puts")
            PyObject_GetBuffer(req.data, &view, PyBUF_SIMPLE)
            try:
                edge = _index_row(<const uint8_t*>view.buf, view.len, 0, seq,
                                  (<int64_t>loc[0] << 40) + <int64_t>loc[1], r, &c, path_ids,
                                  path_names, pred_ids, pred_names, epoch_ids, &row)
            finally:
                PyBuffer_Release(&view)
            o = r
            cols.n = r + 1
            r0 = _map_put(m0, r0, &c0, row.hkey, o, merge_at)
            r1 = _map_put(m1, r1, &c1, row.key, o, merge_at)
            r2 = _map_put(m2, r2, &c2, row.pid, o, merge_at)
            if row.has_src:
                r3 = _map_put(m3, r3, &c3, row.src, o, merge_at)
            pid = <uint64_t>row.pid
            s = <Py_ssize_t>((pid * <uint64_t>mix + (<uint64_t>row.key & qmask)) & mask)
            kgen[s] = kgen[s] + 1
            s = <Py_ssize_t>(pid & mask)
            pgen[s] = pgen[s] + 1
            if not any_rec or row.rec > max_rec:
                max_rec = row.rec
                any_rec = True
            if max_seq is None or seq_o > max_seq:
                max_seq = seq_o
            if edge is not None:
                state._link((edge,))
            applied += 1
    finally:
        m0.n_recent = c0
        m1.n_recent = c1
        m2.n_recent = c2
        m3.n_recent = c3
        if any_rec and max_rec > state.last_recorded_at:
            state.last_recorded_at = max_rec
        if max_seq is not None and max_seq > state.last_seq:
            state.last_seq = int(max_seq)
        if applied:
            state.records = state.records + applied
    return applied


cdef _check_run(cnp.ndarray keys, cnp.ndarray vals, cnp.ndarray hashes):
    if (cnp.PyArray_NDIM(keys) != 1 or cnp.PyArray_TYPE(keys) != cnp.NPY_UINT64
            or not cnp.PyArray_IS_C_CONTIGUOUS(keys)
            or cnp.PyArray_NDIM(vals) != 1 or cnp.PyArray_TYPE(vals) != cnp.NPY_INT32
            or not cnp.PyArray_IS_C_CONTIGUOUS(vals)
            or cnp.PyArray_DIM(vals, 0) < cnp.PyArray_DIM(keys, 0)):
        raise ValueError("find_hash: keys must be a contiguous uint64 run, vals its int32 ordinals")
    if (cnp.PyArray_NDIM(hashes) != 2 or cnp.PyArray_DIM(hashes, 1) != 32
            or cnp.PyArray_TYPE(hashes) != cnp.NPY_UINT8 or not cnp.PyArray_IS_C_CONTIGUOUS(hashes)):
        raise ValueError("find_hash: hashes must be a contiguous array of 32-byte rows")


cdef long _find(const uint64_t* ks, const int32_t* vs, Py_ssize_t nkeys, dict recent,
                const uint8_t* hb, Py_ssize_t rows, const uint8_t* hp) except -2:
    """The ordinal of the 32-byte hash at ``hp``, or -1 (see find_hash)."""
    cdef uint64_t k
    memcpy(&k, hp, 8)
    cdef Py_ssize_t lo = 0, hi = nkeys, mid
    cdef long o
    while lo < hi:
        mid = (lo + hi) >> 1
        if ks[mid] < k:
            lo = mid + 1
        else:
            hi = mid
    while lo < nkeys and ks[lo] == k:
        o = vs[lo]
        if o < 0 or o >= rows:
            raise IndexError(f"find_hash: ordinal {o} is beyond the {rows} rows of hashes")
        if memcmp(hb + 32 * o, hp, 32) == 0:
            return o
        lo += 1
    if not recent:
        return -1
    cdef PyObject* lst = PyDict_GetItem(recent, PyLong_FromUnsignedLongLong(k))
    if lst != NULL:
        for item in <list>lst:
            o = item
            if o < 0 or o >= rows:
                raise IndexError(f"find_hash: ordinal {o} is beyond the {rows} rows of hashes")
            if memcmp(hb + 32 * o, hp, 32) == 0:
                return o
    return -1


def find_hash(cnp.ndarray keys, cnp.ndarray vals, dict recent, cnp.ndarray hashes, h):
    """See index.find_hash: the ordinal whose full hash is ``h``, or None,
    through a by-hash MultiMap's run (a binary search in C) and recent dict
    (a put's dedupe check: ~1 us through numpy's searchsorted before)."""
    if type(h) is not bytes or len(<bytes>h) != 32:
        raise ValueError("find_hash: a hash is 32 bytes")
    _check_run(keys, vals, hashes)
    cdef long o = _find(<const uint64_t*>cnp.PyArray_DATA(keys),
                        <const int32_t*>cnp.PyArray_DATA(vals), cnp.PyArray_DIM(keys, 0), recent,
                        <const uint8_t*>cnp.PyArray_DATA(hashes), cnp.PyArray_DIM(hashes, 0),
                        <const uint8_t*>PyBytes_AS_STRING(h))
    return None if o < 0 else o


def find_hashes(cnp.ndarray keys, cnp.ndarray vals, dict recent, cnp.ndarray hashes, list hs):
    """See index.find_hashes: find_hash of each hash of ``hs`` (a batch's
    dedupe lookup: 0.3 us a hash through numpy's vectorized search before)."""
    _check_run(keys, vals, hashes)
    for h in hs:
        if type(h) is not bytes or len(<bytes>h) != 32:
            raise ValueError("find_hash: a hash is 32 bytes")
    cdef const uint64_t* ks = <const uint64_t*>cnp.PyArray_DATA(keys)
    cdef const int32_t* vs = <const int32_t*>cnp.PyArray_DATA(vals)
    cdef Py_ssize_t nkeys = cnp.PyArray_DIM(keys, 0), rows = cnp.PyArray_DIM(hashes, 0)
    cdef const uint8_t* hb = <const uint8_t*>cnp.PyArray_DATA(hashes)
    cdef long o
    out = []
    for h in hs:
        o = _find(ks, vs, nkeys, recent, hb, rows, <const uint8_t*>PyBytes_AS_STRING(h))
        out.append(None if o < 0 else o)
    return out


# ------------------------------------------------------------ the log's write
cdef extern from "<unistd.h>" nogil:
    ssize_t c_write "write"(int fd, const void* buf, size_t count)
    int c_fdatasync "fdatasync"(int fd)

cdef extern from "<errno.h>" nogil:
    int errno
    int EINTR

import os as _os


def write_sync(int fd, data, bint sync):
    """``os.write`` of all of ``data`` to ``fd`` (looping on short writes),
    then, when ``sync``, ``os.fdatasync(fd)``: the WAL's group write, in one
    release of the GIL instead of two (with writers waiting for the GIL,
    taking it back after each call cost a group ~25 us: bench.group_trace).
    The pure twin is ``File.write`` then ``File.sync`` (wal.py).  Raises
    ``OSError(errno, strerror)`` as those do; EINTR is retried (PEP 475), so
    a signal handler runs when the call returns.  After a failed write the
    file may hold part of ``data``; a failed fdatasync is not retried."""
    cdef Py_buffer view
    cdef const char* p
    cdef Py_ssize_t left
    cdef ssize_t n
    cdef int err = 0
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        p = <const char*>view.buf
        left = view.len
        with nogil:
            while left > 0:
                n = c_write(fd, p, <size_t>left)
                if n < 0:
                    if errno == EINTR:
                        continue
                    err = errno
                    break
                p += n
                left -= n
            if err == 0 and sync:
                while c_fdatasync(fd) != 0:
                    if errno != EINTR:
                        err = errno
                        break
    finally:
        PyBuffer_Release(&view)
    if err:
        raise OSError(err, _os.strerror(err))
