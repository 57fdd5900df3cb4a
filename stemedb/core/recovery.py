"""Recovery: open the WAL, load the snapshot or rebuild, replay the tail.

Start-up logs, in order: ``Starting WAL recovery...``, (``Rebuilding
indexes...``), ``Replayed N entries from WAL``, (``Index rebuild complete in
Xs``); the store logs ``Startup complete``.  Nothing is written on an error:
the torn-tail cut at the end of the last segment is the only change recovery
makes (docs/format.md, docs/design.md).
"""
from __future__ import annotations

import logging
import os
import time

import msgspec
import numpy as np
import orjson

from ..errors import ChecksumMismatch, CorruptionError
from . import fast, snapshot
from .format import (
    FRAME, FRAME_SIZE, REC_EPOCH, REC_OUTCOME, REC_RETRACT, REC_VOTE, SEGMENT_HEADER_SIZE,
)
from .state import State

log = logging.getLogger("stemedb")
_dec = msgspec.msgpack.Decoder()


def recover(store) -> None:
    """Open the WAL, load or rebuild the indexes, replay the tail (docs/design.md)."""
    log.info("Starting WAL recovery...")
    wal = store.wal
    wal.open()
    if not wal.segments:
        if _has_metadata_for_existing_log(store):
            raise CorruptionError(
                f"{store.wal.dir} holds no segments but metadata.json says the store has "
                f"data; restore the WAL from a backup (see docs/operations)")
        wal.create_first()
        store.state = State()
        log.info("Replayed 0 entries from WAL")
        return
    state, start = _load_snapshot(store)
    t0 = time.monotonic()
    if state is None:
        log.info("Rebuilding indexes...")
        state = State()
        start = (wal.segments[0].number, None)
        store.rebuilt = True
    else:
        _check_covered(store, start, state.last_seq)
    store.state = state
    n = replay(store, start)
    store.replayed = n
    log.info("Replayed %d entries from WAL", n)
    if store.rebuilt:
        log.info("Index rebuild complete in %.3fs", time.monotonic() - t0)

def replay(store, start) -> int:
    """Apply every record from ``start`` = (segment number, offset or None)."""
    wal = store.wal
    segno, offset = start
    n = 0
    segs = [s for s in wal.segments if s.number >= segno]
    for i, seg in enumerate(segs):
        off = offset if (seg.number == segno and offset is not None) else SEGMENT_HEADER_SIZE
        n += _replay_segment(store, seg, off, last=(i == len(segs) - 1))
    return n


def _check_covered(store, start: tuple[int, int], snapshot_seq: int) -> None:
    """Check every CRC (and seq order) of the log the snapshot covers.

    Replay after a snapshot reads only the tail, but damage anywhere in
    the log must refuse the start, not wait for a read to trip on it:
    one scan, ~0.4 s per million records compiled, nothing written.
    """
    segno, offset = start
    prev = 0
    for seg in store.wal.segments:
        if seg.number > segno:
            break
        end = offset if seg.number == segno else os.path.getsize(seg.path)
        buf = seg.read(0, end)
        offsets, _t, _f, seqs, stop, _reason = fast.scan_frames(buf, SEGMENT_HEADER_SIZE, end)
        if stop != end:
            raise ChecksumMismatch(
                f"Checksum mismatch in WAL segment {seg.path} at offset {stop}",
                file=seg.path, offset=stop)
        arr = np.fromiter(seqs, dtype=np.int64, count=len(seqs))
        if len(arr) and (arr[0] <= prev or bool(np.any(arr[1:] <= arr[:-1]))):
            raise ChecksumMismatch(
                f"Checksum mismatch in WAL segment {seg.path}: seqs out of order",
                file=seg.path)
        if len(arr):
            prev = int(arr[-1])
    if prev != snapshot_seq:
        raise CorruptionError(
            f"the index snapshot ends at seq {snapshot_seq} but the WAL it covers ends at "
            f"{prev}; delete {os.path.join(store.path, 'db', 'indexes')} to rebuild")

def _has_metadata_for_existing_log(store) -> bool:
    try:
        with open(os.path.join(store.path, "metadata.json"), "rb") as f:
            return orjson.loads(f.read()).get("last_seq", 0) > 0
    except (OSError, ValueError):
        return False

def _load_snapshot(store):
    path = snapshot.snapshot_path(os.path.join(store.path, "db"))
    if not os.path.exists(path):
        return None, None
    try:
        state, pos = snapshot.read(path)
    except (CorruptionError, ValueError, KeyError, msgspec.DecodeError) as exc:
        log.warning("Index snapshot unusable (%s); rebuilding from the WAL", exc)
        return None, None
    reason = _snapshot_mismatch(store, pos)
    if reason:
        log.warning("Index snapshot does not match the WAL (%s); rebuilding from the WAL",
                    reason)
        return None, None
    store.wal.last_frame = pos.get("last_record")
    return state, (pos["segment"], pos["offset"])

def _snapshot_mismatch(store, pos: dict) -> str | None:
    wal = store.wal
    if bytes(pos.get("log_id", b"")) != wal.log_id:
        return "it belongs to another log"
    numbers = [s.number for s in wal.segments]
    if pos["segment"] not in numbers:
        return f"segment {pos['segment']} is not in the WAL"
    last = pos.get("last_record")
    if last is None:
        return None if pos["segment"] == numbers[0] else "no record to anchor it"
    seg_no, off, seq, crc = last
    if seg_no not in numbers:
        return f"segment {seg_no} is not in the WAL"
    seg = wal.segment(seg_no)
    size = os.path.getsize(seg.path)
    if off + FRAME_SIZE > size or pos["offset"] > os.path.getsize(wal.segment(pos["segment"]).path):
        return "the WAL is shorter than the snapshot"
    head = seg.read(off, FRAME_SIZE)
    length, fcrc, _t, _f, _r, fseq = FRAME.unpack_from(head)
    if fseq != seq or fcrc != crc:
        return "the record it ends at differs"
    return None

def _replay_segment(store, seg, start, last: bool) -> int:
    """Apply every record of ``seg`` from ``start``, checking every CRC."""
    buf, offsets, types, flags, seqs = store.wal.scan(seg, start, last=last)
    prev = store.state.last_seq
    arr = np.fromiter(seqs, dtype=np.int64, count=len(seqs))
    if len(arr) and (arr[0] <= prev or bool(np.any(arr[1:] <= arr[:-1]))):
        for off, seq in zip(offsets, seqs):
            if seq <= prev:
                raise ChecksumMismatch(
                    f"Checksum mismatch in WAL segment {seg.path} at offset {off} "
                    f"(seq {seq} does not follow {prev})", file=seg.path, offset=off)
            prev = seq
    store.state.bulk_segment(buf, offsets, types, seqs, seg.number, fast.extract_segment,
                            decode_meta)
    return len(offsets)

def decode_meta(rtype: int, buf, off: int, segno: int) -> dict:
    if rtype not in (REC_RETRACT, REC_VOTE, REC_EPOCH, REC_OUTCOME):
        raise CorruptionError(f"unknown record type {rtype} in WAL segment {segno} "
                              f"at offset {off}", offset=off)
    length = int.from_bytes(buf[off:off + 4], "little")
    return _dec.decode(buf[off + FRAME_SIZE:off + FRAME_SIZE + length])

