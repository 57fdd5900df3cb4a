# cython: language_level=3
"""The query path's per-candidate loops, compiled: the twin of
``stemedb/core/qpure.py`` (read that module for what each function means;
``stemedb.core.qfast`` chooses which runs, and tests/unit/test_query_parity.py
holds the two equal, damaged input included).

Each function here earned its place by a measured gain on the query path
(bench/results/query-compiled-2026-11-26.md, query-columns-2026-11-26-session4.md;
tests/unit/test_query_columns.py holds the column functions to their twins).
It reads no log bytes: the frame reader that was here went with the lenses'
move to the index columns.
"""
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.math cimport pow
from cpython.list cimport PyList_GET_SIZE, PyList_GET_ITEM, PyList_New, PyList_SET_ITEM

# Below 2**53 an int64 converts to a double exactly, so one IEEE division
# gives Python's correctly rounded int / int; beyond it Python's own runs.
DEF EXACT = 9007199254740992

from . import qpure as _pure

from .qpure import INT64_MAX, INT64_MIN

# ------------------------------------------------------------ the columns
# A typed memoryview costs ~0.6 us to acquire (format checks, a view object),
# more than a small key's whole loop: cache_take over 4 ordinals was 1.36 us
# with 0.23 of it the loop, and a cold small-key query took ~18 of them.
# _col reads a numpy column's data pointer instead (the columns are 1-D,
# native-order numpy arrays, snapshot views included), and refuses anything
# else as the memoryview did (ValueError; TypeError for a non-array).

cimport numpy as cnp
cnp.import_array()

cdef const char _NOTHING[8]

cdef const void* _col(object a, char kind, int size, Py_ssize_t* n) except NULL:
    """The data of ``a``, a 1-D C-contiguous numpy array of ``kind`` ('i',
    'u', 'f') and item ``size``, with its length in ``n[0]``."""
    cdef cnp.ndarray arr
    if not cnp.PyArray_Check(a):
        raise TypeError(f"a column must be a numpy array, not {type(a).__name__}")
    arr = <cnp.ndarray>a
    if (cnp.PyArray_NDIM(arr) != 1 or arr.descr.kind != kind
            or cnp.PyArray_ITEMSIZE(arr) != size or not cnp.PyArray_IS_C_CONTIGUOUS(arr)
            or not cnp.PyArray_ISNOTSWAPPED(arr)):
        raise ValueError(f"Buffer dtype mismatch: a column of {chr(kind)}{size} expected, "
                         f"got {a.dtype} with shape {a.shape}")
    n[0] = cnp.PyArray_DIM(arr, 0)
    cdef const void* data = cnp.PyArray_DATA(arr)
    return data if data != NULL else <const void*>_NOTHING


from cpython.ref cimport PyObject
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING


cdef object _TRUE = True, _FALSE = False     # (the objects: <PyObject*>True is 1 cast)


cdef bytes _table(object table):
    """A table of allowed ids as bytes (1 allowed, 0 not); None stays None.
    A list of bools (gather's tables) is read in C, without the list of
    ints and the bytes() call made of it (~1.8k instructions a query)."""
    cdef Py_ssize_t i, n
    cdef char* p
    cdef PyObject* x
    if table is None:
        return None
    if type(table) is list:
        n = PyList_GET_SIZE(table)
        out = PyBytes_FromStringAndSize(NULL, n)
        p = PyBytes_AS_STRING(out)
        for i in range(n):
            x = PyList_GET_ITEM(table, i)
            if x == <PyObject*>_TRUE:
                p[i] = 1
            elif x == <PyObject*>_FALSE:
                p[i] = 0
            else:       # (another object's truth may run Python code)
                break
        else:
            return out
    return bytes([1 if y else 0 for y in table])


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
    cdef const int64_t* tsv = NULL
    cdef const int64_t* recv = NULL
    cdef const int64_t* seqv = NULL
    cdef const int8_t* lcv = NULL
    cdef const int32_t* epv = NULL
    cdef Py_ssize_t ncol
    for b in (as_of, known_at, since, seq_bound):
        if b is not None and not INT64_MIN <= b <= INT64_MAX:
            # a bound no column value can reach: the reference decides (a
            # query's bounds are times and seqs, always inside int64)
            return _pure.filter_ords(ords, ts, rec, seq, lc, ep, as_of, known_at, since,
                                     seq_bound, lc_ok, ep_ok)
    if h_as_of or h_since:
        tsv = <const int64_t*>_col(ts, b'i', 8, &ncol)
        if ncol < n:
            raise ValueError("the columns differ in length")
    if h_as_of:
        v_as_of = as_of
    if h_since:
        v_since = since
    if h_known:
        recv = <const int64_t*>_col(rec, b'i', 8, &ncol)
        v_known = known_at
        if ncol < n:
            raise ValueError("the columns differ in length")
    if h_seq:
        seqv = <const int64_t*>_col(seq, b'i', 8, &ncol)
        v_seq = seq_bound
        if ncol < n:
            raise ValueError("the columns differ in length")
    if lc_ok is not None:
        lcv = <const int8_t*>_col(lc, b'i', 1, &ncol)
        if ncol < n:
            raise ValueError("the columns differ in length")
        lct = _table(lc_ok)
        lcp = lct
        nlc = len(lct)
    if ep_ok is not None:
        epv = <const int32_t*>_col(ep, b'i', 4, &ncol)
        if ncol < n:
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


DEF HASHED = 0xFF           # format.VALUE_HASHED
DEF NOGIL_FROM = 1024       # candidates from which resolve_columns lets the GIL go


cdef int64_t _EXACT_C = EXACT    # (compared as C ints: a DEF this large is a Python int)


cdef double _decayed(double c, int64_t t, object hl_o, bint small_at, int64_t at,
                     object at_us) except? -1.0:
    """``c`` decayed from ``t`` to ``at_us`` with the half-life ``hl_o``
    (None: never decays), as lens.effective_confidence computes it: in C
    doubles while every operand is exact there (``small_at``: ``at_us`` fits,
    as ``at``), else in Python's arithmetic."""
    cdef int64_t age, hl
    if hl_o is None:
        return c
    # (against _EXACT_C, a C int: EXACT, a DEF this large, is compared as a
    # Python int, one made for each comparison)
    if small_at and -_EXACT_C < t < _EXACT_C:
        age = at - t
        if age <= 0:
            return c
        hl = hl_o
        if age < _EXACT_C and 0 < hl < _EXACT_C:
            return c * pow(2.0, -(<double>age) / <double>hl)
        return c * (2.0 ** (-(at_us - t) / hl_o))
    age_o = at_us - t
    if age_o > 0:
        return c * (2.0 ** (-age_o / hl_o))
    return c


cdef struct LensCols:         # the columns a lens reads, by _lens_cols
    const int64_t* seq
    const int64_t* ts
    const double* conf
    const uint8_t* rank
    const uint64_t* va
    const uint64_t* vb
    Py_ssize_t n                # len(seq); the others are at least as long


cdef int _lens_cols(LensCols* c, seq, ts, conf, rank, va, vb) except -1:
    """The lens columns' data (_col, each checked for its type)."""
    cdef Py_ssize_t nts, nconf, nrank, nva, nvb
    c.seq = <const int64_t*>_col(seq, b'i', 8, &c.n)
    c.ts = <const int64_t*>_col(ts, b'i', 8, &nts)
    c.conf = <const double*>_col(conf, b'f', 8, &nconf)
    c.rank = <const uint8_t*>_col(rank, b'u', 1, &nrank)
    c.va = <const uint64_t*>_col(va, b'u', 8, &nva)
    c.vb = <const uint64_t*>_col(vb, b'u', 8, &nvb)
    if nts < c.n or nconf < c.n or nrank < c.n or nva < c.n or nvb < c.n:
        raise ValueError("the columns differ in length")
    return 0


def column_rows(list ords, seq, ts, conf, rank, va, vb, at_us, bint decay,
                tuple half_life_us, tuple tier):
    """See qpure.column_rows: the columns read through typed views, one
    tuple built per candidate, no record read."""
    cdef LensCols cols
    _lens_cols(&cols, seq, ts, conf, rank, va, vb)
    cdef Py_ssize_t n = cols.n, m = PyList_GET_SIZE(ords), i, o, nt = len(tier)
    cdef Py_ssize_t r
    cdef int64_t t, at = 0
    cdef double c
    cdef uint64_t a, b
    cdef bint small_at = -EXACT < at_us < EXACT
    cdef Py_ssize_t hashed = 0
    if len(half_life_us) < nt:
        raise ValueError("half_life_us is shorter than tier")
    for i in range(m):
        o = <object>PyList_GET_ITEM(ords, i)
        if o < 0 or o >= n:
            raise IndexError(f"ordinal {o} outside the columns ({n})")
    if small_at:
        at = at_us
    cdef list rows = []
    for i in range(m):
        ob = <object>PyList_GET_ITEM(ords, i)
        o = ob
        t = cols.ts[o]
        c = cols.conf[o]
        r = cols.rank[o]
        if r >= nt:
            raise IndexError(f"source class {r} outside the tier table ({nt})")
        if decay:
            c = _decayed(c, t, <object>(<tuple>half_life_us)[r], small_at, at, at_us)
        a = cols.va[o]
        b = cols.vb[o]
        if (a & 0xFF) == HASHED:
            hashed += 1
        rows.append((t, cols.seq[o], c, c * <double>(<object>(<tuple>tier)[r]), r,
                     (a | (<object>b << 64)) if b else a, ob))
    return rows, hashed


# ---------------------------------------------------------------- the lenses
# resolve_columns: the rows_only lenses over the index columns, in C.  The
# reference is lens.py over column_rows' rows (qpure.resolve_columns); every
# step below mirrors one there, so every float is the same to the bit:
# canonical order by (timestamp, seq) descending, stable sorts (ties by
# canonical position), math.fsum's algorithm (_fsum, CPython 3.11's, for
# finite input), libm's log as math.log calls it.

from libc.stdlib cimport malloc, free, qsort
from libc.math cimport log, fabs, isfinite

cdef struct Cand:
    int64_t ts
    int64_t seq
    double eff
    double teff
    uint64_t va
    uint64_t vb
    Py_ssize_t src        # index into ords
    Py_ssize_t gid        # value group (first appearance in canonical order)
    int rank

cdef struct Key:          # a sort key: a value to order by, then the position
    double w
    Py_ssize_t pos


cdef int _by_time_desc(const void* a, const void* b) noexcept nogil:
    cdef const Cand* x = <const Cand*>a
    cdef const Cand* y = <const Cand*>b
    if x.ts != y.ts:
        return -1 if x.ts > y.ts else 1
    if x.seq != y.seq:
        return -1 if x.seq > y.seq else 1
    return 0


cdef int _by_w_desc(const void* a, const void* b) noexcept nogil:
    # Python's sorted(key=w, reverse=True) is stable: equal weights keep
    # their order, which is the position's
    cdef const Key* x = <const Key*>a
    cdef const Key* y = <const Key*>b
    if x.w > y.w:
        return -1
    if x.w < y.w:
        return 1
    return -1 if x.pos < y.pos else (1 if x.pos > y.pos else 0)


cdef double _fsum(const double* x, Py_ssize_t m, double* p) noexcept nogil:
    """math.fsum of the m finite doubles at x (p: scratch of m + 1)."""
    cdef Py_ssize_t i, j, n = 0, k
    cdef double v, y, t, hi, yr, lo = 0.0
    for k in range(m):
        v = x[k]
        i = 0
        for j in range(n):
            y = p[j]
            if fabs(v) < fabs(y):
                t = v
                v = y
                y = t
            hi = v + y
            yr = hi - v
            lo = y - yr
            if lo != 0.0:
                p[i] = lo
                i += 1
            v = hi
        n = i
        if v != 0.0:
            p[n] = v
            n += 1
    hi = 0.0
    lo = 0.0
    if n > 0:
        n -= 1
        hi = p[n]
        while n > 0:
            v = hi
            n -= 1
            y = p[n]
            hi = v + y
            yr = hi - v
            lo = y - yr
            if lo != 0.0:
                break
        if n > 0 and ((lo < 0.0 and p[n - 1] < 0.0) or (lo > 0.0 and p[n - 1] > 0.0)):
            y = lo * 2.0
            v = hi + y
            yr = v - hi
            if y == yr:
                hi = v
    return hi


def fsum(values):
    """_fsum over a sequence of finite floats (for the parity test against
    math.fsum)."""
    cdef Py_ssize_t m = len(values), i
    cdef double* x = <double*>malloc((m + 1) * sizeof(double))
    cdef double* p = <double*>malloc((m + 1) * sizeof(double))
    try:
        for i in range(m):
            x[i] = values[i]
            if not isfinite(x[i]):
                raise ValueError("fsum here takes finite values only")
        return _fsum(x, m, p)
    finally:
        free(x)
        free(p)


cdef inline double _share(double part, double total) noexcept nogil:
    return part / total if total > 0.0 else 0.0


cdef double _conflict(const double* w, Py_ssize_t k, double* tmp, double* p) noexcept nogil:
    """lens._conflict of the k weights at w (tmp, p: scratch of k + 1)."""
    cdef double total, q, h
    cdef Py_ssize_t i, m = 0
    if k < 2:
        return 0.0
    total = _fsum(w, k, p)
    if total <= 0.0:
        return 1.0
    for i in range(k):
        q = w[i] / total
        if q > 0.0:
            tmp[m] = q * log(q)
            m += 1
    h = -_fsum(tmp, m, p)
    h = h / log(<double>k)
    h = h if h > 0.0 else 0.0           # max(0.0, h)
    return h if h < 1.0 else 1.0        # min(1.0, h)


cdef Py_ssize_t _block(Cand* c, Py_ssize_t n, Py_ssize_t* slots, Py_ssize_t nslots,
                       double* w1, double* w2, double* w3, Py_ssize_t* cnt, Py_ssize_t* st,
                       Py_ssize_t* mem, double* p) noexcept nogil:
    """lens._group over c[0:n] (canonical order): the value groups numbered
    in order of first appearance (c[i].gid); returns their number k, with
    cnt[g] the members, st[g] where they start in mem (mem: every position,
    grouped, canonical order within a group), w2[g] the fsum of their eff
    and w3[g] of their eff x tier (a one-member group: its value, as
    lens._group).  slots: nslots (a power of two >= 2n) of scratch; w1, p:
    n + 1 of scratch."""
    cdef Py_ssize_t i, j, g, k = 0, mask = nslots - 1, start
    cdef uint64_t h
    cdef Cand* e
    for i in range(nslots):
        slots[i] = -1
    for i in range(n):
        h = c[i].va * <uint64_t>0x9E3779B97F4A7C15 ^ (c[i].vb + <uint64_t>0x632BE59BD9B4E019)
        h ^= h >> 29
        j = <Py_ssize_t>(h & <uint64_t>mask)
        while True:
            if slots[j] < 0:
                slots[j] = i
                c[i].gid = k
                k += 1
                break
            e = &c[slots[j]]
            if e.va == c[i].va and e.vb == c[i].vb:
                c[i].gid = e.gid
                break
            j = (j + 1) & mask
    for g in range(k):
        cnt[g] = 0
    for i in range(n):
        cnt[c[i].gid] += 1
    start = 0
    for g in range(k):
        st[g] = start
        start += cnt[g]
    for i in range(n):              # slots[0:k] as each group's fill count
        slots[i] = 0
    for i in range(n):
        g = c[i].gid
        mem[st[g] + slots[g]] = i
        slots[g] += 1
    for g in range(k):
        start = st[g]
        if cnt[g] == 1:
            w2[g] = c[mem[start]].eff
            w3[g] = c[mem[start]].teff
            continue
        for j in range(cnt[g]):
            w1[j] = c[mem[start + j]].eff
        w2[g] = _fsum(w1, cnt[g], p)
        for j in range(cnt[g]):
            w1[j] = c[mem[start + j]].teff
        w3[g] = _fsum(w1, cnt[g], p)
    return k


cdef double _consensus_order(const double* w, const Py_ssize_t* cnt, const Py_ssize_t* st,
                             const Py_ssize_t* mem, Py_ssize_t k, Key* keys,
                             Py_ssize_t* out, double* p) noexcept nogil:
    """lens._consensus over the k groups _block made: their members into
    out, heaviest group first (a stable sort: equal weights keep the
    groups' order), canonical order within a group; returns the winning
    group's share of all weight."""
    cdef Py_ssize_t i, j, g, m = 0
    if k == 1:
        for j in range(cnt[0]):
            out[j] = mem[j]
        return _share(w[0], w[0])
    for g in range(k):
        keys[g].w = w[g]
        keys[g].pos = g
    qsort(keys, k, sizeof(Key), _by_w_desc)
    for i in range(k):
        g = keys[i].pos
        for j in range(cnt[g]):
            out[m] = mem[st[g] + j]
            m += 1
    return _share(w[keys[0].pos], _fsum(w, k, p))


