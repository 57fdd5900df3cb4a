"""Where a WAL can be cut consistently: the last complete atomic group.

The log is append-only and every record carries a CRC32C, so a consistent
copy of a live store needs no pause: sealed segments are copied whole, and
the active one up to the end of its last complete atomic group (a record
with ``FLAG_MORE`` set promises that its group continues; a group whose
closing record is not yet written is left out, exactly as recovery would
cut it).  The same cut, with a limit on seq or ``recorded_at``, gives
point-in-time restore.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import msgspec

from ..core.format import (
    ASSERT_RECORDED_AT_OFF, FLAG_MORE, FRAME, FRAME_SIZE, REC_ASSERT, SEGMENT_HEADER_SIZE,
)
from ..core.scan import Floor, scan_segment
from ..core.segment import read_header

_dec = msgspec.msgpack.Decoder()
_RECORDED_AT_OFF = FRAME_SIZE + ASSERT_RECORDED_AT_OFF   # in a framed assertion


def segment_paths(wal_dir: str) -> list[str]:
    """The segment files of ``wal_dir`` in order (temp files of a rotation excluded)."""
    if not os.path.isdir(wal_dir):
        return []
    names = sorted(n for n in os.listdir(wal_dir)
                   if n.startswith("segment-") and n.endswith(".log"))
    return [os.path.join(wal_dir, n) for n in names]


def read_all(path: str) -> bytes:
    """Every byte of ``path`` present now (one descriptor, read to its current end)."""
    with open(path, "rb") as f:
        return f.read()


def recorded_at(buf, off: int, rtype: int) -> int:
    """``recorded_at`` (microseconds) of the record framed at ``off``."""
    if rtype == REC_ASSERT:
        return int.from_bytes(buf[off + _RECORDED_AT_OFF:off + _RECORDED_AT_OFF + 8], "little",
                              signed=True)
    length = FRAME.unpack_from(buf, off)[0]
    body = _dec.decode(bytes(buf[off + FRAME_SIZE:off + FRAME_SIZE + length]))
    return int(body.get("recorded_at", 0))


@dataclass
class Cut:
    """The consistent prefix of one segment."""

    path: str
    number: int
    first_seq: int
    log_id: bytes
    end: int                    # bytes to keep (header included)
    size: int                   # bytes read
    records: int = 0
    assertions: int = 0
    first_seq_kept: int = 0
    last_seq: int = 0
    last_recorded_at: int = 0
    reached_limit: bool = False  # a group past the limit was found: later segments are not needed
    notes: list[str] = field(default_factory=list)

    @property
    def left_out(self) -> int:
        return self.size - self.end


def cut_segment(path: str, buf, *, active: bool, until_seq: int | None = None,
                until_us: int | None = None, after_seq: int = 0,
                floor: Floor | None = None) -> Cut:
    """Find the consistent prefix of segment ``path`` whose bytes are ``buf``.

    The bytes are judged by the one scanner (:func:`stemedb.core.scan.scan_segment`),
    exactly as recovery and ``verify`` judge them: ``active`` (the last
    segment, perhaps still being written) may end in a torn tail, which is
    an in-flight write and is left out; anything else (damage before the
    tail, a valid record after a bad one, a cut below ``floor``) raises
    ChecksumMismatch naming the file and offset, so no shorter copy is ever
    published as a consistent one.  With ``until_seq`` / ``until_us`` the
    prefix ends after the last whole atomic group whose last record is at or
    before the limit.  ``after_seq`` is the last seq of the previous
    segment.  O(bytes).
    """
    number, first_seq, log_id = read_header(path)
    v = scan_segment(buf, path, number, last=active, prev_seq=after_seq, floor=floor)
    cut = Cut(path, number, first_seq, log_id, SEGMENT_HEADER_SIZE, len(buf))
    if v.torn:
        cut.notes.append(f"{path}: {v.torn_bytes} bytes after offset {v.end} are an in-flight "
                         f"write and were left out")
    group_records = group_asserts = 0
    group_first = 0
    for off, rtype, flag, seq in zip(v.offsets, v.types, v.flags, v.seqs):
        if group_records == 0:
            group_first = seq
        group_records += 1
        group_asserts += rtype == REC_ASSERT
        if flag & FLAG_MORE:
            continue
        # this record closes an atomic group: keep the group unless it is past the limit
        if until_seq is not None and seq > until_seq:
            cut.reached_limit = True
            break
        rec = recorded_at(buf, off, rtype)
        if until_us is not None and rec > until_us:
            cut.reached_limit = True
            break
        length = FRAME.unpack_from(buf, off)[0]
        cut.end = off + FRAME_SIZE + length
        cut.records += group_records
        cut.assertions += group_asserts
        if not cut.first_seq_kept:
            cut.first_seq_kept = group_first
        cut.last_seq = seq
        cut.last_recorded_at = rec
        group_records = group_asserts = 0
    return cut
