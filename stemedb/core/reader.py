"""The read side's narrow view of a store: the state under its lock, and records.

``query.py`` (queries, skeptic, trace, retraction targets) reads only
through a :class:`Reader`: ``state`` and ``lock`` for the index columns,
``assertion``/``read_record`` to decode what survives the filters, ``clock``
for "now" and ``audit`` for the query trail.  Nothing here writes.

Decoded records and materialized query answers are kept in one
bytes-bounded LRU, :class:`~.readcache.ReadCache` (``STEMEDB_READ_CACHE_BYTES``; 0 turns
it off).  A record never changes once written, so its cache entry, keyed by
its location in the log, needs no invalidation: what a query may change
about an assertion (retracted or not, as of which cut) is computed in
:meth:`Reader.assertion` from the state, outside the record.  Answers are
keyed and checked by ``query.py`` (see ``_answer_key`` there).
"""
from __future__ import annotations

from typing import Callable, Iterator

from ..config import DEFAULT_READ_CACHE_BYTES
from ..errors import ChecksumMismatch
from ..model import Assertion, AssertionRecord
from ..timeutil import format_time
from . import codec, fast
from .format import FRAME, FRAME_CRC_FROM, FRAME_SIZE
from .index import unpack_loc
from . import qfast
from .qfast import read_frames
from .readcache import (
    DERIVED_EXTRA, RECORD_BASE, SIGNED_EXTRA, ReadCache, _body, entry_size, raw_pack,
)


# Reader.assertions' batch of active Assertions, compiled (None: the pure
# build maps Assertion itself, which is what qpure.new_assertions does)
_ACTIVE = qfast.new_assertions(Assertion) if qfast.COMPILED else None

SMALL_TAKE = 16   # below this many ordinals, per-element item() beats a fancy index


def take(col, ords: list[int]) -> list[int]:
    """``col[ords].tolist()``: per element for a few ordinals (a numpy fancy
    index costs ~0.6 us before its first element, most of a one-candidate
    query's decode)."""
    if len(ords) < SMALL_TAKE:
        item = col.item
        return [item(o) for o in ords]
    return col[ords].tolist()