cdef Py_ssize_t _ranked(Cand* c, Py_ssize_t n, Py_ssize_t* slots, Py_ssize_t nslots,
                        double* w1, double* w2, double* w3, Py_ssize_t* cnt, Py_ssize_t* st,
                        Py_ssize_t* mem, double* p, double* score) noexcept nogil:
    """c[0:n] in canonical order, grouped (_block); the conflict score in
    ``score``; the number of groups returned."""
    qsort(c, n, sizeof(Cand), _by_time_desc)
    cdef Py_ssize_t k = _block(c, n, slots, nslots, w1, w2, w3, cnt, st, mem, p)
    score[0] = _conflict(w3, k, w1, p)
    return k


def resolve_columns(str lens_name, list ords, seq, ts, conf, rank, va, vb, at_us,
                    bint decay, tuple half_life_us, tuple tier):
    """See qpure.resolve_columns."""
    cdef LensCols cols
    _lens_cols(&cols, seq, ts, conf, rank, va, vb)
    cdef Py_ssize_t ncol = cols.n, n = PyList_GET_SIZE(ords), i, j, o, k, nt = len(tier)
    cdef Py_ssize_t r, nslots, a
    cdef int kind
    cdef int64_t t, at = 0
    cdef double cv, score = 0.0, share
    cdef bint small_at = -EXACT < at_us < EXACT
    if lens_name == "recency":
        kind = 0
    elif lens_name == "confidence":
        kind = 1
    elif lens_name == "consensus":
        kind = 2
    elif lens_name == "authority":
        kind = 3
    elif lens_name == "layered":
        kind = 4
    else:
        raise ValueError(f"lens {lens_name!r} is not resolved over columns")
    if len(half_life_us) < nt:
        raise ValueError("half_life_us is shorter than tier")
    for i in range(n):
        o = <object>PyList_GET_ITEM(ords, i)
        if o < 0 or o >= ncol:
            raise IndexError(f"ordinal {o} outside the columns ({ncol})")
    if n == 0:
        return None, 0.0, 0.0, [], []
    if small_at:
        at = at_us
    nslots = 16
    while nslots < 2 * n:
        nslots *= 2
    # the work arrays, one allocation (twelve mallocs were ~2k instructions
    # of a small key's ~12k here); every size is a multiple of 8 bytes, so
    # each array starts aligned
    cdef char* block = <char*>malloc(2 * n * sizeof(Cand) + nslots * sizeof(Py_ssize_t)
                                     + 4 * (n + 1) * sizeof(double)
                                     + 4 * (n + 1) * sizeof(Py_ssize_t)
                                     + (n + 1) * sizeof(Key))
    if block == NULL:
        raise MemoryError()
    cdef Cand* c = <Cand*>block
    cdef Cand* cc = c + n                                # one class's candidates
    cdef Py_ssize_t* slots = <Py_ssize_t*>(cc + n)
    cdef double* w1 = <double*>(slots + nslots)
    cdef double* w2 = w1 + (n + 1)
    cdef double* w3 = w2 + (n + 1)
    cdef double* p = w3 + (n + 1)
    cdef Py_ssize_t* cnt = <Py_ssize_t*>(p + (n + 1))
    cdef Py_ssize_t* st = cnt + (n + 1)
    cdef Py_ssize_t* mem = st + (n + 1)
    cdef Py_ssize_t* out = mem + (n + 1)
    cdef Key* keys = <Key*>(out + (n + 1))
    cdef list ordered, layers
    try:
        for i in range(n):
            o = <object>PyList_GET_ITEM(ords, i)
            t = cols.ts[o]
            cv = cols.conf[o]
            r = cols.rank[o]
            if r >= nt:
                raise IndexError(f"source class {r} outside the tier table ({nt})")
            if decay:
                cv = _decayed(cv, t, <object>(<tuple>half_life_us)[r], small_at, at, at_us)
            c[i].ts = t
            c[i].seq = cols.seq[o]
            c[i].eff = cv
            c[i].teff = cv * <double>(<object>(<tuple>tier)[r])
            c[i].va = cols.va[o]
            c[i].vb = cols.vb[o]
            c[i].rank = <int>r
            c[i].src = i
        for i in range(n):
            if not isfinite(c[i].eff) or not isfinite(c[i].teff):
                return None             # a damaged record: the rows path decides
        # The GIL goes only for a sort worth another thread's turn: released
        # for every key, each query woke a thread waiting for it (the audit
        # writer, a request thread) to find it taken again, one futex round
        # trip per query
        if n >= NOGIL_FROM:
            with nogil:
                k = _ranked(c, n, slots, nslots, w1, w2, w3, cnt, st, mem, p, &score)
        else:
            k = _ranked(c, n, slots, nslots, w1, w2, w3, cnt, st, mem, p, &score)
        if kind == 0:                   # recency: canonical order
            return (<object>PyList_GET_ITEM(ords, c[0].src), c[0].eff, score,
                    [<object>PyList_GET_ITEM(ords, c[i].src) for i in range(n)], [])
        if kind == 1:                   # confidence: by eff, descending, stable
            for i in range(n):
                keys[i].w = c[i].eff
                keys[i].pos = i
            qsort(keys, n, sizeof(Key), _by_w_desc)
            i = keys[0].pos
            return (<object>PyList_GET_ITEM(ords, c[i].src), c[i].eff, score,
                    [<object>PyList_GET_ITEM(ords, c[keys[j].pos].src) for j in range(n)], [])
        if kind == 2:                   # consensus
            share = _consensus_order(w2, cnt, st, mem, k, keys, out, p)
            return (<object>PyList_GET_ITEM(ords, c[out[0]].src), share, score,
                    [<object>PyList_GET_ITEM(ords, c[out[j]].src) for j in range(n)], [])
        # authority, layered: class by class, best first; consensus within each
        ordered = []
        layers = []
        winner = None
        conf_out = 0.0
        for r in range(nt):
            a = 0
            for i in range(n):          # the class's candidates, canonical order
                if c[i].rank == r:
                    cc[a] = c[i]
                    a += 1
            if a == 0:
                continue
            k = _block(cc, a, slots, nslots, w1, w2, w3, cnt, st, mem, p)
            share = _consensus_order(w2, cnt, st, mem, k, keys, out, p)
            if winner is None:
                winner = <object>PyList_GET_ITEM(ords, cc[out[0]].src)
                conf_out = share
            ordered.extend([<object>PyList_GET_ITEM(ords, cc[out[j]].src) for j in range(a)])
            if kind == 4:
                layers.append((r, <object>PyList_GET_ITEM(ords, cc[out[0]].src), share,
                               _conflict(w3, k, w1, p), a))
        return winner, conf_out, score, ordered, layers
    finally:
        free(block)


# ------------------------------------------------------------ the read cache
# cache_take: a query page's records from the read cache, in one call under
# the cache's lock (the reference is qpure.cache_take; bench.costs' "decode"
# row was ~5 us of a warm 4-candidate query in take() and ReadCache.records'
# Python loop).

from cpython.dict cimport PyDict_GetItem, PyDict_Update
from cpython.object cimport PyObject_RichCompareBool, Py_EQ
from cpython.tuple cimport PyTuple_GET_SIZE
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF, Py_XDECREF


def cache_take(d, list ords, loc, seq):
    """See qpure.cache_take."""
    cdef Py_ssize_t n, nseq, m = PyList_GET_SIZE(ords), i, o, hits = 0
    cdef const int64_t* locv = <const int64_t*>_col(loc, b'i', 8, &n)
    cdef const int64_t* seqv = <const int64_t*>_col(seq, b'i', 8, &nseq)
    cdef PyObject* e
    if not isinstance(d, dict):
        raise TypeError("the cache's entries must be a dict")
    if nseq < n:
        raise ValueError("the columns differ in length")
    for i in range(m):
        o = <object>PyList_GET_ITEM(ords, i)
        if o < 0 or o >= n:
            raise IndexError(f"ordinal {o} outside the columns ({n})")
    to_end = d.move_to_end
    cdef list locs = [], recs = [], seqs = []
    for i in range(m):
        o = <object>PyList_GET_ITEM(ords, i)
        key = locv[o]
        locs.append(key)
        seqs.append(seqv[o])
        e = PyDict_GetItem(d, key)
        if e == NULL:
            recs.append(None)
        else:
            rec = (<object>e)[0]    # before move_to_end: the entry stays alive
            to_end(key)
            recs.append(rec)
            hits += 1
    return locs, recs, seqs, hits


# ------------------------------------------------------------ the audit entry
# audit_entry: query._entry compiled (the audit writer's thread builds one
# entry per query; with the Python builder that thread cost a warm
# 4-candidate query about as much CPU as the query itself, and it holds the
# GIL while it builds).  query._entry is the reference; the weight is the
# decay expression of _decayed, the one column_rows uses.

cdef extern from "<stdio.h>" nogil:
    int snprintf(char* s, size_t n, const char* fmt, ...)

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct tm:
        int tm_sec, tm_min, tm_hour, tm_mday, tm_mon, tm_year
    tm* gmtime_r(const time_t* t, tm* out)


cdef object _query_id(object at, object number):
    """audit.query_id: ``f"q{at:x}{number % 0x10000:04x}"``, by snprintf
    (the f-string's two format specs cost ~0.8 us)."""
    cdef char buf[48]
    cdef unsigned long long a, k
    if type(at) is int and type(number) is int and 0 <= at <= 0x7FFFFFFFFFFFFFFF:
        a = at
        k = number % 0x10000
        snprintf(buf, sizeof(buf), "q%llx%04llx", a, k)
        return buf.decode("ascii")
    return f"q{at:x}{number % 0x10000:04x}"


cdef object _format_time(object at, object format_time):
    """timeutil.format_time(at) by snprintf (the format of _fast.format_time)
    for a time from the epoch on; ``format_time`` otherwise."""
    cdef char buf[64]
    cdef int64_t us, secs, frac
    cdef time_t t
    cdef tm out
    if type(at) is int and 0 <= at <= 0x7FFFFFFFFFFFFFFF:
        us = at
        secs = us // 1000000
        frac = us - secs * 1000000
        t = secs
        if gmtime_r(&t, &out) != NULL and 0 <= out.tm_year + 1900 <= 9999:
            snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
                     out.tm_year + 1900, out.tm_mon + 1, out.tm_mday, out.tm_hour,
                     out.tm_min, out.tm_sec, <int>frac)
            return buf.decode("ascii")
    return format_time(at)


def query_id(at, number):
    """_query_id, for the parity tests."""
    return _query_id(at, number)


def format_time_c(at, format_time):
    """_format_time, for the parity tests."""
    return _format_time(at, format_time)


cdef object _entry_weight(r, tuple half_life_us, bint decay, bint small_at, int64_t at_c,
                          at_us):
    """A contributor's weight, as query._contributing computes it: its
    confidence, decayed to ``at_us`` when ``decay`` (in C doubles while every
    operand is exact there, ``small_at``: ``at_us`` fits, as ``at_c``)."""
    cdef int64_t age_c
    cdef long long t_c, hl_c
    cdef int over = 0
    c = r.confidence
    if decay:
        hl = half_life_us[r.source_class]
        if hl is not None:
            t = r.timestamp
            if small_at and type(t) is int and type(hl) is int:
                # in C ints and doubles while every operand is exact there
                # (no Python int made for each comparison with EXACT): the
                # same expressions, so the same double; anything else
                # (beyond int64, or past EXACT) takes the Python expression
                t_c = PyLong_AsLongLongAndOverflow(t, &over)
                if over == 0 and -_EXACT_C < t_c < _EXACT_C:
                    age_c = at_c - <int64_t>t_c
                    if age_c <= 0:
                        return c
                    hl_c = PyLong_AsLongLongAndOverflow(hl, &over)
                    if over == 0 and age_c < _EXACT_C and 0 < hl_c < _EXACT_C:
                        return <double>c * pow(2.0, -(<double>age_c) / <double>hl_c)
            age = at_us - t
            if age > 0:
                c = c * 2.0 ** (-age / hl)
    return c


def audit_entry(tuple names, tuple half_life_us, format_time, number, at, agent, params,
                list winners, more, list top, at_us, bint decay, active):
    """See query._entry (``names``: _AUDIT_PARAMS, ``half_life_us``:
    lens._HALF_LIFE_US, ``format_time``: timeutil.format_time, bound
    first by functools.partial)."""
    cdef dict given = {}
    cdef Py_ssize_t i
    cdef int64_t at_c = 0
    cdef bint small_at = -EXACT < at_us < EXACT
    if small_at:
        at_c = at_us
    if type(params) is dict:
        for k, v in (<dict>params).items():
            if v is not None:
                given[k] = v
    elif type(params) is tuple and len(<tuple>params) <= len(names):
        for i in range(len(<tuple>params)):
            v = (<tuple>params)[i]
            if v is not None:
                given[names[i]] = v
    else:
        for k, v in zip(names, params):
            if v is not None:
                given[k] = v
    cdef list hashes = [w.record.hash.hex() for w in winners]
    cdef list contributing = []
    for a in top:
        r = a.record
        contributing.append({"hash": r.hash.hex(),
                             "weight": _entry_weight(r, half_life_us, decay, small_at, at_c,
                                                     at_us)})
    return {"id": _query_id(at, number), "at": _format_time(at, format_time), "at_us": at,
            "agent": agent, "params": given, "result_hashes": hashes,
            "result_hashes_more": more if more > 0 else 0,
            "contributing": contributing, "contributing_more": active - len(top)}


# ------------------------------------------------------------ the audit line
# audit_line writes the entry audit_entry builds straight to its JSON line,
# on the query's own thread: the audit writer then only joins and writes
# bytes.  Built on the writer's thread, each entry (a dict, then
# orjson.dumps) held the GIL ~9 us there, and the query thread lost ~10 us
# more to the handoffs (a warm small-key query: 40 us with the writer
# thread building, 19 us with entries only queued; bench.costs, R1 rows).
# The line is orjson's for every entry (tests/unit/test_audit_line.py), but
# for a float's text: Python's repr, the same double (orjson writes
# 1e-05 as 0.00001).  Anything outside what is written here (a time before
# the epoch, an int beyond int64, a parameter that is not a str, int or
# bool, a lone surrogate) gives None, and the caller queues the entry for
# the writer thread as before.

from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.string cimport memcpy

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int* ptype) except NULL
    int Py_DTSF_ADD_DOT_0

cdef struct Line:
    char* p
    Py_ssize_t n
    Py_ssize_t cap

cdef inline int _room(Line* o, Py_ssize_t k) except -1:
    if o.n + k <= o.cap:
        return 0
    return _grow(o, k)

cdef int _grow(Line* o, Py_ssize_t k) except -1:
    cdef Py_ssize_t cap = o.cap
    cdef char* q
    while cap < o.n + k:
        cap *= 2
    q = <char*>PyMem_Realloc(o.p, cap)
    if q == NULL:
        raise MemoryError()
    o.p = q
    o.cap = cap
    return 0

cdef inline int _raw(Line* o, const char* s, Py_ssize_t k) except -1:
    _room(o, k)
    memcpy(o.p + o.n, s, k)
    o.n += k
    return 0

cdef const char* _HEX = b"0123456789abcdef"

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object v, int* overflow) except? -1
    unsigned long PyLong_AsUnsignedLongMask(object v) except? <unsigned long>-1

cdef int _jstr(Line* o, str s) except -1:
    """``s`` as a JSON string, escaped as orjson (and RFC 8785) escape it."""
    cdef Py_ssize_t k, i
    cdef unsigned char ch
    cdef const unsigned char* u = <const unsigned char*>PyUnicode_AsUTF8AndSize(s, &k)
    _room(o, 6 * k + 2)
    cdef char* w = o.p + o.n
    w[0] = b'"'
    w += 1
    for i in range(k):
        ch = u[i]
        if ch == 34 or ch == 92:        # " and \
            w[0] = b'\\'
            w[1] = <char>ch
            w += 2
        elif ch >= 0x20:
            w[0] = <char>ch
            w += 1
        elif ch == 8 or ch == 9 or ch == 10 or ch == 12 or ch == 13:
            w[0] = b'\\'
            w[1] = b'b' if ch == 8 else b't' if ch == 9 else b'n' if ch == 10 \
                else b'f' if ch == 12 else b'r'
            w += 2
        else:
            memcpy(w, b"\\u00", 4)
            w[4] = _HEX[ch >> 4]
            w[5] = _HEX[ch & 15]
            w += 6
    w[0] = b'"'
    o.n = w + 1 - o.p
    return 0

