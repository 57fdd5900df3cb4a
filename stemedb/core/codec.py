"""Record encoding, decoding and log scanning: the pure-Python reference.

``_fast.pyx`` implements :func:`scan_frames`, :func:`extract_segment`,
:func:`decode_assert` and :func:`encode_assert_frames` again
for speed; ``tests/unit/test_fast_parity.py`` holds the two to the same
answers.  Everything here follows docs/format.md.
"""
from __future__ import annotations

import google_crc32c

from ..model import AssertionRecord
from .format import (
    ASSERT_HEAD, ASSERT_HEAD_SIZE, F_DERIVED, F_EPOCH, F_PARENT, F_SIGNED, F_SOURCE,
    FRAME, FRAME_CRC_FROM, FRAME_SIZE, MAX_PAYLOAD,
)

crc32c = google_crc32c.value
_pack_frame = FRAME.pack
_unpack_frame = FRAME.unpack_from
_pack_head = ASSERT_HEAD.pack
_unpack_head = ASSERT_HEAD.unpack_from

# scan stop reasons
STOP_END = 0          # clean end of the buffer
STOP_INCOMPLETE = 1   # a frame or payload runs past the end
STOP_CHECKSUM = 2     # a frame's crc does not match
STOP_BADLEN = 3       # a length field beyond MAX_PAYLOAD


def encode_frame(rtype: int, flags: int, seq: int, payload: bytes) -> bytes:
    """One framed record: 20-byte frame head then the payload."""
    body = _pack_frame(len(payload), 0, rtype, flags, 0, seq)[FRAME_CRC_FROM:] + payload
    return len(payload).to_bytes(4, "little") + crc32c(body).to_bytes(4, "little") + body


def encode_assert(r: AssertionRecord) -> bytes:
    """The assertion payload (76-byte head, then the variable parts)."""
    path = r.concept_path.encode()
    pred = r.predicate.encode()
    fields = 0
    parts = [b"", path, pred]
    src = b""
    if r.source is not None:
        fields |= F_SOURCE
        src = r.source.encode()
        parts.append(src)
    ep = b""
    if r.epoch is not None:
        fields |= F_EPOCH
        ep = r.epoch.encode()
        parts.append(ep)
    if r.parent_hash is not None:
        fields |= F_PARENT
        parts.append(r.parent_hash)
    nd = 0
    if r.derived_from is not None:
        fields |= F_DERIVED
        nd = len(r.derived_from)
        parts.extend(r.derived_from)
    if r.signature is not None:
        fields |= F_SIGNED
        assert r.agent_id is not None   # a signed record has its agent_id (model checks)
        parts.append(r.agent_id)
        parts.append(r.signature)
    parts.append(r.value_json)
    parts[0] = _pack_head(r.hash, r.recorded_at, r.timestamp, r.confidence, r.source_class,
                          r.lifecycle, fields, 0, len(path), len(pred), len(src), len(ep), nd,
                          len(r.value_json))
    return b"".join(parts)


def decode_assert(buf, off: int) -> AssertionRecord:
    """Decode the assertion payload starting at ``off`` in ``buf``."""
    (h, rec, ts, conf, sclass, lc, fields, _r, lpath, lpred, lsrc, lep, nd,
     lval) = _unpack_head(buf, off)
    p = off + ASSERT_HEAD_SIZE
    path = bytes(buf[p:p + lpath]).decode(); p += lpath
    pred = bytes(buf[p:p + lpred]).decode(); p += lpred
    src = ep = parent = derived = agent = sig = None
    if fields & F_SOURCE:
        src = bytes(buf[p:p + lsrc]).decode(); p += lsrc
    if fields & F_EPOCH:
        ep = bytes(buf[p:p + lep]).decode(); p += lep
    if fields & F_PARENT:
        parent = bytes(buf[p:p + 32]); p += 32
    if fields & F_DERIVED:
        derived = [bytes(buf[p + 32 * i:p + 32 * i + 32]) for i in range(nd)]
        p += 32 * nd
    if fields & F_SIGNED:
        agent = bytes(buf[p:p + 32]); sig = bytes(buf[p + 32:p + 96]); p += 96
    value_json = bytes(buf[p:p + lval])
    return AssertionRecord(hash=h, recorded_at=rec, timestamp=ts, confidence=conf,
                           source_class=sclass, lifecycle=lc, concept_path=path, predicate=pred,
                           value_json=value_json, source=src, epoch=ep, parent_hash=parent,
                           derived_from=derived, agent_id=agent, signature=sig)


def scan_frames(buf, start: int, end: int):
    """Walk the frames in ``buf[start:end]``, checking every CRC.

    Returns ``(offsets, types, flags, seqs, stop_offset, stop_reason)``:
    the frame offsets and heads of every valid record in order, where the
    scan stopped and why (``STOP_*``).  O(bytes scanned).
    """
    offsets, types, flags, seqs = [], [], [], []
    pos = start
    reason = STOP_END
    while pos < end:
        if end - pos < FRAME_SIZE:
            reason = STOP_INCOMPLETE
            break
        length, crc, rtype, flag, _r, seq = _unpack_frame(buf, pos)
        if length > MAX_PAYLOAD:
            reason = STOP_BADLEN
            break
        stop = pos + FRAME_SIZE + length
        if stop > end:
            reason = STOP_INCOMPLETE
            break
        if crc32c(buf[pos + FRAME_CRC_FROM:stop]) != crc:
            reason = STOP_CHECKSUM
            break
        offsets.append(pos)
        types.append(rtype)
        flags.append(flag)
        seqs.append(seq)
        pos = stop
    return offsets, types, flags, seqs, pos, reason


