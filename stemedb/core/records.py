"""Log records to index columns: the one function live writes and replay share.

:func:`index_records` reads the framed records of a buffer (one durable
group as the WAL wrote it, or a whole scanned segment) and writes each
assertion's row straight into the state's columns; ``State.apply_group``
calls it for every group the WAL makes durable and for every segment
recovery replays, so both build the same state by construction.  This is
the pure-Python reference; ``_fast.index_records`` is its compiled twin
(``fast.index_records`` chooses), held to the same answers, damaged input
included, by tests/unit/test_index_records.py.

It trusts nothing in a payload it is given: a record whose variable parts
do not fit inside its frame, or that names an epoch the state does not
know, is refused with :class:`~stemedb.errors.CorruptionError` naming the
offset (a frame whose CRC holds can still have been written by a bug).
"""
from __future__ import annotations

import msgspec
import numpy as np

from ..errors import CorruptionError
from .format import (
    ASSERT_HEAD, ASSERT_HEAD_SIZE, F_DERIVED, F_EPOCH, F_PARENT, F_SIGNED, F_SOURCE,
    FRAME_SIZE, REC_ASSERT, REC_EPOCH, REC_OUTCOME, REC_RETRACT, REC_VOTE,
)
from .index import PRED_BITS, bytes64, value_id

_unpack_head = ASSERT_HEAD.unpack_from
_dec = msgspec.msgpack.Decoder()


def payload_overrun(off: int, length: int, buf_len: int) -> CorruptionError:
    return CorruptionError(f"the assertion record at offset {off} does not fit its frame "
                           f"({length} payload bytes, {buf_len} in the buffer)", offset=off)