cdef int _jhex(Line* o, bytes h) except -1:
    """``h.hex()`` as a JSON string."""
    cdef Py_ssize_t k = len(h), i
    cdef const unsigned char* b = h
    _room(o, 2 * k + 2)
    cdef char* w = o.p + o.n
    w[0] = b'"'
    for i in range(k):
        w[1 + 2 * i] = _HEX[b[i] >> 4]
        w[2 + 2 * i] = _HEX[b[i] & 15]
    w[2 * k + 1] = b'"'
    o.n += 2 * k + 2
    return 0

cdef const char* _PAIRS = (b"00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                            b"40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                            b"8081828384858687888990919293949596979899")


cdef int _jint(Line* o, long long v) except -1:
    """``v`` in decimal (snprintf's "%lld" cost more than the rest of a
    line), two digits a step (an entry's at_us: 8 steps, not 16)."""
    cdef char buf[24]
    cdef int i = 24
    cdef unsigned long long u = <unsigned long long>(-(v + 1)) + 1 if v < 0 else v
    cdef unsigned int r
    while u >= 100:
        r = <unsigned int>(u % 100)
        u //= 100
        i -= 2
        buf[i] = _PAIRS[2 * r]
        buf[i + 1] = _PAIRS[2 * r + 1]
    if u >= 10:
        i -= 2
        buf[i] = _PAIRS[2 * u]
        buf[i + 1] = _PAIRS[2 * u + 1]
    else:
        i -= 1
        buf[i] = <char>(48 + u)
    if v < 0:
        i -= 1
        buf[i] = b'-'
    return _raw(o, buf + i, 24 - i)

cdef inline void _digits(char* w, int v, int k) noexcept:
    """``v`` as ``k`` decimal digits, zero-padded."""
    while k > 0:
        k -= 1
        w[k] = <char>(48 + v % 10)
        v //= 10

cdef int64_t _stamp_secs = -1     # the second _stamp_text holds (-1: none)
cdef char _stamp_text[19]          # "YYYY-MM-DDTHH:MM:SS" of _stamp_secs
cdef char _secs_text[20]           # _stamp_secs in decimal (_stamp's at_us), _secs_len digits
cdef int _secs_len = 0


