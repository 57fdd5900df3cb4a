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
from .index import PRED_BITS, Columns, MultiMap, h64, pack_loc


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


SMALL_GROUP = 8

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


def gen_slot(pid: int, qid: int) -> int:
    """The ``key_gen`` slot of (path id, predicate id)."""
    return (pid * GEN_MIX + qid) & GEN_MASK


def stable_order(keys: np.ndarray) -> np.ndarray:
    """``np.argsort(keys, kind="stable")``, three to eight times faster.

    numpy's stable sort of 64-bit keys is a timsort (29 ms for 200,000
    random keys here); its default sort is a vectorized introsort (6 ms),
    and sorting one int64 array, not its argsort, costs 2 ms.  So:
    non-negative keys that leave room for the index's bits (concept path
    ids, index keys) sort as one int64 array of ``key << bits | index``;
    others (hash prefixes, source keys) take the introsort and then, only
    when keys repeat, one sort of ``run number << 32 | index`` puts each
    run of equal keys back in index order.  The rebuild sorts every index
    run this way (State.bulk_segment).
    """
    n = len(keys)
    if n < 2:
        return np.arange(n, dtype=np.int64)
    if n >= 2**32:                      # an index does not fit in 32 bits
        return np.argsort(keys, kind="stable")
    bits = (n - 1).bit_length()
    if keys.dtype.kind in "iu" and int(keys.min()) >= 0 and int(keys.max()) < 2**(63 - bits):
        comp = (keys.astype(np.int64) << bits) | np.arange(n, dtype=np.int64)
        comp.sort()
        return comp & np.int64((1 << bits) - 1)
    order = np.argsort(keys)
    ks = keys[order]
    new_run = ks[1:] != ks[:-1]
    if bool(new_run.all()):
        return order
    run = np.empty(n, dtype=np.int64)
    run[0] = 0
    np.cumsum(new_run, out=run[1:])
    comp = (run << 32) | order
    comp.sort()
    return comp & np.int64(0xFFFFFFFF)