def index_records(buf, offsets, types, seqs, loc_base: int, first: int,
                  seq_c, loc_c, ts_c, rec_c, key_c, path_c, epoch_c, lc_c, conf_c, rank_c,
                  va_c, vb_c, hash_c, hkey_out, src_out, src_ord_out,
                  path_ids: dict, path_names: list, pred_ids: dict, pred_names: list,
                  epoch_ids: dict):
    """Write the index row of every assertion among ``offsets`` into the columns.

    ``buf`` holds framed records; ``offsets``, ``types``, ``seqs`` are their
    frame offsets, types and seqs (what the scanner or the writer gives).
    Row ``first + i`` of each column (``*_c``: the state's numpy columns,
    already grown to hold them) gets the ``i``-th assertion: its seq, its
    location ``loc_base + offset`` (``loc_base`` is ``segment << 40`` plus
    the file offset of ``buf[0]``), timestamp, recorded_at, index key,
    concept path id, epoch id, lifecycle, confidence, source class rank,
    value id (``index.value_id``: ``va_c``, ``vb_c``) and hash.  ``hkey_out[i]`` gets
    its 64-bit hash prefix (the ``by_hash`` key); for the ``j``-th
    assertion with a source, ``src_out[j]`` gets the ``str64`` of the
    source and ``src_ord_out[j]`` its ordinal (scratch arrays of at least
    ``len(offsets)`` rows).  New concept paths and predicates are interned
    into the given tables (ids in order of first appearance);
    ``epoch_ids`` maps epoch names to ids.

    Returns ``(n, n_sources, max_recorded_at, edges, metas)``: the
    assertions written, how many had a source, the largest recorded_at
    among them (0 if none), ``(ordinal, parent_hash, derived_from)`` of
    each record citing others, and ``(type, seq, offset)`` of every other
    record.  O(records).
    """
    hashes, seq_l, loc_l, ts_l, rec_l, key_l, pid_l, ep_l, lc_l = [], [], [], [], [], [], [], [], []
    conf_l, rank_l, va_l, vb_l = [], [], [], []
    src_k, src_o, edges, metas = [], [], [], []
    size = len(buf)
    i = 0
    for off, rtype, seq in zip(offsets, types, seqs):
        if rtype != REC_ASSERT:
            metas.append((rtype, seq, off))
            continue
        length = int.from_bytes(buf[off:off + 4], "little") \
            if 0 <= off and off + FRAME_SIZE <= size else -1
        if length < ASSERT_HEAD_SIZE or off + FRAME_SIZE + length > size:
            raise payload_overrun(off, length, size)
        p = off + FRAME_SIZE
        (h, rec, ts, conf, sclass, lc, fields, _r, lpath, lpred, lsrc, lep, nd,
         lval) = _unpack_head(buf, p)
        need = (ASSERT_HEAD_SIZE + lpath + lpred + (lsrc if fields & F_SOURCE else 0)
                + (lep if fields & F_EPOCH else 0) + (32 if fields & F_PARENT else 0)
                + (32 * nd if fields & F_DERIVED else 0) + (96 if fields & F_SIGNED else 0)
                + lval)
        if need > length:
            raise payload_overrun(off, length, size)
        q = p + ASSERT_HEAD_SIZE
        path = str(buf[q:q + lpath], "utf-8"); q += lpath
        pred = str(buf[q:q + lpred], "utf-8"); q += lpred
        pid = path_ids.get(path)
        if pid is None:
            pid = path_ids[path] = len(path_names)
            path_names.append(path)
        qid = pred_ids.get(pred)
        if qid is None:
            qid = pred_ids[pred] = len(pred_names)
            pred_names.append(pred)
        o = first + i
        if fields & F_SOURCE:
            src_k.append(bytes64(bytes(buf[q:q + lsrc])))
            src_o.append(o)
            q += lsrc
        eid = 0
        if fields & F_EPOCH:
            name = str(buf[q:q + lep], "utf-8"); q += lep
            eid = epoch_ids.get(name, -1)
            if eid < 0:
                raise CorruptionError(f"the assertion record at offset {off} names epoch "
                                      f"{name!r}, which no earlier record creates", offset=off)
        if fields & (F_PARENT | F_DERIVED):
            parent = derived = None
            if fields & F_PARENT:
                parent = bytes(buf[q:q + 32]); q += 32
            if fields & F_DERIVED:
                derived = [bytes(buf[q + 32 * j:q + 32 * j + 32]) for j in range(nd)]
            edges.append((o, parent, derived))
        va, vb = value_id(bytes(buf[p + need - lval:p + need]))
        conf_l.append(conf); rank_l.append(sclass); va_l.append(va); vb_l.append(vb)
        hashes.append(h)
        seq_l.append(seq); loc_l.append(loc_base + off); ts_l.append(ts); rec_l.append(rec)
        key_l.append((pid << PRED_BITS) | qid); pid_l.append(pid); ep_l.append(eid)
        lc_l.append(lc)
        i += 1
    n, ns = i, len(src_k)
    if n == 1:
        # scalar stores: a slice store from a list costs ~2 us per column
        seq_c[first] = seq_l[0]; loc_c[first] = loc_l[0]; ts_c[first] = ts_l[0]
        rec_c[first] = rec_l[0]; key_c[first] = key_l[0]; path_c[first] = pid_l[0]
        epoch_c[first] = ep_l[0]; lc_c[first] = lc_l[0]
        conf_c[first] = conf_l[0]; rank_c[first] = rank_l[0]
        va_c[first] = va_l[0]; vb_c[first] = vb_l[0]
        hash_c[first] = np.frombuffer(hashes[0], dtype=np.uint8)
        hkey_out[0] = int.from_bytes(hashes[0][:8], "little")
    elif n:
        sl = slice(first, first + n)
        seq_c[sl] = seq_l; loc_c[sl] = loc_l; ts_c[sl] = ts_l; rec_c[sl] = rec_l
        key_c[sl] = key_l; path_c[sl] = pid_l; epoch_c[sl] = ep_l; lc_c[sl] = lc_l
        conf_c[sl] = conf_l; rank_c[sl] = rank_l; va_c[sl] = va_l; vb_c[sl] = vb_l
        hb = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(n, 32)
        hash_c[sl] = hb
        hkey_out[:n] = np.ascontiguousarray(hb[:, :8]).view(np.uint64).reshape(n)
    if ns:
        src_out[:ns] = src_k
        src_ord_out[:ns] = src_o
    return n, ns, max(rec_l, default=0), edges, metas


