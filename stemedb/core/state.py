"""The store's in-memory state: indexes plus the sparse facts (retractions,
votes, epochs, outcomes, dependency edges), and how each log record changes
it.  Applying the log from the start, in order, rebuilds it exactly; a
snapshot is a copy of it taken at a known log position.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sortedcontainers import SortedList

from . import fast
from .format import REC_ASSERT, REC_EPOCH, REC_OUTCOME, REC_RETRACT, REC_VOTE
from .index import PRED_BITS, Columns, MultiMap, h64, stable_order  # noqa: F401 (re-exported)
from .records import decode_meta


@dataclass
class Epoch:
    id: int
    name: str
    seq: int
    recorded_at: int
    supersedes: list[str] = field(default_factory=list)
    description: str | None = None


@dataclass
class Retraction:
    seq: int
    recorded_at: int
    reason: str
    by: str | None
    target: dict
    count: int = 0


# A group of more records bumps ``gen`` once instead of each key's slots.
GEN_BULK = 4096
# A group of at most this many records goes to the maps' recent dicts as
# Python lists; numpy's per-call costs outweigh a few records.
SMALL_GROUP = 8
# The on-durable step applies a group of up to this many single puts request
# by request in one call (``fast.apply_puts``, opening.on_durable).  Pure, a
# group of one only, as before: there the twin's loop per record is slower
# than apply_group's lists for a larger group (groups of 4: 18.1 against
# 13.9 us a record, bench/results/write-lead-2026-11-27-session14.md).
PUT_GROUP = SMALL_GROUP if fast.COMPILED else 1

# Generations for the materialized query answers (query.py, ``_token``): an
# answer is reused only while every generation it was computed under is
# unchanged.  Each write bumps the slot of the (concept_path, predicate) and
# of the concept_path it touches; records that can change answers anywhere
# (retractions, which may bring back what a retracted revision hid, epochs,
# trust outcomes, a bulk replay) bump ``gen``.  Slots are hashed: two keys
# sharing one only cost a needless recomputation, never a stale answer.
GEN_SLOTS = 1 << 16
GEN_MASK = GEN_SLOTS - 1
GEN_MIX = 40503                  # odd: distinct paths of one predicate get distinct slots
_PRED_MASK = (1 << PRED_BITS) - 1
_state_serial = iter(range(1 << 62))   # each State's gen starts at its own 2**32 multiple


# end_replay sorts index runs of at least this many keys two at a time
# (compiled build only): numpy's sorts, casts and gathers let go of the GIL,
# and a 1,000,000-record rebuild spends ~0.15 s sorting its four runs.
PARALLEL_RUN = 100_000


def add_runs(runs: list) -> None:
    """``m.add_run(keys, first, vals)`` for each ``(m, keys, first, vals)`` of
    distinct maps.  With the compiled build and at least two runs of
    ``PARALLEL_RUN`` keys, a second thread takes part of the large runs
    (each map is touched by one thread only; the result is the same as one
    after the other); the pure build and smaller runs go one after the
    other, in this thread."""
    large = [r for r in runs if len(r[1]) >= PARALLEL_RUN]
    if not fast.COMPILED or len(large) < 2:
        for m, keys, first, vals in runs:
            m.add_run(keys, first, vals)
        return
    import threading
    # Balance by estimated cost: 64-bit keys without room for the index's
    # bits (hashes, sources) take about twice the others' sort.
    large.sort(key=lambda r: -len(r[1]) * (2 if r[1].dtype == np.uint64 else 1))
    mine: list = []
    theirs: list = []
    load = [0, 0]
    for r in large:
        w = len(r[1]) * (2 if r[1].dtype == np.uint64 else 1)
        side = 0 if load[0] <= load[1] else 1
        (mine, theirs)[side].append(r)
        load[side] += w
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for m, keys, first, vals in theirs:
                m.add_run(keys, first, vals)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)
    t = threading.Thread(target=work, name="stemedb-index-sort", daemon=True)
    t.start()
    try:
        for m, keys, first, vals in mine + [r for r in runs if len(r[1]) < PARALLEL_RUN]:
            m.add_run(keys, first, vals)
    finally:
        t.join()
    if errors:
        raise errors[0]


def gen_slot(pid: int, qid: int) -> int:
    """The ``key_gen`` slot of (path id, predicate id)."""
    return (pid * GEN_MIX + qid) & GEN_MASK


@dataclass
class _Replay:
    """What apply_group keeps for end_replay while recovery replays."""
    first: int                                   # the first replayed ordinal
    sources: list = field(default_factory=list)  # (source keys, ordinals) per group
    edges: list = field(default_factory=list)
    metas: list = field(default_factory=list)    # (type, seq, body), in log order


class State:
    # The fields the compiled first page reads at their offsets
    # (_query.Fields, ~170 instructions less each than a generic read); the
    # rest in the instance dict, as before
    __slots__ = ("path_ids", "pred_ids", "key_gen", "path_gen", "gen", "retracted", "__dict__",
                 "__weakref__")

    def __init__(self):
        self.cols = Columns()
        self.by_hash = MultiMap(np.uint64)
        self.by_key = MultiMap(np.int64)
        self.by_path = MultiMap(np.int64)
        self.by_source = MultiMap(np.uint64)
        self.path_ids: dict[str, int] = {}
        self.path_names: list[str] = []
        self._sorted = SortedList()       # path_names[:_sorted_n], sorted
        self._sorted_n = 0
        self.pred_ids: dict[str, int] = {}
        self.pred_names: list[str] = []
        self.epochs: dict[str, Epoch] = {}
        self.epoch_names: list[str | None] = [None]      # id 0: no epoch
        self.epoch_ids: dict[str, int] = {}              # name -> id, kept by apply_epoch
        self.dependents: dict[int, list[int]] = {}       # ord -> ords citing it
        self.revisions: dict[int, list[int]] = {}        # ord -> ords revising it
        self.retracted: dict[int, int] = {}              # ord -> retraction index
        self.retractions: list[Retraction] = []
        self.votes: dict[int, list[tuple]] = {}          # ord -> [(agent, weight, rec, seq, ts)]
        self.outcomes: dict[str, list[tuple[int, bool]]] = {}
        self.last_seq = 0
        self.last_recorded_at = 0
        self.records = 0                                 # log records applied
        self._scratch_arrays = (np.empty(64, np.uint64), np.empty(64, np.uint64),
                                np.empty(64, np.int32))
        self._replay: _Replay | None = None
        # answer generations (GEN_SLOTS above); never persisted: the
        # answers they guard live only as long as this object
        self.gen = next(_state_serial) << 32
        self.key_gen = [0] * GEN_SLOTS
        self.path_gen = [0] * GEN_SLOTS

    # ------------------------------------------------------------ lookups
    @property
    def count(self) -> int:
        return self.cols.n

    def ordinal(self, h: bytes) -> int | None:
        """The ordinal of the assertion with full hash ``h``, or None.  O(log n)."""
        m = self.by_hash
        if type(h) is bytes and len(h) == 32:
            try:        # one C call: a put's dedupe check
                return fast.find_hash(m.keys, m.vals, m.recent, self.cols.hashes, h)
            except ValueError:
                pass    # a run in another form (a mapped snapshot's): the general path
        for o in m.get(h64(h)):
            if self.cols.hash_of(o) == h:
                return o
        return None

    def ordinals(self, hashes: list[bytes]) -> list[int | None]:
        """:meth:`ordinal` for many hashes: one compiled loop (``fast.find_hashes``),
        or, where it declines, one vectorized search of the run."""
        n = len(hashes)
        if n < 8:
            return [self.ordinal(h) for h in hashes]
        if fast.COMPILED:       # the pure twin is a loop of find_hash: numpy's search beats it
            m = self.by_hash
            try:
                return fast.find_hashes(m.keys, m.vals, m.recent, self.cols.hashes,
                                        hashes if type(hashes) is list else list(hashes))
            except ValueError:
                pass            # a run in another form, or not 32-byte hashes: below
        arr = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(n, 32)
        keys64 = np.ascontiguousarray(arr[:, :8]).view("<u8").reshape(n)
        out: list[int | None] = [None] * n
        run = self.by_hash.keys
        if len(run):
            pos = run.searchsorted(keys64, "left")
            inside = pos < len(run)
            hit = np.zeros(n, dtype=bool)
            hit[inside] = run[pos[inside]] == keys64[inside]
            idx = np.flatnonzero(hit)
            if len(idx):
                cand = self.by_hash.vals[pos[idx]]
                same = np.all(self.cols.hashes[cand] == arr[idx], axis=1)
                for i, o, ok in zip(idx.tolist(), cand.tolist(), same.tolist()):
                    # a 64-bit prefix twin is rare; the scalar path sorts it out
                    out[i] = o if ok else self.ordinal(hashes[i])
        recent = self.by_hash.recent
        if recent:
            hb = self.cols.hashes
            for i, k in enumerate(keys64.tolist()):
                if out[i] is None:
                    for o in recent.get(k, ()):
                        if hb[o].tobytes() == hashes[i]:
                            out[i] = o
                            break
        return out

    def path_id(self, path: str) -> int:
        pid = self.path_ids.get(path)
        if pid is None:
            pid = len(self.path_names)
            self.path_ids[path] = pid
            self.path_names.append(path)
        return pid

    @property
    def sorted_paths(self) -> SortedList:
        """Every concept path in ``path_names``, sorted.  Kept lazily: a
        write only appends to ``path_names`` (a sorted insert, ~1.1 us per
        new path, was most of a single put's apply after the maps), and the
        paths added since the last read are sorted in here: one
        ``SortedList.add`` each for a few, one sort of the whole list (~0.3 us
        a path) once they are a quarter of it.  So the cost moves from the
        write to the first read after it (a query with
        ``include_descendants``, ``check``): after a bulk load of many new
        paths that read pays the sort, e.g. ~60 ms for 200,000 paths.
        ``end_replay`` reads it, so a start pays it, not the first query.
        Callers hold the index lock, as for every read of the state."""
        return self._sort_new_paths()

    @sorted_paths.setter
    def sorted_paths(self, value: SortedList) -> None:
        """``value`` holds the first ``len(value)`` entries of ``path_names``
        (a snapshot load gives it all of them)."""
        self._sorted = value
        self._sorted_n = len(value)

    def _sort_new_paths(self) -> SortedList:
        sp = self._sorted
        k = len(self.path_names)
        if self._sorted_n < k:
            new = self.path_names[self._sorted_n:]
            if len(new) == 1:
                sp.add(new[0])
            else:
                sp.update(new)
            self._sorted_n = k
        return sp

    def pred_id(self, pred: str) -> int:
        pid = self.pred_ids.get(pred)
        if pid is None:
            pid = len(self.pred_names)
            self.pred_ids[pred] = pid
            self.pred_names.append(pred)
        return pid

    def descendant_paths(self, path: str) -> list[str]:
        """Stored concept paths strictly below ``path``; O(log n + k)."""
        prefix = path + "/"
        sp = self.sorted_paths
        out = []
        for i in range(sp.bisect_left(prefix), len(sp)):
            p = sp[i]
            if not p.startswith(prefix):
                break
            out.append(p)
        return out

    # ------------------------------------------------------------ applying
    def _note(self, seq: int, rec: int) -> None:
        if seq > self.last_seq:
            self.last_seq = seq
        if rec > self.last_recorded_at:
            self.last_recorded_at = rec
        self.records += 1

    def _link(self, edges) -> None:
        """Record parent_hash / derived_from edges: ``(ordinal, parent, derived)``."""
        for o, parent, derived in edges:
            if parent is not None:
                p = self.ordinal(parent)
                if p is not None:
                    self.revisions.setdefault(p, []).append(o)
                    self._touch(p)               # the revised one may hide at another key
                    self.dependents.setdefault(p, []).append(o)
            for d in derived or ():
                p = self.ordinal(d)
                if p is not None:
                    lst = self.dependents.setdefault(p, [])
                    if not lst or lst[-1] != o:
                        lst.append(o)

    def _touch(self, o: int) -> None:
        """Bump the answer generations of ordinal ``o``'s key and path."""
        pid = int(self.cols.path[o])
        self.key_gen[gen_slot(pid, int(self.cols.key[o]) & _PRED_MASK)] += 1
        self.path_gen[pid & GEN_MASK] += 1

    # ------------------------------------------------------------ one apply
    def apply_group(self, buf, offsets, types, seqs, loc_base: int, segno: int = 0) -> None:
        """Apply framed log records, in seq order: every durable group the WAL
        writes (Store's on-durable step) and every segment recovery replays.

        ``buf`` holds the frames; ``offsets``, ``types``, ``seqs`` say where
        each record is and what it is; ``loc_base`` is ``segment << 40`` plus
        the file offset of ``buf[0]`` (a record's location is ``loc_base +
        offset``); ``segno`` names the segment in errors.  The assertions
        go to the one "records to index columns" function,
        ``fast.index_records`` (compiled, or its pure twin
        ``records.index_records``), which writes their rows straight into
        the columns; each map then takes the group's keys at once
        (``MultiMap.add_run``): the cost is per group plus O(records) in C,
        not a Python loop per record.  Epoch records are applied first
        (assertions name them; ids follow log order either way);
        retractions, votes and outcomes after the assertions, in log order
        (they name only earlier records, so the result equals record-by-record
        application).  O(records + new names), plus one sorted insert per
        map when the group is large next to the map.
        """
        if not offsets:
            return
        if len(offsets) == 1 and types[0] == REC_ASSERT and self._replay is None:
            self._apply_one(buf, offsets[0], seqs[0], loc_base)
            return
        if (fast.COMPILED and len(offsets) <= SMALL_GROUP and self._replay is None
                and types.count(REC_ASSERT) == len(offsets)):
            # a few single puts' group commit (W2): record by record is the
            # same result (each names only earlier records) and, compiled,
            # ~0.4 us a record less than the lists and slices below
            # (tests/unit/test_index_small_groups.py holds the two equal)
            one = self._apply_one
            for off, seq in zip(offsets, seqs):
                one(buf, off, seq, loc_base)
            return
        # apply_meta counts the records it applies; this counts each record
        # once, here, whatever its type
        records = self.records + len(offsets)
        if REC_EPOCH in types:
            for off, rtype, seq in zip(offsets, types, seqs):
                if rtype == REC_EPOCH:
                    self.apply_epoch(seq, decode_meta(rtype, buf, off, segno))
        c = self.cols
        first = c.n
        if first + len(offsets) > c.cap:
            c._grow(first + len(offsets))
        hk, sk, so = self._scratch(len(offsets))
        n, ns, max_rec, edges, metas = fast.index_records(
            buf, offsets, types, seqs, loc_base, first, c.seq, c.loc, c.ts, c.rec, c.key,
            c.path, c.epoch, c.lc, c.conf, c.rank, c.va, c.vb, c.hashes, hk, sk, so,
            self.path_ids, self.path_names,
            self.pred_ids, self.pred_names, self.epoch_ids)
        rp = self._replay
        if n:
            c.n = first + n
            end = first + n
            if rp is not None:
                if ns:
                    rp.sources.append((sk[:ns].copy(), so[:ns].copy()))
            elif n == 1:
                # one record (a single put): scalar reads (``item``) and
                # MultiMap.add, no slices, lists or bulk calls; the same
                # entries and generation bumps as the branches below
                key = c.key.item(first)
                add = fast.map_add
                add(self.by_hash, hk.item(0), first)
                add(self.by_key, key, first)
                add(self.by_path, c.path.item(first), first)
                if ns:
                    add(self.by_source, sk.item(0), so.item(0))
                pid = key >> PRED_BITS
                self.key_gen[(pid * GEN_MIX + (key & _PRED_MASK)) & GEN_MASK] += 1
                self.path_gen[pid & GEN_MASK] += 1
            elif n <= SMALL_GROUP:
                # a few records (single puts, a small group commit): the maps'
                # recent dicts directly, without add_run's array handling
                ords = range(first, end)
                keys = c.key[first:end].tolist()
                add_many = fast.map_add_many    # MultiMap.add_many (see map_add)
                add_many(self.by_hash, hk[:n].tolist(), ords)
                add_many(self.by_key, keys, ords)
                add_many(self.by_path, c.path[first:end].tolist(), ords)
                if ns:
                    add_many(self.by_source, sk[:ns].tolist(), so[:ns].tolist())
            else:
                keys = c.key[first:end]
                add = fast.add_recent
                self.by_hash.add_run(hk[:n], first, None, add)
                self.by_key.add_run(keys, first, None, add)
                self.by_path.add_run(c.path[first:end].astype(np.int64), first, None, add)
                self.by_source.add_run(sk[:ns], 0, so[:ns], add)
                if n <= GEN_BULK:
                    fast.bump_gens(self.key_gen, self.path_gen, keys, GEN_MIX, PRED_BITS)
                else:
                    self.gen += 1
            if rp is None and 1 < n <= SMALL_GROUP:
                self._bump(keys)
            if max_rec > self.last_recorded_at:
                self.last_recorded_at = max_rec
        if seqs[-1] > self.last_seq:
            self.last_seq = int(seqs[-1])
        if rp is not None:                     # applied by end_replay, in this order
            rp.edges.extend(edges)
            rp.metas.extend((rtype, seq, decode_meta(rtype, buf, off, segno))
                            for rtype, seq, off in metas if rtype != REC_EPOCH)
        else:
            if edges:
                self._link(edges)
            for rtype, seq, off in metas:
                if rtype != REC_EPOCH:             # epochs went first, above
                    self.apply_meta(rtype, seq, decode_meta(rtype, buf, off, segno))
        self.records = records

    def _apply_one(self, buf, off: int, seq: int, loc_base: int) -> None:
        """:meth:`apply_group` of one assertion (a single put's group, W1 and
        most of W2's requests): ``fast.index_one`` writes its row and hands
        back its map keys as ints, so the maps take them with ``MultiMap.add``
        and no scratch array, list or slice is made; the same entries,
        generation bumps and counters as the group path
        (tests/unit/test_index_small_groups.py holds them equal)."""
        c = self.cols
        first = c.n
        if first >= c.cap:
            c._grow(first + 1)
        hk, key, pid, src, rec, edge = fast.index_one(
            buf, off, seq, loc_base, first, c.rows, self.path_ids, self.path_names,
            self.pred_ids, self.pred_names, self.epoch_ids)
        c.n = first + 1
        if fast.COMPILED:
            # the lines below in one C call (records.add_one, their twin)
            fast.add_one(self.by_hash, hk, self.by_key, key, self.by_path, pid,
                         self.by_source, src, first, self.key_gen, self.path_gen,
                         GEN_MIX, PRED_BITS)
        else:
            add = fast.map_add       # MultiMap.add
            add(self.by_hash, hk, first)
            add(self.by_key, key, first)
            add(self.by_path, pid, first)
            if src is not None:
                add(self.by_source, src, first)
            self.key_gen[(pid * GEN_MIX + (key & _PRED_MASK)) & GEN_MASK] += 1
            self.path_gen[pid & GEN_MASK] += 1
        if rec > self.last_recorded_at:
            self.last_recorded_at = rec
        if seq > self.last_seq:
            self.last_seq = int(seq)
        if edge is not None:
            self._link((edge,))
        self.records += 1

    # ------------------------------------------------------------ replay
    def begin_replay(self) -> None:
        """Recovery's mode: :meth:`apply_group` writes the columns and keeps
        the rest (map keys, citations, retractions, votes, outcomes) for
        :meth:`end_replay`, which builds each map once over every replayed
        record (one sort of n keys, not one sorted insert into a growing
        run per segment: at 1,000,000 records in four segments the inserts
        cost 0.45 us per record) and then applies the rest in log order.
        The result equals applying group by group: those records name
        only earlier assertions, all present by then.  Lookups (``ordinal``)
        do not see replayed assertions until end_replay."""
        self._replay = _Replay(self.cols.n)

    def end_replay(self) -> None:
        rp = self._replay
        if rp is None:
            return
        self._replay = None
        c, first = self.cols, rp.first
        n = c.n - first
        runs: list = []
        if n:
            hk = np.ascontiguousarray(c.hashes[first:c.n, :8]).view(np.uint64).reshape(n)
            runs += [(self.by_hash, hk, first, None), (self.by_key, c.key[first:c.n], first, None),
                     (self.by_path, c.path[first:c.n].astype(np.int64), first, None)]
        if rp.sources:
            runs.append((self.by_source, np.concatenate([k for k, _ in rp.sources]), 0,
                         np.concatenate([o for _, o in rp.sources])))
        add_runs(runs)
        records = self.records                 # apply_group counted every record
        self._sort_new_paths()                 # at the start, not at its first query
        self._link(rp.edges)
        for rtype, seq, body in rp.metas:
            self.apply_meta(rtype, seq, body)
        self.records = records
        self.gen += 1

    def _bump(self, keys: list[int]) -> None:
        """Bump the answer generations of the keys a small group wrote, per
        key and path.  A larger group (apply_group) takes ``fast.bump_gens``
        up to ``GEN_BULK`` records, and one ``gen`` bump (every answer) past
        it, where even the compiled per-key loop would cost more than the
        recomputation it spares."""
        kgen, pgen = self.key_gen, self.path_gen
        for key in keys:
            pid = key >> PRED_BITS
            kgen[(pid * GEN_MIX + (key & _PRED_MASK)) & GEN_MASK] += 1
            pgen[pid & GEN_MASK] += 1

    def _scratch(self, n: int):
        """Scratch arrays of at least ``n`` rows for index_records' by-products
        (hash keys, source keys, source ordinals), kept between groups."""
        sc = self._scratch_arrays
        if len(sc[0]) < n:
            sc = self._scratch_arrays = (np.empty(n, np.uint64), np.empty(n, np.uint64),
                                         np.empty(n, np.int32))
        return sc

    def apply_asserts(self, items: list) -> None:
        """Apply assertions given as decoded fields, ``(seq, segment, offset,
        (hash, recorded_at, timestamp, lifecycle, path, predicate, source,
        epoch, parent, derived))``: an adapter for callers that hold fields,
        not frames (tests, bench/costs.py).  It frames them (confidence and
        value are placeholders: the index reads neither) and goes through
        :meth:`apply_group`, then sets each row's location, so it costs
        more than the store's own path, which hands over the WAL's bytes.
        """
        from ..model import AssertionRecord
        from .codec import encode_assert, encode_frame
        from .format import REC_ASSERT
        frames, offsets, types, seqs, locs, pos = [], [], [], [], [], 0
        for seq, segment, offset, f in items:
            h, rec, ts, lc, path, pred, src, ep, parent, derived = f
            fr = encode_frame(REC_ASSERT, 0, seq, encode_assert(AssertionRecord(
                h, rec, ts, 0.0, 0, lc, path, pred, b"0", src, ep, parent, derived)))
            frames.append(fr); offsets.append(pos); types.append(REC_ASSERT); seqs.append(seq)
            locs.append((segment << 40) | offset)
            pos += len(fr)
        first = self.cols.n
        self.apply_group(b"".join(frames), offsets, types, seqs, 0)
        self.cols.loc[first:first + len(locs)] = locs

    def bulk_segment(self, buf, offsets, types, seqs, segno: int, extract=None,
                     decode=None) -> None:
        """:meth:`apply_group` of one whole segment (the older replay entry,
        kept for bench/costs.py; ``extract`` and ``decode`` are ignored: the
        one function is ``fast.index_records``)."""
        self.apply_group(buf, offsets, types, seqs, segno << 40, segno)

    def apply_meta(self, rtype: int, seq: int, body: dict) -> None:
        """The one dispatch of non-assertion records, for live groups and replay."""
        if rtype == REC_RETRACT:
            self.apply_retract(seq, body)
        elif rtype == REC_VOTE:
            self.apply_vote(seq, body)
        elif rtype == REC_EPOCH:
            self.apply_epoch(seq, body)
        elif rtype == REC_OUTCOME:
            self.apply_outcome(seq, body)
        else:
            from ..errors import CorruptionError
            raise CorruptionError(f"unknown record type {rtype} at seq {seq}")

    def apply_retract(self, seq: int, body: dict) -> list[int]:
        """Mark the listed hashes retracted (first retraction wins)."""
        r = Retraction(seq=seq, recorded_at=body["recorded_at"], reason=body["reason"],
                       by=body.get("by"), target=body["target"])
        idx = len(self.retractions)
        self.retractions.append(r)
        newly = []
        for o in self.ordinals(list(body["hashes"])):
            if o is not None and o not in self.retracted:
                self.retracted[o] = idx
                newly.append(o)
        r.count = len(newly)
        self.gen += 1
        self._note(seq, r.recorded_at)
        return newly

    def apply_vote(self, seq: int, body: dict) -> bool:
        """Add a vote, unless its agent already has one on that assertion
        with the same or a later ``timestamp`` (then the record changes
        nothing).  This is the rule ``Store.vote`` checks before writing, so
        live writes and replay build the same state.  A record from before
        votes had a timestamp counts its ``recorded_at`` as one and, as it
        did then, replaces an equally old vote (recorded_at never goes
        backwards, so log order decides).  Votes without ``agent_id`` all
        count.  Returns whether the vote was added."""
        rec = body["recorded_at"]
        ts = body.get("timestamp")
        legacy = ts is None
        if ts is None:
            ts = rec
        o = self.ordinal(body["assertion_hash"])
        added = False
        if o is not None:
            agent = body.get("agent_id")
            if agent is not None:
                prev = self.vote_time(o, agent)
                if prev is not None and (ts < prev or (ts == prev and not legacy)):
                    self._note(seq, rec)
                    return False
                self._vote_times[(o, agent)] = ts
            self.votes.setdefault(o, []).append((agent, body["weight"], rec, seq, ts))
            self._touch(o)
            added = True
        self._note(seq, rec)
        return added

    def vote_time(self, o: int, agent: str) -> int | None:
        """The ``timestamp`` of ``agent``'s current vote on ordinal ``o``.

        Derived from ``votes`` (built on first use, then kept by apply_vote),
        so a state loaded from a snapshot needs nothing more; an entry of a
        snapshot from before votes had a timestamp counts its recorded_at.
        """
        vt = self.__dict__.get("_vote_times")
        if vt is None:
            vt = {}
            for k, vs in self.votes.items():
                for v in vs:
                    if v[0] is not None:
                        t = v[4] if len(v) > 4 else v[2]
                        if t >= vt.get((k, v[0]), t):
                            vt[(k, v[0])] = t
            self._vote_times = vt
        return vt.get((o, agent))

    def apply_epoch(self, seq: int, body: dict) -> None:
        e = Epoch(id=len(self.epoch_names), name=body["name"], seq=seq,
                  recorded_at=body["recorded_at"], supersedes=list(body.get("supersedes") or []),
                  description=body.get("description"))
        self.epochs[e.name] = e
        self.epoch_names.append(e.name)
        self.epoch_ids[e.name] = e.id
        self.gen += 1
        self._note(seq, e.recorded_at)

    def apply_outcome(self, seq: int, body: dict) -> None:
        self.outcomes.setdefault(body["agent_id"], []).append(
            (body["recorded_at"], bool(body["accurate"])))
        self.gen += 1
        self._note(seq, body["recorded_at"])

    # ------------------------------------------------------------ epochs
    def superseded_epoch_ids(self, known_at: int | None = None,
                             seq_bound: int | None = None) -> set[int]:
        """Ids of epochs superseded (transitively) by some epoch recorded at
        or before ``known_at`` with a seq at or below ``seq_bound``."""
        out: set[int] = set()
        stack = []
        for e in self.epochs.values():
            if known_at is not None and e.recorded_at > known_at:
                continue
            if seq_bound is not None and e.seq > seq_bound:
                continue
            stack.extend(e.supersedes)
        while stack:
            name = stack.pop()
            sup = self.epochs.get(name)
            if sup is None or sup.id in out:
                continue
            out.add(sup.id)
            stack.extend(sup.supersedes)
        return out

    # ------------------------------------------------------------ checking
    def check(self) -> list[str]:
        """Invariants of the in-memory state (empty list when consistent)."""
        out = []
        n = self.cols.n
        for name, m in (("hash", self.by_hash), ("key", self.by_key), ("path", self.by_path)):
            out += m.check(name)
            if len(m) != n:
                out.append(f"index {name}: {len(m)} entries for {n} assertions")
        if n > 1 and bool(np.any(np.diff(self.cols.seq[:n]) <= 0)):
            out.append("assertion seqs are not strictly increasing in log order")
        if n and int(self.cols.seq[n - 1]) > self.last_seq:
            out.append("an assertion's seq is beyond the last applied seq")
        if len(self.path_names) != len(self.sorted_paths):
            out.append("sorted concept paths disagree with the path table")
        for o in self.retracted:
            if not 0 <= o < n:
                out.append(f"retraction marks unknown ordinal {o}")
        return out