cdef int _jstamp(Line* o, int64_t at, unsigned long number) except -1:
    """The entry's ``"id":"q...","at":"..."``: query_id(at, number) and
    format_time(at), for 0 <= at and a year up to 9999 (checked by the
    caller); by hand, as snprintf cost ~1 us of a ~3 us line."""
    global _stamp_secs, _secs_len
    cdef time_t t = at // 1000000
    cdef int frac = at - (at // 1000000) * 1000000
    cdef tm out
    cdef int i, k = 0
    cdef uint64_t a = at
    cdef char hexa[16]
    if t != _stamp_secs:
        # the date and time to the second, as gmtime_r gives them, kept for
        # the next line of the same second (~1k instructions a line; the
        # GIL is held here, so no other thread writes them meanwhile)
        if gmtime_r(&t, &out) == NULL:
            raise OverflowError("time out of range")
        _stamp_secs = -1
        _digits(_stamp_text, out.tm_year + 1900, 4)
        _stamp_text[4] = b'-'
        _digits(_stamp_text + 5, out.tm_mon + 1, 2)
        _stamp_text[7] = b'-'
        _digits(_stamp_text + 8, out.tm_mday, 2)
        _stamp_text[10] = b'T'
        _digits(_stamp_text + 11, out.tm_hour, 2)
        _stamp_text[13] = b':'
        _digits(_stamp_text + 14, out.tm_min, 2)
        _stamp_text[16] = b':'
        _digits(_stamp_text + 17, out.tm_sec, 2)
        k = 0
        a = t
        while a != 0:
            k += 1
            a //= 10
        a = t
        for i in range(k - 1, -1, -1):  # (no digits for the second 0)
            _secs_text[i] = <char>(48 + a % 10)
            a //= 10
        _secs_len = k
        a = at
        k = 0
        _stamp_secs = t
    while True:
        hexa[15 - k] = _HEX[a & 15]
        k += 1
        a >>= 4
        if a == 0:
            break
    _room(o, 8 + k + 4 + 8 + 27 + 1)
    cdef char* w = o.p + o.n
    memcpy(w, b'"id":"q', 7)
    w += 7
    memcpy(w, hexa + 16 - k, k)
    w += k
    for i in range(4):
        w[i] = _HEX[(number >> (12 - 4 * i)) & 15]
    w += 4
    memcpy(w, b'","at":"', 8)
    w += 8
    memcpy(w, _stamp_text, 19)
    w[19] = b'.'
    _digits(w + 20, frac, 6)
    w[26] = b'Z'
    w[27] = b'"'
    o.n = w + 28 - o.p
    return 0

cdef bint _is_i64(v):
    """``type(v) is int and INT64_MIN <= v <= INT64_MAX``, in C."""
    cdef int overflow = 0
    if type(v) is not int:
        return False
    PyLong_AsLongLongAndOverflow(v, &overflow)
    return overflow == 0

cdef int _jfloat(Line* o, double v) except -1:
    cdef char* t = PyOS_double_to_string(v, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
    try:
        _raw(o, t, len(t))
    finally:
        PyMem_Free(t)
    return 0

DEF MAX_STAMP = 253402300799999999     # 9999-12-31T23:59:59.999999Z in us
cdef int64_t _MAX_STAMP_C = MAX_STAMP  # (compared as C ints: a DEF this large is a Python int)


cdef bint _plain(v):
    """``v`` is written here as orjson writes it (None is left out)."""
    return v is None or type(v) is str or type(v) is bool or _is_i64(v)


cdef bint _head_ok(tuple names, number, at, agent, params):
    """The entry's head (id, times, agent, parameters) is one _head writes."""
    if (type(params) is not tuple or len(<tuple>params) > len(names) or type(number) is not int
            or not (_is_i64(at) and 0 <= at <= MAX_STAMP)      # to the year 9999
            or not (agent is None or type(agent) is str)):
        return False
    for v in <tuple>params:
        if not _plain(v):
            return False
    return True


cdef int _head(Line* o, tuple names, number, at, agent, tuple params,
               tuple keys=None) except -1:
    """``{"id":..,"at":..,"at_us":..,"agent":..,"params":{..}`` (checked by
    _head_ok).  ``keys``: :func:`_name_keys` of ``names``, when the caller
    keeps them (each name's JSON and its colon, written as they are)."""
    _stamp_head(o, number, at, agent)
    _params_json(o, names, params, keys)
    return 0


cdef int _stamp_head(Line* o, number, at, agent) except -1:
    """_head's ``{"id":..,"at":..,"at_us":..,"agent":..``."""
    return _stamp(o, _id_low(number), at, agent)


cdef inline unsigned long _id_low(number) except? 0:
    """The id's low 16 bits (query_id's), read in C for an int (no int
    object made for them)."""
    if type(number) is int:
        return PyLong_AsUnsignedLongMask(number) & 0xFFFF
    return number & 0xFFFF


cdef int _stamp(Line* o, unsigned long low, int64_t at, agent) except -1:
    """_stamp_head of the id's low 16 bits (a KeptLine's, written at the
    flush).  ``at_us`` is written as the second's decimal digits that
    _jstamp keeps and the microseconds' six (_jint's digits of the same
    number: two-digit steps and a call of _raw were ~200 instructions of a
    warm R1 query's line)."""
    cdef char* w
    _room(o, 1 + 64 + 9 + 20 + 9)      # ("{", _jstamp's, at_us's and the agent's key)
    o.p[o.n] = b'{'
    o.n += 1
    _jstamp(o, at, low)
    w = o.p + o.n
    memcpy(w, b',"at_us":', 9)
    w += 9
    if at >= 1000000:           # (_jstamp kept its second's digits)
        memcpy(w, _secs_text, _secs_len)
        w += _secs_len
        memcpy(w, w - _secs_len - 9 - 8, 6)    # the microseconds, as "at" ends: ...ffffffZ"
        w += 6
        o.n = w - o.p
    else:
        o.n = w - o.p
        _jint(o, at)
    w = o.p + o.n
    memcpy(w, b',"agent":', 9)
    o.n += 9
    if agent is None:
        _raw(o, b'null', 4)
    else:
        _jstr(o, agent)
    return 0


cdef int _params_json(Line* o, tuple names, tuple params, tuple keys) except -1:
    """_head's ``,"params":{..}``."""
    cdef Py_ssize_t i
    cdef bint first = True
    cdef bytes key
    _raw(o, b',"params":{', 11)
    for i in range(len(params)):
        v = params[i]
        if v is None:
            continue
        if not first:
            _raw(o, b',', 1)
        first = False
        if keys is None:
            _jstr(o, names[i])
            _raw(o, b':', 1)
        else:
            key = keys[i]
            _raw(o, <const char*>key, len(key))
        if type(v) is str:
            _jstr(o, v)
        elif v is True:
            _raw(o, b'true', 4)
        elif v is False:
            _raw(o, b'false', 5)
        else:
            _jint(o, v)
    _raw(o, b'}', 1)
    return 0


cdef tuple _name_keys(tuple names):
    """Each of ``names`` as _head writes it before its value: ``"name":``."""
    cdef Line o
    out = []
    for name in names:
        _open_line(&o)
        try:
            _jstr(&o, name)
            _raw(&o, b':', 1)
            out.append(PyBytes_FromStringAndSize(o.p, o.n))
        finally:
            PyMem_Free(o.p)
    return tuple(out)


def name_keys(tuple names):
    """_name_keys, for the parity tests."""
    return _name_keys(names)


cdef list _weights(tuple half_life_us, list top, at_us, bint decay):
    """The contributors' weights, or None when one is not a finite float."""
    cdef int64_t at_c = 0
    cdef bint small_at = -EXACT < at_us < EXACT
    if small_at:
        at_c = at_us
    cdef list weights = []
    for a in top:
        c = _entry_weight(a.record, half_life_us, decay, small_at, at_c, at_us)
        if type(c) is not float or not isfinite(<double>c):
            return None
        weights.append(c)
    return weights


# A weight's text: Python's repr of the double (what PyOS_double_to_string's
# 'r' writes, the line's format since it was written here).  Its shortest
# digits come from orjson, which writes a list of floats with Ryu's
# shortest round-trip digits at ~100 instructions each, where
# PyOS_double_to_string's dtoa took ~7,500 a decayed weight (about a sixth
# of an authority + decay query on a small key; callgrind,
# bench/results/query-2026-11-27-session8.md); _repr_of rewrites orjson's
# notation as repr's.  Anything it does not expect falls back to
# PyOS_double_to_string for that weight (tests/unit/test_float_repr.py holds
# the two equal on random doubles and the notation's edges).

try:
    from orjson import dumps as _dumps
except ImportError:             # pragma: no cover - orjson is a dependency
    _dumps = None


cdef Py_ssize_t _repr_of(const char* s, Py_ssize_t k, char* out) noexcept:
    """Write into ``out`` (room for 32 bytes) Python's repr of the finite
    double whose JSON text (orjson's: ``-?digits[.digits][e[+-]digits]``)
    is ``s[:k]``; its length, or -1 (nothing valid written) for a text it
    does not expect."""
    cdef char d[24]             # the significant digits
    cdef Py_ssize_t nd = 0, i = 0, w = 0, j
    cdef int decpt = 0          # value = 0.d * 10**decpt
    cdef int e = 0, esign = 1, ne = 0
    cdef bint neg = False, seen_point = False, any_digit = False
    cdef char ch
    if k <= 0 or k > 40:
        return -1
    if s[0] == b'-':
        neg = True
        i = 1
    while i < k:
        ch = s[i]
        if b'0' <= ch <= b'9':
            any_digit = True
            if nd == 0 and ch == b'0':
                if seen_point:
                    decpt -= 1          # a leading zero after the point
            else:
                if nd >= 20:
                    return -1
                d[nd] = ch
                nd += 1
                if not seen_point:
                    decpt += 1
        elif ch == b'.':
            if seen_point:
                return -1
            seen_point = True
        else:
            break
        i += 1
    if not any_digit:
        return -1
    if i < k:
        if s[i] != b'e' and s[i] != b'E':
            return -1
        i += 1
        if i < k and (s[i] == b'+' or s[i] == b'-'):
            if s[i] == b'-':
                esign = -1
            i += 1
        while i < k and b'0' <= s[i] <= b'9':
            e = e * 10 + (s[i] - 48)
            ne += 1
            if ne > 4:
                return -1
            i += 1
        if ne == 0 or i != k:
            return -1
    while nd > 0 and d[nd - 1] == b'0':
        nd -= 1                 # trailing zeros (e.g. 1234500000000000.0)
    if nd > 17:
        return -1
    if neg:
        out[w] = b'-'
        w += 1
    if nd == 0:                 # zero
        memcpy(out + w, b"0.0", 3)
        return w + 3
    decpt += esign * e
    if decpt <= -4 or decpt > 16:
        # d.ddde[+-]XX, at least two exponent digits
        out[w] = d[0]
        w += 1
        if nd > 1:
            out[w] = b'.'
            memcpy(out + w + 1, d + 1, nd - 1)
            w += nd
        out[w] = b'e'
        e = decpt - 1
        out[w + 1] = b'-' if e < 0 else b'+'
        w += 2
        if e < 0:
            e = -e
        if e >= 100:
            out[w] = <char>(48 + e // 100)
            w += 1
        out[w] = <char>(48 + (e // 10) % 10)
        out[w + 1] = <char>(48 + e % 10)
        return w + 2
    if decpt <= 0:              # 0.000ddd
        memcpy(out + w, b"0.", 2)
        w += 2
        for j in range(-decpt):
            out[w + j] = b'0'
        w += -decpt
        memcpy(out + w, d, nd)
        return w + nd
    if decpt >= nd:             # ddd000.0
        memcpy(out + w, d, nd)
        w += nd
        for j in range(decpt - nd):
            out[w + j] = b'0'
        w += decpt - nd
        memcpy(out + w, b".0", 2)
        return w + 2
    memcpy(out + w, d, decpt)   # dd.ddd
    w += decpt
    out[w] = b'.'
    memcpy(out + w + 1, d + decpt, nd - decpt)
    return w + 1 + nd - decpt


def float_repr(v):
    """repr(v) of a finite float through orjson and _repr_of (for the
    parity tests); None when _repr_of declines orjson's text."""
    cdef char buf[32]
    cdef bytes js = _dumps(v)
    cdef Py_ssize_t n = _repr_of(js, len(js), buf)
    return None if n < 0 else buf[:n].decode("ascii")


def repr_of_text(bytes js):
    """_repr_of of a JSON number's text (for the parity tests): repr's
    text, or None where it declines."""
    cdef char buf[32]
    cdef Py_ssize_t n = _repr_of(js, len(js), buf)
    return None if n < 0 else buf[:n].decode("ascii")


cdef int _tail(Line* o, list winners, more, list top, list weights, active) except -1:
    """``,"result_hashes":[..],..,"contributing_more":N}`` and the newline."""
    cdef Py_ssize_t i, pos = 1, end, jn = 0, n
    cdef bytes js = None
    cdef const char* jp = NULL
    cdef char buf[32]
    if len(weights) and _dumps is not None:
        try:
            js = _dumps(weights)        # [w0,w1,...]: each weight's shortest digits
        except Exception:
            js = None
        if js is not None:
            jp = js
            jn = len(js)
    _raw(o, b',"result_hashes":[', 18)
    for i in range(len(winners)):
        if i:
            _raw(o, b',', 1)
        _jhex(o, winners[i].record.hash)
    _raw(o, b'],"result_hashes_more":', 23)
    _jint(o, more if more > 0 else 0)
    _raw(o, b',"contributing":[', 17)
    for i in range(len(top)):
        if i:
            _raw(o, b',', 1)
        _raw(o, b'{"hash":', 8)
        _jhex(o, top[i].record.hash)
        _raw(o, b',"weight":', 10)
        n = -1
        if jp != NULL:
            end = pos
            while end < jn and jp[end] != b',' and jp[end] != b']':
                end += 1
            n = _repr_of(jp + pos, end - pos, buf)
            pos = end + 1
        if n >= 0:
            _raw(o, buf, n)
        else:
            _jfloat(o, weights[i])
        _raw(o, b'}', 1)
    _raw(o, b'],"contributing_more":', 22)
    _jint(o, active - len(top))
    _raw(o, b'}\n', 2)
    return 0


cdef int _open_line(Line* o) except -1:
    o.p = <char*>PyMem_Malloc(1024)
    if o.p == NULL:
        raise MemoryError()
    o.n = 0
    o.cap = 1024
    return 0


cdef tuple _last_names = None, _last_keys = None


cdef tuple _keys_of(tuple names):
    """_name_keys(names), kept for the last ``names`` seen (the query path
    passes one tuple, qaudit._AUDIT_PARAMS): not escaped again per line."""
    global _last_names, _last_keys
    if names is not _last_names:
        _last_keys = _name_keys(names)
        _last_names = names
    return _last_keys


def audit_line(tuple names, tuple half_life_us, number, at, agent, params, list winners,
               more, list top, at_us, bint decay, active):
    """audit_entry's entry as one JSON line (ending in a newline), or None
    when it holds anything this does not write (see above): audit_head over
    audit_tail."""
    # one buffer, head then tail, no Python call between (the same bytes
    # as audit_head over audit_tail: test_audit_line.py)
    cdef Line o
    if not (_is_i64(more) and _is_i64(active)):
        return None
    weights = _weights(half_life_us, top, at_us, decay)
    if weights is None or not _head_ok(names, number, at, agent, params):
        return None
    _open_line(&o)
    try:
        try:
            _head(&o, names, number, at, agent, <tuple>params, _keys_of(names))
        except UnicodeEncodeError:
            return None
        _tail(&o, winners, more, top, weights, active)
        return PyBytes_FromStringAndSize(o.p, o.n)
    finally:
        PyMem_Free(o.p)


def audit_tail(tuple half_life_us, list winners, more, list top, at_us, bint decay, active):
    """The part of audit_line's line after the parameters (from
    ``,"result_hashes"`` to the newline): a pure function of a materialized
    answer when ``decay`` is off, so an answer keeps it; None where
    audit_line gives None for it."""
    cdef Line o
    if not (_is_i64(more) and _is_i64(active)):
        return None
    weights = _weights(half_life_us, top, at_us, decay)
    if weights is None:
        return None
    _open_line(&o)
    try:
        _tail(&o, winners, more, top, weights, active)
        return PyBytes_FromStringAndSize(o.p, o.n)
    finally:
        PyMem_Free(o.p)


def audit_head(tuple names, bytes tail, number, at, agent, params):
    """audit_line's line from its head and an audit_tail: the same bytes as
    audit_line of the same pieces; None where audit_line gives None."""
    return _audit_head(names, tail, number, at, agent, params, None)


def audit_head_keep(tuple names, bytes tail, number, at, agent, params, ans):
    """audit_head's line, and the answer ``ans`` that the query made keeps
    the line's parameters' JSON (``ans.ptail``, for pages of
    ``ans.plimit``: ``params[11]``) as FirstPage._kept_line would keep it
    at its first hit, when ``ans`` keeps none yet and it fits ``ans.proom``:
    the first hit then writes only the id, the times and the agent, as a
    later one does.  The caller vouches that ``params`` are a plain first
    page's (FirstPage's _params, the lens by its own name), the parameters
    every page of the answer is asked with but the limit.  Both slots are
    set here, under the GIL with no Python code run between them (a hit
    reads the pair in one piece)."""
    kept = []
    line = _audit_head(names, tail, number, at, agent, params, _keys_of(names), kept)
    if (line is not None and len(<tuple>params) > 11 and type((<tuple>params)[11]) is int
            and getattr(ans, "ptail", None) is None
            and PyBytes_GET_SIZE(kept[0]) + 33 <= ans.proom):   # (the bytes object's own 33)
        ans.ptail = kept[0]
        ans.plimit = (<tuple>params)[11]
    return line


cdef Line _scratch                  # _audit_head's buffer, kept between calls


cdef object _audit_head(tuple names, bytes tail, number, at, agent, params, tuple keys,
                        list kept=None):
    """audit_head (``keys``: see _head).  The head is written into one
    buffer kept between calls (the GIL is held from here to the bytes made
    from it, and nothing in between runs Python code), not a buffer
    allocated and freed per line (a warm R1 query's line: malloc and free
    of 1 KiB, above pymalloc's 512 bytes).  ``kept``: a list the line's
    parameters' JSON is appended to, as bytes (audit_head_keep)."""
    cdef Py_ssize_t h
    if not _head_ok(names, number, at, agent, params):
        return None
    cdef Line* o = _scratch_line()
    try:
        _stamp_head(o, number, at, agent)      # (_head, split where the parameters start)
        h = o.n
        _params_json(o, names, <tuple>params, keys)
    except UnicodeEncodeError:
        return None
    if kept is not None:
        kept.append(PyBytes_FromStringAndSize(o.p + h, o.n - h))
    _raw(o, <const char*>tail, len(tail))
    return _scratch_bytes()


cdef Line* _scratch_line() except NULL:
    """_scratch, emptied (allocated at its first use)."""
    if _scratch.p == NULL:
        _open_line(&_scratch)
    _scratch.n = 0
    return &_scratch


cdef bytes _scratch_bytes():
    """What _scratch holds, as bytes (the buffer given back when a rare long
    line grew it past 64 KiB)."""
    line = PyBytes_FromStringAndSize(_scratch.p, _scratch.n)
    if _scratch.cap > 65536:
        PyMem_Free(_scratch.p)
        _scratch.p = NULL
    return line


# ------------------------------------------------------------ the kept line, built at the flush
# A warm hit's line is the id, the times and the agent, then the answer's
# kept parameters' JSON (``ptail``) and its kept end (``tail``): the hit
# queues those (a KeptLine: the id's low bits, the time, three references)
# and the flush writes the lines of a chunk into one bytes object
# (audit_take).  Made on the query's thread, each line was a ~1 KB bytes
# object (malloc and free: above pymalloc's 512 bytes) its pieces copied
# into, then copied again by the flush's join, its pieces popped and
# appended one by one by the flush's Python loop.

cimport cython

cdef extern from "Python.h":
    PyObject* _bytes_of_size "PyBytes_FromStringAndSize"(const char* s, Py_ssize_t n)
    int _PyBytes_Resize(PyObject** b, Py_ssize_t n) except -1


@cython.freelist(512)
@cython.no_gc
@cython.final
cdef class KeptLine:
    """A queued line: ``{"id":..,"at":..,"at_us":..,"agent":..`` (the id's
    low 16 bits ``low``, the time ``at``, the agent: None or a str whose
    UTF-8 was read when queued, ``alen`` bytes) then ``pt`` and ``tail``
    as they are.  Holds no answer, only the two bytes objects the answer
    holds (no more than the line itself was), and nothing that can hold it
    (no cycles: not tracked by the GC)."""
    cdef unsigned long low
    cdef int64_t at
    cdef Py_ssize_t alen
    cdef object agent
    cdef bytes pt, tail


cdef object _kept(number, int64_t at, agent, bytes pt, bytes tail):
    """The KeptLine of _kept_line's checked pieces (``number`` an int,
    ``at`` an int64 stamp, ``agent`` None or a str); None when the agent
    has no UTF-8 (a lone surrogate: _stamp_head's UnicodeEncodeError), as
    _kept_line's line was None, so the flush only copies."""
    cdef Py_ssize_t alen = 0
    if agent is not None:
        try:
            PyUnicode_AsUTF8AndSize(agent, &alen)      # (kept by the str)
        except UnicodeEncodeError:
            return None
    cdef KeptLine k = KeptLine.__new__(KeptLine)
    k.low = _id_low(number)
    k.at = at
    k.alen = alen
    k.agent = agent
    k.pt = pt
    k.tail = tail
    return k


def kept_line(tuple names, bytes tail, number, at, agent, params):
    """audit_head's line as a warm hit queues it (a KeptLine, built by
    audit_take), for the parity tests: None where audit_head gives None."""
    cdef Line* o
    if not _head_ok(names, number, at, agent, params):
        return None
    o = _scratch_line()
    try:
        _params_json(o, names, <tuple>params, _keys_of(names))
    except UnicodeEncodeError:
        return None
    return _kept(number, at, agent, _scratch_bytes(), tail)


DEF KEPT_HEAD = 128     # a KeptLine's head but its agent: 1 + 64 (_jstamp) + 9 + 20 + 9 + 4


cdef inline Py_ssize_t _kept_bound(KeptLine k):
    """The most bytes ``k``'s line takes (its agent's each escaped as \\uXXXX)."""
    return KEPT_HEAD + 6 * k.alen + PyBytes_GET_SIZE(k.pt) + PyBytes_GET_SIZE(k.tail)


def audit_take(q, Py_ssize_t budget, ids, dumps, pending):
    """audit.take_lines, compiled: entries popped off the deque ``q``
    while it has some and ``budget`` is left, a finished line (bytes) or a
    KeptLine at no cost, anything else 1, built as its twin builds it
    (``pending``: audit.Pending, numbered from ``ids``; ``dumps``: orjson's).
    Every line is written, in queue order, into one bytes object of their
    length.  ``(data, ends, failed, error)``: ``ends`` the lines' end
    offsets (packed Py_ssize_t: split_lines), ``failed`` the entries that
    could not be built and ``error`` the last one's exception."""
    cdef list items = []
    cdef Py_ssize_t need = 0, i, j, nl, start
    cdef Py_ssize_t failed = 0
    cdef KeptLine k
    cdef Line o
    cdef PyObject* raw
    cdef Py_ssize_t* ends
    error = None
    cdef bint plain = type(q) is _Deque and _deque_popleft != NULL
    popleft = None if plain else q.popleft
    while budget > 0 and len(q):
        if plain:
            fn = _deque_popleft(q, NULL)
        else:
            fn = popleft()
        t = type(fn)
        if t is KeptLine:
            k = <KeptLine>fn
            need += _kept_bound(k)
        elif t is bytes:
            need += PyBytes_GET_SIZE(fn)
        else:
            budget -= 1
            try:
                e = fn[0](next(ids), *fn[1:]) if t is pending else fn()
                fn = dumps(e) + b"\n"
                if type(fn) is not bytes:   # (copied below as bytes: orjson's are)
                    fn = bytes(fn)
            except Exception as exc:  # noqa: BLE001 - counted by the caller
                failed += 1
                error = exc
                continue
            need += PyBytes_GET_SIZE(fn)
        items.append(fn)
    nl = len(items)
    ends_b = PyBytes_FromStringAndSize(NULL, nl * sizeof(Py_ssize_t))
    ends = <Py_ssize_t*>PyBytes_AS_STRING(ends_b)
    raw = _bytes_of_size(NULL, need)
    if raw == NULL:
        raise MemoryError()
    data = <object>raw              # owns the new reference from here
    Py_DECREF(data)
    # the lines written in place: ``need`` bounds every write below, so
    # _room never grows this buffer (it is the bytes object's own)
    o.p = PyBytes_AS_STRING(data)
    o.n = 0
    o.cap = need
    j = 0
    for i in range(nl):
        fn = <object>PyList_GET_ITEM(items, i)
        if type(fn) is KeptLine:
            k = <KeptLine>fn
            start = o.n
            if start + _kept_bound(k) > o.cap:
                raise SystemError("audit_take: a line outgrew its bound")    # (never)
            try:
                _stamp(&o, k.low, k.at, k.agent)
            except Exception as exc:  # noqa: BLE001 - (checked when queued: not seen)
                o.n = start
                failed += 1
                error = exc
                continue
            _raw(&o, PyBytes_AS_STRING(k.pt), PyBytes_GET_SIZE(k.pt))
            _raw(&o, PyBytes_AS_STRING(k.tail), PyBytes_GET_SIZE(k.tail))
        else:
            _raw(&o, PyBytes_AS_STRING(fn), PyBytes_GET_SIZE(fn))
        ends[j] = o.n
        j += 1
    if j != nl:
        ends_b = ends_b[:j * sizeof(Py_ssize_t)]
    if o.n != need:
        raw = <PyObject*>data
        Py_INCREF(data)
        data = None
        _PyBytes_Resize(&raw, o.n)
        data = <object>raw
        Py_DECREF(data)
    return data, ends_b, failed, error


def split_lines(bytes data, bytes ends):
    """audit_take's data as its lines (the list its twin gives)."""
    cdef const Py_ssize_t* e = <const Py_ssize_t*>PyBytes_AS_STRING(ends)
    cdef Py_ssize_t i, at = 0, n = PyBytes_GET_SIZE(ends) // sizeof(Py_ssize_t)
    out = []
    for i in range(n):
        out.append(data[at:e[i]])
        at = e[i]
    return out


# ------------------------------------------------------------ gather and ranking helpers
# key_ordinals: index.MultiMap.get for the int64 by_key map, one binary
# search in C instead of two numpy searchsorted calls (~1.5 us each, the
# most of a small key's lookup); hashed_pairs: the value ids a small key's
# ranking must check for collisions (qcolumns.columns_resolution), in one
# pass over the columns.

def key_ordinals(keys, vals, dict recent, key):
    """See qpure.key_ordinals."""
    cdef Py_ssize_t n, nv, lo = 0, hi, mid, i
    cdef const int64_t* kv = <const int64_t*>_col(keys, b'i', 8, &n)
    cdef const int32_t* vv = <const int32_t*>_col(vals, b'i', 4, &nv)
    cdef int64_t k
    if nv < n:
        raise ValueError("the map's keys and values differ in length")
    cdef list out = []
    if n and INT64_MIN <= key <= INT64_MAX:
        k = key
        hi = n
        while lo < hi:                  # first position >= k
            mid = (lo + hi) >> 1
            if kv[mid] < k:
                lo = mid + 1
            else:
                hi = mid
        i = lo
        while i < n and kv[i] == k:
            out.append(vv[i])
            i += 1
    r = recent.get(key)
    if r:
        return out + r if out else list(r)
    return out


def hashed_pairs(list ords, va, vb):
    """See qpure.hashed_pairs."""
    cdef Py_ssize_t n, nvb, m = PyList_GET_SIZE(ords), i, o
    cdef const uint64_t* vav = <const uint64_t*>_col(va, b'u', 8, &n)
    cdef const uint64_t* vbv = <const uint64_t*>_col(vb, b'u', 8, &nvb)
    cdef uint64_t a, b
    if nvb < n:
        raise ValueError("the columns differ in length")
    for i in range(m):
        o = <object>PyList_GET_ITEM(ords, i)
        if o < 0 or o >= n:
            raise IndexError(f"ordinal {o} outside the columns ({n})")
    cdef list out = []
    for i in range(m):
        ob = <object>PyList_GET_ITEM(ords, i)
        o = ob
        a = vav[o]
        if (a & 0xFF) == HASHED:
            b = vbv[o]
            out.append(((a | (<object>b << 64)) if b else a, ob))
    return out


# ------------------------------------------------------------ record reads
# read_frames: the read cache's misses read, checked and decoded in one call
# (the reference is qpure.read_frames).  A frame of the active segment was a
# Python pread per record through three layers (Reader._read -> WAL.read ->
# Segment.read): ~4 us each, most of a cold small key's decode.  Here it is
# one pread into a stack buffer; the CRC is the C crc32c of _fast (the same
# header), and the record is built by the decoder given (fast.decode_assert).

from posix.unistd cimport pread
from cpython.bytes cimport PyBytes_FromStringAndSize

cdef extern from "crc32c.h" nogil:
    void stemedb_crc32c_init()
    uint32_t stemedb_crc32c(const uint8_t* p, size_t n)

stemedb_crc32c_init()

DEF FRAME_HEAD = 20         # format.FRAME_SIZE
DEF CRC_FROM = 8            # format.FRAME_CRC_FROM
DEF FIRST_READ = 512        # Reader._read's first read
DEF LOC_BITS = 40           # index.pack_loc
DEF MAX_PAYLOAD = 268435456 # format.MAX_PAYLOAD: a longer length is damage, never read


cdef inline uint32_t _rd32(const uint8_t* p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef object _frame(const uint8_t* f, Py_ssize_t avail, decode):
    """(record, length) of the frame at ``f`` with ``avail`` bytes readable
    there, or None when it does not check out (short, CRC)."""
    cdef uint32_t length, crc
    if avail < FRAME_HEAD:
        return None
    length = _rd32(f)
    crc = _rd32(f + 4)
    if <Py_ssize_t>length > avail - FRAME_HEAD:
        return None
    if stemedb_crc32c(f + CRC_FROM, FRAME_HEAD - CRC_FROM + length) != crc:
        return None
    body = PyBytes_FromStringAndSize(<const char*>(f + CRC_FROM), FRAME_HEAD - CRC_FROM + length)
    return decode(body, FRAME_HEAD - CRC_FROM), length


def read_frames(list locs, list segs, decode):
    """See qpure.read_frames."""
    cdef Py_ssize_t m = PyList_GET_SIZE(locs), i, k, nseg = PyList_GET_SIZE(segs)
    cdef Py_ssize_t first = 0, got, need
    cdef int64_t loc, segno, off
    cdef int fd
    cdef uint8_t head[FIRST_READ]
    cdef uint8_t* big
    cdef list out = []
    if nseg:
        first = (<object>PyList_GET_ITEM(segs, 0)).number
    for i in range(m):
        loc = <object>PyList_GET_ITEM(locs, i)
        segno = loc >> LOC_BITS
        off = loc & ((<int64_t>1 << LOC_BITS) - 1)
        k = segno - first
        if loc < 0 or not 0 <= k < nseg:
            out.append(None)
            continue
        fd = (<object>PyList_GET_ITEM(segs, k))._fd
        got = pread(fd, head, FIRST_READ, off)
        if got < FRAME_HEAD:
            out.append(None)
            continue
        need = FRAME_HEAD + <Py_ssize_t>_rd32(head)
        if need > FRAME_HEAD + MAX_PAYLOAD:
            out.append(None)        # a damaged length: Reader._read refuses it
            continue
        if need <= got:
            out.append(_frame(head, got, decode))
            continue
        big = <uint8_t*>malloc(need)
        if big == NULL:
            raise MemoryError()
        try:
            got = pread(fd, big, need, off)
            out.append(_frame(big, got, decode) if got == need else None)
        finally:
            free(big)
    return out


# ------------------------------------------------------------ a first page, one call
# first_page: query.run_query's first page of the default view in one call
# (the reference is qpure.first_page, which documents it): the argument
# checks, the answer's key and generation token, the cache lookup, and for a
# held answer the page's Assertions, the results, the QueryResult and the
# audit line from the answer's kept end (audit_head's bytes), appended to
# the audit queue as AuditLog.add would below its quick_below backlog.  A
# warm 4-candidate query spent ~11 us in these steps' Python layers.

cdef object _answer_token(st, dict path_ids, dict pred_ids, list paths, predicate,
                          bint include_descendants, Py_ssize_t gen_mask, Py_ssize_t gen_mix):
    """qpure.answer_token (``path_ids``, ``pred_ids``: the State's)."""
    cdef list kg = st.key_gen, pg = st.path_gen
    cdef Py_ssize_t npaths = -1, npreds = -1, pid, qid = 0, i
    cdef bint has_qid = False
    cdef PyObject* e
    if len(kg) <= gen_mask or len(pg) <= gen_mask or gen_mask < 0:
        raise ValueError("the generation slots are fewer than the mask covers")
    if predicate is not None:
        e = PyDict_GetItem(pred_ids, predicate)
        if e != NULL and <object>e is not None:
            qid = <object>e
            has_qid = True
    if include_descendants:
        npaths = len(st.path_names)
    elif len(paths) == 1 and (predicate is None or has_qid):
        # one stored path (a first page's usual key): the loop's one part
        # without its list (~0.4k instructions of a warm R1 query's ~30k)
        e = PyDict_GetItem(path_ids, paths[0])
        if e != NULL and <object>e is not None:
            pid = <object>e
            if predicate is None:
                return (st.gen, -1, -1, (pg[pid & gen_mask],))
            return (st.gen, -1, -1, (kg[(pid * gen_mix + qid) & gen_mask],))
    cdef list parts = []
    for i in range(len(paths)):
        e = PyDict_GetItem(path_ids, paths[i])
        if e == NULL or <object>e is None:     # (the twin's .get)
            npaths = len(st.path_names)
        elif predicate is None:
            pid = <object>e
            parts.append(pg[pid & gen_mask])
        elif has_qid:
            pid = <object>e
            parts.append(kg[(pid * gen_mix + qid) & gen_mask])
    if predicate is not None and not has_qid:
        npreds = len(st.pred_names)
    return (st.gen, npaths, npreds, tuple(parts))


def answer_token(st, list paths, predicate, include_descendants, gen_mask, gen_mix):
    """See qpure.answer_token."""
    return _answer_token(st, st.path_ids, st.pred_ids, paths, predicate,
                         include_descendants is True, gen_mask, gen_mix)


cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        const char* name
        int type
        Py_ssize_t offset
        int flags
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member
    ctypedef struct PyTypeObject:
        PyObject* (*tp_alloc)(PyTypeObject*, Py_ssize_t) except NULL
        PyObject* (*tp_new)(PyTypeObject*, PyObject*, PyObject*) except NULL
        Py_ssize_t tp_dictoffset
        unsigned long tp_flags
    PyTypeObject PyBaseObject_Type
    unsigned long Py_TPFLAGS_MANAGED_DICT
    int T_OBJECT_EX
    int READONLY

cdef extern from "<time.h>" nogil:
    ctypedef int clockid_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(clockid_t clk, timespec* ts)
    clockid_t CLOCK_REALTIME

DEF ASSERTION_SLOTS = 5     # model.Assertion's __slots__, as its __init__ sets them
DEF RESULT_SLOTS = 6        # query.QueryResult's fields, as its __init__ sets them


cdef tuple _NO_ARGS = ()


cdef object _new(cls):
    """``object.__new__(cls)`` (its instance dict set up as there)."""
    cdef PyObject* o = PyBaseObject_Type.tp_new(<PyTypeObject*>cls, <PyObject*>_NO_ARGS, NULL)
    obj = <object>o
    Py_DECREF(obj)
    return obj


cdef object _copy_dict(cls, r):
    """``cls(r)`` for ``cls`` a dict subclass with dict's __new__ and
    __init__ (checked by FirstPage) and ``r`` a dict."""
    cdef PyObject* o = (<PyTypeObject*>cls).tp_new(<PyTypeObject*>cls, <PyObject*>_NO_ARGS, NULL)
    obj = <object>o
    Py_DECREF(obj)
    PyDict_Update(obj, r)
    return obj


cdef inline void _put(PyObject* a, Py_ssize_t offset, object v):
    """Set a fresh object's empty slot at ``offset`` to ``v``."""
    Py_INCREF(v)
    (<PyObject**>(<char*>a + offset))[0] = <PyObject*>v


cdef Py_ssize_t _slot(cls, str name) except -1:
    """The offset of ``cls``'s __slots__ member ``name`` in its objects."""
    d = cls.__dict__.get(name)
    if type(d).__name__ != "member_descriptor":
        raise TypeError(f"{cls.__name__}.{name} is not a __slots__ member")
    cdef PyMemberDef* m = (<PyMemberDescrObject*>d).d_member
    if m.type != T_OBJECT_EX or m.flags & READONLY or m.offset <= 0:
        raise TypeError(f"{cls.__name__}.{name} is not a writable object slot")
    return m.offset


cdef extern from *:
    """
    /* Prefetches (hints only: nothing is read through them that the hit
       does not read itself, no reference is taken, no Python code runs).
       In bench.run's R1 the peers' slices of 250 queries between ours
       leave a warm answer's objects out of the caches, and the hit reads
       them as a chain of dependent misses: the Answer, its held tuple, the
       record and seq lists, their item arrays, each record and seq (their
       reference counts), the results list, each Result dict, its keys and
       values.  stemedb_warm_answer asks for the Answer's fields' objects at
       once (by _gslot_hit, as soon as the Answer is found, so that they
       come in under the token check and the LRU move); stemedb_warm_page
       walks the rest level by level, each level's objects asked for
       together, so the hit waits about once a level instead of once an
       object (bench/results/r1-interleave-2026-11-28-session16.md). */
    #define STEMEDB_WARM_MAX 64
    static inline void stemedb_pf(const void* p) {
        if (p) __builtin_prefetch(p, 1, 3);
    }
    static inline void stemedb_warm_answer(PyObject* held, PyObject* results, PyObject* ords) {
        stemedb_pf(held);
        stemedb_pf(results);
        stemedb_pf(ords);
    }
    static void stemedb_warm_page(PyObject* held, PyObject* results) {
        PyObject *recs = NULL, *seqs = NULL, **ri = NULL, **si = NULL, **di = NULL;
        Py_ssize_t nr = 0, ns = 0, nd = 0, i;
        Py_ssize_t pos;
        PyObject *k, *v;
        if (held && PyTuple_CheckExact(held) && PyTuple_GET_SIZE(held) == 2) {
            recs = PyTuple_GET_ITEM(held, 0);
            seqs = PyTuple_GET_ITEM(held, 1);
            stemedb_pf(recs);
            stemedb_pf(seqs);
        }
        if (results && PyList_CheckExact(results)) {
            di = ((PyListObject*)results)->ob_item;
            nd = PyList_GET_SIZE(results);
            if (nd > STEMEDB_WARM_MAX) nd = STEMEDB_WARM_MAX;
            stemedb_pf(di);
        }
        if (recs && PyList_CheckExact(recs)) {
            ri = ((PyListObject*)recs)->ob_item;
            nr = PyList_GET_SIZE(recs);
            stemedb_pf(ri);
        }
        if (seqs && PyList_CheckExact(seqs)) {
            si = ((PyListObject*)seqs)->ob_item;
            ns = PyList_GET_SIZE(seqs);
            stemedb_pf(si);
        }
        if (nr > STEMEDB_WARM_MAX) nr = STEMEDB_WARM_MAX;
        if (ns > STEMEDB_WARM_MAX) ns = STEMEDB_WARM_MAX;
        for (i = 0; i < nd; i++) stemedb_pf(di[i]);
        for (i = 0; i < nr; i++) stemedb_pf(ri[i]);
        for (i = 0; i < ns; i++) stemedb_pf(si[i]);
        for (i = 0; i < nd; i++) {
            if (di[i] && PyDict_Check(di[i])) {
                const char* keys = (const char*)((PyDictObject*)di[i])->ma_keys;
                stemedb_pf(keys);
                stemedb_pf(keys + 64);
                stemedb_pf(keys + 128);
                stemedb_pf(keys + 192);
            }
        }
        for (i = 0; i < nd; i++) {
            if (di[i] && PyDict_Check(di[i])) {
                pos = 0;
                while (PyDict_Next(di[i], &pos, &k, &v)) stemedb_pf(v);
            }
        }
    }
    """
    void stemedb_warm_answer(PyObject* held, PyObject* results, PyObject* ords)
    void stemedb_warm_page(PyObject* held, PyObject* results)


cdef class ReaderLock       # (below, with CacheLock)
cdef class CacheLock

from collections import OrderedDict, deque
# The read cache's OrderedDict and the audit queue's deque, moved and
# appended to by their methods called directly (PyObject_VectorcallMethod's
# lookup by name was ~230 instructions of each call, callgrind)
cdef object _ODict = OrderedDict, _MOVE_TO_END = OrderedDict.move_to_end
cdef object _Deque = deque, _APPEND = deque.append

# deque.append and deque.popleft called as their C functions (METH_O,
# METH_NOARGS), when CPython's descriptors hold them so: the call through
# the method descriptor (argument checks, vectorcall) was ~60 instructions
# of each, a warm R1 query's line queued and popped (callgrind)
# (a new reference, or NULL with the error set: an object return, as Cython takes it)
ctypedef object (*_CMethO)(object self, object arg)
ctypedef object (*_CMethN)(object self, PyObject* unused)

cdef extern from "Python.h":
    ctypedef struct _MethDef "PyMethodDef":
        void* ml_meth
        int ml_flags
    ctypedef struct _MethDescr "PyMethodDescrObject":
        _MethDef* d_method
    int METH_O, METH_NOARGS, METH_VARARGS, METH_KEYWORDS, METH_FASTCALL

from types import MethodDescriptorType as _METHOD_DESCR


cdef void* _c_method(name, int flags):
    """The C function of deque's method ``name`` when it is a plain method
    descriptor of exactly ``flags``; else NULL (then called as a method)."""
    d = deque.__dict__.get(name)
    if type(d) is not _METHOD_DESCR:
        return NULL
    cdef _MethDef* m = (<_MethDescr*><PyObject*>d).d_method
    if m == NULL or m.ml_flags != flags:
        return NULL
    return m.ml_meth


cdef _CMethO _deque_append = <_CMethO>_c_method("append", METH_O)
cdef _CMethN _deque_popleft = <_CMethN>_c_method("popleft", METH_NOARGS)


cdef inline int _append(q, item) except -1:
    """``q.append(item)`` for a deque (the class itself)."""
    if _deque_append != NULL:
        _deque_append(q, item)
    else:
        _APPEND(q, item)
    return 0


cdef extern from *:
    """
    /* A type whose attributes are got and set the generic way (no
       __getattribute__, __getattr__ or __setattr__ of its own). */
    static int stemedb_generic_attrs(PyTypeObject* t) {
        return t->tp_getattro == PyObject_GenericGetAttr
            && t->tp_setattro == PyObject_GenericSetAttr;
    }
    static unsigned int stemedb_version_tag(PyTypeObject* t) {
        return (t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) ? t->tp_version_tag : 0;
    }
    """
    int stemedb_generic_attrs(PyTypeObject* t)
    unsigned int stemedb_version_tag(PyTypeObject* t)
    PyObject* _PyType_Lookup(PyTypeObject* t, object name)


DEF MAX_FIELDS = 6

cdef inline void _put_at(PyObject** p, object new):
    """Store ``new`` in the object slot at ``p``, releasing what was there
    (a slot written in place: Fields.bump, FirstPage._keep_gslot)."""
    cdef PyObject* old = p[0]
    Py_INCREF(new)
    p[0] = <PyObject*>new
    Py_XDECREF(old)


cdef class Fields:
    """``getattr(obj, names[i])`` (and ``setattr``) for the objects a warm
    first page reads (the Reader, its State, ReadCache and AuditLog), read
    at their ``__slots__`` offsets when ``type(obj)`` keeps them there: a
    generic attribute read was ~170 instructions, ~17 of them a warm query
    (callgrind, session 12).  What it learned of one class (the last one
    seen) holds while that class's version tag stands: CPython gives a type
    a new one when its dict or a base's changes, so a descriptor put on the
    class later is seen.  Otherwise (another class, no slot, an unset slot,
    a class with its own __getattribute__/__getattr__/__setattr__, no valid
    tag) it is the generic getattr/setattr, so the values and errors are
    getattr's.  Its twin is getattr itself (tests/unit/test_fields.py)."""
    cdef tuple names
    cdef object cls
    cdef unsigned int tag
    cdef Py_ssize_t n
    cdef Py_ssize_t off[MAX_FIELDS]

    def __init__(self, tuple names):
        if not 0 < len(names) <= MAX_FIELDS or not all(type(x) is str for x in names):
            raise ValueError(f"1 to {MAX_FIELDS} names")
        self.names = tuple([sys_intern(x) for x in names])
        self.n = len(names)
        self.cls = None
        self.tag = 0

    cdef int _learn(self, cls) except -1:
        """The offsets of ``cls``'s slots for ``names`` (-1: read by name)."""
        cdef PyTypeObject* t = <PyTypeObject*>cls
        cdef PyObject* d
        cdef PyMemberDef* m
        cdef Py_ssize_t i
        cdef bint generic = stemedb_generic_attrs(t)
        for i in range(self.n):
            self.off[i] = -1
            if not generic:
                continue
            d = _PyType_Lookup(t, self.names[i])    # (assigns the type its tag)
            if d == NULL or type(<object>d) is not _MEMBER_DESCR:
                continue
            m = (<PyMemberDescrObject*>d).d_member
            if m.type == T_OBJECT_EX and not (m.flags & READONLY) and m.offset > 0:
                self.off[i] = m.offset
        self.tag = stemedb_version_tag(t)
        self.cls = cls if self.tag != 0 else None
        return 0

    cdef inline Py_ssize_t _at(self, obj, Py_ssize_t i) except -2:
        """The offset to read ``names[i]`` of ``obj`` at, or -1."""
        cls = type(obj)
        cdef PyTypeObject* t = <PyTypeObject*>cls
        if cls is not self.cls or stemedb_version_tag(t) != self.tag:
            self._learn(cls)
            if cls is not self.cls:
                return -1
        return self.off[i]

    cdef inline object get(self, obj, Py_ssize_t i):
        cdef Py_ssize_t o = self._at(obj, i)
        cdef PyObject* v
        if o > 0:
            v = (<PyObject**>(<char*><PyObject*>obj + o))[0]
            if v != NULL:
                return <object>v
        return getattr(obj, self.names[i])

    cdef inline int bump(self, obj, Py_ssize_t i) except -1:
        """``obj.<names[i]> += 1``."""
        cdef Py_ssize_t o = self._at(obj, i)
        cdef PyObject** p
        if o > 0:
            p = <PyObject**>(<char*><PyObject*>obj + o)
            if p[0] != NULL:
                cur = <object>p[0]          # (held while adding)
                _put_at(p, cur + 1)         # (replaces what the add left there)
                return 0
        name = self.names[i]
        setattr(obj, name, getattr(obj, name) + 1)
        return 0

    def read(self, obj, Py_ssize_t i):
        """get, for the tests."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.get(obj, i)

    def add_one(self, obj, Py_ssize_t i):
        """bump, for the tests."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        self.bump(obj, i)


from types import MemberDescriptorType as _MEMBER_DESCR
from sys import intern as sys_intern

# What a warm first page reads of each object (Fields)
_READER_READ = ("state", "cache", "lock", "audit", "clock")
DEF R_STATE = 0
DEF R_CACHE = 1
DEF R_LOCK = 2
DEF R_AUDIT = 3
DEF R_CLOCK = 4
_STATE_READ = ("path_ids", "pred_ids", "key_gen", "path_gen", "gen", "retracted")
DEF S_PATH_IDS = 0
DEF S_PRED_IDS = 1
DEF S_KEY_GEN = 2
DEF S_PATH_GEN = 3
DEF S_GEN = 4
DEF S_RETRACTED = 5
_CACHE_READ = ("_lock", "_d", "answer_hits", "answer_misses")
DEF C_LOCK = 0
DEF C_D = 1
DEF C_HITS = 2
DEF C_MISSES = 3
_AUDIT_READ = ("_ids", "_queue", "quick_below")
DEF L_IDS = 0
DEF L_QUEUE = 1
DEF L_QUICK = 2


DEF ANSWER_SLOTS = 9         # reader.Answer's __slots__ that FirstPage reads (_ANSWER_READ)
_RESULT_FIELDS = ("concept_path", "lens", "results", "assertions", "next_cursor", "extra")
_ANSWER_READ = ("token", "results", "ords", "active", "held", "tail", "ptail", "plimit", "gslot")
DEF A_TOKEN = 0
DEF A_RESULTS = 1
DEF A_ORDS = 2
DEF A_ACTIVE = 3
DEF A_HELD = 4
DEF A_TAIL = 5
DEF A_PTAIL = 6
DEF A_PLIMIT = 7
DEF A_GSLOT = 8             # (read at its slot only: FirstPage._gslot_hit)


cdef class FirstPage:
    cdef dict lenses
    cdef object filters, lifecycles, result, query_result, assertion, moment
    cdef object resolve, finish, audit, log_cls, unset, now_us, answer_cls
    cdef public object decode       # fast.decode_assert (a raw-held answer's page)
    cdef tuple names, keys
    cdef bint keep_params
    cdef Py_ssize_t gen_mask, gen_mix, ntop_max
    cdef Py_ssize_t offsets[ASSERTION_SLOTS]
    cdef Py_ssize_t aoffsets[ANSWER_SLOTS]
    # the QueryResult's six fields' slots (qslots: set in place), or by setattr
    cdef Py_ssize_t qoffsets[RESULT_SLOTS]
    cdef bint qslots
    # the Reader's, State's, ReadCache's and AuditLog's fields read (Fields)
    cdef Fields rf, sf, cf, lf

    def __init__(self, tuple env):
        (lenses, self.filters, self.lifecycles, self.gen_mask, self.gen_mix, self.ntop_max,
         self.result, self.query_result, self.assertion, self.moment, self.resolve,
         self.finish, self.audit, self.log_cls, self.names, self.now_us,
         self.answer_cls) = env
        self.lenses = lenses
        self.rf, self.sf = Fields(_READER_READ), Fields(_STATE_READ)
        self.cf, self.lf = Fields(_CACHE_READ), Fields(_AUDIT_READ)
        from . import fast
        self.decode = fast.decode_assert
        self.unset = self.assertion._UNSET
        self.keys = _name_keys(self.names)     # the parameters' names as the line writes them
        # an answer's key names its lens by the lens's name, which is then
        # the parameter every page of it was asked with (_kept_line)
        self.keep_params = all(type(k) is str and k == v.name for k, v in lenses.items())
        cdef Py_ssize_t i
        cdef PyTypeObject* t = <PyTypeObject*>self.assertion
        if (not isinstance(self.assertion, type) or t.tp_dictoffset != 0
                or t.tp_flags & Py_TPFLAGS_MANAGED_DICT or t.tp_new != PyBaseObject_Type.tp_new):
            raise TypeError("the Assertion class must be a __slots__ class without a __dict__ "
                            "or its own __new__")
        for i, name in enumerate(("record", "seq", "status", "retraction", "_value")):
            self.offsets[i] = _slot(self.assertion, name)
        # an answer's fields read at their slots (_a: ~100 instructions less
        # each than a descriptor's lookup and call; nine a warm query); a
        # field that is no writable object slot of the class is read by name
        for i, name in enumerate(_ANSWER_READ):
            try:
                self.aoffsets[i] = _slot(self.answer_cls, name)
            except (TypeError, AttributeError):
                self.aoffsets[i] = -1
        res = self.result
        if (not isinstance(res, type) or not issubclass(res, dict) or res.__new__ is not dict.__new__
                or res.__init__ is not dict.__init__):
            raise TypeError("the Result class must be a dict subclass with dict's __new__ and "
                            "__init__")
        t = <PyTypeObject*>self.query_result
        if not isinstance(self.query_result, type) or t.tp_new != PyBaseObject_Type.tp_new:
            raise TypeError("the QueryResult class must use object's __new__")
        # a __slots__ QueryResult without a __dict__ (query.py's) is filled
        # as the Assertions are, its six fields set at their slots: six
        # generic setattrs into a new instance dict were ~1.1k instructions
        # of a warm query; a class with an instance dict gets the six
        # setattrs, and one with neither is refused
        self.qslots = t.tp_dictoffset == 0 and not t.tp_flags & Py_TPFLAGS_MANAGED_DICT
        if self.qslots:
            try:
                for i, name in enumerate(_RESULT_FIELDS):
                    self.qoffsets[i] = _slot(self.query_result, name)
            except (TypeError, AttributeError):
                raise TypeError("the QueryResult class must have an instance dict or a "
                                "writable slot for each of its six fields") from None

    cdef inline object _a(self, ans, int i):
        """``getattr(ans, _ANSWER_READ[i])``: read at its slot when ``ans``
        is an Answer (the class itself) whose slot is set."""
        cdef PyObject* v
        if type(ans) is self.answer_cls and self.aoffsets[i] > 0:
            v = (<PyObject**>(<char*><PyObject*>ans + self.aoffsets[i]))[0]
            if v != NULL:
                return <object>v
        return getattr(ans, _ANSWER_READ[i])

    cdef inline PyObject* _at(self, PyObject* e, int i):
        """The object at an Answer's (``e``, of the class itself) slot
        ``i``, borrowed, or NULL (for the prefetches only)."""
        if self.aoffsets[i] > 0:
            return (<PyObject**>(<char*>e + self.aoffsets[i]))[0]
        return NULL

    cdef object _page(self, st, ans):
        """qpure.held_page.  Each Assertion is allocated as object.__new__
        allocates it (its type's tp_alloc: zeroed, tracked) and its five
        slots are set where Assertion.__init__ sets them, in place."""
        cdef dict rmap = self.sf.get(st, S_RETRACTED)
        recs, seqs = self._a(ans, A_HELD)
        if type(recs) is bytes:     # raw frames (reader.raw_pack): decoded here
            ords = self._a(ans, A_ORDS)
            if rmap:
                for o in ords:
                    if o in rmap:
                        return None
            if len(recs) < 4 or _rd32(<const uint8_t*>PyBytes_AS_STRING(recs)) != len(ords):
                raise ValueError("the held frames and the candidates differ in number")
            seqs = raw_seqs(recs, 0, len(ords), 4)
            recs = raw_records(recs, 0, len(ords), self.decode, 12)
        cdef list rl = recs, sl = seqs
        cdef Py_ssize_t i, k, n = len(rl)
        cdef PyObject* a
        cdef PyObject** slot
        cdef PyTypeObject* cls = <PyTypeObject*>self.assertion
        if len(sl) != n:
            raise ValueError("the held records and seqs differ in length")
        if rmap:
            for o in self._a(ans, A_ORDS):
                if o in rmap:
                    return None
        # made at its length and filled in place (no append's growth checks)
        cdef list out = PyList_New(n)
        cdef Py_ssize_t* off = self.offsets
        unset = self.unset
        for i in range(n):
            a = cls.tp_alloc(cls, 0)
            obj = <object>a             # owns the new reference from here
            Py_DECREF(obj)
            _put(a, off[0], rl[i])
            _put(a, off[1], sl[i])
            _put(a, off[2], "active")
            _put(a, off[3], None)
            _put(a, off[4], unset)
            Py_INCREF(obj)
            PyList_SET_ITEM(out, i, obj)
        return out

    def held_page(self, st, ans):
        """_page, for the tests (its twin is qpure.held_page)."""
        return self._page(st, ans)

    cdef object _clock(self, reader):
        """``reader.clock()``; timeutil.now_us's ``time.time_ns() // 1000``
        read here when it is that clock (the same CLOCK_REALTIME)."""
        cdef int64_t at
        if self._now(reader, &at):
            return at
        return self.rf.get(reader, R_CLOCK)()

    cdef bint _now(self, reader, int64_t* out) except -1:
        """_clock's CLOCK_REALTIME read, as an int64 in ``out`` (True), when
        the reader's clock is timeutil.now_us; else False (then that clock is called)."""
        cdef timespec ts
        clock = self.rf.get(reader, R_CLOCK)
        if clock is self.now_us and clock_gettime(CLOCK_REALTIME, &ts) == 0 and ts.tv_sec >= 0:
            out[0] = <int64_t>ts.tv_sec * 1000000 + ts.tv_nsec // 1000
            return True
        return False

    def __call__(self, reader, concept_path, predicate, include_descendants, lens, limit,
                 agent):
        return self._first(reader, concept_path, predicate, include_descendants, lens, limit,
                           agent)

    def call(self, reader, concept_path, predicate, include_descendants, lens, limit, agent):
        """The call itself, as a method: first_page hands this bound method
        out, which Python calls with its arguments in place (vectorcall);
        the instance's own ``__call__`` takes them packed in a tuple
        (tp_call), ~400 instructions more a query (callgrind)."""
        return self._first(reader, concept_path, predicate, include_descendants, lens, limit,
                           agent)

    cdef object _first(self, reader, concept_path, predicate, include_descendants, lens, limit,
                       agent):
        cdef PyObject* e
        cdef Py_ssize_t pid_c, qid_c = 0, slot = -1
        cdef PyObject* gpart = NULL
        st = self.rf.get(reader, R_STATE)
        cache = self.rf.get(reader, R_CACHE)
        path_ids = self.sf.get(st, S_PATH_IDS)
        pred_ids = self.sf.get(st, S_PRED_IDS)
        if (cache is None or type(concept_path) is not str or type(path_ids) is not dict
                or type(pred_ids) is not dict):
            return None
        if predicate is not None and type(predicate) is not str:
            return None
        if include_descendants is not False and include_descendants is not True:
            return None
        if type(lens) is not str or type(limit) is not int or not 1 <= limit <= 1000:
            return None
        e = PyDict_GetItem(self.lenses, lens)
        if e == NULL:
            return None
        lens_obj = <object>e
        name = lens_obj.name
        if name == "trust":
            return None
        cdef bint incl = include_descendants is True
        page = None
        token = None
        gslot = None        # the one-part token's slot, kept by an answer made here (_finish)
        lock = self.rf.get(reader, R_LOCK)
        cdef bint own_lock = type(lock) is ReaderLock
        if own_lock:
            (<ReaderLock>lock).take()
        else:
            lock.acquire()
        try:
            akey = (concept_path, predicate, include_descendants, name)   # (query._answer_key)
            ans = None
            if not incl:
                # the cached answer whose generation slot a hit before kept
                # (_gslot_hit): its token tested without the ids' lookups
                kg = self.sf.get(st, S_KEY_GEN)
                pg = self.sf.get(st, S_PATH_GEN)
                gen = self.sf.get(st, S_GEN)
                ans = self._gslot_hit(cache, akey, gen, pg if predicate is None else kg,
                                      predicate is None, &gpart)
            if ans is not None:
                part = <object>gpart    # (the token's part, for the pinned view below)
                Py_DECREF(part)         # (gpart's reference, now part's)
            else:
                # The ids read here are the ones the token reads: a State
                # gives a path or predicate its id once (its count then) and
                # never changes or removes it (lookups of str keys in dicts
                # of str keys: no Python code runs under the lock)
                e = PyDict_GetItem(path_ids, concept_path)
                if e == NULL:
                    return None
                pid = <object>e
                qid = None
                if predicate is not None:
                    e = PyDict_GetItem(pred_ids, predicate)
                    if e == NULL:
                        return None
                    qid = <object>e
                if (not incl and type(pid) is int
                        and (predicate is None or (qid is not None and type(qid) is int))):
                    # one stored path (and predicate): _answer_token's one
                    # part, its tuple made only when the answer is not the
                    # cached one (the cached token compared in place,
                    # _token_is)
                    if (len(kg) <= self.gen_mask or len(pg) <= self.gen_mask
                            or self.gen_mask < 0):
                        raise ValueError("the generation slots are fewer than the mask covers")
                    pid_c = pid
                    if predicate is None:
                        slot = pid_c & self.gen_mask
                        part = pg[slot]
                    else:
                        qid_c = qid
                        slot = (pid_c * self.gen_mix + qid_c) & self.gen_mask
                        part = kg[slot]
                    gslot = -1 - slot if predicate is None else slot
                    ans = self._cached(cache, akey, None, gen, part)
                    if ans is not None:
                        self._keep_gslot(ans, gslot)
                else:
                    paths = [concept_path]
                    if incl:
                        paths += st.descendant_paths(concept_path)
                    token = _answer_token(st, path_ids, pred_ids, paths, predicate, incl,
                                          self.gen_mask, self.gen_mix)
                    ans = self._cached(cache, akey, token, None, None)
            if ans is not None and type(ans) is self.answer_cls:
                stemedb_warm_page(self._at(<PyObject*>ans, A_HELD),
                                  self._at(<PyObject*>ans, A_RESULTS))
            if (ans is not None and self._a(ans, A_HELD) is not None
                    and len(self._a(ans, A_ORDS)) <= limit):
                page = self._page(st, ans)
            if page is None:
                # the pinned view: read only for a computed answer (a held
                # one is the same at any moment its token stands)
                if token is None:
                    token = (gen, -1, -1, (part,))
                    paths = [concept_path]
                f = self.filters()
                f.seq_bound = st.last_seq
                f.rec_bound = st.last_recorded_at
                f.at_us = self._clock(reader)
                got = self.resolve(reader, concept_path, predicate, include_descendants,
                                   lens_obj, f, paths, akey, token, ans, 0, limit)
        finally:
            if own_lock:
                (<ReaderLock>lock).give()
            else:
                lock.release()
        if page is None:
            # the answer made here keeps what its first hit would keep (the
            # slot, the line's parameters' JSON): that hit costs a later one's
            return self.finish(reader, got, _params(concept_path, predicate, include_descendants,
                                                    lens, limit), lens_obj, f, akey, token, 0,
                               agent, gslot, self.keep_params)
        results = [_copy_dict(self.result, r) for r in self._a(ans, A_RESULTS)]
        # QueryResult(concept_path, lens, results, page, None): the dataclass's
        # __init__ sets these six fields, in this order (extra: a new dict)
        cdef PyTypeObject* qcls
        cdef PyObject* q
        if self.qslots:     # allocated as object.__new__ does, its slots set in place
            qcls = <PyTypeObject*>self.query_result
            q = qcls.tp_alloc(qcls, 0)
            obj = <object>q             # owns the new reference from here
            Py_DECREF(obj)
            _put(q, self.qoffsets[0], concept_path)
            _put(q, self.qoffsets[1], lens)
            _put(q, self.qoffsets[2], results)
            _put(q, self.qoffsets[3], page)
            _put(q, self.qoffsets[4], None)
            _put(q, self.qoffsets[5], {})
        else:
            obj = _new(self.query_result)
            obj.concept_path = concept_path
            obj.lens = lens
            obj.results = results
            obj.assertions = page
            obj.next_cursor = None
            obj.extra = {}
        audit = self.rf.get(reader, R_AUDIT)
        if audit is None:
            return obj
        # the audit's count and top read first, as the twin reads them (a
        # damaged answer's error is the same)
        n = self._a(ans, A_ACTIVE)
        ntop = self.ntop_max if n > self.ntop_max else n
        if not self._line(reader, audit, ans, agent, concept_path, predicate,
                          include_descendants, lens, limit):
            self.audit(reader, agent, _params(concept_path, predicate, include_descendants, lens,
                                              limit), results, None,
                       self.moment(self._clock(reader), False), page[:ntop], active=n,
                       answer=ans)
        return obj

    cdef object _gslot_hit(self, cache, key, gen, gens, bint by_path, PyObject** part_out):
        """The answer under ``key`` as _cached finds it with its one-part
        token, when that answer keeps its generation slot (``gslot``, kept
        by the query that made it, query._finish, or by _keep_gslot at an
        earlier hit, under the same State: a token
        carries its State's gen, whose high bits are that State's own
        serial, and a State never changes a path's or predicate's id, so
        the slot is the one the ids would give); else None, having changed
        nothing (no counter, no LRU move): _cached then does it all.  Only
        plain tokens are compared here (exact ints and tuples: no Python
        code runs), anything else goes the long way.  A hit's part (a new
        reference) is left in ``part_out``."""
        cdef PyObject* e
        cdef PyObject* v
        cdef Py_ssize_t k
        if type(gen) is not int or type(gens) is not list or self.aoffsets[A_GSLOT] <= 0:
            return None
        lock = self.cf.get(cache, C_LOCK)
        cdef bint ours = _take_cache_lock(lock)
        try:
            d = self.cf.get(cache, C_D)
            if type(d) is not _ODict:
                return None
            e = PyDict_GetItem(d, key)
            if e == NULL or type(<object>e) is not self.answer_cls:
                return None
            ans = <object>e
            stemedb_warm_answer(self._at(e, A_HELD), self._at(e, A_RESULTS), self._at(e, A_ORDS))
            v = (<PyObject**>(<char*>e + self.aoffsets[A_GSLOT]))[0]
            if v == NULL or type(<object>v) is not int:
                return None
            g = <object>v
            if not -(1 << 30) < g < (1 << 30):
                return None
            k = g
            if by_path:
                k = -1 - k              # (a path's slot is kept as -1 - slot)
            if not 0 <= k <= self.gen_mask or k >= PyList_GET_SIZE(gens):
                return None
            part = gens[k]
            v = (<PyObject**>(<char*>e + self.aoffsets[A_TOKEN]))[0]
            if v == NULL or not _plain_token(<object>v, gen, part):
                return None
            _MOVE_TO_END(d, key)
            self.cf.bump(cache, C_HITS)
            Py_INCREF(part)
            part_out[0] = <PyObject*>part
            return ans
        finally:
            _give_cache_lock(lock, ours)

    cdef int _keep_gslot(self, ans, Py_ssize_t slot) except -1:
        """Keep the generation slot of a hit's one-part token in the answer
        (an Answer of the class itself, its ``gslot`` slot; a path's as
        ``-1 - slot``) for _gslot_hit."""
        if type(ans) is not self.answer_cls or self.aoffsets[A_GSLOT] <= 0:
            return 0
        _put_at(<PyObject**>(<char*><PyObject*>ans + self.aoffsets[A_GSLOT]), slot)
        return 0

    cdef object _cached(self, cache, key, token, gen, part):
        """reader.ReadCache.answer(key, token), inline (its lock taken from C
        when it is a CacheLock, its OrderedDict moved by the method itself);
        ``token`` None: the one-part token ``(gen, -1, -1, (part,))``,
        compared in place (_token_is)."""
        cdef PyObject* e
        cdef bint same
        lock = self.cf.get(cache, C_LOCK)
        cdef bint ours = _take_cache_lock(lock)
        try:
            d = self.cf.get(cache, C_D)
            e = PyDict_GetItem(d, key)
            if e == NULL:
                same = False
            elif token is None:
                same = _token_is(self._a(<object>e, A_TOKEN), gen, part)
            else:
                same = not (self._a(<object>e, A_TOKEN) != token)
            if not same:
                self.cf.bump(cache, C_MISSES)
                return None
            ans = <object>e
            if type(ans) is self.answer_cls:
                stemedb_warm_answer(self._at(e, A_HELD), self._at(e, A_RESULTS),
                                    self._at(e, A_ORDS))
            if type(d) is _ODict:
                _MOVE_TO_END(d, key)
            else:
                d.move_to_end(key)
            self.cf.bump(cache, C_HITS)
            return ans
        finally:
            _give_cache_lock(lock, ours)

    cdef object _kept_line(self, ans, bytes tail, number, int64_t at, bint at_ok, agent,
                           concept_path, predicate, include_descendants, lens, limit):
        """_audit_head's line, its parameters' JSON kept by the answer
        (``ans.ptail``, for pages of ``ans.plimit``) once written (by the
        query that made it, audit_head_keep, or here): the same
        bytes, as the parameters are this call's (the answer's key and
        ``limit``; the lens by its own name, checked in __init__), so only
        the id, the times and the agent are written per line, then the kept
        JSON and ``tail`` (the parameters' JSON was ~3k of a warm R1 query's
        ~37k instructions, callgrind).  Kept when it fits the answer's
        reserved ``proom``.  The kept bytes are the parameters' alone: with
        ``tail`` in them too (as before session 11) every held answer held
        its tail twice, ~2 KB of a 20-candidate answer that its size did not
        count.  Returned as a KeptLine of the pieces (the kept JSON as it
        is now: a page of another limit may replace it before the flush),
        written by the flush (audit_take).  ``at_ok``: ``at`` is a time the
        line writes (_head_ok's check of it)."""
        cdef Line* o
        pt = self._a(ans, A_PTAIL)
        if type(pt) is not bytes or self._a(ans, A_PLIMIT) != limit:
            params = _params(concept_path, predicate, include_descendants, lens, limit)
            if not (at_ok and _head_ok(self.names, number, at, agent, params)):
                return None
            o = _scratch_line()
            try:
                _params_json(o, self.names, params, self.keys)
            except UnicodeEncodeError:
                return None
            pt = _scratch_bytes()
            if PyBytes_GET_SIZE(pt) + 33 <= ans.proom:   # the bytes object's own 33 included
                ans.ptail = pt
                ans.plimit = limit
        elif not (type(number) is int and at_ok and (agent is None or type(agent) is str)):
            return None             # (_head_ok's checks of what is not kept)
        return _kept(number, at, agent, pt, tail)

    cdef bint _line(self, reader, audit, ans, agent, concept_path, predicate,
                    include_descendants, lens, limit) except -1:
        """qaudit._audit's line from a held answer's kept end, queued (as
        a KeptLine when the parameters' JSON is kept: written by the
        flush's audit_take; the same bytes, ids and order); False when that
        is not the way (no kept end yet, a stand-in audit
        log, an agent or a parameter audit_head does not write): then
        qaudit._audit does what it does."""
        try:
            tail = self._a(ans, A_TAIL)
        except AttributeError:      # (not this way: qaudit._audit reads it or not)
            return False
        if (type(audit) is not self.log_cls or type(tail) is not bytes
                or PyBytes_GET_SIZE(tail) == 0 or not (agent is None or type(agent) is str)):
            return False
        cdef int64_t at_c = 0
        cdef bint at_ok
        cdef int over = 0
        cdef long long quick
        cdef bint below
        at = None
        if self._now(reader, &at_c):        # (no int made for the time)
            at_ok = 0 <= at_c and at_c <= _MAX_STAMP_C
        else:
            at = self._clock(reader)
            at_ok = _is_i64(at) and 0 <= at <= MAX_STAMP
            if at_ok:
                at_c = at
        try:
            if self.keep_params:
                line = self._kept_line(ans, tail, next(self.lf.get(audit, L_IDS)), at_c, at_ok,
                                       agent, concept_path, predicate, include_descendants,
                                       lens, limit)
            else:
                line = _audit_head(self.names, tail, next(self.lf.get(audit, L_IDS)),
                                   at_c if at is None else at, agent,
                                   _params(concept_path, predicate, include_descendants, lens,
                                           limit), self.keys)
        except Exception:  # noqa: BLE001 - qaudit._audit builds it (or counts it)
            line = None
        if line is None:
            return False
        q = self.lf.get(audit, L_QUEUE)
        bound = self.lf.get(audit, L_QUICK)
        if type(bound) is int:      # len(q) < bound, compared in C
            quick = PyLong_AsLongLongAndOverflow(bound, &over)
            below = over > 0 or (over == 0 and len(q) < quick)
        else:
            below = len(q) < bound
        if below:
            if type(q) is _Deque:
                _append(q, line)
            else:
                q.append(line)
        else:
            audit.add(line)
        return True


cdef inline tuple _params(concept_path, predicate, include_descendants, lens, limit):
    """A first page's parameters in qaudit._AUDIT_PARAMS order (made only
    where they are read: a computed answer, a line whose parameters'
    JSON is not kept yet, the audit's own path)."""
    return (concept_path, predicate, include_descendants, lens, None, None, None, None,
            None, False, False, limit, None)


cdef object _MINUS_ONE = -1

cdef bint _plain_token(tok, gen, part):
    """``tok == (gen, -1, -1, (part,))`` for a token of exact ints and
    tuples only (``gen`` an int): True or False, no Python code run; False
    for any other token (then _cached compares it as it does)."""
    if type(tok) is not tuple or PyTuple_GET_SIZE(tok) != 4 or type(part) is not int:
        return False
    t0, t1, t2, parts = (<tuple>tok)[0], (<tuple>tok)[1], (<tuple>tok)[2], (<tuple>tok)[3]
    if (type(t0) is not int or type(t1) is not int or type(t2) is not int
            or type(parts) is not tuple or PyTuple_GET_SIZE(parts) != 1):
        return False
    p0 = (<tuple>parts)[0]
    if type(p0) is not int:
        return False
    return (PyObject_RichCompareBool(t0, gen, Py_EQ) == 1 and t1 == -1 and t2 == -1
            and PyObject_RichCompareBool(p0, part, Py_EQ) == 1)

cdef int _token_is(tok, gen, part) except -1:
    """``not (tok != (gen, -1, -1, (part,)))`` without making the tuple (a
    cached answer's token against this query's one-part token): as a
    tuple's ``!=`` decides it, the lengths and then each pair of elements
    in order, identity first, then ``==``, up to the first unequal one."""
    if type(tok) is not tuple or PyTuple_GET_SIZE(tok) != 4:
        return not (tok != (gen, -1, -1, (part,)))
    if not (_eq((<tuple>tok)[0], gen) and _eq((<tuple>tok)[1], _MINUS_ONE)
            and _eq((<tuple>tok)[2], _MINUS_ONE)):
        return 0
    parts = (<tuple>tok)[3]
    if type(parts) is tuple and PyTuple_GET_SIZE(parts) == 1:
        return _eq((<tuple>parts)[0], part)     # (the inner tuples' own compare)
    return _eq(parts, (part,))


def token_is(tok, gen, part):
    """_token_is, for the parity tests (its twin is qpure.token_is)."""
    return _token_is(tok, gen, part) == 1


cdef inline int _eq(a, b) except -1:
    """A tuple's test of one pair of its elements (PyObject_RichCompareBool:
    identity, then ``==``)."""
    return a is b or PyObject_RichCompareBool(a, b, Py_EQ)


cdef Py_ssize_t _raw_head(raw) except -1:
    """Where ``reader.raw_pack``'s bodies start in ``raw``, its header
    checked (the ValueErrors of qpure._raw_span)."""
    if type(raw) is not bytes or len(raw) < 4:
        raise ValueError("not a raw frames object")
    cdef Py_ssize_t n = _rd32(<const uint8_t*>PyBytes_AS_STRING(raw))
    cdef Py_ssize_t head = 4 + 4 * (n + 1)
    if n < 0 or head > PyBytes_GET_SIZE(raw):
        raise ValueError("the raw frames' header does not fit")
    return head


def raw_records(raw, Py_ssize_t lo, Py_ssize_t hi, decode, Py_ssize_t at):
    """See qpure.raw_records: one loop over the header, each body copied out
    (PyBytes_FromStringAndSize) and decoded by ``decode``."""
    cdef Py_ssize_t head = _raw_head(raw), size = PyBytes_GET_SIZE(raw), i, s, e
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(raw)
    lo, hi, _ = slice(lo, hi).indices(_rd32(p))
    cdef list out = []
    for i in range(lo, hi):
        s = _rd32(p + 4 + 4 * i)
        e = _rd32(p + 8 + 4 * i)
        if not head <= s <= e <= size:
            raise ValueError("a raw frame's offsets are out of bounds")
        out.append(decode(PyBytes_FromStringAndSize(<const char*>(p + s), e - s), at))
    return out


def raw_seqs(raw, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t at):
    """See qpure.raw_seqs."""
    cdef Py_ssize_t head = _raw_head(raw), size = PyBytes_GET_SIZE(raw), i, s, e
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(raw)
    cdef uint64_t v
    lo, hi, _ = slice(lo, hi).indices(_rd32(p))
    cdef list out = []
    for i in range(lo, hi):
        s = _rd32(p + 4 + 4 * i)
        e = _rd32(p + 8 + 4 * i)
        if not head <= s <= e <= size or e - s < at + 8:
            raise ValueError("a raw frame's offsets are out of bounds")
        v = _rd32(p + s + at) | (<uint64_t>_rd32(p + s + at + 4) << 32)
        out.append(v)
    return out


def held_size(list recs not None, Py_ssize_t per, Py_ssize_t overhead):
    """``sum(per + reader.record_size(rec) for rec in recs)`` (``overhead``:
    reader.RECORD_OVERHEAD), in one call: a held answer of 20 candidates
    cost ~20 Python record_size frames (~30 us of a cold consensus query on
    bench_http's store).  The twin is qpure.held_size; the formula is
    record_size's, which tests/unit/test_query_new_assertions.py holds it
    to on generated records."""
    cdef Py_ssize_t n = 0, i
    for i in range(PyList_GET_SIZE(recs)):
        rec = <object>PyList_GET_ITEM(recs, i)
        n += per + overhead + len(rec.concept_path) + len(rec.predicate) + len(rec.value_json)
        v = rec.source
        if v is not None:
            n += len(v) + 56
        v = rec.epoch
        if v is not None:
            n += len(v) + 56
        if rec.parent_hash is not None:
            n += 72
        v = rec.derived_from
        if v is not None:
            n += 64 + 80 * len(v)
        if rec.agent_id is not None:
            n += 72 + 104
    return n


def missed_entries(list recs not None, list locs not None, read_many, Py_ssize_t base,
                   Py_ssize_t derived_extra, Py_ssize_t signed_extra):
    """reader.Reader._fill's loop, in one call: the records missing (None)
    from ``recs`` read by ``read_many(their locs)`` (a list of ``(record,
    frame body length)``) and put in place, and their cache entries
    ``(loc, record, reader.entry_size(record, length))`` returned, the size
    with entry_size's formula (``base``, ``derived_extra``,
    ``signed_extra``: reader's RECORD_BASE, DERIVED_EXTRA, SIGNED_EXTRA).
    The pure build runs _fill's own loop, its twin
    (tests/unit/test_missed_entries.py): ~10 us of the glue around the read
    in a consensus query's miss of 20 candidates (bench.http_engine
    --stages), a Python entry_size call a record among it.  ValueError when
    recs and locs, or what read_many gives and the missing ones, differ in
    length."""
    cdef Py_ssize_t n = PyList_GET_SIZE(recs), i, k, m, size
    if PyList_GET_SIZE(locs) != n:
        raise ValueError("recs and locs differ in length")
    cdef list miss = [], mlocs = [], new = []
    for i in range(n):
        if PyList_GET_ITEM(recs, i) == <PyObject*>None:
            miss.append(i)
            mlocs.append(<object>PyList_GET_ITEM(locs, i))
    got = read_many(mlocs)
    m = PyList_GET_SIZE(miss)
    if len(got) != m:
        raise ValueError("the records read and the ones missing differ in number")
    for k in range(m):
        rec, length = got[k]
        size = base + <Py_ssize_t?>length
        d = rec.derived_from
        if d is not None:
            size += derived_extra * (1 + len(d))
        if rec.agent_id is not None:
            size += signed_extra
        recs[<Py_ssize_t>(<object>PyList_GET_ITEM(miss, k))] = rec
        new.append((<object>PyList_GET_ITEM(mlocs, k), rec, size))
    return new


def read_clock(clock, now_us):
    """``clock()``: read here (CLOCK_REALTIME, as time.time_ns) when it is
    timeutil's ``now_us`` (its ``time.time_ns() // 1000`` without a Python
    frame, as FirstPage._clock); the pure twin calls it (qpure.read_clock)."""
    cdef timespec ts
    if clock is now_us and clock_gettime(CLOCK_REALTIME, &ts) == 0 and ts.tv_sec >= 0:
        return <int64_t>ts.tv_sec * 1000000 + ts.tv_nsec // 1000
    return clock()


# ------------------------------------------------------------ Store.query, compiled
# Store.query's plain shape (a first page of the default view: no filter,
# no cursor) entered without its Python frame: the frame, its keyword
# binding and the first page's own argument parsing were ~2.3k of a warm
# R1 query's ~31k instructions (callgrind, bench.r1_warm).

import functools
from cpython.method cimport PyMethod_Check, PyMethod_GET_FUNCTION, PyMethod_GET_SELF

cdef object _ABSENT = object()      # a positional argument not given


cdef object _again(method, self, concept_path, tuple args, dict filters, predicate,
                   include_descendants, lens, limit, cursor, agent):
    """``method`` called as the compiled Store.query was (the keywords
    given, in ``method``'s order, then the others in theirs)."""
    kw = {}
    for k, v in (("predicate", predicate), ("include_descendants", include_descendants),
                 ("lens", lens), ("limit", limit), ("cursor", cursor), ("agent", agent)):
        if v is not _ABSENT:
            kw[k] = v
    kw.update(filters)
    if self is _ABSENT:
        return method(*args, **kw)
    if concept_path is _ABSENT:
        return method(self, *args, **kw)
    return method(self, concept_path, *args, **kw)


def store_query(method, module):
    """``method`` (store.Store.query, a Python function) as a compiled
    function with its name, doc and signature (``functools.wraps``).  The
    plain shape (self and ``concept_path``, keywords of ``method``'s own,
    no cursor, no filter) calls ``module.first_page`` (``module``: query.py,
    read at each call as ``method`` reads it) and, when that gives None,
    ``run_query`` from ``method``'s globals, as ``method`` does; the same
    shape with the one filter decay=True calls ``module.decayed_query``
    with that ``run_query`` (query.decayed_query).  Any other
    call, bad ones included, is ``method``'s own (its errors word for
    word).  The pure build keeps ``method`` (qpure.store_query)."""
    code = method.__code__
    if code.co_argcount != 2 or code.co_kwonlyargcount != 6 or not code.co_flags & 0x08:
        raise TypeError("store_query wraps Store.query(self, concept_path, *, <6>, **filters)")
    cdef dict qd = module.__dict__, sd = method.__globals__

    fp_call = FirstPage.__dict__["call"]

    # Every call parses (self and concept_path positional-only, absent
    # keywords left _ABSENT, the rest in args and filters), so a call that
    # is not the plain shape is ``method``'s own, word for word
    def query(self=_ABSENT, concept_path=_ABSENT, /, *args, predicate=_ABSENT,
              include_descendants=_ABSENT, lens=_ABSENT, limit=_ABSENT, cursor=_ABSENT,
              agent=_ABSENT, **filters):
        cdef PyObject* e
        cdef PyObject* r
        if (self is _ABSENT or concept_path is _ABSENT or args
                or (cursor is not _ABSENT and cursor is not None)):
            return _again(method, self, concept_path, args, filters, predicate,
                          include_descendants, lens, limit, cursor, agent)
        if filters:
            # decay=True alone: ``module.decayed_query``, which calls the
            # run_query ``method`` would call (its keywords, decay=True
            # added) unless it serves the shape itself (query.py says when)
            e = PyDict_GetItem(filters, "decay") if len(filters) == 1 else NULL
            if e == NULL or <object>e is not True:
                return _again(method, self, concept_path, args, filters, predicate,
                              include_descendants, lens, limit, cursor, agent)
            e = PyDict_GetItem(qd, "decayed_query")
            r = PyDict_GetItem(sd, "run_query")
            if e == NULL or r == NULL:
                return _again(method, self, concept_path, args, filters, predicate,
                              include_descendants, lens, limit, cursor, agent)
            return (<object>e)(<object>r, self.reader, concept_path,
                               None if predicate is _ABSENT else predicate,
                               False if include_descendants is _ABSENT else include_descendants,
                               "recency" if lens is _ABSENT else lens,
                               100 if limit is _ABSENT else limit,
                               None if agent is _ABSENT else agent)
        if predicate is _ABSENT:
            predicate = None
        if include_descendants is _ABSENT:
            include_descendants = False
        if lens is _ABSENT:
            lens = "recency"
        if limit is _ABSENT:
            limit = 100
        if agent is _ABSENT:
            agent = None
        e = PyDict_GetItem(qd, "first_page")
        if e == NULL:
            return method(self, concept_path, predicate=predicate, lens=lens, limit=limit,
                          include_descendants=include_descendants, agent=agent)
        first = <object>e
        reader = self.reader
        # query.first_page as first_page(env) made it (FirstPage.call bound
        # to a FirstPage): its _first, without the call's argument parsing
        if (PyMethod_Check(first) and type(<object>PyMethod_GET_SELF(first)) is FirstPage
                and <object>PyMethod_GET_FUNCTION(first) is fp_call):
            out = (<FirstPage><object>PyMethod_GET_SELF(first))._first(
                reader, concept_path, predicate, include_descendants, lens, limit, agent)
        else:
            out = first(reader, concept_path, predicate, include_descendants, lens, limit,
                        agent)
        if out is not None:
            return out
        e = PyDict_GetItem(sd, "run_query")
        if e == NULL:       # (method's NameError)
            return method(self, concept_path, predicate=predicate, lens=lens, limit=limit,
                          include_descendants=include_descendants, agent=agent)
        return (<object>e)(self.reader, concept_path, predicate=predicate, lens=lens,
                           limit=limit, include_descendants=include_descendants, cursor=None,
                           agent=agent)

    return functools.wraps(method)(query)


cdef class NewAssertions:
    """qpure.new_assertions for one Assertion class: ``(recs, seqs)`` ->
    ``[cls(rec, seq) ...]``, each allocated and its five slots set in place
    as FirstPage._page does (Assertion.__init__ is a Python frame, ~1.2k
    instructions each: four a small key's query, every query that decodes
    its candidates).  recs and seqs must be lists of one length
    (ValueError otherwise, as the twin)."""
    cdef object cls, unset
    cdef Py_ssize_t offsets[ASSERTION_SLOTS]

    def __init__(self, cls):
        cdef PyTypeObject* t = <PyTypeObject*>cls
        if (not isinstance(cls, type) or t.tp_dictoffset != 0
                or t.tp_flags & Py_TPFLAGS_MANAGED_DICT or t.tp_new != PyBaseObject_Type.tp_new):
            raise TypeError("the Assertion class must be a __slots__ class without a __dict__ "
                            "or its own __new__")
        for i, name in enumerate(("record", "seq", "status", "retraction", "_value")):
            self.offsets[i] = _slot(cls, name)
        self.cls = cls
        self.unset = cls._UNSET

    def __call__(self, list recs not None, list seqs not None):
        cdef Py_ssize_t i, n = PyList_GET_SIZE(recs)
        cdef PyObject* a
        cdef PyTypeObject* cls = <PyTypeObject*>self.cls
        cdef Py_ssize_t* off = self.offsets
        if PyList_GET_SIZE(seqs) != n:
            raise ValueError("recs and seqs differ in length")
        unset = self.unset
        cdef list out = []
        for i in range(n):
            a = cls.tp_alloc(cls, 0)
            obj = <object>a             # owns the new reference from here
            Py_DECREF(obj)
            _put(a, off[0], <object>PyList_GET_ITEM(recs, i))
            _put(a, off[1], <object>PyList_GET_ITEM(seqs, i))
            _put(a, off[2], "active")
            _put(a, off[3], None)
            _put(a, off[4], unset)
            out.append(obj)
        return out


def new_assertions(cls):
    """See qpure.new_assertions."""
    return NewAssertions(cls)


from cpython.pythread cimport (PyThread_type_lock, PyThread_allocate_lock, PyThread_free_lock,
                               PyThread_acquire_lock, PyThread_release_lock, WAIT_LOCK,
                               NOWAIT_LOCK)

from cpython.exc cimport PyErr_CheckSignals

cdef extern from "pythread.h":
    int PyThread_acquire_lock_timed(PyThread_type_lock, long long microseconds,
                                    int intr_flag) nogil
    int PY_LOCK_ACQUIRED
    int PY_LOCK_INTR
    long long PY_TIMEOUT_MAX
    unsigned long PyThread_get_thread_ident() nogil


cdef int _check_timeout(bint blocking, double timeout) except -1:
    """threading's refusals of an acquire's arguments."""
    if not blocking and timeout != -1:
        raise ValueError("can't specify a timeout for a non-blocking call")
    if timeout < 0 and timeout != -1:
        raise ValueError("timeout value must be a non-negative number")
    if blocking and timeout != -1 and timeout * 1e6 > <double>PY_TIMEOUT_MAX:
        raise OverflowError("timeout value is too large")
    return 0


# The two locks below are taken and released under the GIL, and the GIL
# alone makes their state (held or not, by whom, who waits) consistent
# while nobody waits: a free lock is taken, and a lock nobody waits for is
# released, by plain stores, with no atomic instruction.  A PyThread lock
# each (``gate.sig``) is only the waiters' signal, released once ("posted")
# by a release that finds waiters.  Before, every take and release of the
# reader's and the cache's lock (two each a warm first page) was a
# PyThread lock's sem_trywait/sem_post: a locked compare-and-swap each,
# which waits for every store before it to drain, ~3% of a warm R1 query's
# time in sem_post (perf, cpu-clock samples; callgrind does not see it).
# Only what holds the GIL ever looks at them (the build refuses a
# free-threaded interpreter: see the check at the end of this module).

cdef struct Gate:
    PyThread_type_lock sig      # held, but while a post waits for a waiter
    Py_ssize_t waiters          # threads waiting for the lock
    bint posted                 # a release posted sig and no waiter took it yet


cdef int _gate_init(Gate* g) except -1:
    g.sig = PyThread_allocate_lock()
    if g.sig == NULL:
        raise MemoryError("cannot allocate a lock")
    PyThread_acquire_lock(g.sig, WAIT_LOCK)     # (a new lock: free, taken at once)
    g.waiters = 0
    g.posted = False
    return 0


cdef void _gate_free(Gate* g):
    if g.sig != NULL:
        if not g.posted:
            PyThread_release_lock(g.sig)
        PyThread_free_lock(g.sig)
        g.sig = NULL


cdef inline void _gate_open(Gate* g):
    """A release: wake one waiter, if any (one post at a time)."""
    if g.waiters and not g.posted:
        g.posted = True
        PyThread_release_lock(g.sig)


cdef double _deadline(double timeout) except? -2:
    """The monotonic time ``timeout`` seconds (>= 0, checked by
    _check_timeout) from now."""
    return _monotonic() + timeout


cdef int _gate_wait(Gate* g, double deadline, bint intr) except -1:
    """Wait for a post, the GIL released (the caller counted itself in
    ``waiters`` and saw the lock held): 1 when woken (by a post, taken, or
    by a signal whose handler returned; the caller looks again), 0 when
    ``deadline`` (monotonic; < 0: none) passed first.  ``intr``: a signal
    interrupts the wait and its handler runs here (and may raise)."""
    cdef int got
    cdef long long us = -1
    cdef double left
    if deadline >= 0:
        left = deadline - _monotonic()
        if left <= 0:
            return 0
        us = <long long>(left * 1e6)
        if us < 1:
            us = 1
    with nogil:
        got = PyThread_acquire_lock_timed(g.sig, us, intr)
    if got == PY_LOCK_ACQUIRED:
        g.posted = False
        return 1
    if got == PY_LOCK_INTR:
        PyErr_CheckSignals()        # a handler's exception propagates (except -1)
        return 1
    return 0


cdef class CacheLock:
    """The read cache's lock (reader.ReadCache._lock) in the compiled build:
    threading.Lock's behaviour for what the cache asks of it (acquire with
    or without blocking, release, locked, a ``with`` block), taken here
    from C without a method call: a warm R1 query took and released it
    through two Python method calls (argument parsing included), ~1k of its
    ~32k instructions (callgrind).  Taken and released under the GIL (see
    Gate above); a blocked acquire waits with the GIL released, as
    threading.Lock's does.  Not reentrant, as threading.Lock.  The pure
    build keeps threading.Lock (qpure.CacheLock);
    tests/unit/test_cache_lock.py holds the two to the same behaviour."""
    cdef Gate gate
    cdef bint _held

    def __cinit__(self):
        _gate_init(&self.gate)
        self._held = False

    def __dealloc__(self):
        _gate_free(&self.gate)

    cdef int _take_within(self, double deadline) except -1:
        """Wait for the lock, then take it: 1, or 0 when ``deadline``
        (monotonic; < 0: none) passed first."""
        self.gate.waiters += 1
        try:
            while self._held:
                if not _gate_wait(&self.gate, deadline, False):
                    return 0
        finally:
            self.gate.waiters -= 1
        self._held = True
        return 1

    cdef inline int take(self) except -1:
        if self._held:
            self._take_within(-1)
        else:
            self._held = True
        return 0

    cdef inline int give(self) except -1:
        if not self._held:
            raise RuntimeError("release unlocked lock")
        self._held = False
        if self.gate.waiters:
            _gate_open(&self.gate)
        return 0

    def acquire(self, bint blocking=True, double timeout=-1):
        _check_timeout(blocking, timeout)
        if not self._held:
            self._held = True
            return True
        if not blocking:
            return False
        return self._take_within(-1 if timeout == -1 else _deadline(timeout)) == 1

    def release(self):
        self.give()

    def locked(self):
        return self._held

    def __enter__(self):
        self.take()
        return True

    def __exit__(self, t, v, tb):
        self.give()
        return None


cdef inline bint _take_cache_lock(lock) except -1:
    """Take the read cache's lock: from C when it is a CacheLock (the
    compiled build's), else by its ``acquire``.  Whether it was ours, for
    _give_cache_lock."""
    if type(lock) is CacheLock:
        (<CacheLock>lock).take()
        return True
    lock.acquire()
    return False


cdef inline int _give_cache_lock(lock, bint ours) except -1:
    """Release what _take_cache_lock took."""
    if ours:
        (<CacheLock>lock).give()
    else:
        lock.release()
    return 0


cdef class ReaderLock:
    """The reader's lock (reader.Reader.lock, opening.py) in the compiled
    build: threading.RLock's behaviour (reentrant by its owner thread;
    acquire with or without blocking or a timeout, release, a ``with``
    block, and _is_owned / _release_save / _acquire_restore, which
    threading.Condition uses), taken here from C by FirstPage without a
    method call: RLock.acquire parses its arguments as keywords, and with
    release it was ~800 of a warm R1 query's ~31.5k instructions
    (callgrind).  Taken and released under the GIL (see Gate above); a
    blocked acquire waits with the GIL released and, without a timeout,
    lets a signal's handler run (and raise) as RLock's does.  The pure
    build keeps threading.RLock (qpure.ReaderLock);
    tests/unit/test_reader_lock.py holds the two to the same behaviour."""
    cdef Gate gate
    cdef unsigned long _owner
    cdef unsigned long _count

    def __cinit__(self):
        _gate_init(&self.gate)
        self._owner = 0
        self._count = 0

    def __dealloc__(self):
        _gate_free(&self.gate)

    cdef int _take_within(self, unsigned long me, double deadline) except -1:
        """Wait for the lock (held by another thread), then take it once:
        1, or 0 when ``deadline`` (monotonic; < 0: none, and a signal's
        handler runs while waiting) passed first."""
        self.gate.waiters += 1
        try:
            while self._count:
                if not _gate_wait(&self.gate, deadline, deadline < 0):
                    return 0
        finally:
            self.gate.waiters -= 1
        self._owner = me
        self._count = 1
        return 1

    cdef inline int take(self) except -1:
        cdef unsigned long me = PyThread_get_thread_ident()
        if self._count == 0:
            self._owner = me
            self._count = 1
        elif self._owner == me:
            if self._count == <unsigned long>-1:
                raise OverflowError("Internal lock count overflowed")
            self._count += 1
        else:
            self._take_within(me, -1)
        return 0

    cdef inline int give(self) except -1:
        if self._count == 0 or self._owner != PyThread_get_thread_ident():
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if self._count == 0:
            self._owner = 0
            if self.gate.waiters:
                _gate_open(&self.gate)
        return 0

    def acquire(self, bint blocking=True, double timeout=-1):
        cdef unsigned long me = PyThread_get_thread_ident()
        _check_timeout(blocking, timeout)
        if self._count == 0 or self._owner == me:
            self.take()
            return True
        if not blocking:
            return False
        return self._take_within(me, -1 if timeout == -1 else _deadline(timeout)) == 1

    def release(self):
        self.give()

    def __enter__(self):
        self.take()
        return True

    def __exit__(self, t, v, tb):
        self.give()
        return None

    def _is_owned(self):
        return bool(self._count) and self._owner == PyThread_get_thread_ident()

    def _release_save(self):
        if self._count == 0:
            raise RuntimeError("cannot release un-acquired lock")
        state = (self._count, self._owner)
        self._count = 0
        self._owner = 0
        if self.gate.waiters:
            _gate_open(&self.gate)
        return state

    def _acquire_restore(self, tuple state):
        count, owner = state
        if self._count:
            self._take_within(PyThread_get_thread_ident(), -1)
        self._owner = owner
        self._count = count

    def __repr__(self):
        return (f"<{'locked' if self._count else 'unlocked'} {type(self).__module__}."
                f"{type(self).__qualname__} object owner={self._owner} count={self._count} "
                f"at {hex(id(self))}>")


from time import monotonic as _monotonic
import sys as _sys
if not getattr(_sys, "_is_gil_enabled", lambda: True)():
    # CacheLock and ReaderLock rely on the GIL (see Gate)
    raise ImportError("stemedb.core._query needs the GIL (a free-threaded interpreter runs "
                      "without it); use STEMEDB_PURE_PYTHON=1")


def first_page(tuple env):
    """See qpure.first_page (the call: FirstPage.call, bound)."""
    return FirstPage(env).call
