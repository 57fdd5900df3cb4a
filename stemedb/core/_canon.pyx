# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of the assertion hash path: RFC 8785 (JCS) canonical JSON.

``value_json(v)`` is ``stemedb.canonical.canonical_json(v)`` for every value
that function accepts, and ``None`` for every value it refuses (or that this
module does not handle itself): the caller then runs the pure function, which
raises the error naming the path.  So errors have one source, the pure
reference, and the compiled code only ever says "here are the bytes" or "ask
the reference".  ``hashed_assertion(...)`` writes the hashed object of an
assertion (``stemedb.model._hashed_bytes_py`` is its pure twin).

The field checks follow the same rule: ``path_ok``, ``name_ok``,
``source_ok`` and ``checked_fields`` (every check of ``model._prepare``, the
value and the hashed object in one call) answer only "accepted"; anything
else goes to the pure checks in ``stemedb.model``, which raise the error
naming the field, in their order.  Text is read as UTF-8 without leaving a
cached copy inside the caller's str objects.

Numbers follow ECMAScript's Number.prototype.toString, as RFC 8785 3.2.2.3
asks: the shortest round-trip digits (CPython's repr, David Gay's dtoa, gives
the same digits as ECMAScript: the fewest that round-trip, the closest to the
value among them) laid out as ECMA-262 7.1.12.1 says.  Object keys are sorted
by UTF-16 code units: for keys with no character above U+FFFF that is code
point order, so only dicts holding such a key pay for a UTF-16 sort key.

