"""Recovery: open the WAL, load the snapshot or rebuild, replay the tail.

Every segment is read through the one scanner (:mod:`.scan`), which owns
the torn-tail rule.  Start-up logs, in order: ``Starting WAL recovery...``, (``Rebuilding
indexes...``), ``Replayed N entries from WAL``, (``Index rebuild complete in
Xs``); the store logs ``Startup complete``.  Nothing is written on an error:
the torn-tail cut at the end of the last segment is the only change recovery
makes (docs/format.md, docs/design.md).
"""
from __future__ import annotations

import bisect
import logging
import mmap
from dataclasses import dataclass
import os
import time

import msgspec

from ..errors import CorruptionError
from ..progress import Progress
from . import snapshot
from .format import FRAME
from .records import decode_meta  # noqa: F401  (bench/costs.py reads it here)
from .datadir import read_metadata
from .scan import Floor, SegmentScan, durable_floor, scan_segment
from .state import State

log = logging.getLogger("stemedb")


class _SnapshotMismatch(Exception):
    """The snapshot's position is in the log but the log there is not what it covers."""


@dataclass
class Recovered:
    """What recovery built: the state, and how."""

    state: State
    rebuilt: bool = False       # the indexes were rebuilt from the WAL
    replayed: int = 0           # records applied from the WAL


def recover(wal, data_dir: str) -> Recovered:
    """Open the WAL, load or rebuild the indexes, replay the tail (docs/design.md).

    One pass over the log through the one scanner (:mod:`.scan`): every
    record's CRC and seq order is checked, the part the snapshot covers
    only checked, the rest applied.  A snapshot that does not match the
    log is ignored and the indexes rebuilt (never a refusal to start); a
    log that is damaged, or shorter than what the snapshot or
    ``metadata.json`` prove durable, refuses to start and changes nothing.
    The only change recovery makes is cutting a torn tail, at the end.
    """
    log.info("Starting WAL recovery...")
    wal.open()
    if not wal.segments:
        if _has_metadata_for_existing_log(data_dir):
            raise CorruptionError(
                f"{wal.dir} holds no segments but metadata.json says the store has "
                f"data; restore the WAL from a backup (see docs/operations)")
        wal.create_first()
        log.info("Replayed 0 entries from WAL")
        return Recovered(State())
    state, pos, floor = _load_snapshot(wal, data_dir)
    rebuilt = False
    t0 = time.monotonic()
    if state is not None:
        try:
            n, tail = _walk(wal, state, pos, floor)
            state.end_replay()
        except _SnapshotMismatch as exc:
            log.warning("Index snapshot does not match the WAL (%s); rebuilding from the WAL", exc)
            state = None
    if state is None:
        log.info("Rebuilding indexes...")
        state = State()
        rebuilt = True
        n, tail = _walk(wal, state, None, floor)
        state.end_replay()
    seg, buf, verdict = tail
    if verdict.torn:
        wal.cut_tail(seg, buf, verdict.end, verdict.size - verdict.zeros)
    else:
        wal.tail_zeros = verdict.zeros  # the preallocated clean end, appended over again
    if isinstance(buf, mmap.mmap):
        try:
            buf.close()     # nothing reads it after the cut (the state holds copies)
        except BufferError:
            pass            # a view is still alive somewhere: the GC unmaps it
    log.info("Replayed %d entries from WAL", n)
    if rebuilt:
        log.info("Index rebuild complete in %.3fs", time.monotonic() - t0)
    return Recovered(state, rebuilt, n)


