"""The read side's narrow view of a store: the state under its lock, and records.

``query.py`` (queries, skeptic, trace, retraction targets) reads only
through a :class:`Reader`: ``state`` and ``lock`` for the index columns,
``assertion``/``read_record`` to decode what survives the filters, ``clock``
for "now" and ``audit`` for the query trail.  Nothing here writes.
"""
from __future__ import annotations

from typing import Callable, Iterator

from ..errors import ChecksumMismatch
from ..model import Assertion, AssertionRecord
from ..timeutil import format_time
from . import codec, fast
from .format import FRAME, FRAME_SIZE
from .index import unpack_loc


class Reader:
    """Reads of one open store; thread-safe (``lock`` guards ``state``)."""

    def __init__(self, state, wal, lock, clock: Callable[[], int], audit=None):
        self.state = state          # the in-memory indexes (stemedb.core.state.State)
        self.wal = wal
        self.lock = lock            # held by the group-commit leader while it applies
        self.clock = clock          # microseconds since the epoch
        self.audit = audit          # the query audit trail, or None when it is off

    def read_record(self, o: int) -> AssertionRecord:
        """Decode the assertion at ordinal ``o`` from its segment, CRC checked."""
        segno, off = unpack_loc(int(self.state.cols.loc[o]))
        # One read covers most records; a longer one takes a second read.
        raw = self.wal.read(segno, off, 512)
        length, crc = FRAME.unpack_from(raw)[:2]
        if FRAME_SIZE + length > len(raw):
            raw = self.wal.read(segno, off, FRAME_SIZE + length)
        body = raw[8:FRAME_SIZE + length]
        if codec.crc32c(body) != crc:
            path = self.wal.segment(segno).path
            raise ChecksumMismatch(f"Checksum mismatch in WAL segment {path} at offset {off}",
                                   file=path, offset=off)
        return fast.decode_assert(body, FRAME_SIZE - 8)

    def assertion(self, o: int, known_at: int | None = None,
                  seq_bound: int | None = None) -> Assertion:
        """The assertion at ordinal ``o``, retracted only by a retraction
        recorded at or before ``known_at`` with a seq at or below ``seq_bound``."""
        st = self.state
        rec = self.read_record(o)
        ridx = st.retracted.get(o)
        if ridx is not None:
            r = st.retractions[ridx]
            if ((known_at is None or r.recorded_at <= known_at)
                    and (seq_bound is None or r.seq <= seq_bound)):
                return Assertion(rec, int(st.cols.seq[o]), "retracted", {
                    "reason": r.reason, "retracted_at": format_time(r.recorded_at),
                    "seq": r.seq, "by": r.by})
        return Assertion(rec, int(st.cols.seq[o]))

    def get(self, h: bytes) -> Assertion | None:
        """The stored assertion with hash ``h`` (32 bytes), or None.  O(log n)."""
        with self.lock:
            o = self.state.ordinal(h)
            return None if o is None else self.assertion(o)

    def in_seq_order(self) -> Iterator[Assertion]:
        """Every assertion stored when called, oldest first (ordinals follow
        seq order; records are decoded outside the lock, as queries do)."""
        with self.lock:
            n = self.state.count
        for o in range(n):
            yield self.assertion(o)
