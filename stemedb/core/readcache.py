"""The read cache: decoded records and materialized answers in one
bytes-bounded LRU, and what each entry is charged against the bound.

:class:`ReadCache` (``STEMEDB_READ_CACHE_BYTES``; 0 turns it off) keeps
decoded records keyed by their location in the log (a record never changes
once written, so its entry needs no invalidation) and answers (:class:`Answer`)
keyed and checked by ``query.py`` (see ``_answer_key`` there).  The size
estimates (``record_size``, ``entry_size``, ``Answer``'s own) are measured
against tracemalloc by ``tests/unit/test_read_cache.py``.  An answer of
``RAW_FROM`` to ``HELD_MAX`` candidates holds their frame bodies as read
from the log, packed by :func:`raw_pack` and decoded per page in C
(:func:`raw_records`, :func:`raw_seqs`).  :mod:`stemedb.core.reader` fills
the cache with records, ``query.py`` with answers.
"""
from __future__ import annotations

from array import array
from collections import OrderedDict

from ..model import Assertion, AssertionRecord
from . import fast, qfast
from .qfast import cache_take
from .format import FRAME_CRC_FROM, FRAME_SEQ_OFF, FRAME_SIZE

# What one cached record costs in the heap besides the lengths of its
# variable fields: the msgspec Struct (15 slots + GC head), the hash bytes
# object, the int/float objects of its numbers, the str/bytes headers of its
# variable fields and the OrderedDict slot with its key.  Measured with
# tracemalloc over the bench workload's records (tests/unit/test_read_cache.py
# checks the estimates are not below what records really take).
RECORD_OVERHEAD = 560       # record_size: beyond the variable fields' lengths
RECORD_BASE = 640           # entry_size: beyond the frame body's length
DERIVED_EXTRA = 48          # per derived_from hash (and the list), beyond its 32 bytes
SIGNED_EXTRA = 96           # agent_id and signature objects, beyond their 96 bytes
ANSWER_OVERHEAD = 1024      # an answer's own objects: its key, token, lists
RESULT_BYTES = 640          # a Result dict and its numbers, besides the winners' records
ANSWER_SHARE = 16           # one answer may take at most 1/16 of the bound
HELD_MAX = 32               # an answer of this many candidates or fewer holds their records
HELD_BYTES = 56             # a held record's list slots and seq, besides the record
# An answer of at least RAW_FROM candidates ranked over the columns
# (query.rows_answer) holds their frame bodies as read from the log, in one
# bytes object (``held[0]``, see raw_pack), instead of decoded records: a
# decoded record takes ~2.3x its frame's bytes in the heap, and a hit decodes
# them in C (~0.2 us each).  Fewer than that keep decoded records: the bytes
# saved are small against the answer's fixed ~3.5 KB, and a warm hit of a
# few candidates (~6 us) would pay a decode per candidate.
RAW_FROM = 8
# What such an answer is charged against the bound: its estimate (which
# tracemalloc holds above its real heap) times RAW_CHARGE.  Records and
# record-holding answers are counted as if nothing shared them, and a held
# answer's records are mostly the record entries' own objects, so a cache
# full of them holds about half the bound in real heap; frame bodies are
# shared with nothing, so a cache full of them at RAW_CHARGE 1 held ~10 MB
# more heap at the 48 MiB bound (bench.million's fill of answers of ~20
# candidates: 316-323 against main's 307-310 bytes an assertion).  At 1.5
# that fill reads what main's does (307-312), so the default bound's RSS
# figure stands for either form (bench/results/rawframes-2026-11-27-session11.md,
# which also has the hit rates each charge gives).
RAW_CHARGE = 1.5
TAIL_BASE = 200             # a held answer's audit line end, besides its hashes and weights
TAIL_NAMED = 20             # the candidates it names at most (qaudit.AUDIT_CONTRIBUTORS)
PARAMS_BASE = 240           # its parameters' JSON (kept compiled), besides path and predicate
# Answers together may hold up to 1/ANSWER_RESERVE of the bound against the
# records' churn: while they hold no more, evicting for a record passes over
# an answer (it goes to the recent end) instead of dropping it.  A working
# set of records above the bound would otherwise cycle every answer out
# before its key is asked again (measured: 27% answer hits on the HTTP
# query benchmark's 5,000 keys of a 1,000,000-assertion store, where an
# answer hit skips the gather and the lens; bench/results/http-query-*.md).
ANSWER_RESERVE = 4
# Thrashing: when the cache is full and fewer than half the record lookups of
# the last WINDOW hit (the working set is larger than the bound), a batch
# keeps only one miss in ADMIT_EVERY.  Every miss would otherwise cost an
# insert and an eviction for an entry as likely as not evicted before its
# next use; measured on a soak-like load (250 candidates a query, 13% hits)
# the cache was slower than none.  Hits are unchanged.
WINDOW = 8192
ADMIT_EVERY = 8
# The same for answers: a working set of answers larger than the cache,
# asked in a cycle (bench_http's query clients stride over their 5,000 keys
# in one fixed order), is an LRU's worst case: every answer is evicted
# before its key comes round again (0 hits but for repeated keys), and each
# miss pays an insert and an eviction of an answer holding ~20 records.
# Over each ANSWER_WINDOW answer lookups: when answers were evicted for at
# least half the misses and fewer than half the lookups hit, only one new
# answer in ADMIT_EVERY is kept (those kept then live through several
# cycles and are hit); back to keeping every answer once three lookups in
# four hit.  Admission never changes an answer, only whether it is kept.
ANSWER_WINDOW = 512


