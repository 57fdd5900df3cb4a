"""The one segment scanner: every reader of the log decides here what its bytes mean.

WAL open and recovery, ``verify``, the backup and archive cuts and
``salvage`` all call :func:`scan_segment`, so the same damaged bytes get the
same verdict everywhere.  It owns four rules:

1. **The frame walk**: every record's CRC32C is checked (``fast.scan_frames``).
2. **Seq order**: seqs strictly increase, across segments too.
3. **The open group**: an atomic group whose closing record is missing is
   part of the torn tail in the last segment, and corruption in a sealed one.
4. **The torn tail**.  A crash can leave only the end of the *last*
   segment incomplete, and only the group that was being written when it
   struck.  So bytes after the last good record are a torn tail only when
   all of these hold; anything else is corruption, refused with the
   contract's ``Checksum mismatch in WAL segment <file> at offset <n>``:

   - they are in the last segment;
   - a failing record is either cut short by the end of the file, or has
     nothing but zeros after its frame (it ends at the end of the file, or
     its write reached the disk in part over the preallocated zeros: those
     zeros after its frame are the zero tail, below);
   - no valid record (a frame whose CRC holds, with a later seq) follows
     the failing one: a real torn write is the end of the log, while one
     flipped bit in a length field leaves good records behind it;
   - the cut does not reach what is proven durable: the log position and
     seq of the index snapshot and the seq in ``metadata.json``
     (:class:`Floor`).  Those files are written only after the records
     they count were made durable, so a log that ends before them has lost
     acknowledged writes.

   **The zero tail.**  The active segment is preallocated: the WAL writes
   zeros ahead of its appends and syncs them, and each group overwrites
   them (docs/design.md, "Preallocated active segment").  So in the *last*
   segment, bytes that are all zero from the end of the last good record
   to the end of the file are its clean end, not a torn tail: nothing is
   cut or quarantined, and the WAL appends over them again.  A zero frame
   cannot pass for a record: its CRC field (0) never matches the CRC32C of
   its 12 zero bytes, and type 0 is no record type.  In a sealed segment
   (cut to its exact size when sealed) zeros after the last record are
   corruption, as before.  A failing record with only zeros after its
   frame (a group write that reached the disk only in part, over zeros) is
   a torn tail under the rules above.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ChecksumMismatch, CorruptionError
from . import codec, fast
from .datadir import read_metadata
from .format import (
    FLAG_MORE, FRAME, FRAME_CRC_FROM, FRAME_CRC_OFF, FRAME_FLAGS_OFF, FRAME_LENGTH_OFF,
    FRAME_RESERVED_OFF, FRAME_SEQ_OFF, FRAME_SIZE, FRAME_TYPE_OFF, MAX_PAYLOAD, RECORD_TYPES,
    SEGMENT_HEADER_SIZE,
)


@dataclass
class Floor:
    """What other files prove durable; a torn-tail cut may never reach below it."""

    seq: int = 0                 # every record up to this seq was acknowledged
    segment: int = 0             # and the log reaches at least this position
    offset: int = 0
    sources: list[str] = field(default_factory=list)   # named in the refusal

    def raise_seq(self, seq: int, source: str) -> None:
        if seq > self.seq:
            self.seq = seq
            self.sources.append(source)

    def raise_position(self, segment: int, offset: int, source: str) -> None:
        if (segment, offset) > (self.segment, self.offset):
            self.segment, self.offset = segment, offset
            if source not in self.sources:
                self.sources.append(source)

    @property
    def source(self) -> str:
        return " and ".join(self.sources) or "nothing"


@dataclass
class SegmentScan:
    """The verdict on one segment: its whole records, and the torn tail if any."""

    path: str
    number: int
    offsets: list
    types: list
    flags: list
    seqs: list
    end: int            # bytes of whole records (the header included): where a cut goes
    size: int           # bytes scanned
    first_seq: int      # seq of the first record kept (0 when none)
    last_seq: int       # seq of the last record kept, else the previous segment's
    zeros: int = 0      # the last segment's clean zero tail: bytes [end, size), all zero

    @property
    def torn(self) -> bool:
        return self.end < self.size - self.zeros

    @property
    def torn_bytes(self) -> int:
        return self.size - self.zeros - self.end

    def last_record(self, buf) -> list[int] | None:
        """``[segment, offset, seq, crc]`` of the last record kept (a snapshot anchor)."""
        if not self.offsets:
            return None
        o = self.offsets[-1]
        return [self.number, o, self.seqs[-1], FRAME.unpack_from(buf, o)[1]]


def mismatch(path: str, offset: int, why: str = "") -> ChecksumMismatch:
    """The contract's refusal line, with the reason after it."""
    tail = f" ({why})" if why else ""
    return ChecksumMismatch(f"Checksum mismatch in WAL segment {path} at offset {offset}{tail}",
                            file=path, offset=offset)


