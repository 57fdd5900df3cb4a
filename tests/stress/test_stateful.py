"""A Hypothesis state machine: random puts, batches (some invalid), retractions
(with and without cascade), epochs, snapshots, clean reopens, power cuts
between and in the middle of operations (CrashFS), against a plain Python
model.  After every step the store's check() is clean and every assertion the
model holds reads back with its seq and status."""
from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from stemedb.errors import Conflict, StoreFaulted, ValidationError
from tests.conftest import body
from tests.stress.crashfs import CrashFS
from tests.stress.harness import crash, hash_of, open_on

SEG = 4096
PATHS = [f"drugs/d{k}/risk" for k in range(7)]
_BASE = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


class Model:
    """What the store must hold: hash -> seq, path, parents, retracted."""

    def __init__(self):
        self.seq: dict[str, int] = {}
        self.path: dict[str, str] = {}
        self.parents: dict[str, list[str]] = {}
        self.retracted: set[str] = set()
        self.epochs: set[str] = set()
        self.last_seq = 0

    def dependents_closure(self, seeds: set[str]) -> set[str]:
        out, todo = set(seeds), list(seeds)
        while todo:
            h = todo.pop()
            for d, ps in self.parents.items():
                if h in ps and d not in out:
                    out.add(d)
                    todo.append(d)
        return out


class StoreMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="stemedb-stateful-", dir=_BASE)
        self.root = os.path.join(self.tmp, "data")
        self.gen = 0
        self.model = Model()
        self.fresh = 10_000
        self._open()

    def _open(self):
        self.gen += 1
        self.fs = CrashFS(self.root, seed=self.gen)
        self.store = open_on(self.fs, segment_size=SEG)

    def teardown(self):
        try:
            self.store.close()
        finally:
            self.fs.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------ bodies
    def _body(self, i: int, ref: int | None, derived: bool) -> dict:
        b = body(i)
        if ref is not None and self.model.seq:
            hs = sorted(self.model.seq)
            target = hs[ref % len(hs)]
            b = body(i, **({"derived_from": [target]} if derived else {"parent_hash": target}))
        return b

    def _expect_put(self, b: dict, res, pending: dict) -> None:
        h = hash_of(b)
        assert res.hash == h
        if h in self.model.seq or h in pending:
            assert not res.created, "a stored hash is reported as existing"
            assert res.seq == self.model.seq.get(h, pending.get(h)), "with its stored seq"
        else:
            assert res.created and res.seq == self.model.last_seq + 1 + len(
                [x for x in pending.values() if x is not None]), "seqs are consecutive"
            pending[h] = res.seq

    def _commit(self, bodies: list[dict], pending: dict) -> None:
        for b in bodies:
            h = hash_of(b)
            if h in pending and h not in self.model.seq:
                self.model.seq[h] = pending[h]
                self.model.path[h] = b["concept_path"]
                self.model.parents[h] = ([b["parent_hash"]] if "parent_hash" in b else []) + \
                    list(b.get("derived_from", []))
                self.model.last_seq = max(self.model.last_seq, pending[h])

    # ------------------------------------------------------------ rules
    @rule(i=st.integers(0, 30), ref=st.none() | st.integers(0, 1000), derived=st.booleans())
    def put(self, i, ref, derived):
        b = self._body(i, ref, derived)
        pending = {}
        self._expect_put(b, self.store.put(b), pending)
        self._commit([b], pending)

    @rule(items=st.lists(st.tuples(st.integers(0, 40), st.none() | st.integers(0, 1000),
                                   st.booleans()), min_size=1, max_size=8),
          bad=st.none() | st.integers(0, 7))
    def put_batch(self, items, bad):
        bodies = [self._body(i, ref, d) for i, ref, d in items]
        if bad is not None and bad < len(bodies):
            bodies[bad] = dict(bodies[bad], confidence=1.5)
            try:
                self.store.put_batch(bodies)
            except ValidationError as e:
                assert e.field == f"assertions[{bad}].confidence"
                return
            raise AssertionError("a batch with a bad item must be refused")
        res = self.store.put_batch(bodies)
        pending = {}
        for b, r in zip(bodies, res):
            self._expect_put(b, r, pending)
        self._commit(bodies, pending)

    @precondition(lambda self: self.model.seq)
    @rule(k=st.integers(0, 1000), cascade=st.booleans())
    def retract_hash(self, k, cascade):
        h = sorted(self.model.seq)[k % len(self.model.seq)]
        reach = self.model.dependents_closure({h}) if cascade else {h}
        newly = reach - self.model.retracted
        r = self.store.retract(hash=h, reason="stateful", cascade=cascade)
        assert r.retracted == len(newly) and set(r.hashes) == newly, \
            "a retraction reports exactly the assertions it newly retracts"
        assert r.seq == self.model.last_seq + 1
        self.model.last_seq = r.seq
        self.model.retracted |= newly

    @rule(p=st.sampled_from(PATHS))
    def retract_path(self, p):
        newly = {h for h, q in self.model.path.items() if q == p} - self.model.retracted
        r = self.store.retract(concept_path=p, reason="stateful")
        assert set(r.hashes) == newly
        self.model.last_seq = r.seq
        self.model.retracted |= newly

    @rule(name=st.sampled_from(["e1", "e2", "e3"]))
    def epoch(self, name):
        if name in self.model.epochs:
            try:
                self.store.create_epoch(name)
            except Conflict:
                return
            raise AssertionError("an existing epoch name must be refused")
        self.model.last_seq = self.store.create_epoch(name)
        self.model.epochs.add(name)

    @rule()
    def snapshot(self):
        self.store.snapshot()

    @rule()
    def reopen(self):
        self.store.close()
        self.fs.close()
        self._open()

    @rule(keep=st.booleans())
    def power_cut(self, keep):
        crash(self.store, self.fs, keep_unsynced=keep)
        self._open()

    @rule(n=st.integers(1, 6), size=st.integers(1, 6), keep=st.booleans())
    def power_cut_inside_a_batch(self, n, size, keep):
        """The n-th file operation of a batch put is the crash point."""
        bodies = []
        for _ in range(size):
            self.fresh += 1
            bodies.append(body(self.fresh, value="x" * 120))
        self.fs.crash_after = self.fs.ops + n
        acked = None
        try:
            acked = self.store.put_batch(bodies)
        except (OSError, StoreFaulted):
            pass
        crash(self.store, self.fs, keep_unsynced=keep)
        self._open()
        got = [self.store.get(hash_of(b)) for b in bodies]
        assert all(got) or not any(got), "a batch comes back whole or not at all"
        if acked is not None:
            assert all(got), "an acknowledged batch survives a power cut"
        if all(got):
            self._commit(bodies, {hash_of(b): a.seq for b, a in zip(bodies, got)})

    @rule(n=st.integers(1, 14), keep=st.booleans())
    def power_cut_inside_a_snapshot(self, n, keep):
        self.fs.crash_after = self.fs.ops + n
        try:
            self.store.snapshot()
        except OSError:
            pass
        crash(self.store, self.fs, keep_unsynced=keep)
        self._open()

    # ------------------------------------------------------------ invariants
    @invariant()
    def agrees_with_the_model(self):
        s = self.store
        assert s.check() == [], "the store's own check finds nothing"
        assert s.count == len(self.model.seq), "count is every stored assertion"
        assert s.last_seq == self.model.last_seq
        for h, seq in self.model.seq.items():
            a = s.get(h)
            assert a is not None and a.seq == seq, "every stored assertion reads back"
            want = "retracted" if h in self.model.retracted else "active"
            assert a.status == want, "retraction state survives reopen and crash"
        assert set(s.state.epochs) == self.model.epochs


TestStore = StoreMachine.TestCase
TestStore.settings = settings(max_examples=100, stateful_step_count=50, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
