# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled twins of codec's measured hot loops: scan_frames, extract_segment,
decode_assert, encode_assert_frames (and timeutil.format_time, index.str64).

Same arguments, same answers (tests/unit/test_fast_parity.py); the pure
functions in codec.py are the reference.  CRC32C is google-crc32c's, called
once per record; only the framing walk and the field extraction are ours.
"""
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

import google_crc32c

cdef object _crc = google_crc32c.value

DEF FRAME_SIZE = 20
DEF HEAD_SIZE = 76
DEF MAX_PAYLOAD = 268435456
DEF F_SOURCE = 0x01
DEF F_PARENT = 0x02
DEF F_DERIVED = 0x04
DEF F_EPOCH = 0x08

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
        crc = rd32(base + pos + 4)
        if length > MAX_PAYLOAD:
            reason = 3
            break
        stop = pos + FRAME_SIZE + length
        if stop > end:
            reason = 1
            break
        if _crc(buf[pos + 8:stop]) != crc:
            reason = 2
            break
        offsets.append(pos)
        types.append(base[pos + 8])
        flags.append(base[pos + 9])
        seqs.append(<uint64_t>rd64(base + pos + 12))
        pos = stop
    return offsets, types, flags, seqs, pos, reason


cimport numpy as cnp
import numpy as np
cnp.import_array()


def extract_segment(buf, offsets, types, seqs, long segno, long first_ord,
                    dict path_ids, list path_names, dict pred_ids, list pred_names,
                    dict epoch_ids):
    """See codec.extract_segment."""
    cdef const uint8_t[:] mv = buf
    cdef const uint8_t* base = &mv[0] if mv.shape[0] else NULL
    cdef Py_ssize_t total = len(offsets), n = 0, k, i = 0
    for k in range(total):
        if types[k] == 1:
            n += 1
    seq_o = np.empty(n, np.int64); loc_o = np.empty(n, np.int64)
    ts_o = np.empty(n, np.int64); rec_o = np.empty(n, np.int64)
    key_o = np.empty(n, np.int64); path_o = np.empty(n, np.int32)
    ep_o = np.empty(n, np.int32); lc_o = np.empty(n, np.int8)
    hb_o = np.empty((n, 32), np.uint8)
    cdef int64_t[:] seq_a = seq_o, loc_a = loc_o, ts_a = ts_o, rec_a = rec_o, key_a = key_o
    cdef int32_t[:] path_a = path_o, ep_a = ep_o
    cdef int8_t[:] lc_a = lc_o
    cdef uint8_t[:, :] hb_a = hb_o
    cdef const uint8_t* p
    cdef const uint8_t* q
    cdef Py_ssize_t off, lpath, lpred, lsrc, lep, nd, j
    cdef int fields
    cdef long pid, qid
    cdef Py_ssize_t ns = 0
    src_k = np.empty(n, np.uint64); src_o = np.empty(n, np.int32)
    cdef uint64_t[:] sk = src_k
    cdef int32_t[:] so = src_o
    edges, metas = [], []
    for k in range(total):
        off = offsets[k]
        if types[k] != 1:
            metas.append((types[k], seqs[k], off))
            continue
        p = base + off + FRAME_SIZE
        fields = p[58]
        lpath = rd16(p + 60); lpred = rd16(p + 62); lsrc = rd16(p + 64)
        lep = rd16(p + 66); nd = rd16(p + 68)
        q = p + HEAD_SIZE
        path = PyUnicode_DecodeUTF8(<const char*>q, lpath, NULL); q += lpath
        pred = PyUnicode_DecodeUTF8(<const char*>q, lpred, NULL); q += lpred
        o = path_ids.get(path)
        if o is None:
            pid = len(path_names)
            path_ids[path] = pid
            path_names.append(path)
        else:
            pid = o
        o = pred_ids.get(pred)
        if o is None:
            qid = len(pred_names)
            pred_ids[pred] = qid
            pred_names.append(pred)
        else:
            qid = o
        seq_a[i] = <int64_t>seqs[k]
        loc_a[i] = (<int64_t>segno << 40) | off
        rec_a[i] = rd64(p + 32)
        ts_a[i] = rd64(p + 40)
        key_a[i] = (<int64_t>pid << 24) | qid
        path_a[i] = pid
        lc_a[i] = p[57]
        for j in range(32):
            hb_a[i, j] = p[j]
        if fields & F_SOURCE:
            sk[ns] = fnv1a(q, lsrc)
            so[ns] = first_ord + i
            ns += 1
            q += lsrc
        if fields & F_EPOCH:
            ep_a[i] = epoch_ids[PyUnicode_DecodeUTF8(<const char*>q, lep, NULL)]
            q += lep
        else:
            ep_a[i] = 0
        if fields & (F_PARENT | F_DERIVED):
            parent = derived = None
            if fields & F_PARENT:
                parent = (<const char*>q)[:32]; q += 32
            if fields & F_DERIVED:
                derived = [(<const char*>(q + 32 * j))[:32] for j in range(nd)]
            edges.append((first_ord + i, parent, derived))
        i += 1
    cols = {"seq": seq_o, "loc": loc_o, "ts": ts_o, "rec": rec_o, "key": key_o,
            "path": path_o, "epoch": ep_o, "lc": lc_o, "hashes": hb_o}
    return cols, (src_k[:ns], src_o[:ns]), edges, metas


from libc.time cimport time_t
from ..model import AssertionRecord as _Record

DEF F_SIGNED = 0x10


cdef extern from "<time.h>" nogil:
    struct tm:
        int tm_sec, tm_min, tm_hour, tm_mday, tm_mon, tm_year
    tm* gmtime_r(const time_t* t, tm* out)


def decode_assert(buf, Py_ssize_t off):
    """See codec.decode_assert."""
    cdef const uint8_t[:] mv = buf
    cdef const uint8_t* p = &mv[off]
    cdef int fields = p[58]
    cdef Py_ssize_t lpath = rd16(p + 60), lpred = rd16(p + 62), lsrc = rd16(p + 64)
    cdef Py_ssize_t lep = rd16(p + 66), nd = rd16(p + 68), lval = rd32(p + 72), j
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
    return _Record((<const char*>p)[:32], rd64(p + 32), rd64(p + 40), conf, p[56], p[57],
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

DEF FLAG_MORE = 0x01


cdef inline void wr16(uint8_t* p, uint16_t v) nogil:
    memcpy(p, &v, 2)

cdef inline void wr32(uint8_t* p, uint32_t v) nogil:
    memcpy(p, &v, 4)

cdef inline void wr64(uint8_t* p, int64_t v) nogil:
    memcpy(p, &v, 8)


cdef inline Py_ssize_t put(uint8_t* p, const char* src, Py_ssize_t n) nogil:
    memcpy(p, src, n)
    return n


def encode_assert_frames(records, seqs):
    """See codec.encode_assert_frames."""
    cdef Py_ssize_t n = len(records), k, lpath, lpred, lsrc, lep, nd, lval, size, j
    cdef const char* cpath
    cdef const char* cpred
    cdef const char* csrc
    cdef const char* cep
    cdef uint8_t* f
    cdef uint8_t* q
    cdef int fields
    cdef double conf
    frames = []
    sizes = []
    for k in range(n):
        r = records[k]
        cpath = PyUnicode_AsUTF8AndSize(r.concept_path, &lpath)
        cpred = PyUnicode_AsUTF8AndSize(r.predicate, &lpred)
        fields = 0
        lsrc = lep = nd = 0
        src, ep, parent, derived, sig = r.source, r.epoch, r.parent_hash, r.derived_from, r.signature
        if src is not None:
            fields |= F_SOURCE
            csrc = PyUnicode_AsUTF8AndSize(src, &lsrc)
        if ep is not None:
            fields |= F_EPOCH
            cep = PyUnicode_AsUTF8AndSize(ep, &lep)
        if parent is not None:
            fields |= F_PARENT
        if derived is not None:
            fields |= F_DERIVED
            nd = len(derived)
        if sig is not None:
            fields |= F_SIGNED
        value = r.value_json
        lval = len(value)
        size = (FRAME_SIZE + HEAD_SIZE + lpath + lpred + lsrc + lep
                + (32 if parent is not None else 0) + 32 * nd + (96 if sig is not None else 0) + lval)
        frame = PyBytes_FromStringAndSize(NULL, size)
        f = <uint8_t*>PyBytes_AS_STRING(frame)
        # frame head: length, crc (filled below), type, flags, reserved, seq
        wr32(f, <uint32_t>(size - FRAME_SIZE))
        f[8] = 1
        f[9] = FLAG_MORE if k < n - 1 else 0
        wr16(f + 10, 0)
        wr64(f + 12, <int64_t>seqs[k])
        q = f + FRAME_SIZE
        memcpy(q, PyBytes_AS_STRING(r.hash), 32)
        wr64(q + 32, <int64_t>r.recorded_at)
        wr64(q + 40, <int64_t>r.timestamp)
        conf = r.confidence
        memcpy(q + 48, &conf, 8)
        q[56] = <uint8_t>r.source_class
        q[57] = <uint8_t>r.lifecycle
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
            q += put(q, PyBytes_AS_STRING(parent), 32)
        for j in range(nd):
            q += put(q, PyBytes_AS_STRING(derived[j]), 32)
        if fields & F_SIGNED:
            q += put(q, PyBytes_AS_STRING(r.agent_id), 32)
            q += put(q, PyBytes_AS_STRING(sig), 64)
        q += put(q, PyBytes_AS_STRING(value), lval)
        wr32(f + 4, <uint32_t>_crc(frame[8:]))
        frames.append(frame)
        sizes.append(size)
    return b"".join(frames), sizes