class Reader:
    """Reads of one open store; thread-safe (``lock`` guards ``state``)."""

    # The store's reader lock (opening.py): threading.RLock, or in the
    # compiled build _query.ReaderLock, its twin that the first page takes
    # from C (qfast.ReaderLock)
    new_lock = staticmethod(qfast.ReaderLock)

    # Slots: the compiled first page reads state, cache, lock, audit and
    # clock at their offsets (_query.Fields: a generic attribute read was
    # ~170 instructions); the pure build reads them as fast as before
    # (LOAD_ATTR_SLOT).  A __dict__ keeps any other attribute settable.
    __slots__ = ("state", "wal", "lock", "clock", "audit", "cache", "__dict__", "__weakref__")

    def __init__(self, state, wal, lock, clock: Callable[[], int], audit=None,
                 cache_bytes: int = DEFAULT_READ_CACHE_BYTES):
        self.state = state          # the in-memory indexes (stemedb.core.state.State)
        self.wal = wal
        self.lock = lock            # held by the group-commit leader while it applies
        self.clock = clock          # microseconds since the epoch
        self.audit = audit          # the query audit trail, or None when it is off
        self.cache = ReadCache(cache_bytes) if cache_bytes > 0 else None

    def read_record(self, o: int) -> AssertionRecord:
        """Decode the assertion at ordinal ``o`` (from the cache, or from its
        segment with the CRC checked)."""
        loc = int(self.state.cols.loc[o])
        cache = self.cache
        if cache is None:
            return self._read_one(loc)[0]
        rec = cache.record(loc)
        if rec is None:
            rec, length = self._read_one(loc)
            cache.add_record(loc, rec, entry_size(rec, length))
        return rec

    def _read_one(self, loc: int) -> tuple[AssertionRecord, int]:
        """:meth:`_read`; compiled, through :meth:`_read_many`'s one call
        (~2.1 against ~3.1 us a record: bench/results/query-2026-11-27-session7.md);
        the pure frame reader is slower than _read for one record."""
        return self._read_many([loc])[0] if qfast.COMPILED else self._read(loc)

    def read_records(self, ords: list[int]) -> list[AssertionRecord]:
        """:meth:`read_record` for many ordinals: one cache lock for the
        lookups and one for the additions, whatever their number."""
        locs = take(self.state.cols.loc, ords)
        cache = self.cache
        if cache is None:
            if qfast.COMPILED:          # one call for them all (see _read_many)
                return [rec for rec, _n in self._read_many(locs)]
            return [self._read(loc)[0] for loc in locs]
        out = cache.records(locs)
        if None in out:
            self._fill(out, locs)
        return out

    def _fill(self, recs: list, locs: list[int]) -> None:
        """Read the records missing (None) from ``recs`` at their ``locs``,
        put them in ``recs`` and in the cache (which is not None); compiled,
        in one call (qfast.missed_entries, whose twin is this loop)."""
        if qfast.COMPILED:
            new = qfast.missed_entries(recs, locs, self._read_many, RECORD_BASE, DERIVED_EXTRA,
                                       SIGNED_EXTRA)
        else:
            if len(recs) != len(locs):
                raise ValueError("recs and locs differ in length")
            miss = [i for i, rec in enumerate(recs) if rec is None]
            mlocs = [locs[i] for i in miss]
            got = self._read_many(mlocs)
            if len(got) != len(miss):
                raise ValueError("the records read and the ones missing differ in number")
            new = []
            for i, loc, (rec, length) in zip(miss, mlocs, got):
                recs[i] = rec
                new.append((loc, rec, entry_size(rec, length)))
        self.cache.add_records(new)    # type: ignore[union-attr]

    def _read_many(self, locs: list[int]) -> list[tuple[AssertionRecord, int]]:
        """:meth:`_read` of each of ``locs``, in one call (``qfast.read_frames``:
        compiled, one pread or one slice of a sealed segment's mapping per
        frame, the CRC checked in C; the cache misses of a cold small key
        were most of its time in _read's three Python layers); a frame that
        does not check out there (short, torn, CRC) goes through
        :meth:`_read`, which raises what it always raised for it."""
        # a copy: the compiled loop indexes the list without bounds checks,
        # and a rotation may append to it meanwhile
        got = read_frames(locs, list(self.wal.segments), fast.decode_assert)
        if None in got:
            return [r if r is not None else self._read(loc) for r, loc in zip(got, locs)]
        return got

    def raw_frames(self, ords: list[int]) -> tuple[bytes, list[int]] | None:
        """The frame bodies of ``ords`` packed by :func:`raw_pack` (CRC
        checked), and their seqs; None when one does not check out (the
        caller then reads them as records, which raises what it raises)."""
        st = self.state
        locs = take(st.cols.loc, ords)
        got = read_frames(locs, list(self.wal.segments), _body)
        if None in got:
            return None
        return raw_pack([b for b, _n in got]), take(st.cols.seq, ords)

    def _read(self, loc: int) -> tuple[AssertionRecord, int]:
        """The record at packed location ``loc`` and its frame body's length."""
        segno, off = unpack_loc(loc)
        # One read covers most records; a longer one takes a second read.
        raw = self.wal.read(segno, off, 512)
        length, crc = FRAME.unpack_from(raw)[:2]
        if FRAME_SIZE + length > len(raw):
            raw = self.wal.read(segno, off, FRAME_SIZE + length)
        body = raw[FRAME_CRC_FROM:FRAME_SIZE + length]
        if codec.crc32c(body) != crc:
            path = self.wal.segment(segno).path
            raise ChecksumMismatch(f"Checksum mismatch in WAL segment {path} at offset {off}",
                                   file=path, offset=off)
        return fast.decode_assert(body, FRAME_SIZE - FRAME_CRC_FROM), length

    def assertions(self, ords: list[int], known_at: int | None = None,
                   seq_bound: int | None = None, recs: list | None = None,
                   seqs: list[int] | None = None) -> list[Assertion]:
        """:meth:`assertion` for many ordinals (records read as a batch, or
        ``recs``: the records of ``ords`` already read, None for one to read;
        ``seqs``: their seqs, when known with ``recs``)."""
        st = self.state
        cache = self.cache
        if recs is None and cache is not None:
            locs, recs, seqs = cache.take(ords, st.cols.loc, st.cols.seq)
            if None in recs:
                self._fill(recs, locs)
        else:
            if recs is None:
                recs = self.read_records(ords)
            elif len(recs) != len(ords):
                raise ValueError("recs and ords differ in length")
            elif None in recs:      # the ones not given: read
                read = iter(self.read_records([o for o, r in zip(ords, recs) if r is None]))
                recs = [r if r is not None else next(read) for r in recs]
            if seqs is None:
                seqs = take(st.cols.seq, ords)
            elif len(seqs) != len(ords):
                raise ValueError("seqs and ords differ in length")
        rmap = st.retracted
        if not rmap:
            if _ACTIVE is not None:     # compiled: the slots set in place
                return _ACTIVE(recs, seqs)
            return list(map(Assertion, recs, seqs))
        out = []
        for o, rec, seq in zip(ords, recs, seqs):
            ridx = rmap.get(o)
            if ridx is not None:
                r = st.retractions[ridx]
                if ((known_at is None or r.recorded_at <= known_at)
                        and (seq_bound is None or r.seq <= seq_bound)):
                    out.append(Assertion(rec, seq, "retracted", {
                        "reason": r.reason, "retracted_at": format_time(r.recorded_at),
                        "seq": r.seq, "by": r.by}))
                    continue
            out.append(Assertion(rec, seq))
        return out

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