def scan_segment(buf, path: str, number: int, *, last: bool, prev_seq: int = 0,
                 start: int = SEGMENT_HEADER_SIZE, floor: Floor | None = None) -> SegmentScan:
    """Apply the four rules to ``buf`` (a segment's bytes) from ``start``.

    ``last``: this is the last segment of the log, the only place a torn
    tail may be.  ``prev_seq``: the seq of the record before ``start``.
    ``floor``: what is proven durable.  Returns the verdict, never changing
    a file; raises ChecksumMismatch (or CorruptionError) for damage.
    O(bytes); the search for valid records after a failure is vectorized.
    """
    size = len(buf)
    offsets, types, flags, seqs, stop, reason = fast.scan_frames(buf, start, size)
    _check_order(path, offsets, seqs, prev_seq)
    end = stop
    zeros = 0
    if reason != codec.STOP_END:
        if not last:
            raise mismatch(path, stop, "" if reason == codec.STOP_CHECKSUM
                           else _REASONS[reason] + " inside a sealed segment")
        if all_zero(buf, stop, size):
            zeros = size - stop     # the preallocated clean end of the active segment
        else:
            if reason == codec.STOP_CHECKSUM:
                frame_end = _frame_end(buf, stop)
                if not all_zero(buf, frame_end, size):
                    raise mismatch(path, stop)
                zeros = size - frame_end    # the failing frame is torn, the zeros after it not
            after = seqs[-1] if seqs else prev_seq
            found = find_valid_frame(buf, stop + 1, size, after)
            if found is not None:
                raise mismatch(path, stop, f"a valid record follows at offset {found}, so "
                                           f"this is damage, not a torn write")
    # An atomic group whose closing record is missing belongs to the torn tail.
    n = len(offsets)
    while n and flags[n - 1] & FLAG_MORE:
        n -= 1
    if n < len(offsets):
        if not last:
            raise mismatch(path, offsets[n], "an atomic batch is cut short inside a sealed segment")
        end = offsets[n]
        del offsets[n:], types[n:], flags[n:], seqs[n:]
    kept_last = seqs[-1] if seqs else prev_seq
    if floor is not None and last:
        # judged as the file without its zero tail would be
        _check_floor(path, number, end, size - zeros, kept_last, floor)
    return SegmentScan(path, number, offsets, types, flags, seqs, end, size,
                       seqs[0] if seqs else 0, kept_last, zeros)


_REASONS = {
    codec.STOP_INCOMPLETE: "a record runs past the end of the file",
    codec.STOP_CHECKSUM: "a record's checksum does not match",
    codec.STOP_BADLEN: "a record's length field is out of range",
}


def _check_order(path: str, offsets, seqs, prev: int) -> None:
    if not seqs:
        return
    arr = np.fromiter(seqs, dtype=np.uint64, count=len(seqs))
    if int(arr[0]) > prev and not bool(np.any(arr[1:] <= arr[:-1])):
        return
    for off, seq in zip(offsets, seqs):
        if seq <= prev:
            raise mismatch(path, off, f"seq {seq} does not follow {prev}")
        prev = seq


def _frame_end(buf, stop: int) -> int:
    """Where the frame at ``stop`` ends by its length field.  A failing record
    is a torn write only with nothing but zeros after that: it ends at the
    end of the file, or its write reached the disk in part over the
    preallocated zeros."""
    return stop + FRAME_SIZE + int.from_bytes(buf[stop:stop + 4], "little")


def all_zero(buf, begin: int, end: int) -> bool:
    """``buf[begin:end]`` holds only zero bytes (vectorized: a preallocated
    tail is up to a MiB)."""
    if end <= begin:
        return True
    return not np.frombuffer(buf, dtype=np.uint8, count=end - begin, offset=begin).any()