class State:
    def __init__(self):
        self.cols = Columns()
        self.by_hash = MultiMap(np.uint64)
        self.by_key = MultiMap(np.int64)
        self.by_path = MultiMap(np.int64)
        self.by_source = MultiMap(np.uint64)
        self.path_ids: dict[str, int] = {}
        self.path_names: list[str] = []
        self.sorted_paths = SortedList()
        self.pred_ids: dict[str, int] = {}
        self.pred_names: list[str] = []
        self.epochs: dict[str, Epoch] = {}
        self.epoch_names: list[str | None] = [None]      # id 0: no epoch
        self.dependents: dict[int, list[int]] = {}       # ord -> ords citing it
        self.revisions: dict[int, list[int]] = {}        # ord -> ords revising it
        self.retracted: dict[int, int] = {}              # ord -> retraction index
        self.retractions: list[Retraction] = []
        self.votes: dict[int, list[tuple]] = {}          # ord -> [(agent, weight, rec, seq, ts)]
        self.outcomes: dict[str, list[tuple[int, bool]]] = {}
        self.last_seq = 0
        self.last_recorded_at = 0
        self.records = 0                                 # log records applied
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
        """The ordinal of the assertion with full hash ``h``, or None."""
        for o in self.by_hash.get(h64(h)):
            if self.cols.hash_of(o) == h:
                return o
        return None

    def ordinals(self, hashes: list[bytes]) -> list[int | None]:
        """:meth:`ordinal` for many hashes: one vectorized search of the run."""
        n = len(hashes)
        if n < 8:
            return [self.ordinal(h) for h in hashes]
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
            self.sorted_paths.add(path)
        return pid

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

    def apply_asserts(self, items: list) -> None:
        """Apply a durable group's assertions: ``(seq, segment, offset, fields)``.

        Columns are filled by slice and the maps take their keys through the
        small recent dicts, so a group of k costs O(k) plus one amortized merge.
        A group larger than ``SMALL_GROUP`` is applied per group, not per
        record: the loop only resolves names to ids, the hash prefixes and
        locations are computed over the whole group with numpy, and each map
        takes the group's keys in one ``MultiMap.add_many`` (1.2x faster on
        groups of 1,000, bench/results/group-commit-2026-11-26.md).  Smaller groups
        (single puts, the few records of a group commit) take the per-record
        adds, whose fixed cost is lower (the group path cost 1.3x on single puts).
        """
        n = len(items)
        c = self.cols
        if c.n + n > c.cap:
            c._grow(c.n + n)
        first = c.n
        seqs, segs, offs, tss, recs, keys, pids, eids, lcs, hashes = [], [], [], [], [], [], [], [], [], []
        str64_ = fast.str64
        edges, src_keys, src_ords = [], [], []
        small = n <= SMALL_GROUP
        by_hash, by_key, by_path, by_source = self.by_hash, self.by_key, self.by_path, self.by_source
        kgen, pgen = self.key_gen, self.path_gen
        for k, (seq, segment, offset, f) in enumerate(items):
            h, rec, ts, lc, path, pred, src, ep, parent, derived = f
            pid = self.path_ids.get(path)
            if pid is None:
                pid = self.path_id(path)
            qid = self.pred_ids.get(pred)
            if qid is None:
                qid = self.pred_id(pred)
            key = (pid << PRED_BITS) | qid
            kgen[(pid * GEN_MIX + qid) & GEN_MASK] += 1
            pgen[pid & GEN_MASK] += 1
            o = first + k
            seqs.append(seq); segs.append(segment); offs.append(offset); tss.append(ts)
            recs.append(rec); keys.append(key); pids.append(pid)
            eids.append(self.epochs[ep].id if ep is not None else 0); lcs.append(lc)
            hashes.append(h)
            if small:
                by_hash.add(h64(h), o)
                by_key.add(key, o)
                by_path.add(pid, o)
                if src is not None:
                    by_source.add(str64_(src), o)
            elif src is not None:
                src_keys.append(str64_(src))
                src_ords.append(o)
            if parent is not None or derived is not None:
                edges.append((o, parent, derived))
            if rec > self.last_recorded_at:
                self.last_recorded_at = rec
        if not small:
            hb = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(n, 32)
            ords = range(first, first + n)
            by_hash.add_many(np.ascontiguousarray(hb[:, :8]).view("<u8").reshape(n).tolist(), ords)
            by_key.add_many(keys, ords)
            by_path.add_many(pids, ords)
            if src_keys:
                by_source.add_many(src_keys, src_ords)
        if small:
            # a slice store from a list costs ~2 us per column even for one
            # item; scalar stores cost ~0.1 us (single puts are the common case)
            for k in range(n):
                i = first + k
                c.seq[i] = seqs[k]; c.loc[i] = pack_loc(segs[k], offs[k]); c.ts[i] = tss[k]
                c.rec[i] = recs[k]
                c.key[i] = keys[k]; c.path[i] = pids[k]; c.epoch[i] = eids[k]; c.lc[i] = lcs[k]
                c.hashes[i] = np.frombuffer(hashes[k], dtype=np.uint8)
        else:
            sl = slice(first, first + n)
            c.seq[sl] = seqs; c.ts[sl] = tss; c.rec[sl] = recs
            c.loc[sl] = (np.array(segs, dtype=np.int64) << 40) | np.array(offs, dtype=np.int64)
            c.key[sl] = keys; c.path[sl] = pids; c.epoch[sl] = eids; c.lc[sl] = lcs
            c.hashes[sl] = hb
        c.n = first + n
        self._link(edges)
        self.last_seq = max(self.last_seq, seqs[-1])
        self.records += n

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

    # ------------------------------------------------------------ bulk replay
    def bulk_segment(self, buf, offsets, types, seqs, segno: int, extract, decode_meta) -> None:
        """Apply one scanned segment's records at once: the rebuild path.

        ``extract`` (codec.extract_segment or its compiled twin) turns the
        assertion records into column arrays; each sorted run is then
        extended once (numpy argsort + insert) instead of one insert per
        record per index.  Epoch records are applied first (assertions name
        them; ids follow log order either way); retractions and votes after
        the assertions, in log order (they name only earlier assertions, so
        the result equals record-by-record replay).
        """
        if not offsets:
            return
        # apply_* count the records they apply; this path counts each record
        # once, here, whatever its type
        records = self.records + len(offsets)
        self.gen += 1
        if REC_EPOCH in types:
            for off, rtype, seq in zip(offsets, types, seqs):
                if rtype == REC_EPOCH:
                    self.apply_epoch(seq, decode_meta(rtype, buf, off, segno))
        first = self.cols.n
        n_paths = len(self.path_names)
        epoch_ids = {name: e.id for name, e in self.epochs.items()}
        cols, sources, edges, metas = extract(buf, offsets, types, seqs, segno, first,
                                              self.path_ids, self.path_names, self.pred_ids,
                                              self.pred_names, epoch_ids)
        if len(self.path_names) > n_paths:
            self.sorted_paths.update(self.path_names[n_paths:])
        n = len(cols["seq"])
        if n:
            self._bulk_columns(first, n, cols, sources)
            self.last_recorded_at = max(self.last_recorded_at, int(cols["rec"].max()))
        self.last_seq = max(self.last_seq, int(seqs[-1]))
        self._link(edges)
        for rtype, seq, off in metas:
            if rtype != REC_EPOCH:             # epochs went first, above
                self.apply_meta(rtype, seq, decode_meta(rtype, buf, off, segno))
        self.records = records

    # ------------------------------------------------------------ one dispatch
    def apply_group(self, items) -> None:
        """Apply one durable atomic group, in seq order: the live write path.

        ``items`` are ``(type, seq, segment, offset, payload)``; a run of
        assertions goes to :meth:`apply_asserts` at once, every other record
        to :meth:`apply_meta`, the dispatch replay uses too.
        """
        run = []
        for rtype, seq, segno, off, payload in items:
            if rtype == REC_ASSERT:
                run.append((seq, segno, off, payload))
                continue
            if run:
                self.apply_asserts(run)
                run = []
            self.apply_meta(rtype, seq, payload)
        if run:
            self.apply_asserts(run)

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

    def _bulk_columns(self, first: int, n: int, cols: dict, sources: list) -> None:
        c = self.cols
        if c.n + n > c.cap:
            c._grow(c.n + n)
        sl = slice(c.n, c.n + n)
        for name in Columns.SPEC:
            getattr(c, name)[sl] = cols[name]
        hb = cols["hashes"]
        c.hashes[sl] = hb
        c.n += n
        ords = np.arange(first, first + n, dtype=np.int32)
        for m, keys, vals in ((self.by_hash, np.ascontiguousarray(hb[:, :8]).view("<u8").reshape(n),
                               ords),
                              (self.by_key, cols["key"], ords),
                              (self.by_path, cols["path"].astype(np.int64), ords),
                              (self.by_source, sources[0], sources[1])):
            if len(keys):
                # handed over in order, extend's own stable sort is one linear pass
                o = stable_order(keys)
                m.extend(keys[o], vals[o])

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