Tested against the ``rfc8785`` package (the oracle) and the pure twin in
tests/unit/test_canon.py.
"""
from libc.math cimport fabs, isfinite
from libc.stdlib cimport free, malloc, realloc
from libc.stdint cimport uint64_t
from libc.string cimport memcpy, strlen
from cpython.bytes cimport PyBytes_FromStringAndSize

from types import MemberDescriptorType

cdef extern from "blake3/blake3.h":
    # the vendored official C implementation (stemedb/core/blake3/README.md)
    ctypedef struct blake3_hasher:
        pass
    void blake3_hasher_init(blake3_hasher* self) nogil
    void blake3_hasher_update(blake3_hasher* self, const void* data, size_t n) nogil
    void blake3_hasher_finalize(const blake3_hasher* self, unsigned char* out, size_t n) nogil

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object s)
    Py_ssize_t PyUnicode_GET_LENGTH(object s)
    void* PyUnicode_DATA(object s)
    bytes PyUnicode_AsUTF8String(object s)
    char* PyBytes_AS_STRING(object b)
    Py_ssize_t PyBytes_GET_SIZE(object b)
    char* PyOS_double_to_string(double val, char format_code, int precision,
                                int flags, int* ptype) except NULL
    void PyMem_Free(void* p)
    int PyUnicode_KIND(object s)
    enum: PyUnicode_4BYTE_KIND
    long long PyLong_AsLongLongAndOverflow(object v, int* overflow) except? -1
    double PyFloat_AS_DOUBLE(object v)
    ctypedef struct PyObject
    # a slot's place in its object (the answer writer's field reads: configure_slots)
    ctypedef struct PyMemberDef:
        int type
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member

cdef extern from "structmember.h":
    enum: T_OBJECT_EX

DEF MAX_DEPTH = 64
DEF MAX_SAFE = 9007199254740991          # 2**53 - 1

cdef struct Buf:
    char* p
    Py_ssize_t n
    Py_ssize_t cap


cdef int grow(Buf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t cap = b.cap * 2
    cdef char* q
    if cap < b.n + extra:
        cap = b.n + extra + 64
    q = <char*>realloc(b.p, cap)
    if q == NULL:
        raise MemoryError()
    b.p = q
    b.cap = cap
    return 0


cdef inline int put(Buf* b, const char* s, Py_ssize_t n) except -1:
    if b.n + n > b.cap:
        grow(b, n)
    memcpy(b.p + b.n, s, n)
    b.n += n
    return 0


cdef inline int putc(Buf* b, char c) except -1:
    if b.n + 1 > b.cap:
        grow(b, 1)
    b.p[b.n] = c
    b.n += 1
    return 0


cdef int put_ll(Buf* b, long long x) except -1:
    """Decimal digits of ``x`` (what ``str(int)`` writes): ``w_ll``'s, put
    as they are (no room reserved beyond them: ``number_json`` writes into
    a fixed buffer that must not grow)."""
    cdef char tmp[24]
    return put(b, tmp, w_ll(tmp, x) - tmp)


cdef const char* HEX = b"0123456789abcdef"


cdef object utf8(s, const char** u, Py_ssize_t* n):
    """Point ``u``/``n`` at the UTF-8 of the str ``s``, or ``u`` at NULL when
    ``s`` is not valid UTF-8 (a lone surrogate).  ASCII text is read in
    place; other text is encoded into a new bytes object, returned for the
    caller to hold while it reads ``u`` (PyUnicode_AsUTF8AndSize would cache
    a copy inside the caller's str for its whole life instead)."""
    if PyUnicode_IS_ASCII(s):
        u[0] = <const char*>PyUnicode_DATA(s)
        n[0] = PyUnicode_GET_LENGTH(s)
        return None
    try:
        b = PyUnicode_AsUTF8String(s)
    except UnicodeEncodeError:
        u[0] = NULL
        n[0] = 0
        return None
    u[0] = PyBytes_AS_STRING(b)
    n[0] = PyBytes_GET_SIZE(b)
    return b


cdef int put_str(Buf* b, s) except -1:
    """A JSON string per RFC 8785 3.2.2.2: '"' and '\\' escaped, control
    characters as \\b \\t \\n \\f \\r or \\u00xx, everything else as UTF-8
    (``w_str``).  Returns 1 when ``s`` is not valid UTF-8 text (a lone
    surrogate)."""
    cdef Py_ssize_t n
    cdef const char* u
    keep = utf8(s, &u, &n)
    if u == NULL:
        return 1
    if b.n + 6 * n + 2 > b.cap:
        grow(b, 6 * n + 2)
    b.n = w_str(b.p + b.n, u, n) - b.p
    return 0


cdef int put_raw_str(Buf* b, s) except -1:
    """``"`` + the UTF-8 of ``s`` + ``"``, unescaped: for fields validated to
    a safe ASCII alphabet (names, hex), as the pure twin writes them."""
    cdef Py_ssize_t n
    cdef const char* u
    keep = utf8(s, &u, &n)
    if u == NULL:
        return 1
    putc(b, b'"')
    put(b, u, n)
    putc(b, b'"')
    return 0


cdef int put_double(Buf* b, double d) except -1:
    """``d`` (finite) as ECMAScript's Number.prototype.toString writes it."""
    cdef char* r
    cdef char digits[32]
    cdef int k = 0, n = 0, e = 0, i, intlen = -1, lead = 0, j
    cdef bint eneg = False
    cdef char c
    if d == 0.0:
        return putc(b, b'0')
    if d < 0:
        putc(b, b'-')
        d = -d
    if d <= <double>MAX_SAFE and d == <double>(<long long>d):
        return put_ll(b, <long long>d)
    if short_decimal(d, digits, &k, &n):
        return put_digits(b, digits, k, n)
    # repr: shortest round-trip digits, as "ddd.ddd" or "d.ddde[+-]xx"
    r = PyOS_double_to_string(d, b'r', 0, 0, NULL)
    i = 0
    while r[i] != 0 and r[i] != b'e':
        c = r[i]
        if c == b'.':
            intlen = k
        elif k < 32:
            digits[k] = c
            k += 1
        i += 1
    if intlen < 0:
        intlen = k
    if r[i] == b'e':
        i += 1
        if r[i] == b'-':
            eneg = True
            i += 1
        elif r[i] == b'+':
            i += 1
        while r[i] != 0:
            e = e * 10 + (r[i] - 48)
            i += 1
        if eneg:
            e = -e
    PyMem_Free(r)
    # value = 0.DIGITS x 10^n with n = intlen + e; drop leading and trailing zeros
    n = intlen + e
    while lead < k and digits[lead] == b'0':
        lead += 1
        n -= 1
    while k > lead and digits[k - 1] == b'0':
        k -= 1
    k -= lead
    return put_digits(b, digits + lead, k, n)


cdef bint short_decimal(double d, char* digits, int* k_out, int* n_out) noexcept:
    """The shortest digits of ``d`` (positive, not integral) when they are at
    most 15 with at most 15 after the point (a confidence such as 0.399):
    the first p for which some integer m gives m / 10**p == d.  Any decimal
    of 15 significant digits or fewer round-trips through a double (DBL_DIG),
    so that m is the only p-place decimal giving d, and no shorter decimal
    does (it would have fewer places); the division is exact-then-rounded as
    reading the decimal is, so this is what repr finds, without dtoa."""
    cdef double p10 = 1.0, x
    cdef long long m
    cdef int p, k = 0, i
    cdef char tmp[20]
    if d < 1e-7 or d >= 1e15:
        return False
    for p in range(1, 16):
        p10 *= 10.0                 # exact: 10**p is a double for p <= 22
        x = d * p10
        if x >= 1e15:
            return False
        m = <long long>(x + 0.5)
        if <double>m / p10 == d:
            while m > 0:
                tmp[k] = <char>(48 + m % 10)
                m //= 10
                k += 1
            for i in range(k):
                digits[i] = tmp[k - 1 - i]
            n_out[0] = k - p
            while k > 1 and digits[k - 1] == b'0':   # none at the least p; kept exact anyway
                k -= 1
            k_out[0] = k
            return True
    return False


cdef int put_digits(Buf* b, const char* digits, int k, int n) except -1:
    """Digits ``s`` (k of them, no leading or trailing zero) of the value
    0.s x 10**n, laid out as ECMA-262 7.1.12.1 says."""
    cdef int j
    if k <= n <= 21:
        put(b, digits, k)
        for j in range(n - k):
            putc(b, b'0')
    elif 0 < n <= 21:
        put(b, digits, n)
        putc(b, b'.')
        put(b, digits + n, k - n)
    elif -6 < n <= 0:
        put(b, b"0.", 2)
        for j in range(-n):
            putc(b, b'0')
        put(b, digits, k)
    else:
        putc(b, digits[0])
        if k > 1:
            putc(b, b'.')
            put(b, digits + 1, k - 1)
        if n - 1 >= 0:
            put(b, b"e+", 2)
            put_ll(b, n - 1)
        else:
            put(b, b"e-", 2)
            put_ll(b, 1 - n)
    return 0


def _utf16_key(k):
    return (<str>k).encode("utf-16-be", "surrogatepass")


cdef int put_value(Buf* b, v, int depth) except -1:
    """0 when written, 1 when the pure reference must decide (it refuses the
    value, or this code does not handle it)."""
    cdef object t = type(v)
    cdef int overflow = 0
    cdef long long x
    cdef double d
    cdef Py_ssize_t i, m
    cdef bint wide = False
    if depth > MAX_DEPTH:
        return 1
    if v is None:
        return put(b, b"null", 4)
    if t is str:
        return put_str(b, v)
    if t is int:
        x = PyLong_AsLongLongAndOverflow(v, &overflow)
        if overflow or x > MAX_SAFE or x < -MAX_SAFE:
            return 1
        return put_ll(b, x)
    if t is float:
        d = PyFloat_AS_DOUBLE(v)
        if not isfinite(d):
            return 1
        return put_double(b, d)
    if t is bool:
        if v:
            return put(b, b"true", 4)
        return put(b, b"false", 5)
    if t is list or t is tuple:
        putc(b, b'[')
        i = 0
        for item in v:
            if i:
                putc(b, b',')
            i += 1
            if put_value(b, item, depth + 1):
                return 1
        return putc(b, b']')
    if t is dict:
        keys = list(<dict>v)
        for k in keys:
            if type(k) is not str:
                return 1
            if PyUnicode_KIND(k) == PyUnicode_4BYTE_KIND:
                wide = True
        if wide:
            keys.sort(key=_utf16_key)
        else:
            keys.sort()
        putc(b, b'{')
        m = len(keys)
        for i in range(m):
            k = keys[i]
            if i:
                putc(b, b',')
            if put_str(b, k):
                return 1
            putc(b, b':')
            if put_value(b, (<dict>v)[k], depth + 1):
                return 1
        return putc(b, b'}')
    return 1


def value_json(v):
    """RFC 8785 canonical JSON of ``v`` as ``canonical.canonical_json`` gives
    it, or None when the pure reference must decide (it raises NotJSON)."""
    return c_value_json(v)


cdef object c_value_json(v):
    cdef Buf b
    b.p = <char*>malloc(256)
    if b.p == NULL:
        raise MemoryError()
    b.n = 0
    b.cap = 256
    try:
        if put_value(&b, v, 0):
            return None
        return PyBytes_FromStringAndSize(b.p, b.n)
    finally:
        free(b.p)


def number_json(double x):
    """A finite float as JCS writes it (integral values as integers)."""
    cdef Buf b
    cdef char tmp[40]
    if not isfinite(x):
        return None
    b.p = tmp
    b.n = 0
    b.cap = 40
    put_double(&b, x)
    return PyBytes_FromStringAndSize(b.p, b.n)


cpdef hashed_assertion(agent_id, str concept_path, double confidence, derived, epoch,
                      str lifecycle, parent_hash, str predicate, source, str source_class,
                      timestamp, bytes value_json):
    """The hashed object of an assertion, in JCS key order, from validated
    fields (``value_json`` already canonical); None when the pure twin must
    decide (text that is not valid UTF-8, a timestamp beyond 64 bits)."""
    cdef Buf b
    cdef int overflow = 0
    cdef long long ts
    cdef Py_ssize_t i, m
    if type(timestamp) is not int:
        return None
    ts = PyLong_AsLongLongAndOverflow(timestamp, &overflow)
    if overflow or not isfinite(confidence):
        return None
    b.p = <char*>malloc(512 + len(value_json))
    if b.p == NULL:
        raise MemoryError()
    b.n = 0
    b.cap = 512 + len(value_json)
    try:
        putc(&b, b'{')
        if agent_id is not None:
            put(&b, b'"agent_id":', 11)
            if put_raw_str(&b, agent_id):
                return None
            putc(&b, b',')
        put(&b, b'"concept_path":', 15)
        if put_str(&b, concept_path):
            return None
        put(&b, b',"confidence":', 14)
        put_double(&b, confidence)
        if derived is not None:
            put(&b, b',"derived_from":[', 17)
            m = len(derived)
            for i in range(m):
                if i:
                    putc(&b, b',')
                if put_str(&b, derived[i]):
                    return None
            putc(&b, b']')
        if epoch is not None:
            put(&b, b',"epoch":', 9)
            if put_raw_str(&b, epoch):
                return None
        put(&b, b',"lifecycle":', 13)
        if put_raw_str(&b, lifecycle):
            return None
        if parent_hash is not None:
            put(&b, b',"parent_hash":', 15)
            if put_raw_str(&b, parent_hash):
                return None
        put(&b, b',"predicate":', 13)
        if put_raw_str(&b, predicate):
            return None
        if source is not None:
            put(&b, b',"source":', 10)
            if put_str(&b, source):
                return None
        put(&b, b',"source_class":', 16)
        if put_raw_str(&b, source_class):
            return None
        put(&b, b',"timestamp":', 13)
        put_ll(&b, ts)
        put(&b, b',"value":', 9)
        put(&b, value_json, len(value_json))
        putc(&b, b'}')
        return PyBytes_FromStringAndSize(b.p, b.n)
    finally:
        free(b.p)


# ------------------------------------------------------------- field checks
# True only when the pure check (stemedb.model.check_concept_path,
# check_source) passes; False sends the caller to the pure check, which
# raises the error naming the field.

cdef extern from "Python.h":
    Py_UCS4 PyUnicode_READ(int kind, void* data, Py_ssize_t i)
    bint Py_UNICODE_ISSPACE(Py_UCS4 ch)


cdef inline bint is_control(Py_UCS4 c):
    return c < 0x20 or (0x7f <= c <= 0x9f)


def path_ok(path):
    """Whether ``check_concept_path(path)`` accepts ``path``."""
    return c_path_ok(path)


cdef bint c_path_ok(path) except -1:
    cdef Py_ssize_t n, length, i, start = 0
    cdef int kind
    cdef void* data
    cdef Py_UCS4 c
    if type(path) is not str:
        return False
    cdef const char* u
    keep = utf8(path, &u, &n)
    if u == NULL:     # a lone surrogate
        return False
    if n < 1 or n > 512:
        return False
    kind = PyUnicode_KIND(path)
    data = PyUnicode_DATA(path)
    length = PyUnicode_GET_LENGTH(path)
    for i in range(length + 1):
        c = PyUnicode_READ(kind, data, i) if i < length else 0x2f
        if c != 0x2f:
            if is_control(c):
                return False
            continue
        # the segment [start, i)
        if i == start:
            return False
        if PyUnicode_READ(kind, data, start) == 0x2e and (
                i - start == 1 or (i - start == 2 and PyUnicode_READ(kind, data, start + 1) == 0x2e)):
            return False
        if Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, start)) or \
                Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, i - 1)):
            return False
        start = i + 1
    return True