def index_one(buf, off: int, seq: int, loc_base: int, first: int, cols: tuple,
              path_ids: dict, path_names: list, pred_ids: dict, pred_names: list,
              epoch_ids: dict) -> tuple:
    """:func:`index_records` of the one assertion framed at ``off`` (a single
    put's durable group), into row ``first`` of ``cols`` (``Columns.rows``:
    the 13 column arrays in index_records' order).  Returns ``(hash key,
    index key, path id, source key or None, recorded_at, edge or None)``:
    what the maps and generations take, as ints, and the ``(ordinal,
    parent, derived)`` citation if it cites.  The pure twin of
    ``_fast.index_one`` (``fast.index_one`` chooses).  O(record)."""
    if len(cols) != 13:
        raise ValueError("index_one: cols must be Columns.rows (13 arrays)")
    if first < 0:
        raise ValueError("index_one: first must be >= 0")
    hk, sk, so = np.empty(1, np.uint64), np.empty(1, np.uint64), np.empty(1, np.int32)
    (seq_c, loc_c, ts_c, rec_c, key_c, path_c, epoch_c, lc_c, conf_c, rank_c, va_c, vb_c,
     hash_c) = cols
    _n, ns, rec, edges, _m = index_records(
        buf, [off], [REC_ASSERT], [seq], loc_base, first, seq_c, loc_c, ts_c, rec_c, key_c,
        path_c, epoch_c, lc_c, conf_c, rank_c, va_c, vb_c, hash_c, hk, sk, so, path_ids,
        path_names, pred_ids, pred_names, epoch_ids)
    return (hk.item(0), cols[4].item(first), cols[5].item(first),
            sk.item(0) if ns else None, rec, edges[0] if edges else None)


def apply_puts(state, group: list, limit: int, mix: int, pred_bits: int) -> int:
    """Apply a durable WAL group of single puts to ``state``: every request
    one assertion's frame with ``frames`` ``((0,), (REC_ASSERT,), [seq])``
    (as ``Writer._put_one`` queues it) and ``locs`` set by the WAL.  Each
    request is applied as ``State._apply_one`` applies one record: its row
    (:func:`index_one`), ``MultiMap.add`` of its hash, index key, path and
    source (if any), the generation steps of slot ``(pid * mix + (key &
    qmask)) & mask`` of ``key_gen`` and ``pid & mask`` of ``path_gen``
    (``qmask`` the low ``pred_bits`` bits), ``last_recorded_at``,
    ``last_seq``, its citation (``State._link``) and ``records``; so the
    result is ``State.apply_group``'s (tests/unit/test_on_durable.py).
    Returns the records applied, or 0, having done nothing, unless the
    group is 1 to ``limit`` such requests and the state is not replaying.
    The pure twin of ``_fast.apply_puts`` (``fast.apply_puts``), which does
    it in one call (the store's on-durable step, W1 and W2).  O(group)."""
    n = len(group)
    if not 1 <= n <= limit or state._replay is not None:
        return 0
    for req in group:
        fr = req.frames
        if fr is None or len(fr[1]) != 1 or fr[1][0] != REC_ASSERT:
            return 0
    if not 0 <= pred_bits < 63:
        raise ValueError("apply_puts: pred_bits must be from 0 to 62")
    kgen, pgen = state.key_gen, state.path_gen
    slots = len(kgen)
    if slots == 0 or slots & (slots - 1) or len(pgen) != slots:
        raise ValueError("apply_puts: key_gen and path_gen must be lists of one "
                         "power-of-two length")
    mask, qmask = slots - 1, (1 << pred_bits) - 1
    c = state.cols
    hmap, kmap, pmap, smap = state.by_hash, state.by_key, state.by_path, state.by_source
    path_ids, path_names, pred_ids, pred_names, epoch_ids = (
        state.path_ids, state.path_names, state.pred_ids, state.pred_names, state.epoch_ids)
    for req in group:
        first = c.n
        if first >= c.cap:
            c._grow(first + 1)
        segno, at = req.locs[0]
        seq = req.frames[2][0]
        if type(seq) is not int or not -(1 << 63) <= seq < (1 << 63):
            raise TypeError(f"apply_puts: seq {seq!r} is not an int64")
        hk, key, pid, src, rec, edge = index_one(req.data, 0, seq, (segno << 40) + at, first,
                                                 c.rows, path_ids, path_names, pred_ids,
                                                 pred_names, epoch_ids)
        c.n = first + 1
        # State._apply_one's lines, written out again on purpose: calling it
        # would run fast.index_one and fast.add_one (the compiled ones where
        # built, so this would stop being a pure reference for the parity
        # tests) with GEN_MIX and PRED_BITS instead of ``mix`` and
        # ``pred_bits``; a helper shared by the two would cost the pure
        # build's W1 path a Python call a record
        hmap.add(hk, first)
        kmap.add(key, first)
        pmap.add(pid, first)
        if src is not None:
            smap.add(src, first)
        kgen[(pid * mix + (key & qmask)) & mask] += 1
        pgen[pid & mask] += 1
        if rec > state.last_recorded_at:
            state.last_recorded_at = rec
        if seq > state.last_seq:
            state.last_seq = int(seq)
        if edge is not None:
            state._link((edge,))
        state.records += 1
    return n


