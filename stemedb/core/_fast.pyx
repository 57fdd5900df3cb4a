# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled twins of codec.scan_frames and codec.index_fields.

Same arguments, same answers (tests/unit/test_codec_parity.py); the pure
functions in codec.py are the reference.  CRC32C is google-crc32c's, called
once per record; only the framing walk and the field extraction are ours.
"""
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
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


def index_fields(buf, Py_ssize_t off):
    """See codec.index_fields."""
    cdef const uint8_t[:] mv = buf
    cdef const uint8_t* p = &mv[off]
    cdef int64_t rec = rd64(p + 32), ts = rd64(p + 40)
    cdef int lc = p[57], fields = p[58]
    cdef Py_ssize_t lpath = rd16(p + 60), lpred = rd16(p + 62), lsrc = rd16(p + 64)
    cdef Py_ssize_t lep = rd16(p + 66), nd = rd16(p + 68), i
    h = (<const char*>p)[:32]
    cdef const uint8_t* q = p + HEAD_SIZE
    path = PyUnicode_DecodeUTF8(<const char*>q, lpath, NULL); q += lpath
    pred = PyUnicode_DecodeUTF8(<const char*>q, lpred, NULL); q += lpred
    src = ep = parent = derived = None
    if fields & F_SOURCE:
        src = PyUnicode_DecodeUTF8(<const char*>q, lsrc, NULL); q += lsrc
    if fields & F_EPOCH:
        ep = PyUnicode_DecodeUTF8(<const char*>q, lep, NULL); q += lep
    if fields & F_PARENT:
        parent = (<const char*>q)[:32]; q += 32
    if fields & F_DERIVED:
        derived = [(<const char*>(q + 32 * i))[:32] for i in range(nd)]
    return h, rec, ts, lc, path, pred, src, ep, parent, derived