def source_ok(source):
    """Whether ``check_source(source)`` accepts ``source`` and its text is
    valid UTF-8 (what the hashed object needs)."""
    return c_source_ok(source)


cdef bint c_source_ok(source) except -1:
    cdef Py_ssize_t n, i
    cdef const unsigned char* u
    cdef unsigned char c
    if type(source) is not str:
        return False
    keep = utf8(source, <const char**>&u, &n)
    if u == NULL:
        return False
    if n < 1 or n > 1024:
        return False
    for i in range(n):
        c = u[i]
        if c < 0x20 or c == 0x7f:
            return False
        if c == 0xc2 and i + 1 < n and 0x80 <= u[i + 1] <= 0x9f:   # U+0080..U+009F
            return False
    return True


def unset_to_none(tuple values, unset, int required):
    """``values`` as a list with ``unset`` replaced by None, or the index of
    the first of the leading ``required`` values that is ``unset`` (the
    twin of the loop in ``stemedb.model._struct_values``)."""
    cdef Py_ssize_t i, m = len(values)
    cdef list out = list(values)
    for i in range(m):
        if out[i] is unset:
            if i < required:
                return i
            out[i] = None
    return out


def name_ok(s):
    """Whether ``check_name(s, ...)`` accepts ``s``: 1-128 characters of
    ``[A-Za-z0-9_.:-]``."""
    return c_name_ok(s)


cdef bint c_name_ok(s) except -1:
    cdef Py_ssize_t n, i
    cdef const unsigned char* u
    cdef unsigned char c
    if type(s) is not str:
        return False
    keep = utf8(s, <const char**>&u, &n)
    if u == NULL:
        return False
    if n < 1 or n > 128:      # bytes: every allowed character is one byte
        return False
    for i in range(n):
        c = u[i]
        if not ((0x61 <= c <= 0x7a) or (0x41 <= c <= 0x5a) or (0x30 <= c <= 0x39)
                or c == 0x5f or c == 0x2e or c == 0x3a or c == 0x2d):
            return False
    return True



# ---------------------------------------------------- the whole check pass
# stemedb.model._prepare calls checked_fields first; None sends the fields to
# its pure checks, which raise the first error in their order.  So this only
# has to accept exactly a subset of what they accept (the parity tests hold
# it to exactly the same set), never to name a field.

cdef dict _scheme_class = {}
cdef dict _source_class_rank = {}
cdef dict _lifecycle_rank = {}
DEF MAX_VALUE_BYTES = 65536
DEF MAX_DERIVED = 256


def configure(dict scheme_class, dict source_class_rank, dict lifecycle_rank):
    """The model's tables (model.SCHEME_CLASS, SOURCE_CLASS_RANK, LIFECYCLE_RANK)."""
    global _scheme_class, _source_class_rank, _lifecycle_rank
    _scheme_class, _source_class_rank, _lifecycle_rank = \
        dict(scheme_class), dict(source_class_rank), dict(lifecycle_rank)


cdef bint hex_ok(s, Py_ssize_t want):
    """``want`` lower-case hex characters (the model's _HASH_RE / _SIG_RE)."""
    cdef Py_ssize_t i
    cdef const unsigned char* u
    cdef unsigned char c
    if type(s) is not str or not PyUnicode_IS_ASCII(s) or PyUnicode_GET_LENGTH(s) != want:
        return False
    u = <const unsigned char*>PyUnicode_DATA(s)
    for i in range(want):
        c = u[i]
        if not ((0x30 <= c <= 0x39) or (0x61 <= c <= 0x66)):
            return False
    return True


def signature_ok(s):
    """Whether ``s`` is 128 lower-case hex characters."""
    return hex_ok(s, 128)


def checked_fields(concept_path, predicate, value, confidence, source, sc, lc, parent_hash,
                   derived, epoch, timestamp, agent_id):
    """``(value_json, hashed, confidence, source_class_rank, lifecycle_rank,
    derived)`` when every check of ``model._prepare`` on these fields passes
    (``timestamp`` already parsed to microseconds), else None."""
    return c_checked_fields(concept_path, predicate, value, confidence, source, sc, lc,
                            parent_hash, derived, epoch, timestamp, agent_id)


cdef object c_checked_fields(concept_path, predicate, value, confidence, source, sc, lc,
                             parent_hash, derived, epoch, timestamp, agent_id):
    cdef double conf
    cdef str sc_name
    cdef Py_ssize_t i, m
    if not c_path_ok(concept_path) or not c_name_ok(predicate):
        return None
    if type(confidence) is float:
        conf = PyFloat_AS_DOUBLE(confidence)
        if not (0.0 <= conf <= 1.0):
            return None
    elif type(confidence) is int and (confidence == 0 or confidence == 1):
        conf = 1.0 if confidence == 1 else 0.0
    else:
        return None
    vj = c_value_json(value)
    if vj is None or len(<bytes>vj) > MAX_VALUE_BYTES:
        return None
    if source is not None and not c_source_ok(source):
        return None
    if sc is None:
        sc_name = "anecdotal"
        if source is not None:
            i = (<str>source).find(":")
            if i > 0:
                scheme = (<str>source)[:i]
                if PyUnicode_IS_ASCII(scheme):
                    sc_name = _scheme_class.get(scheme.lower(), "anecdotal")
    elif type(sc) is str and sc in _source_class_rank:
        sc_name = sc
    else:
        return None
    if lc is None:
        lc = "proposed"
    elif type(lc) is not str or lc not in _lifecycle_rank:
        return None
    if parent_hash is not None and not hex_ok(parent_hash, 64):
        return None
    if derived is not None:
        if type(derived) is not list and type(derived) is not tuple:
            return None
        m = len(derived)
        if m < 1 or m > MAX_DERIVED:
            return None
        for i in range(m):
            if not hex_ok(derived[i], 64):
                return None
        if len(set(derived)) != m:
            return None
        derived = list(derived)
    if epoch is not None and not c_name_ok(epoch):
        return None
    if agent_id is not None and not hex_ok(agent_id, 64):
        return None
    hashed = hashed_assertion(agent_id, concept_path, conf, derived, epoch, lc, parent_hash,
                              predicate, source, sc_name, timestamp, vj)
    if hashed is None:
        return None
    return (vj, hashed, conf, _source_class_rank[sc_name], _lifecycle_rank[lc], derived)


# ------------------------------------------------------ a batch, one call
# stemedb.model.prepare_batch calls prepare_many once per batch: the field
# reads, the timestamp, every check, the canonical value and hashed object,
# BLAKE3 and the record, item after item, without a Python-level call per
# item.  An item it does not take (a bad field, a signed item, a kind of
# body it does not read, a time it leaves to the pure parser) is None in the
# answer: the caller runs prepare_assertion on it, which raises the error
# naming the field (or builds the record).  So, as for checked_fields, it
# only has to accept a subset of what prepare_assertion accepts, and give the
# same record where it does (tests/unit/test_prepare_batch.py).

cdef tuple _FIELDS = ("concept_path", "predicate", "value", "confidence", "source",
                      "source_class", "lifecycle", "parent_hash", "derived_from", "epoch",
                      "timestamp", "agent_id", "signature")
cdef object _ABSENT = object()
cdef long long _MIN_US = -9007199254740991
cdef long long _MAX_US = 9007199254740991

cdef extern from "math.h":
    double rint(double x)