def record_size(rec: AssertionRecord) -> int:
    """Estimated heap bytes of a decoded record held by the cache.  A pure
    function of the (immutable) record, so adding and evicting agree."""
    n = RECORD_OVERHEAD + len(rec.concept_path) + len(rec.predicate) + len(rec.value_json)
    if rec.source is not None:
        n += len(rec.source) + 56
    if rec.epoch is not None:
        n += len(rec.epoch) + 56
    if rec.parent_hash is not None:
        n += 72
    if rec.derived_from is not None:
        n += 64 + 80 * len(rec.derived_from)
    if rec.agent_id is not None:
        n += 72 + 104
    return n


class Answer:
    """A materialized query answer (see query.run_query): the results (one
    per (concept_path, predicate), with their winners), the ordinals of
    every candidate in the lens's order (8 bytes each: a page decodes its
    own few, mostly from the record entries), how many are not retracted,
    the validity token it was computed under and its estimated size.

    An answer of at most ``HELD_MAX`` candidates also holds their records
    and seqs, in the same order (``held``: from ``shown``, the Assertions of
    ``ords``): its pages then take no record-cache lookup, whose lock, dict
    probes and LRU moves over a large cache were ~3.5 us of a warm 4-candidate
    query's ~21 (bench.costs, R1 warm).  Records are immutable; the held
    ones are counted in ``size`` as if no record entry shared them.  It
    keeps its audit line's end too (``tail``, see query._audit), whose room
    ``size`` reserves."""

    __slots__ = ("token", "results", "ords", "active", "size", "held", "tail", "ptail",
                 "plimit", "proom", "gslot")

    def __init__(self, token, results: list, ords: list[int], active: int,
                 shown: list[Assertion] | None = None, raw: bytes | None = None,
                 tail: bytes | None = None):
        self.token = token
        self.results = results
        self.ords = array("q", ords)
        self.active = active
        size = ANSWER_OVERHEAD + 8 * len(ords)
        for r in results:
            size += RESULT_BYTES
            for held in (r, *r.get("layers", ())):
                w = held.get("winner")
                if w is not None:
                    size += 80 + record_size(w.record)
        self.held: tuple[list[AssertionRecord] | bytes, list[int] | None] | None = None
        # A held answer also keeps the end of its audit line once written
        # (qaudit._audit: without decay it names only what the answer
        # holds), its room reserved here: a JSON hash per result and a hash
        # and weight per named candidate at most (112 bytes: a weight's
        # repr may take 24).  An answer made with that end (``tail``)
        # counts its bytes instead.
        self.tail: bytes | None = None
        if shown is not None and len(shown) == len(ords) <= HELD_MAX:
            self.tail = tail
            if raw is not None:
                # the frame bodies (raw_pack's), decoded by each page that
                # shows them (raw_records): the bytes object and its header
                # (33), the seqs' list and ints, the tuple
                if raw_count(raw) != len(ords):
                    raise ValueError("the raw frames and the candidates differ in number")
                # their seqs are the frames' own (raw_seqs), checked by the
                # caller against the State's
                self.held = (raw, None)
                size += 33 + len(raw) + 64
            else:
                recs = [a.record for a in shown]
                self.held = (recs, [a.seq for a in shown])
                if qfast.COMPILED:      # the same sum in one call (qfast.held_size)
                    size += qfast.held_size(recs, HELD_BYTES, RECORD_OVERHEAD)
                else:
                    size += sum(HELD_BYTES + record_size(rec) for rec in recs)
            if tail is not None:
                # the end itself, made with the answer (query.rows_answer):
                # its bytes, not the room for the longest it could be
                size += 33 + len(tail)
            else:
                size += TAIL_BASE + 68 * len(results) + 112 * min(len(ords), TAIL_NAMED)
        # The compiled first page also keeps the line's parameters beside
        # that end (``ptail``: ``,"params":{..}`` alone, for pages of
        # ``plimit``; _query.FirstPage._line, or the making query's line,
        # _query.audit_head_keep), within ``proom`` bytes
        # reserved here: the parameters' JSON but for the path and the
        # predicate, and theirs (a longer one is not kept)
        self.ptail: bytes | None = None
        self.plimit: int | None = None
        # The compiled first page keeps here the generation slot its token's
        # part is read from (_query.FirstPage._gslot_hit: a hit then skips
        # the path's and predicate's id lookups): set by the query that made
        # the answer (query._finish), or by a hit of one made without it
        self.gslot: int | None = None
        self.proom = 0
        if self.held is not None and qfast.COMPILED:
            longest = max((len(r["concept_path"]) + len(r["predicate"] or "")
                           for r in results), default=0)
            self.proom = PARAMS_BASE + longest
            size += self.proom
        if raw is not None and self.held is not None:
            size = int(size * RAW_CHARGE)
        self.size = size