def add_one(hmap, hk: int, kmap, key: int, pmap, pid: int, smap, src: int | None, o: int,
            kgen: list, pgen: list, mix: int, pred_bits: int) -> None:
    """One applied assertion's map entries and generation steps: ordinal
    ``o`` under ``hk`` in ``hmap``, ``key`` in ``kmap``, ``pid`` in ``pmap``
    and, unless ``src`` is None, ``src`` in ``smap`` (``MultiMap.add`` each,
    in that order); then slot ``(pid * mix + (key & qmask)) & mask`` of
    ``kgen`` and ``pid & mask`` of ``pgen`` step by one (``qmask`` the low
    ``pred_bits`` bits, ``mask`` the lists' one power-of-two length - 1).
    The pure twin of ``_fast.add_one`` (``fast.add_one``); ``State._apply_one``
    runs these lines itself in the pure build (no call more).  O(1)
    amortized."""
    if type(kgen) is not list or type(pgen) is not list:
        raise TypeError("add_one: kgen and pgen must be lists")
    slots = len(kgen)
    if slots == 0 or slots & (slots - 1) or len(pgen) != slots:
        raise ValueError("add_one: kgen and pgen must be lists of one power-of-two length")
    if not 0 <= pred_bits < 63:
        raise ValueError("add_one: pred_bits must be from 0 to 62")
    if not (-(1 << 63) <= pid < (1 << 63) and -(1 << 63) <= key < (1 << 63)):
        raise OverflowError("add_one: pid and key must be int64")
    hmap.add(hk, o)
    kmap.add(key, o)
    pmap.add(pid, o)
    if src is not None:
        smap.add(src, o)
    mask = slots - 1
    kgen[(pid * mix + (key & ((1 << pred_bits) - 1))) & mask] += 1
    pgen[pid & mask] += 1


def bump_gens(kgen: list, pgen: list, keys: np.ndarray, mix: int, pred_bits: int) -> None:
    """One answer generation step per index key of an applied group: slot
    ``(pid * mix + qid) & mask`` of ``kgen`` and ``pid & mask`` of ``pgen``,
    where ``pid = key >> pred_bits``, ``qid`` the key's low ``pred_bits``
    bits and ``mask`` the lists' (one power-of-two) length - 1 (state.py's
    ``gen_slot``).  The pure twin of ``_fast.bump_gens``
    (``fast.bump_gens`` chooses).  O(len(keys))."""
    slots = len(kgen)
    if slots == 0 or slots & (slots - 1) or len(pgen) != slots:
        raise ValueError("bump_gens: kgen and pgen must be lists of one power-of-two length")
    if keys.ndim != 1 or keys.dtype != np.int64 or not keys.flags.c_contiguous:
        raise ValueError("bump_gens: keys must be a contiguous 1-d int64 array")
    mask, qmask = slots - 1, (1 << pred_bits) - 1
    for key in keys.tolist():
        pid = key >> pred_bits
        kgen[(pid * mix + (key & qmask)) & mask] += 1
        pgen[pid & mask] += 1