cdef int item_fields(item, list into, object struct_type, object astuple,
                     object unset) except -1:
    """The 13 fields of ``item`` in ``_FIELDS`` order into ``into`` (absent
    and UNSET as None): 1 when read, 0 when the item is not one to take here
    (not a dict nor ``struct_type``, an unknown or a missing required field)."""
    cdef Py_ssize_t i, seen = 0
    cdef dict d
    cdef tuple values
    if type(item) is dict:
        d = <dict>item
        for i in range(13):
            v = d.get(_FIELDS[i], _ABSENT)
            if v is _ABSENT:
                if i < 4:
                    return 0           # a required field is missing
                into[i] = None
            else:
                seen += 1
                into[i] = v
        return 1 if seen == len(d) else 0      # else: an unknown field
    if struct_type is not None and type(item) is struct_type:
        values = astuple(item)
        for i in range(13):
            v = values[i]
            if v is unset:
                if i < 4:
                    return 0
                into[i] = None
            else:
                into[i] = v
        return 1
    return 0


cdef bint time_us(ts, long long default_us, long long* out) except -1:
    """``parse_time(ts)`` for a time given as Unix seconds (int or float),
    ``default_us`` for None; False for anything else (a string, a bool, out
    of range), which the pure parser decides."""
    cdef int overflow = 0
    cdef long long v
    cdef double x
    if ts is None:
        out[0] = default_us
        return True
    if type(ts) is int:
        v = PyLong_AsLongLongAndOverflow(ts, &overflow)
        if overflow or v < -9007199254 or v > 9007199254:
            return False
        v = v * 1000000
    elif type(ts) is float:
        x = PyFloat_AS_DOUBLE(ts)
        if not isfinite(x) or not (-1e13 < x < 1e13):
            return False
        x = rint(x * 1000000.0)      # round(): half to even, as CPython's
        if not (-9007199254740991.0 <= x <= 9007199254740991.0):
            return False
        v = <long long>x
    else:
        return False
    if v < _MIN_US or v > _MAX_US:
        return False
    out[0] = v
    return True


cdef bytes c_blake3(const unsigned char* p, Py_ssize_t n):
    cdef blake3_hasher h
    cdef unsigned char out[32]
    blake3_hasher_init(&h)
    blake3_hasher_update(&h, p, <size_t>n)
    blake3_hasher_finalize(&h, out, 32)
    return PyBytes_FromStringAndSize(<char*>out, 32)


def blake3_digest(const unsigned char[::1] data not None):
    """BLAKE3-256 of ``data`` (any contiguous bytes-like object), by the
    vendored C implementation: ``blake3.blake3(data).digest()``, the pure
    twin's call (tests/unit/test_blake3_c.py holds them equal)."""
    if data.shape[0] == 0:
        return c_blake3(<const unsigned char*>b"", 0)
    return c_blake3(&data[0], data.shape[0])


def prepare_many(list items, long long default_us, record, struct_type, astuple, unset):
    """Per item of ``items``, the ``record`` (``model.AssertionRecord``) that
    ``model.prepare_assertion(item, default_time_us=default_us)`` returns, or
    None where this pass does not decide (see above).  The hash is BLAKE3 in
    C (the vendored implementation, no Python call per item: ~0.5 us of a
    ~250-byte hashed object against ~0.7-1.0 us through the ``blake3``
    package); ``struct_type`` the decoded HTTP Struct whose fields are
    ``_FIELDS`` in order (read with ``astuple``, ``unset`` its UNSET), or None."""
    cdef Py_ssize_t i, n = len(items)
    cdef list out = [None] * n
    cdef list f = [None] * 13
    cdef long long ts
    for i in range(n):
        if not item_fields(items[i], f, struct_type, astuple, unset):
            continue
        if f[11] is not None or f[12] is not None:     # agent_id, signature: the model's
            continue
        if not time_us(f[10], default_us, &ts):
            continue
        checked = c_checked_fields(f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8],
                                   f[9], ts, None)
        if checked is None:
            continue
        vj, hashed, conf, sc_rank, lc_rank, derived = <tuple>checked
        parent = f[7]
        digest = c_blake3(<const unsigned char*>PyBytes_AS_STRING(hashed),
                          PyBytes_GET_SIZE(hashed))
        out[i] = record(digest, 0, ts, conf, sc_rank, lc_rank, f[0], f[1], vj, f[4], f[9], bytes.fromhex(parent) if parent is not None else None,
                        [bytes.fromhex(h) for h in derived] if derived is not None else None,
                        None, None)
    return out


# ------------------------------------------------------------ the query answer
# One stored assertion as the JSON of ``Assertion.to_dict()`` encoded by
# msgspec (stemedb/http/answer.py), written straight from its record: the
# pure twin is ``answer.assertion_bytes_py``.  The value's canonical JSON is
# copied as it is when it holds no number with a fraction or an exponent
# (RFC 8785 and msgspec write strings, integers, true/false/null and key
# order alike: a canonical object's keys come back from orjson in canonical
# order); otherwise, and for the confidence, msgspec writes the number.

cdef tuple _a_source_classes = ()
cdef tuple _a_lifecycles = ()
cdef object _a_format_time = None
cdef object _a_number = None
cdef object _a_value = None
cdef object _a_astuple = None
cdef tuple _a_sc_json = ()      # each source class and lifecycle as its JSON string,
cdef tuple _a_lc_json = ()      # written by w_str once, not per assertion


def configure_answer(tuple source_classes, tuple lifecycles, format_time, number, value,
                     astuple):
    """``model.SOURCE_CLASSES``, ``model.LIFECYCLES``, ``timeutil.format_time``,
    msgspec's encoder of a float, the encoder of a value from its canonical
    JSON (``value_json -> bytes``) and ``msgspec.structs.astuple``."""
    global _a_source_classes, _a_lifecycles, _a_format_time, _a_number, _a_value, _a_astuple
    global _a_sc_json, _a_lc_json
    sc_json = tuple(answer_str(x) if type(x) is str else None for x in source_classes)
    lc_json = tuple(answer_str(x) if type(x) is str else None for x in lifecycles)
    if None in sc_json or None in lc_json:
        raise ValueError("the source classes and lifecycles must be str, valid UTF-8")
    _a_source_classes, _a_lifecycles = source_classes, lifecycles
    _a_sc_json, _a_lc_json = sc_json, lc_json
    _a_format_time, _a_number, _a_value, _a_astuple = format_time, number, value, astuple


def value_as_is(bytes vj):
    """``c_value_as_is`` (for the tests)."""
    return c_value_as_is(vj)


cdef inline bint word_quote_or_backslash(uint64_t w) noexcept:
    """Whether one of the eight bytes of ``w`` is '"' or '\\' (the exact
    "has a zero byte" test on ``w ^ '"'*8`` and ``w ^ '\\'*8``)."""
    cdef uint64_t ones = 0x0101010101010101ULL
    cdef uint64_t x = w ^ (ones * 0x22)
    cdef uint64_t y = w ^ (ones * 0x5c)
    return (((x - ones) & ~x) | ((y - ones) & ~y)) & 0x8080808080808080ULL != 0