def index_fields(buf, payload_off: int):
    """The fields the indexes need from an assertion payload, without the value.

    Returns ``(hash, recorded_at, timestamp, lifecycle, path, predicate,
    source, epoch, parent, derived)``; strings as ``str``, hashes as bytes.
    """
    (h, rec, ts, _conf, _sclass, lc, fields, _r, lpath, lpred, lsrc, lep, nd,
     _lval) = _unpack_head(buf, payload_off)
    p = payload_off + ASSERT_HEAD_SIZE
    path = str(buf[p:p + lpath], "utf-8"); p += lpath
    pred = str(buf[p:p + lpred], "utf-8"); p += lpred
    src = ep = parent = derived = None
    if fields & F_SOURCE:
        src = str(buf[p:p + lsrc], "utf-8"); p += lsrc
    if fields & F_EPOCH:
        ep = str(buf[p:p + lep], "utf-8"); p += lep
    if fields & F_PARENT:
        parent = bytes(buf[p:p + 32]); p += 32
    if fields & F_DERIVED:
        derived = [bytes(buf[p + 32 * i:p + 32 * i + 32]) for i in range(nd)]
    return h, rec, ts, lc, path, pred, src, ep, parent, derived


def extract_segment(buf, offsets, types, seqs, segno: int, first_ord: int,
                    path_ids: dict, path_names: list, pred_ids: dict, pred_names: list,
                    epoch_ids: dict):
    """Columns for every assertion record of one scanned segment: the rebuild path.

    Interns new concept paths and predicates into the given tables (ids in
    order of first appearance).  Returns ``(cols, sources, edges, metas)``:
    ``cols`` a dict of numpy arrays (seq, loc, ts, rec, key, path, epoch, lc,
    hashes), ``sources`` a pair of arrays (str64 of each source, its ordinal), ``edges`` a list of
    ``(ordinal, parent_hash, derived_from)``, ``metas`` the ``(type, seq,
    offset)`` of every other record.  O(records).
    """
    import numpy as np
    from .index import PRED_BITS, str64
    n = sum(1 for t in types if t == 1)
    seq_a = np.empty(n, np.int64); loc_a = np.empty(n, np.int64)
    ts_a = np.empty(n, np.int64); rec_a = np.empty(n, np.int64)
    key_a = np.empty(n, np.int64); path_a = np.empty(n, np.int32)
    ep_a = np.empty(n, np.int32); lc_a = np.empty(n, np.int8)
    hashes = []
    sources, edges, metas = [], [], []
    i = 0
    for off, rtype, seq in zip(offsets, types, seqs):
        if rtype != 1:
            metas.append((rtype, seq, off))
            continue
        h, rec, ts, lc, path, pred, src, ep, parent, derived = index_fields(buf, off + FRAME_SIZE)
        pid = path_ids.get(path)
        if pid is None:
            pid = path_ids[path] = len(path_names)
            path_names.append(path)
        qid = pred_ids.get(pred)
        if qid is None:
            qid = pred_ids[pred] = len(pred_names)
            pred_names.append(pred)
        seq_a[i] = seq; loc_a[i] = (segno << 40) | off; ts_a[i] = ts; rec_a[i] = rec
        key_a[i] = (pid << PRED_BITS) | qid; path_a[i] = pid
        ep_a[i] = epoch_ids[ep] if ep is not None else 0
        lc_a[i] = lc
        hashes.append(h)
        if src is not None:
            sources.append((str64(src), first_ord + i))
        if parent is not None or derived is not None:
            edges.append((first_ord + i, parent, derived))
        i += 1
    hb = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(n, 32) if n else \
        np.empty((0, 32), np.uint8)
    cols = {"seq": seq_a, "loc": loc_a, "ts": ts_a, "rec": rec_a, "key": key_a,
            "path": path_a, "epoch": ep_a, "lc": lc_a, "hashes": hb}
    src = (np.fromiter((k for k, _ in sources), np.uint64, len(sources)),
           np.fromiter((o for _, o in sources), np.int32, len(sources)))
    return cols, src, edges, metas


def encode_assert_frames(records, seqs) -> tuple[bytes, list[int]]:
    """Frame a group of assertion records: ``(bytes, frame sizes)``.

    Every frame but the last carries ``FLAG_MORE``, so the group is atomic on
    replay.  The compiled twin builds each frame in place.
    """
    from .format import FLAG_MORE, REC_ASSERT
    frames = []
    last = len(records) - 1
    for i, (r, seq) in enumerate(zip(records, seqs)):
        frames.append(encode_frame(REC_ASSERT, FLAG_MORE if i < last else 0, seq, encode_assert(r)))
    return b"".join(frames), [len(f) for f in frames]