def decode_meta(rtype: int, buf, off: int, segno: int) -> dict:
    """The body of a non-assertion record (msgpack), for ``State.apply_meta``."""
    if rtype not in (REC_RETRACT, REC_VOTE, REC_EPOCH, REC_OUTCOME):
        raise CorruptionError(f"unknown record type {rtype} in WAL segment {segno} "
                              f"at offset {off}", offset=off)
    length = int.from_bytes(buf[off:off + 4], "little")
    return _dec.decode(buf[off + FRAME_SIZE:off + FRAME_SIZE + length])


def extract_with(index_fn):
    """``extract_segment`` (the older interface: fresh column arrays for one
    segment) over ``index_fn``: kept for bench/costs.py's extract stage and
    the parity tests of ``_fast.extract_segment``; the store calls
    ``index_records`` through ``State.apply_group``."""
    def extract_segment(buf, offsets, types, seqs, segno: int, first_ord: int,
                        path_ids: dict, path_names: list, pred_ids: dict, pred_names: list,
                        epoch_ids: dict):
        n = sum(1 for t in types if t == REC_ASSERT)
        hk, sk, so = np.empty(n, np.uint64), np.empty(n, np.uint64), np.empty(n, np.int32)
        cols = {"seq": np.empty(n, np.int64), "loc": np.empty(n, np.int64),
                "ts": np.empty(n, np.int64), "rec": np.empty(n, np.int64),
                "key": np.empty(n, np.int64), "path": np.empty(n, np.int32),
                "epoch": np.empty(n, np.int32), "lc": np.empty(n, np.int8),
                "hashes": np.empty((n, 32), np.uint8)}
        # the lens columns are not part of this older interface's answer
        lens = (np.empty(n, np.float64), np.empty(n, np.uint8), np.empty(n, np.uint64),
                np.empty(n, np.uint64))
        _n, ns, _m, edges, metas = index_fn(
            buf, offsets, types, seqs, segno << 40, 0, cols["seq"], cols["loc"],
            cols["ts"], cols["rec"], cols["key"], cols["path"], cols["epoch"], cols["lc"],
            *lens, cols["hashes"], hk, sk, so, path_ids, path_names, pred_ids, pred_names, epoch_ids)
        sk, so = sk[:ns], so[:ns]
        if first_ord:               # rows start at 0 here, ordinals at first_ord
            so = (so + first_ord).astype(np.int32)
            edges = [(o + first_ord, p, d) for o, p, d in edges]
        return cols, (sk, so), edges, metas
    return extract_segment


def group_frames(group) -> tuple:
    """What ``State.apply_group`` takes for one durable WAL group (its
    requests, written back to back in one segment): ``(buf, offsets, types,
    seqs, loc_base, segment)``.  Types and seqs come from each request's
    ``frames`` (the writer's lists, taken as they are for a group of one
    request: no loop per record) or else its ``apply_arg``."""
    first = group[0]
    segno, at = first.locs[0]        # the WAL writes a group contiguously, in one segment
    if len(group) == 1:
        fr = first.frames
        if fr is not None:          # a put (W1) or a batch (W3): the writer's lists
            return first.data, fr[0], fr[1], fr[2], (segno << 40) + at, segno
        if len(first.sizes) == 1:
            rtype, seq, _arg = first.apply_arg[0]
            return first.data, [0], [rtype], [seq], (segno << 40) + at, segno
    buf = first.data if len(group) == 1 else b"".join(r.data for r in group)
    offsets: list[int] = []
    types: list[int] = []
    seqs: list[int] = []
    pos = 0
    for req in group:
        fr = req.frames
        if fr is not None:
            if len(fr[0]) == 1:     # one put's request (group commit of puts, W2)
                offsets.append(pos + fr[0][0])
                types.append(fr[1][0])
                seqs.append(fr[2][0])
            else:
                offsets.extend([pos + o for o in fr[0]])
                types.extend(fr[1])
                seqs.extend(fr[2])
            pos += len(req.data)
            continue
        for size, (rtype, seq, _arg) in zip(req.sizes, req.apply_arg):
            offsets.append(pos)
            types.append(rtype)
            seqs.append(seq)
            pos += size
    return buf, offsets, types, seqs, (segno << 40) + at, segno