def _check_floor(path: str, number: int, end: int, size: int, kept_last: int,
                 floor: Floor) -> None:
    if end < size and (number, end) < (floor.segment, floor.offset):
        raise mismatch(path, end, f"the log up to offset {floor.offset} of segment "
                                  f"{floor.segment} is durable according to {floor.source}")
    if kept_last < floor.seq:
        if end < size:
            raise mismatch(path, end, f"seq {floor.seq} is durable according to "
                                      f"{floor.source}, but the log would end at seq {kept_last}")
        raise CorruptionError(
            f"WAL segment {path} ends at seq {kept_last}, but seq {floor.seq} is durable "
            f"according to {floor.source}: acknowledged records are missing. Restore from a "
            f"backup, or accept the loss with `stemedb salvage DATA_DIR`", file=path,
            offset=size)


def find_valid_frame(buf, begin: int, end: int, after_seq: int) -> int | None:
    """The offset of the first valid frame in ``buf[begin:end]`` with seq > ``after_seq``.

    A valid frame has a known record type, flags and reserved bytes as
    written, a seq after ``after_seq`` and a CRC that holds.  The cheap
    tests run vectorized over every byte offset; only survivors pay a CRC.
    Used on the damaged path only (a clean log never calls it).
    """
    n = end - begin - FRAME_SIZE + 1
    if n <= 0:
        return None
    a = np.frombuffer(buf, dtype=np.uint8, count=end - begin, offset=begin)
    lo, hi = min(RECORD_TYPES), max(RECORD_TYPES)
    t = a[FRAME_TYPE_OFF:FRAME_TYPE_OFF + n]
    mask = (t >= lo) & (t <= hi)
    mask &= a[FRAME_FLAGS_OFF:FRAME_FLAGS_OFF + n] <= FLAG_MORE
    mask &= a[FRAME_RESERVED_OFF:FRAME_RESERVED_OFF + n] == 0
    mask &= a[FRAME_RESERVED_OFF + 1:FRAME_RESERVED_OFF + 1 + n] == 0
    cand = np.flatnonzero(mask)
    if not len(cand):
        return None
    length = np.zeros(len(cand), dtype=np.uint64)
    for k in range(4):
        length |= a[cand + FRAME_LENGTH_OFF + k].astype(np.uint64) << np.uint64(8 * k)
    seq = np.zeros(len(cand), dtype=np.uint64)
    for k in range(8):
        seq |= a[cand + FRAME_SEQ_OFF + k].astype(np.uint64) << np.uint64(8 * k)
    fits = (length <= MAX_PAYLOAD) & (cand.astype(np.uint64) + FRAME_SIZE + length
                                      <= np.uint64(end - begin))
    fits &= seq > np.uint64(after_seq)
    for p, ln in zip(cand[fits].tolist(), length[fits].tolist()):
        o = begin + p
        crc = int.from_bytes(buf[o + FRAME_CRC_OFF:o + FRAME_CRC_OFF + 4], "little")
        if codec.crc32c(buf[o + FRAME_CRC_FROM:o + FRAME_SIZE + ln]) == crc:
            return o
    return None


def valid_frames(buf, begin: int, end: int, after_seq: int) -> list[tuple[int, int]]:
    """Every valid frame in damaged bytes, as ``(offset, seq)``: what a salvage cuts."""
    out: list[tuple[int, int]] = []
    pos = begin
    while True:
        o = find_valid_frame(buf, pos, end, after_seq)
        if o is None:
            return out
        # records follow each other: walk on from this one while they hold
        offs, _t, _f, sq, stop, _r = fast.scan_frames(buf, o, end)
        pos = stop + 1
        for off, s in zip(offs, sq):
            if s <= after_seq:
                pos = off + 1
                break
            out.append((off, s))
            after_seq = s


def durable_floor(data_dir: str, log_id: bytes | None, snapshot_pos: dict | None) -> Floor:
    """The floor proven by ``metadata.json`` and a snapshot's position.

    Only files of this log count (same log id): a foreign or unreadable
    file proves nothing.  ``snapshot_pos`` is the position block of the
    index snapshot when it could be read (snapshot.read), else None.
    """
    floor = Floor()
    meta = read_metadata(data_dir)
    if meta and log_id is not None and meta.get("log_id") == log_id.hex():
        last = meta.get("last_seq")
        if isinstance(last, int):
            floor.raise_seq(last, "metadata.json")
    if snapshot_pos and log_id is not None and bytes(snapshot_pos.get("log_id", b"")) == log_id:
        floor.raise_seq(int(snapshot_pos.get("last_seq") or 0), "the index snapshot")
        floor.raise_position(int(snapshot_pos["segment"]), int(snapshot_pos["offset"]),
                             "the index snapshot")
    return floor
