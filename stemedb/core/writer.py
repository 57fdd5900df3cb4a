"""The write path, top to bottom: validate, stamp, frame, enqueue, wait.

A :class:`Writer` owns the short critical section of every write (``_wmu``):
checks against the state (existing hash, references, duplicate epoch, stale
vote), seq and ``recorded_at`` stamping, framing and the enqueue to the WAL.
The fsync happens outside it, through the WAL's group commit; the group is
applied to the state by the store's ``on_durable`` step (``State.apply_group``),
so a writer returns only once its records are durable and visible.
"""
from __future__ import annotations

import threading
from collections import deque
from itertools import accumulate, repeat
from operator import attrgetter
from typing import Callable, cast

import msgspec

from ..errors import StoreClosed, StoreFaulted, UnknownReference, ValidationError
from ..model import AssertionRecord, prepare_batch, prepare_one
from . import fast
from .format import REC_ASSERT
from .metawrites import MetaWrites, RetractResult
from .wal import Request

__all__ = ["PutResult", "RetractResult", "Writer"]


class PutResult(msgspec.Struct, frozen=True, gc=False):
    """What a put answers.  A frozen msgspec Struct, not a dataclass: a batch
    of 1,000 builds 1,000 of them, and a frozen dataclass's ``__init__`` costs
    ~0.9 us against ~0.05.  Serialize it with :meth:`to_dict` (the contract's
    ``hash``/``status``/``seq``); msgspec encoding the Struct itself would
    write ``created`` instead of ``status``."""

    hash: str
    seq: int
    created: bool          # False when the hash was already stored (seq is the stored one)

    @property
    def status(self) -> str:
        return "created" if self.created else "exists"

    def to_dict(self) -> dict:
        return {"hash": self.hash, "status": self.status, "seq": self.seq}