cdef bint c_value_as_is(bytes vj):
    """Whether msgspec writes the value decoded from canonical JSON ``vj``
    as ``vj`` itself: true unless, outside its strings, ``vj`` holds an
    exponent, a number under 1e-5 (``0.00000...``, which msgspec writes
    as 1e-6 where RFC 8785 writes 0.000001) or a run of more than 16
    digits (a float of 1e16 to 1e21 is an integer of 17-21 digits in RFC
    8785's form, which orjson reads back as a float from 19 digits on and
    msgspec writes as 1e20; a canonical integer has at most 16, |n| <
    2**53).  Other fractions are the shortest round-trip digits in both.
    Checked on generated floats of every range (test_answer_compiled.py)."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(vj)
    cdef Py_ssize_t i, n = PyBytes_GET_SIZE(vj)
    cdef bint in_str = False
    cdef int digits = 0
    cdef unsigned char c
    cdef uint64_t w
    i = 0
    while i < n:
        c = p[i]
        if in_str:
            # the string's plain run eight bytes at a time while no byte of
            # the word is '"' or '\\' (the values' text: most of their bytes),
            # then byte by byte to its end or escape
            while i + 8 <= n:
                memcpy(&w, p + i, 8)
                if word_quote_or_backslash(w):
                    break
                i += 8
            if i >= n:
                return True
            c = p[i]
            while c != 0x22 and c != 0x5c:
                i += 1
                if i >= n:
                    return True
                c = p[i]
            if c == 0x5c:           # an escape: skip the escaped character
                i += 1
            else:
                in_str = False
        elif 0x30 <= c <= 0x39:
            digits += 1
            if digits > 16:
                return False
        else:
            if c == 0x22:
                in_str = True
            elif c == 0x74 and i + 3 < n and p[i + 3] == 0x65:   # true: its e is no exponent
                i += 3
            elif c == 0x66 and i + 4 < n and p[i + 4] == 0x65:   # false
                i += 4
            elif c == 0x65 or c == 0x45:    # e E
                return False
            elif (c == 0x2e and digits == 1 and p[i - 1] == 0x30 and i + 5 < n
                    and p[i + 1] == 0x30 and p[i + 2] == 0x30 and p[i + 3] == 0x30
                    and p[i + 4] == 0x30 and p[i + 5] == 0x30):
                # 0.00000...: under 1e-5, which msgspec writes with an exponent
                return False
            digits = 0
        i += 1
    return True


# "00" .. "99" and the two hex digits of each byte: one 2-byte copy each
cdef char _digits2[200]
cdef char _hex2[512]
for _i in range(100):
    _digits2[2 * _i] = <char>(48 + _i // 10)
    _digits2[2 * _i + 1] = <char>(48 + _i % 10)
for _i in range(256):
    _hex2[2 * _i] = HEX[_i >> 4]
    _hex2[2 * _i + 1] = HEX[_i & 15]


cdef inline void two(char* p, long v) noexcept:
    memcpy(p, _digits2 + 2 * v, 2)


cdef int put_time(Buf* b, object us) except -1:
    """``"YYYY-MM-DDTHH:MM:SS.ffffffZ"`` of ``us`` microseconds since the
    epoch, as ``timeutil.format_time`` writes it (``w_time``: civil date
    from days, H. Hinnant's algorithm); years outside 1000-9999 are left to
    it."""
    cdef long long v = 0
    if not time_fast(us, &v):
        return put_str(b, _a_format_time(us))
    if b.n + 29 > b.cap:
        grow(b, 29)
    b.n = w_time(b.p + b.n, v) - b.p
    return 0


def answer_time(us):
    """``json.dumps(timeutil.format_time(us))`` as bytes, by ``put_time``
    (for the parity test)."""
    cdef Buf b
    b.n = 0
    b.cap = 64
    b.p = <char*>malloc(b.cap)
    if b.p == NULL:
        raise MemoryError()
    try:
        put_time(&b, us)
        return PyBytes_FromStringAndSize(b.p, b.n)
    finally:
        free(b.p)


cdef int put_bytes(Buf* b, object x) except -1:
    return put(b, PyBytes_AS_STRING(x), PyBytes_GET_SIZE(x))


cdef struct ConfText:
    unsigned long long bits    # the double's bits (0: empty slot, which +0.0 also is)
    int n
    char s[32]

DEF CONF_SLOTS = 4096    # a page's confidences: the workload's 1,001 three-decimal ones fit with few collisions
cdef ConfText _conf_texts[CONF_SLOTS]     # zeroed: every slot empty


cdef int put_conf(Buf* b, object conf) except -1:
    """A confidence as msgspec writes a float: CPython's repr (the shortest
    round-trip digits, ".0" added) for 0 and 1e-4 <= x < 1e16, where the two
    write the same; msgspec itself otherwise (it writes 1e-5 where repr
    writes 1e-05).  repr's digits (David Gay's dtoa, ~0.3 us) are kept per
    value in a direct-mapped table keyed by the double's exact bits (so
    -0.0 is not 0.0): a page's confidences repeat across queries (the
    workload's have three decimals).  The table is read and written with
    the GIL held (``w_conf``)."""
    cdef double x = PyFloat_AS_DOUBLE(conf)
    if not conf_fast(x):
        return put_bytes(b, _a_number(conf))
    if b.n + 32 > b.cap:
        grow(b, 32)
    b.n = w_conf(b.p + b.n, x) - b.p
    return 0


def answer_str(s):
    """``w_str``'s bytes of the str ``s`` (for the parity test), or None
    where it is not valid UTF-8."""
    cdef Py_ssize_t n
    cdef const char* u
    cdef char* p
    keep = utf8(s, &u, &n)
    if u == NULL:
        return None
    p = <char*>malloc(6 * n + 2)
    if p == NULL:
        raise MemoryError()
    try:
        return PyBytes_FromStringAndSize(p, w_str(p, u, n) - p)
    finally:
        free(p)


def answer_conf(conf):
    """``put_conf``'s bytes for the float ``conf`` (for the parity test: a
    second call reads the table)."""
    cdef Buf b
    b.n = 0
    b.cap = 64
    b.p = <char*>malloc(b.cap)
    if b.p == NULL:
        raise MemoryError()
    try:
        put_conf(&b, conf)
        return PyBytes_FromStringAndSize(b.p, b.n)
    finally:
        free(b.p)


# The writer below reserves the assertion's room once (an upper bound from
# the fields' lengths: a character is at most 6 bytes escaped, and a UTF-8
# byte at most one character) and then writes through a local cursor with
# no capacity check or call per piece: the fixed keys are constant-length
# copies the compiler turns into moves.  The fields' text is read in place
# (ASCII) or from one UTF-8 copy held for the call (``utf8``).

cdef inline char* w_put(char* q, const char* s, Py_ssize_t n) noexcept:
    memcpy(q, s, n)
    return q + n


cdef inline char* w_hex(char* q, object h) noexcept:
    """``"<lower-case hex of the bytes h>"``: 2 * len(h) + 2 bytes."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(h)
    cdef Py_ssize_t i, n = PyBytes_GET_SIZE(h)
    q[0] = b'"'
    q += 1
    for i in range(n):
        memcpy(q, _hex2 + 2 * p[i], 2)
        q += 2
    q[0] = b'"'
    return q + 1


cdef inline bint word_escapes(uint64_t w) noexcept:
    """Whether one of the eight bytes of ``w`` is a control character
    (< 0x20), '"' or '\\' (the exact "has a zero byte" tests, on ``w``,
    ``w ^ '"'*8`` and ``w ^ '\\'*8``; bytes >= 0x80 are none of them)."""
    cdef uint64_t ones = 0x0101010101010101ULL
    cdef uint64_t highs = 0x8080808080808080ULL
    cdef uint64_t x = w ^ (ones * 0x22)
    cdef uint64_t y = w ^ (ones * 0x5c)
    return (((w - ones * 0x20) & ~w) | ((x - ones) & ~x) | ((y - ones) & ~y)) & highs != 0


cdef char* w_str(char* q, const char* u, Py_ssize_t n) noexcept:
    """``put_str``'s bytes of the UTF-8 text ``u[:n]``: at most 6 * n + 2.
    Eight bytes are read and written at a time while none needs an escape
    (a whole word of the text each time: nothing is written past its
    end), the rest byte by byte."""
    cdef Py_ssize_t i = 0
    cdef unsigned char c
    cdef uint64_t w
    q[0] = b'"'
    q += 1
    while True:
        while i + 8 <= n:
            memcpy(&w, u + i, 8)
            if word_escapes(w):
                break
            memcpy(q, &w, 8)
            q += 8
            i += 8
        if i >= n:
            break
        c = <unsigned char>u[i]
        i += 1
        if c >= 0x20 and c != 0x22 and c != 0x5c:
            q[0] = <char>c
            q += 1
            continue
        q[0] = b'\\'
        if c == 0x22:
            q[1] = b'"'
        elif c == 0x5c:
            q[1] = b'\\'
        elif c == 0x08:
            q[1] = b'b'
        elif c == 0x09:
            q[1] = b't'
        elif c == 0x0a:
            q[1] = b'n'
        elif c == 0x0c:
            q[1] = b'f'
        elif c == 0x0d:
            q[1] = b'r'
        else:
            q[1] = b'u'
            q[2] = b'0'
            q[3] = b'0'
            q[4] = HEX[c >> 4]
            q[5] = HEX[c & 15]
            q += 4
        q += 2
    q[0] = b'"'
    return q + 1


cdef char* w_ll(char* q, long long x) noexcept:
    """``put_ll``'s digits: at most 20 bytes."""
    cdef char tmp[24]
    cdef int i = 24
    cdef unsigned long long u
    cdef bint neg = x < 0
    if neg:
        u = <unsigned long long>(-(x + 1)) + 1
    else:
        u = <unsigned long long>x
    while True:
        i -= 1
        tmp[i] = <char>(48 + u % 10)
        u //= 10
        if u == 0:
            break
    if neg:
        i -= 1
        tmp[i] = b'-'
    memcpy(q, tmp + i, 24 - i)
    return q + (24 - i)