class ReadCache:
    """A bytes-bounded LRU of decoded records (key: packed log location, an
    int) and materialized answers (key: a tuple).  Thread-safe: one short
    lock around each lookup or insert.  ``bytes`` is the estimated heap the
    entries hold; it never exceeds ``max_bytes`` after an insert returns."""

    # The fields the compiled first page reads and counts at their offsets
    # (_query.Fields); the rest in the instance dict, as before
    __slots__ = ("_d", "_lock", "answer_hits", "answer_misses", "__dict__", "__weakref__")

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._d: OrderedDict = OrderedDict()
        self._lock = qfast.CacheLock()     # threading.Lock's; compiled, taken from C
        self.record_hits = self.record_misses = 0
        self.answer_hits = self.answer_misses = 0
        self.thrashing = False
        self.answer_bytes = 0       # the Answer entries' share of ``bytes``
        self._window = [0, 0]       # record hits, misses since the window began
        self._admit = 0
        self.answer_thrashing = False
        self.answers_evicted = 0    # answers dropped by _evict since open
        self._aw = (0, 0, 0)        # answer hits, misses, evicted when the window began
        self._admit_answer = 0

    def __len__(self) -> int:
        return len(self._d)

    def record(self, loc: int):
        with self._lock:
            e = self._d.get(loc)
            if e is None:
                self.record_misses += 1
                return None
            self._d.move_to_end(loc)
            self.record_hits += 1
            return e[0]

    def records(self, locs: list[int]) -> list:
        """:meth:`record` for many locations under one lock (None for a miss)."""
        out: list = []
        append = out.append
        d = self._d
        get, to_end = d.get, d.move_to_end
        with self._lock:
            for loc in locs:
                e = get(loc)
                if e is None:
                    append(None)
                else:
                    to_end(loc)
                    append(e[0])
            misses = out.count(None)
            self.record_misses += misses
            self.record_hits += len(locs) - misses
            w = self._window
            w[0] += len(locs) - misses
            w[1] += misses
            if w[0] + w[1] >= WINDOW:
                self.thrashing = w[0] < w[1] and self.bytes >= self.max_bytes * 0.9
                w[0] = w[1] = 0
        return out

    def take(self, ords: list[int], loc, seq) -> tuple[list[int], list, list[int]]:
        """:meth:`records` by ordinal (``loc``, ``seq``: the State's columns),
        under one lock, in one compiled call (``qfast.cache_take``):
        ``(locs, recs, seqs)``, None in ``recs`` for a miss."""
        with self._lock:
            locs, recs, seqs, hits = cache_take(self._d, ords, loc, seq)
            misses = len(ords) - hits
            self.record_misses += misses
            self.record_hits += hits
            w = self._window
            w[0] += hits
            w[1] += misses
            if w[0] + w[1] >= WINDOW:
                self.thrashing = w[0] < w[1] and self.bytes >= self.max_bytes * 0.9
                w[0] = w[1] = 0
        return locs, recs, seqs

    def answer(self, key: tuple, token):
        """The answer under ``key`` if it was computed under ``token``, else None."""
        with self._lock:
            ans = self._d.get(key)
            if ans is None or ans.token != token:
                self.answer_misses += 1
                return None
            self._d.move_to_end(key)
            self.answer_hits += 1
            return ans

    def add_record(self, loc: int, rec: AssertionRecord, size: int) -> None:
        """Keep ``rec``; ``size`` from :func:`entry_size`."""
        self._add(loc, (rec, size), size)

    def add_records(self, entries: list) -> None:
        """Keep many ``(loc, rec, size)`` under one lock (one in ADMIT_EVERY
        while :attr:`thrashing`)."""
        d = self._d
        with self._lock:
            if self.thrashing:
                start = self._admit % ADMIT_EVERY
                self._admit += len(entries)
                entries = entries[(-start) % ADMIT_EVERY::ADMIT_EVERY]
            for loc, rec, size in entries:
                old = d.pop(loc, None)
                if old is not None:
                    self._forget(old)
                d[loc] = (rec, size)
                self.bytes += size
            self._evict()

    def add_answer(self, key: tuple, ans: Answer) -> None:
        if ans.size <= self.max_bytes // ANSWER_SHARE and self._admit_answer_now():
            self._add(key, ans, ans.size)

    def _admit_answer_now(self) -> bool:
        """Whether to keep a new answer (see ANSWER_WINDOW): always, unless
        the answers thrash, then one in ADMIT_EVERY.  The counters are read
        without the lock: a verdict from a window off by a lookup is as good."""
        h, m, ev = self.answer_hits, self.answer_misses, self.answers_evicted
        h0, m0, ev0 = self._aw
        if h + m - h0 - m0 >= ANSWER_WINDOW:
            dh, dm = h - h0, m - m0
            if self.answer_thrashing:
                self.answer_thrashing = dh < 3 * dm
            else:
                self.answer_thrashing = 2 * (ev - ev0) >= dm and dh < dm
            self._aw = (h, m, ev)
        if not self.answer_thrashing:
            return True
        self._admit_answer += 1
        return self._admit_answer % ADMIT_EVERY == 0

    def _add(self, key, value, size: int) -> None:
        d = self._d
        with self._lock:
            old = d.pop(key, None)
            if old is not None:
                self._forget(old)
            d[key] = value
            self.bytes += size
            if type(value) is not tuple:
                self.answer_bytes += size
            self._evict()

    def _forget(self, v) -> None:
        size = _size(v)
        self.bytes -= size
        if type(v) is not tuple:
            self.answer_bytes -= size

    def _evict(self) -> None:
        """Drop least recently used entries until the bound holds; an answer
        is passed over (moved to the recent end) while the answers hold at
        most 1/ANSWER_RESERVE of the bound, so then records go first (there
        are records to drop: the answers alone are under the bound)."""
        d = self._d
        reserve = self.max_bytes // ANSWER_RESERVE
        while self.bytes > self.max_bytes and d:
            k, v = d.popitem(last=False)
            if type(v) is not tuple:
                if self.answer_bytes <= reserve:
                    d[k] = v
                    continue
                self.answers_evicted += 1
            self._forget(v)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self.bytes = self.answer_bytes = 0

    def stats(self) -> dict:
        """Counters for /metrics: hits and misses by kind, bytes and entries."""
        with self._lock:
            return {"record_hits": self.record_hits, "record_misses": self.record_misses,
                    "answer_hits": self.answer_hits, "answer_misses": self.answer_misses,
                    "bytes": self.bytes, "entries": len(self._d), "max_bytes": self.max_bytes}