class Writer(MetaWrites):
    """Every write of one open store.  Thread-safe.  The non-assertion
    writes (retract, vote, create_epoch, record_outcome) come from
    :class:`~stemedb.core.metawrites.MetaWrites`."""

    def __init__(self, wal, reader, clock: Callable[[], int]):
        self.wal = wal
        self.reader = reader          # state and its lock, for the checks
        self.clock = clock
        self.closed = False
        self._wmu = threading.Lock()
        self._next_seq = reader.state.last_seq + 1
        self._stamp_us = reader.state.last_recorded_at   # recorded_at never goes back
        self._pending: dict[bytes, tuple[int, Request]] = {}
        # requests whose writers returned: their _pending entries, to drop
        self._settled: deque[tuple[Request, list[AssertionRecord]]] = deque()
        self._vote_pending: dict[tuple, tuple[int, Request]] = {}   # see write_vote
        # Cluster mode (stemedb/cluster): see submit() and apply_replicated().
        self.replicate: Callable[[str, tuple], object] | None = None
        self._replay_at: int | None = None
        self._replay_first = 0
        self._steps: dict | None = None

    def close(self) -> None:
        """Refuse every later write; one in its critical section finishes first.
        The in-flight hashes are forgotten (only a later write reads them), so
        no request, nor the error a failed one holds, outlives the store
        through them."""
        with self._wmu:
            self.closed = True
            self._pending.clear()
            self._settled.clear()
            self._vote_pending.clear()

    def writable(self) -> None:
        if self.closed:
            raise StoreClosed("the store is closed")
        if self.wal.fault:
            raise StoreFaulted(f"writes are stopped after a storage fault: {self.wal.fault}; "
                               f"restart the server to recover from disk")

    def stamp(self, item: int = 0) -> tuple[int, int]:
        """Next seq and a recorded_at that never goes backwards (call under _wmu).

        A replicated write (:meth:`apply_replicated`) takes the seq of its
        stream message instead: item ``i`` of a batch was message ``i`` of
        the stream's atomic batch, so its seq is ``first_seq + i`` on every
        node, and items that already existed leave their seq unused."""
        if self._replay_at is not None:
            seq = self._replay_first + item
            self._next_seq = seq + 1
        else:
            seq = self._next_seq
            self._next_seq += 1
        now = self.clock() if self._replay_at is None else self._replay_at
        rec = max(now, self._stamp_us)
        self._stamp_us = rec
        return seq, rec

    def put(self, assertion: dict, *, require_signatures: bool = False) -> PutResult:
        """Store one assertion; returns after it is durable.  O(1) amortized."""
        rec = prepare_one(assertion, default_time_us=self.clock(),
                          require_signatures=require_signatures)
        if self.replicate is None and self._replay_at is None:
            return self._put_one(rec, False)    # what submit -> put_records does, 4 calls fewer
        return self.submit("assert", [rec], False)[0]

    def put_batch(self, assertions: list[dict], *, require_signatures: bool = False) -> list[PutResult]:
        """Store assertions atomically: after any crash all or none are present.

        A bad item raises ValidationError with field ``assertions[i].<field>``.
        """
        if not isinstance(assertions, (list, tuple)) or not 1 <= len(assertions) <= 10_000:
            raise ValidationError("assertions must be a list of 1 to 10,000 assertions",
                                  field="assertions")
        # one receive time for the batch's untimed claims
        recs = prepare_batch(assertions, default_time_us=self.clock(),
                             require_signatures=require_signatures)
        return self.submit("assert", recs, True)

    # ------------------------------------------------------------ cluster mode
    def submit(self, kind: str, *args):
        """Hand a validated write to its state-dependent part: here, or, in
        cluster mode, through ``replicate(kind, args)`` (stemedb/cluster),
        which publishes it to the stream and returns what this node's
        :meth:`apply_replicated` of it returned (or raises what it raised).
        Validation that needs no state is done before this, once, on the
        node that took the write; everything that reads the state happens in
        the ``write_*`` step, at apply time, the same on every node."""
        if self.replicate is not None:
            return self.replicate(kind, args)
        return self._write_step(kind)(*args)

    def _write_step(self, kind: str):
        steps = self._steps
        if steps is None:       # bound once: a dict of bound methods per write costs ~0.5 us
            steps = self._steps = {"assert": self.put_records, "retract": self.write_retract,
                                   "vote": self.write_vote, "epoch": self.write_epoch,
                                   "outcome": self.write_outcome}
        return steps[kind]

    def apply_replicated(self, kind: str, args: tuple, first_seq: int, at_us: int):
        """Apply one replicated write (one stream message, or the messages of
        one atomic batch) with deterministic stamps.

        The same ``write_*`` step as a local write (checks, stamping, framing,
        the WAL, ``State.apply_group``), except that the seq of item ``i`` is
        ``first_seq + i`` (the stream sequence of its message) and
        ``recorded_at`` is ``max(at_us, the last recorded_at)``: both come
        from the stream and the state, so every node writes the same records.  Returns the step's result; a refusal
        (409, 400, 404) raises as it would locally and writes nothing.
        Call from one thread (the cluster node's applier), never beside
        local writes.
        """
        with self._wmu:
            if first_seq < self._next_seq:
                raise StoreFaulted(f"replicated seq {first_seq} is not after the last seq "
                                   f"{self._next_seq - 1}: the local log disagrees with the stream")
            self._next_seq = first_seq
            self._replay_first = first_seq
            self._replay_at = at_us
        try:
            return self._write_step(kind)(*args)
        finally:
            self._replay_at = None

    def put_records(self, recs: list[AssertionRecord], batch: bool) -> list[PutResult]:
        """The state-dependent part of a put: dedupe, references, stamps, the WAL.

        Under ``_wmu`` only what must be there: one vectorized lookup of the
        batch's hashes, the per-record dedupe and reference checks (skipped
        for a record that names no parent, source assertion or epoch),
        stamping, one compiled framing call and the enqueue.  Results are
        built after the lock is released.  One local record takes
        :meth:`_put_one`, the same steps without the batch's lists.
        """
        if len(recs) == 1 and self._replay_at is None:
            return [self._put_one(recs[0], batch)]
        return self._put_many(recs, batch)

    def _put_many(self, recs: list[AssertionRecord], batch: bool) -> list[PutResult]:
        """:meth:`put_records` of a batch, or of a replicated write."""
        n = len(recs)
        results: list[PutResult | None] = [None] * n
        waits: list[Request] = []
        new: list[int] = []            # indexes into recs of the records written
        written: list[AssertionRecord] = []
        seqs: list[int] = []
        with self._wmu:
            self.writable()
            if self._settled:
                self._drop_settled()
            st = self.reader.state
            pending = self._pending
            fresh: dict[bytes, int] = {}
            mark = (self._next_seq, self._stamp_us)
            replay = self._replay_at is not None
            stamp = 0
            if not replay:
                # one recorded_at for the batch: its records become durable and
                # visible together; never before the last one (stamp() reads
                # the same clock, per call)
                stamp = self.clock()
                if stamp < self._stamp_us:
                    stamp = self._stamp_us
            try:
                with self.reader.lock:
                    hashes = list(map(_hash_of, recs))
                    stored = st.ordinals(hashes)
                    if (not replay and n > 1 and stored.count(None) == n
                            and (not pending or pending.keys().isdisjoint(hashes))
                            and len(set(hashes)) == n
                            and fast.no_refs(recs if type(recs) is list else list(recs))):
                        # every record is new, none twice, none names another:
                        # what the per-record loop (else) does, per batch in C-level maps
                        first = self._next_seq
                        self._next_seq = first + n
                        self._stamp_us = stamp
                        seqs = list(range(first, first + n))
                        written = recs
                        new = list(range(n))
                    else:
                        for i in range(n):
                            r = recs[i]
                            h = r.hash
                            o = stored[i]
                            if o is not None:
                                results[i] = PutResult(h.hex(), int(st.cols.seq[o]), False)
                                continue
                            if pending:
                                pend = pending.get(h)
                                if pend is not None and pend[1].error is None:
                                    results[i] = PutResult(h.hex(), pend[0], False)
                                    waits.append(pend[1])
                                    continue
                            if h in fresh:
                                results[i] = PutResult(h.hex(), fresh[h], False)
                                continue
                            if r.parent_hash is not None or r.derived_from is not None \
                                    or r.epoch is not None:
                                self.check_refs(r, fresh, i if batch else None)
                            if replay:
                                seq, stamp = self.stamp(i)
                            else:           # stamp(), inline, with the batch's one clock reading
                                seq = self._next_seq
                                self._next_seq = seq + 1
                                self._stamp_us = stamp
                            fresh[h] = seq
                            new.append(i)
                            written.append(r)
                            seqs.append(seq)
            except BaseException:
                # a refused batch (an unknown reference in item i) writes nothing,
                # so the seqs given to items before i must not be used up
                self._next_seq, self._stamp_us = mark
                raise
            if new:
                # framed with the batch's one recorded_at (every record of a
                # batch, replicated ones too, gets the same stamp: stamp()
                # repeats it), so no record is copied to carry it
                data, sizes = fast.encode_assert_frames(written, seqs, stamp)
                # the state reads an assertion from its frame (records.group_frames)
                req = Request(data, sizes, None, (list(accumulate(sizes[:-1], initial=0)),
                                                  [REC_ASSERT] * len(seqs), seqs))
                self.wal.enqueue(req)
                fast.pending_add(pending, written, seqs, req)
        try:
            if new:
                self.wal.wait(req)
                if len(new) == len(results):    # every record was new
                    results = list(map(PutResult, map(bytes.hex, hashes), seqs, repeat(True)))
                else:
                    for i, r, seq in zip(new, written, seqs):
                        results[i] = PutResult(r.hash.hex(), seq, True)
            for w in waits:
                self.wal.wait(w)
        finally:
            if new:
                if req.done and req.error is None:
                    # durable and applied: its _pending entries are still its
                    # own (see _put_one), so they go now, in one C-level pass
                    # over the hashes at hand, without _wmu (with 8 writers
                    # that lock is contended; each pop is atomic under the GIL)
                    deque(map(pending.pop, hashes if written is recs else
                              map(_hash_of, written), repeat(None)), maxlen=0)
                else:
                    self._unfinished(req, written)
        return cast("list[PutResult]", results)     # every slot was filled above

    def _put_one(self, r: AssertionRecord, batch: bool) -> PutResult:
        """:meth:`put_records` of one local record (a put, or a batch of one):
        the same checks in the same order (stored, then queued by another
        put, then references), stamps and frames, without the batch's lists.
        A put is one record per fsync when it writes alone (W1), so these
        lines are much of a put's CPU beside the apply and the fsync: with
        this path (and BLAKE3 in C) a put's CPU without the fsync went from
        41.4 to 29.8 us (bench/results/write-path-2026-11-26-session4.md)."""
        h = r.hash
        with self._wmu:
            if self.closed or self.wal.fault:
                self.writable()
            if self._settled:
                self._drop_settled()
            pending = self._pending
            with self.reader.lock:
                st = self.reader.state
                m = st.by_hash
                try:        # State.ordinal's compiled path, without its frame
                    o = _find_hash(m.keys, m.vals, m.recent, st.cols.hashes, h)
                except ValueError:
                    o = st.ordinal(h)
                if o is not None:
                    return PutResult(h.hex(), int(st.cols.seq[o]), False)
                pend = pending.get(h) if pending else None
                if pend is None or pend[1].error is not None:
                    pend = None
                    if r.parent_hash is not None or r.derived_from is not None \
                            or r.epoch is not None:
                        self.check_refs(r, {}, 0 if batch else None)
            if pend is None:
                stamp = self.clock()
                if stamp < self._stamp_us:
                    stamp = self._stamp_us      # recorded_at never goes back
                seq = self._next_seq
                data, sizes = fast.encode_assert_frames([r], [seq], stamp)
                req = Request(data, sizes, None, (_OFF0, _ASSERT1, [seq]))
                self.wal.enqueue(req)       # raises once the log is faulted: no seq used
                self._next_seq = seq + 1
                self._stamp_us = stamp
                pending[h] = (seq, req)
        if pend is not None:        # another put queued this hash: its outcome is ours
            self.wal.wait(pend[1])
            return PutResult(h.hex(), pend[0], False)
        ok = False
        try:
            self.wal.wait(req)
            ok = True
        finally:
            if ok:
                # Durable and applied: the entry is still this request's (while
                # it stood without an error no write registered the hash, and
                # now the state has it), so it goes here, without _wmu: one
                # dict operation, atomic under the GIL, against the lock and
                # _drop_settled's call at the next write.  Gone already if
                # close() cleared the dict.
                pending.pop(h, None)
            else:
                self._unfinished(req, [r])
        return PutResult(h.hex(), seq, True)

    def _drop_settled(self) -> None:
        """Remove the _pending entries of settled requests (call under _wmu).

        A request that succeeded still owns all its entries (while an entry
        stands without an error no other write registers its hash, and once
        applied the hash is found stored), so they go in one C-level pass; a
        failed one's are removed only where still its own."""
        settled, pending = self._settled, self._pending
        while settled:
            req, recs = settled.popleft()
            if req.done and req.error is None:
                if len(recs) == 1:          # a put's: no iterator set-up
                    pending.pop(recs[0].hash, None)
                else:
                    deque(map(pending.pop, map(_hash_of, recs), repeat(None)), maxlen=0)
                continue
            self._drop_failed(req, recs)

    def _unfinished(self, req: Request, recs: list[AssertionRecord]) -> None:
        """The _pending entries of a request whose wait did not return:
        failed, they go now, not at a next write a faulted log refuses (the
        compiled pending_add's tuples are not tracked by the GC, and the
        error's traceback reaches this writer through its frames, so a cycle
        through one of them would never be collected); interrupted while
        queued, the next write's critical section drops them once settled
        (_drop_settled)."""
        if req.done:
            with self._wmu:
                self._drop_failed(req, recs)
        else:
            self._settled.append((req, recs))

    def _drop_failed(self, req: Request, recs: list[AssertionRecord]) -> None:
        """Remove the _pending entries of a failed request where they are
        still its own (call under _wmu)."""
        pending = self._pending
        for r in recs:
            e = pending.get(r.hash)
            if e is not None and e[1] is req:
                del pending[r.hash]

    def check_refs(self, r: AssertionRecord, fresh: dict, index: int | None) -> None:
        def exists(h: bytes) -> bool:
            return (h in fresh or self.reader.state.ordinal(h) is not None
                    or (h in self._pending and self._pending[h][1].error is None))

        def fail(field: str, msg: str):
            err = UnknownReference(msg, field=field)
            raise err.prefixed(f"assertions[{index}]") if index is not None else err

        if r.parent_hash is not None and not exists(r.parent_hash):
            fail("parent_hash", f"parent_hash {r.parent_hash.hex()} names no stored assertion")
        if r.derived_from is not None:
            for j, h in enumerate(r.derived_from):
                if not exists(h):
                    fail(f"derived_from[{j}]", f"derived_from[{j}] {h.hex()} names no stored assertion")
        if r.epoch is not None and r.epoch not in self.reader.state.epochs:
            fail("epoch", f"epoch {r.epoch!r} does not exist; create it with POST /v1/epoch first")


# a single put's frame offsets and types (Request.frames): read, never changed
_OFF0 = (0,)
_ASSERT1 = (REC_ASSERT,)
_hash_of = attrgetter("hash")
# State.ordinal's lookup (its pure twin raises ValueError where it declines,
# as the compiled one does, and State.ordinal then takes its general path)
_find_hash = fast.find_hash