cdef long long _TIME_LO = -30610224000000000LL
cdef long long _TIME_HI = 253402300800000000LL


cdef bint time_fast(object us, long long* out) except -1:
    """Whether ``w_time`` writes ``us`` (an int of microseconds): it fits a
    long long and its year is 1000-9999, as ``put_time`` decides."""
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(us, &overflow)
    if overflow:
        return False
    out[0] = v
    # 1000-01-01T00:00:00Z and 10000-01-01T00:00:00Z in microseconds, as C
    # constants (the bare literals made Cython compare Python ints: two
    # PyLongs built and freed a call)
    return _TIME_LO <= v < _TIME_HI


# The day last written and its "YYYY-MM-DD" (a page's recorded_at times
# mostly share a day); read and written with the GIL held.
cdef long long _date_days = -(1LL << 62)
cdef char _date_text[10]


cdef char* w_time(char* q, long long v) noexcept:
    """``put_time``'s 29 bytes of ``v`` microseconds (``time_fast`` said yes)."""
    global _date_days
    cdef long long secs, frac, days, sod, z, era, doe, yoe, y, doy, mp, d, m
    secs = v // 1000000
    frac = v % 1000000
    if frac < 0:
        frac += 1000000
        secs -= 1
    days = secs // 86400
    sod = secs % 86400
    if sod < 0:
        sod += 86400
        days -= 1
    q[0] = b'"'
    if days == _date_days:
        memcpy(q + 1, _date_text, 10)
    else:
        z = days + 719468
        era = (z if z >= 0 else z - 146096) // 146097
        doe = z - era * 146097
        yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
        y = yoe + era * 400
        doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
        mp = (5 * doy + 2) // 153
        d = doy - (153 * mp + 2) // 5 + 1
        m = mp + 3 if mp < 10 else mp - 9
        if m <= 2:
            y += 1
        two(q + 1, <long>(y // 100))
        two(q + 3, <long>(y % 100))
        q[5] = b'-'
        two(q + 6, <long>m)
        q[8] = b'-'
        two(q + 9, <long>d)
        memcpy(_date_text, q + 1, 10)
        _date_days = days
    q[11] = b'T'
    two(q + 12, <long>(sod // 3600))
    q[14] = b':'
    two(q + 15, <long>((sod // 60) % 60))
    q[17] = b':'
    two(q + 18, <long>(sod % 60))
    q[20] = b'.'
    two(q + 21, <long>(frac // 10000))
    two(q + 23, <long>((frac // 100) % 100))
    two(q + 25, <long>(frac % 100))
    q[27] = b'Z'
    q[28] = b'"'
    return q + 29


cdef inline bint conf_fast(double x) noexcept:
    """Whether ``w_conf`` writes ``x`` (where repr and msgspec agree)."""
    return isfinite(x) and (x == 0.0 or 1e-4 <= fabs(x) < 1e16)


cdef double _pow10[7]
_pow10[:] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6]


cdef char* w_decimal(char* q, double x) noexcept:
    """repr's digits of ``x`` when ``x`` is the double nearest a decimal of
    at most six places and 15 significant digits (``m / 10**k``, found by
    scaling and checked by the correctly rounded division ``m / 10**k ==
    |x|``), else NULL: at most 24 bytes.  Two decimals of at most 15
    significant digits are never the same double (DBL_DIG), so such a
    decimal is the only one of at most 15 digits that reads back as ``x``:
    the shortest round-trip digits repr writes, laid out as repr lays out
    1e-4 <= |x| < 1e16 (``"123.45"``, ``"5.0"``).  The confidences people
    and the workload write (three decimals) cost this instead of dtoa's
    ~2,000 instructions when the table misses."""
    cdef double a = fabs(x)
    cdef double s
    cdef long long m, ip, fp, p
    cdef int k, j
    if not (a >= 1e-4 and a < 1e15):
        return NULL
    for k in range(7):
        s = a * _pow10[k]
        if s >= 1e15:
            return NULL
        m = <long long>(s + 0.5)
        if <double>m / _pow10[k] == a:
            break
    else:
        return NULL
    if x < 0:
        q[0] = b'-'
        q += 1
    if k == 0:
        q = w_ll(q, m)
        memcpy(q, b".0", 2)
        return q + 2
    p = <long long>_pow10[k]
    ip = m // p
    fp = m % p
    while k > 1 and fp % 10 == 0:      # never after the first k that reads back; kept exact
        fp //= 10
        k -= 1
    q = w_ll(q, ip)
    q[0] = b'.'
    for j in range(k, 0, -1):
        q[j] = <char>(48 + fp % 10)
        fp //= 10
    return q + k + 1


def answer_decimal(double x):
    """``w_decimal``'s bytes of ``x``, or None (for the parity test)."""
    cdef char buf[64]
    cdef char* e = w_decimal(buf, x)
    if e == NULL:
        return None
    return PyBytes_FromStringAndSize(buf, e - buf)


cdef char* w_conf(char* q, double x) except NULL:
    """``put_conf``'s bytes of ``x`` (``conf_fast`` said yes): at most 32,
    from the same table."""
    cdef unsigned long long bits
    cdef ConfText* slot
    cdef char* r
    cdef size_t m
    memcpy(&bits, &x, 8)
    slot = &_conf_texts[(bits ^ (bits >> 23) ^ (bits >> 41)) & (CONF_SLOTS - 1)]
    if bits != 0 and slot.bits == bits:
        memcpy(q, slot.s, slot.n)
        return q + slot.n
    r = w_decimal(q, x)
    if r != NULL:
        if bits != 0:
            memcpy(slot.s, q, r - q)
            slot.n = <int>(r - q)
            slot.bits = bits
        return r
    r = PyOS_double_to_string(x, b'r', 0, 0x02, NULL)    # Py_DTSF_ADD_DOT_0
    try:
        m = strlen(r)
        if m > 32:          # never for a finite double in this range (at most 24)
            m = 32
        memcpy(q, r, m)
        if bits != 0 and m < 32:
            memcpy(slot.s, r, m)
            slot.n = <int>m
            slot.bits = bits
    finally:
        PyMem_Free(r)
    return q + m


# The answer writer reads an assertion's record (``model.AssertionRecord``,
# a msgspec Struct) and the ``model.Assertion`` around it from their slots,
# at the offsets of their member descriptors, found once (configure_slots)
# and used only for objects of exactly those types: the reads the
# descriptors themselves make, without an attribute lookup each (four an
# assertion) or ``msgspec.structs.astuple``'s tuple.  An empty slot (never
# for these types once built) takes the path of before: astuple, or the
# attribute reads, which raise what they raise.
_REC_FIELDS = ("hash", "recorded_at", "timestamp", "confidence", "source_class", "lifecycle",
               "concept_path", "predicate", "value_json", "source", "epoch", "parent_hash",
               "derived_from", "agent_id", "signature")
_AS_FIELDS = ("record", "seq", "status", "retraction")
cdef object _rec_type = None
cdef Py_ssize_t _rec_off[15]
cdef object _as_type = None
cdef Py_ssize_t _as_off[4]


cdef inline PyObject* slot_at(char* o, Py_ssize_t off) noexcept:
    return (<PyObject**>(o + off))[0]


cdef inline object slot_obj(char* o, Py_ssize_t off):
    """The object in a slot known not to be empty (a new reference)."""
    return <object>(<PyObject**>(o + off))[0]


cdef bint member_offsets(tp, tuple names, Py_ssize_t* out) except -1:
    """The slot offsets of ``names`` in ``tp`` (each a plain object member
    descriptor of ``tp`` itself: ``T_OBJECT_EX``), or False."""
    cdef PyMemberDescrObject* d
    cdef Py_ssize_t off
    if not isinstance(tp, type):
        return False
    for i, name in enumerate(names):
        desc = tp.__dict__.get(name)
        if type(desc) is not MemberDescriptorType or desc.__objclass__ is not tp:
            return False
        d = <PyMemberDescrObject*><PyObject*>desc
        off = d.d_member.offset
        if (d.d_member.type != T_OBJECT_EX or off < <Py_ssize_t>(2 * sizeof(void*))
                or off + <Py_ssize_t>sizeof(void*) > tp.__basicsize__):
            return False
        out[i] = off
    return True


def configure_slots(record_type, assertion_type):
    """Read ``record_type``'s fields (``model.AssertionRecord``, in
    ``_REC_FIELDS``' order, which must be its ``__struct_fields__``) and
    ``assertion_type``'s ``record, seq, status, retraction``
    (``model.Assertion``) from their slots; ``None`` for either: by
    attribute as before.  Returns which of the two are read from slots."""
    global _rec_type, _as_type
    _rec_type = _as_type = None
    rec_ok = as_ok = False
    if (record_type is not None
            and tuple(getattr(record_type, "__struct_fields__", ())) == _REC_FIELDS
            and member_offsets(record_type, _REC_FIELDS, _rec_off)):
        _rec_type, rec_ok = record_type, True
    if assertion_type is not None and member_offsets(assertion_type, _AS_FIELDS, _as_off):
        _as_type, as_ok = assertion_type, True
    return rec_ok, as_ok


cdef int write_item(Buf* b, a) except -1:
    """``write_assertion`` of the ``model.Assertion`` ``a``: 1 (nothing
    written) when it has a retraction or the writer does not decide."""
    cdef char* o
    if _as_type is not None and type(a) is _as_type:
        o = <char*><PyObject*>a
        if (slot_at(o, _as_off[0]) != NULL and slot_at(o, _as_off[1]) != NULL
                and slot_at(o, _as_off[2]) != NULL and slot_at(o, _as_off[3]) != NULL):
            if slot_at(o, _as_off[3]) != <PyObject*>None:
                return 1
            return write_assertion(b, slot_obj(o, _as_off[0]), slot_obj(o, _as_off[1]),
                                   slot_obj(o, _as_off[2]))
    if a.retraction is not None:
        return 1
    return write_assertion(b, a.record, a.seq, a.status)


cdef int write_assertion(Buf* b, record, seq, status) except -1:
    """Append one assertion's JSON (see ``assertion_answer``) to ``b``: 0, or
    1 when this pass does not decide (``b`` is then as it was)."""
    cdef tuple r
    cdef Py_ssize_t i, need, n_path, n_pred, n_src = 0, n_epoch = 0, n_status, n_sc, n_lc
    cdef Py_ssize_t n_ts = 0, n_rec = 0
    cdef const char* u_path
    cdef const char* u_pred
    cdef const char* u_src = NULL
    cdef const char* u_epoch = NULL
    cdef const char* u_status
    cdef const char* u_ts = NULL
    cdef const char* u_rec = NULL
    cdef int overflow = 0
    cdef long long seq_n, ts_v = 0, rec_v = 0
    cdef double conf_d
    cdef bint ts_ok, rec_ok, conf_ok
    cdef char* q
    cdef char* o
    if _a_astuple is None or type(status) is not str or type(seq) is not int:
        return 1
    seq_n = PyLong_AsLongLongAndOverflow(seq, &overflow)
    if overflow:
        return 1
    # hash, recorded_at, timestamp, confidence, source_class, lifecycle,
    # concept_path, predicate, value_json, source, epoch, parent_hash,
    # derived_from, agent_id, signature (model.AssertionRecord)
    if _rec_type is not None and type(record) is _rec_type:
        # read from the record's slots (configure_slots): what astuple
        # reads, without its 15-tuple built and freed per assertion
        o = <char*><PyObject*>record
        for i in range(15):
            if slot_at(o, _rec_off[i]) == NULL:
                return 1
        h, rec_at, ts = slot_obj(o, _rec_off[0]), slot_obj(o, _rec_off[1]), slot_obj(o, _rec_off[2])
        conf, sc, lc = slot_obj(o, _rec_off[3]), slot_obj(o, _rec_off[4]), slot_obj(o, _rec_off[5])
        path, pred = slot_obj(o, _rec_off[6]), slot_obj(o, _rec_off[7])
        vj, source, epoch = slot_obj(o, _rec_off[8]), slot_obj(o, _rec_off[9]), slot_obj(o, _rec_off[10])
        parent, derived = slot_obj(o, _rec_off[11]), slot_obj(o, _rec_off[12])
        agent, sig = slot_obj(o, _rec_off[13]), slot_obj(o, _rec_off[14])
    else:
        r = <tuple>_a_astuple(record)
        h, rec_at, ts, conf, sc, lc, path, pred, vj, source, epoch, parent, derived, agent, sig = r
    if (type(h) is not bytes or type(rec_at) is not int or type(ts) is not int
            or type(conf) is not float or type(sc) is not int or type(lc) is not int
            or type(path) is not str or type(pred) is not str or type(vj) is not bytes
            or (source is not None and type(source) is not str)
            or (epoch is not None and type(epoch) is not str)
            or (parent is not None and type(parent) is not bytes)
            or (derived is not None and type(derived) is not list)
            or (agent is not None and type(agent) is not bytes)
            or (sig is not None and type(sig) is not bytes)
            or not 0 <= <long>sc < len(_a_source_classes)
            or not 0 <= <long>lc < len(_a_lifecycles)):
        return 1
    need = 512      # the keys, punctuation, null words, seq digits, times, confidence (~390)
    if derived is not None:
        for x in <list>derived:
            if type(x) is not bytes:
                return 1
            need += 2 * PyBytes_GET_SIZE(x) + 3
    # the text fields as UTF-8 (a str that is not valid UTF-8: not decided here)
    k_path = utf8(path, &u_path, &n_path)
    if u_path == NULL:
        return 1
    k_pred = utf8(pred, &u_pred, &n_pred)
    if u_pred == NULL:
        return 1
    if source is not None:
        k_src = utf8(source, &u_src, &n_src)
        if u_src == NULL:
            return 1
    if epoch is not None:
        k_epoch = utf8(epoch, &u_epoch, &n_epoch)
        if u_epoch == NULL:
            return 1
    k_status = utf8(status, &u_status, &n_status)
    if u_status == NULL:
        return 1
    sc_json = <bytes>_a_sc_json[<Py_ssize_t>sc]
    lc_json = <bytes>_a_lc_json[<Py_ssize_t>lc]
    n_sc = PyBytes_GET_SIZE(sc_json)
    n_lc = PyBytes_GET_SIZE(lc_json)
    # what another writer gives: a value with a fraction or an exponent
    # (msgspec's), a confidence outside repr's range, a year outside 1000-9999
    if c_value_as_is(vj):
        value = vj
    else:
        value = _a_value(vj)
        if type(value) is not bytes:
            raise TypeError("the value writer must return bytes")
    conf_d = PyFloat_AS_DOUBLE(conf)
    conf_ok = conf_fast(conf_d)
    if not conf_ok:
        conf_text = _a_number(conf)
        if type(conf_text) is not bytes:
            raise TypeError("the number writer must return bytes")
        need += PyBytes_GET_SIZE(conf_text)
    ts_ok = time_fast(ts, &ts_v)
    if not ts_ok:
        k_ts = utf8(_a_format_time(ts), &u_ts, &n_ts)
        if u_ts == NULL:
            return 1
    rec_ok = time_fast(rec_at, &rec_v)
    if not rec_ok:
        k_rec = utf8(_a_format_time(rec_at), &u_rec, &n_rec)
        if u_rec == NULL:
            return 1
    need += (2 * PyBytes_GET_SIZE(h) + PyBytes_GET_SIZE(value)
             + n_sc + n_lc
             + 6 * (n_path + n_pred + n_src + n_epoch + n_status + n_ts + n_rec)
             + (2 * PyBytes_GET_SIZE(parent) if parent is not None else 0)
             + (2 * PyBytes_GET_SIZE(agent) if agent is not None else 0)
             + (2 * PyBytes_GET_SIZE(sig) if sig is not None else 0))
    if b.n + need > b.cap:
        grow(b, need)
    q = b.p + b.n
    q = w_put(q, b'{"hash":', 8)
    q = w_hex(q, h)
    q = w_put(q, b',"seq":', 7)
    q = w_ll(q, seq_n)
    q = w_put(q, b',"concept_path":', 16)
    q = w_str(q, u_path, n_path)
    q = w_put(q, b',"predicate":', 13)
    q = w_str(q, u_pred, n_pred)
    q = w_put(q, b',"value":', 9)
    q = w_put(q, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
    q = w_put(q, b',"confidence":', 14)
    if conf_ok:
        q = w_conf(q, conf_d)
    else:
        q = w_put(q, PyBytes_AS_STRING(conf_text), PyBytes_GET_SIZE(conf_text))
    q = w_put(q, b',"source":', 10)
    if source is None:
        q = w_put(q, b'null', 4)
    else:
        q = w_str(q, u_src, n_src)
    q = w_put(q, b',"source_class":', 16)
    q = w_put(q, PyBytes_AS_STRING(sc_json), n_sc)
    q = w_put(q, b',"lifecycle":', 13)
    q = w_put(q, PyBytes_AS_STRING(lc_json), n_lc)
    q = w_put(q, b',"parent_hash":', 15)
    if parent is None:
        q = w_put(q, b'null', 4)
    else:
        q = w_hex(q, parent)
    q = w_put(q, b',"derived_from":', 16)
    if derived is None:
        q = w_put(q, b'null', 4)
    else:
        q[0] = b'['
        q += 1
        for i in range(len(<list>derived)):
            if i:
                q[0] = b','
                q += 1
            q = w_hex(q, (<list>derived)[i])
        q[0] = b']'
        q += 1
    q = w_put(q, b',"epoch":', 9)
    if epoch is None:
        q = w_put(q, b'null', 4)
    else:
        q = w_str(q, u_epoch, n_epoch)
    q = w_put(q, b',"timestamp":', 13)
    q = w_time(q, ts_v) if ts_ok else w_str(q, u_ts, n_ts)
    q = w_put(q, b',"agent_id":', 12)
    if agent is None:
        q = w_put(q, b'null', 4)
    else:
        q = w_hex(q, agent)
    q = w_put(q, b',"signature":', 13)
    if sig is None:
        q = w_put(q, b'null', 4)
    else:
        q = w_hex(q, sig)
    q = w_put(q, b',"recorded_at":', 15)
    q = w_time(q, rec_v) if rec_ok else w_str(q, u_rec, n_rec)
    q = w_put(q, b',"status":', 10)
    q = w_str(q, u_status, n_status)
    q[0] = b'}'
    b.n = q + 1 - b.p
    return 0


def assertion_answer(record, seq, status):
    """The bytes of ``answer.assertion_bytes_py(record, seq, status)`` (an
    assertion without a retraction), or None where this pass does not
    decide (text that is not UTF-8, a field of an unexpected type): the
    caller then runs the pure twin."""
    cdef Buf b
    b.n = 0
    b.cap = 768
    b.p = <char*>malloc(b.cap)
    if b.p == NULL:
        raise MemoryError()
    try:
        if write_assertion(&b, record, seq, status):
            return None
        return PyBytes_FromStringAndSize(b.p, b.n)
    finally:
        free(b.p)


cdef int write_page(Buf* b, list items, fallback) except -1:
    """Append the JSON array of the assertions ``items`` (``model.Assertion``)
    to ``b``, as msgspec encodes the list of what ``answer.assertion_out``
    gives for each: those without a retraction written here
    (``write_assertion``), any other one (or one this pass does not decide)
    as ``fallback(a)``'s bytes."""
    cdef Py_ssize_t i, mark, n = len(items)
    putc(b, b'[')
    for i in range(n):
        a = items[i]
        if i:
            putc(b, b',')
        mark = b.n
        if write_item(b, a):
            b.n = mark
            fb = fallback(a)
            if type(fb) is not bytes:
                raise TypeError("the fallback must return bytes")
            put_bytes(b, fb)
    putc(b, b']')
    return 0


def assertions_answer(list items, fallback):
    """The JSON array of the assertions ``items`` (``write_page``)."""
    cdef Buf b
    b.n = 0
    b.cap = 64 + 700 * len(items)
    b.p = <char*>malloc(b.cap)
    if b.p == NULL:
        raise MemoryError()
    try:
        write_page(&b, items, fallback)
        return PyBytes_FromStringAndSize(b.p, b.n)
    finally:
        free(b.p)


# A result of the query answer (``query.Result``, a dict) as msgspec encodes
# the dict ``answer._out`` makes of it, when it has exactly the six keys of
# every lens but layered, in that order, with their usual types: a winner
# without a retraction (or null), numbers that are floats or ints.
cdef tuple _RESULT_KEYS = ("concept_path", "predicate", "winner", "confidence",
                           "conflict_score", "candidates_count")


cdef int put_number(Buf* b, x) except -1:
    """A float as msgspec writes it (``put_conf``), an int as ``str(int)``;
    1 for anything else (or an int beyond a long long)."""
    cdef int overflow = 0
    cdef long long v
    if type(x) is float:
        return put_conf(b, x)
    if type(x) is int:
        v = PyLong_AsLongLongAndOverflow(x, &overflow)
        if overflow:
            return 1
        return put_ll(b, v)
    return 1


cdef int write_result(Buf* b, r) except -1:
    """Append the result ``r`` to ``b``: 0, or 1 when this pass does not
    decide (``b`` may then hold part of it: the caller cuts it back)."""
    cdef Py_ssize_t i = 0
    if not isinstance(r, dict) or len(<dict>r) != 6:
        return 1
    for k in <dict>r:
        if k != _RESULT_KEYS[i]:
            return 1
        i += 1
    path = (<dict>r)["concept_path"]
    pred = (<dict>r)["predicate"]
    w = (<dict>r)["winner"]
    if type(path) is not str or not (pred is None or type(pred) is str):
        return 1
    put(b, b'{"concept_path":', 16)
    if put_str(b, path):
        return 1
    put(b, b',"predicate":', 13)
    if pred is None:
        put(b, b'null', 4)
    elif put_str(b, pred):
        return 1
    put(b, b',"winner":', 10)
    if w is None:
        put(b, b'null', 4)
    elif _a_assertion is None or type(w) is not _a_assertion or write_item(b, w):
        return 1
    put(b, b',"confidence":', 14)
    if put_number(b, (<dict>r)["confidence"]):
        return 1
    put(b, b',"conflict_score":', 18)
    if put_number(b, (<dict>r)["conflict_score"]):
        return 1
    put(b, b',"candidates_count":', 20)
    x = (<dict>r)["candidates_count"]
    if type(x) is not int or put_number(b, x):
        return 1
    putc(b, b'}')
    return 0


cdef object _a_assertion = None


def configure_query_answer(assertion_type):
    """``model.Assertion``: the only winner type ``write_result`` writes."""
    global _a_assertion
    _a_assertion = assertion_type


def query_answer(concept_path, lens, list results, list assertions, next_cursor,
                 page_fallback, result_fallback):
    """The whole ``POST /v1/query`` answer, as msgspec encodes
    ``answer.query_doc``'s dict: ``{"concept_path", "lens", "results",
    "assertions", "next_cursor"}``, each result by ``write_result`` or as
    ``result_fallback(r)``'s bytes, the page by ``write_page`` (its
    fallback ``page_fallback``); None when a top-level field is not a str
    (or None for the cursor) that is valid UTF-8 (the caller encodes the
    dict)."""
    cdef Buf b
    cdef Py_ssize_t i, mark
    if (type(concept_path) is not str or type(lens) is not str
            or not (next_cursor is None or type(next_cursor) is str)):
        return None
    b.n = 0
    b.cap = 256 + 700 * len(assertions) + 800 * len(results)
    b.p = <char*>malloc(b.cap)
    if b.p == NULL:
        raise MemoryError()
    try:
        put(&b, b'{"concept_path":', 16)
        if put_str(&b, concept_path):
            return None
        put(&b, b',"lens":', 8)
        if put_str(&b, lens):
            return None
        put(&b, b',"results":[', 12)
        for i in range(len(results)):
            r = results[i]
            if i:
                putc(&b, b',')
            mark = b.n
            if write_result(&b, r):
                b.n = mark
                fb = result_fallback(r)
                if type(fb) is not bytes:
                    raise TypeError("the fallback must return bytes")
                put_bytes(&b, fb)
        put(&b, b'],"assertions":', 15)
        write_page(&b, assertions, page_fallback)
        put(&b, b',"next_cursor":', 15)
        if next_cursor is None:
            put(&b, b'null', 4)
        elif put_str(&b, next_cursor):
            return None
        putc(&b, b'}')
        return PyBytes_FromStringAndSize(b.p, b.n)
    finally:
        free(b.p)