def raw_pack(bodies: list[bytes]) -> bytes:
    """Frame bodies (as ``read_frames`` passes them to its ``decode``: the
    frame from its type byte, the payload at BODY_PAYLOAD) in one bytes
    object: a uint32 count, the n + 1 uint32 offsets of the bodies (from the
    object's start), then the bodies."""
    n = len(bodies)
    start = 4 + 4 * (n + 1)
    offs = array("I", [n])
    for b in bodies:
        offs.append(start)
        start += len(b)
    offs.append(start)
    if offs.itemsize != 4:
        raise ValueError("array('I') is not 4 bytes here")
    return offs.tobytes() + b"".join(bodies)


def raw_count(raw: bytes) -> int:
    """How many bodies :func:`raw_pack`'s ``raw`` holds."""
    return int.from_bytes(raw[:4], "little")


def raw_records(raw: bytes, lo: int, hi: int) -> list[AssertionRecord]:
    """The records of bodies ``lo:hi`` of :func:`raw_pack`'s ``raw`` (the
    range clipped to the count as a slice is); compiled, in one call
    (qfast.raw_records, whose twin is qpure.raw_records)."""
    return qfast.raw_records(raw, lo, hi, fast.decode_assert, BODY_PAYLOAD)


def raw_seqs(raw: bytes, lo: int, hi: int) -> list[int]:
    """The seqs of bodies ``lo:hi`` of :func:`raw_pack`'s ``raw``, from
    their frame heads (qfast.raw_seqs)."""
    return qfast.raw_seqs(raw, lo, hi, BODY_SEQ)


BODY_SEQ = FRAME_SEQ_OFF - FRAME_CRC_FROM          # where a frame body's seq is


def _body(body: bytes, off: int) -> bytes:
    """read_frames' ``decode`` that keeps the checked body as it is."""
    return body


BODY_PAYLOAD = FRAME_SIZE - FRAME_CRC_FROM      # where a frame body's payload starts



def _size(v) -> int:
    return v[1] if type(v) is tuple else v.size


def entry_size(rec: AssertionRecord, length: int) -> int:
    """Estimated heap bytes of a cached record whose frame body is ``length``
    bytes: O(1), from the length the read already knows.  The heap holds
    about the frame's bytes again plus the objects' headers; a derived_from
    hash and a signature take more room as objects than as bytes."""
    n = RECORD_BASE + length
    if rec.derived_from is not None:
        n += DERIVED_EXTRA * (1 + len(rec.derived_from))
    if rec.agent_id is not None:
        n += SIGNED_EXTRA
    return n