def _walk(wal, state: State, pos: dict | None, floor: Floor):
    """Scan every segment in order; apply what ``pos`` (the snapshot's) does not cover.

    Returns ``(records applied, (last segment, its bytes, its verdict))``.
    """
    segs = wal.segments
    progress = Progress(total_bytes=sum(os.path.getsize(s.path) for s in segs),
                        what="rebuild" if pos is None else "recovery")
    cover_seg = pos["segment"] if pos is not None else 0
    cover_off = pos["offset"] if pos is not None else 0
    anchor = (pos.get("last_record") if pos is not None else None) or [0, 0, 0, 0]
    state.begin_replay()
    prev = 0
    applied = 0
    last_frame = None
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        buf = _map_last(seg) if last else wal.segment_bytes(seg, last=False)
        v = scan_segment(buf, seg.path, seg.number, last=last, prev_seq=prev, floor=floor)
        if seg.number == anchor[0]:
            _check_anchor(v, buf, anchor)
        if pos is not None and seg.number == cover_seg:   # segments count from 1
            k = _covered_until(v, cover_off)   # records [0, k) are covered
            covered_last = v.seqs[k - 1] if k else prev
            if k < 0 or covered_last != pos["last_seq"]:
                raise _SnapshotMismatch(
                    f"it covers seq {pos['last_seq']} up to offset {cover_off} of segment "
                    f"{cover_seg}, the WAL has seq {covered_last} there" if k >= 0 else
                    f"offset {cover_off} of segment {cover_seg} is not a record boundary")
            todo = slice(k, None)
        elif seg.number < cover_seg:
            todo = slice(0, 0)
        else:
            todo = slice(None)
        offs = v.offsets[todo]
        if offs:
            state.apply_group(buf, offs, v.types[todo], v.seqs[todo], seg.number << 40,
                              seg.number)
            applied += len(offs)
        if v.offsets:
            last_frame = v.last_record(buf)
        prev = v.last_seq
        if not last:
            seg.unmap()     # scanned: its pages leave RSS; records are read by pread
        progress.update(records=len(v.offsets), bytes=v.size)
        if last:
            progress.done()
            wal.last_frame = last_frame
            seg.size = v.end
            return applied, (seg, buf, v)
    raise AssertionError("unreachable: the WAL has segments")


def _map_last(seg):
    """The last segment's bytes for the scan, mapped read-only.

    ``WAL.segment_bytes`` reads it into the heap (50 MB for 200,000 records:
    0.15 us per record of a rebuild, bench.costs' read stage); the scan
    reads it once, front to back, so a mapping costs only the page faults.
    Recovery closes it after the torn-tail cut, the only change to the file
    while it is mapped, and reads nothing past the cut (the state holds
    copies of everything it took from it)."""
    size = os.path.getsize(seg.path)
    if size == 0:
        return b""
    with open(seg.path, "rb") as f:
        return mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)


def _check_anchor(v: SegmentScan, buf, anchor: list) -> None:
    """The record the snapshot ends at is there, with the same seq and CRC
    (another history of the same log id can have the same seqs)."""
    _seg, off, seq, crc = anchor
    k = bisect.bisect_left(v.offsets, off)
    if k == len(v.offsets) or v.offsets[k] != off or v.seqs[k] != seq \
            or FRAME.unpack_from(buf, off)[1] != crc:
        raise _SnapshotMismatch("the record it ends at differs")


def _covered_until(v: SegmentScan, offset: int) -> int:
    """How many of ``v``'s records end at or before ``offset``; -1 if none ends there."""
    if offset == v.end:
        return len(v.offsets)
    k = bisect.bisect_left(v.offsets, offset)
    return k if k < len(v.offsets) and v.offsets[k] == offset else -1


def _has_metadata_for_existing_log(data_dir: str) -> bool:
    last = (read_metadata(data_dir) or {}).get("last_seq", 0)
    return isinstance(last, int) and last > 0


def _load_snapshot(wal, data_dir: str):
    """``(state, position, floor)``: the snapshot when it is usable, and the floor.

    A snapshot of this log that cannot be used still proves its position
    durable (it was written after the records it counts were); one that
    cannot be read, or belongs to another log, proves nothing.
    """
    path = snapshot.snapshot_path(os.path.join(data_dir, "db"))
    state = pos = None
    if os.path.exists(path):
        try:
            state, pos = snapshot.read(path)
        except (CorruptionError, ValueError, KeyError, msgspec.DecodeError) as exc:
            log.warning("Index snapshot unusable (%s); rebuilding from the WAL", exc)
    floor = durable_floor(data_dir, wal.log_id, pos)
    if state is None:
        return None, None, floor
    assert pos is not None      # snapshot.read gives both or raises
    if bytes(pos.get("log_id", b"")) != wal.log_id:
        reason = "it belongs to another log"
    elif pos["segment"] not in [s.number for s in wal.segments]:
        reason = f"segment {pos['segment']} is not in the WAL"
    else:
        reason = None
    if reason:
        log.warning("Index snapshot does not match the WAL (%s); rebuilding from the WAL",
                    reason)
        return None, None, floor
    return state, pos, floor
