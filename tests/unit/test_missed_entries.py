"""``_query.missed_entries`` (compiled ``Reader._fill``) against its twin, the
pure build's loop in ``reader.Reader._fill``: the same records put in the
same places, the same cache entries (``entry_size``'s sizes), the same
``read_many`` calls, and the same refusals of lists that differ in length;
over records with and without derived_from and a signature, and reads of
none, some and all of a batch."""
from __future__ import annotations

import random

import pytest

from stemedb.core import qfast
from stemedb.core import reader as R
from stemedb.core import readcache as RC

try:
    from stemedb.core import _query  # type: ignore[attr-defined]
except ImportError:         # the pure-only install: nothing compiled to compare
    _query = None

pytestmark = pytest.mark.skipif(_query is None, reason="no compiled build to compare")


class _Rec:
    """What entry_size reads of a record: derived_from and agent_id."""

    def __init__(self, i: int, derived, agent):
        self.i = i
        self.derived_from = derived
        self.agent_id = agent

    def __repr__(self):
        return f"_Rec({self.i})"


def _records(r: random.Random, n: int) -> list:
    return [_Rec(i, r.choice([None, [], [b"x" * 32] * r.randrange(1, 5)]),
                 r.choice([None, "agent-1"])) for i in range(n)]


class _FakeReader:
    """Reader._fill's inputs: a _read_many over a table of records, and a
    cache that keeps what it is given."""

    def __init__(self, table: dict, lengths: dict):
        self.table, self.lengths, self.calls, self.added = table, lengths, [], []
        self.cache = self

    def _read_many(self, locs):
        self.calls.append(list(locs))
        return [(self.table[loc], self.lengths[loc]) for loc in locs]

    def add_records(self, entries):
        self.added.append(entries)


def _run_pure(fake, recs, locs):
    """Reader._fill with the pure build's branch taken."""
    compiled = qfast.COMPILED
    qfast.COMPILED = False
    try:
        R.Reader._fill(fake, recs, locs)
    finally:
        qfast.COMPILED = compiled


def _run_compiled(fake, recs, locs):
    fake.cache.add_records(_query.missed_entries(recs, locs, fake._read_many, RC.RECORD_BASE,
                                                 RC.DERIVED_EXTRA, RC.SIGNED_EXTRA))


@pytest.mark.parametrize("seed", range(40))
def test_the_same_records_entries_and_reads(seed):
    r = random.Random(seed)
    n = r.choice([0, 1, 2, 5, 20, 33])
    recs_all = _records(r, n)
    locs = r.sample(range(10**9), n)
    table = dict(zip(locs, recs_all))
    lengths = {loc: r.randrange(40, 2000) for loc in locs}
    held = [None if r.random() < r.choice([0.0, 0.5, 1.0]) else rec for rec in recs_all]
    outs = []
    for run in (_run_pure, _run_compiled):
        fake = _FakeReader(table, lengths)
        recs = list(held)
        run(fake, recs, locs)
        outs.append((recs, fake.calls, fake.added))
    assert outs[0] == outs[1]
    recs, calls, added = outs[1]
    assert recs == recs_all
    assert [e[2] for e in added[0]] == [RC.entry_size(table[e[0]], lengths[e[0]])
                                        for e in added[0]]


@pytest.mark.parametrize("run", [_run_pure, _run_compiled])
def test_lists_of_different_lengths_are_refused(run):
    rec = _Rec(0, None, None)
    with pytest.raises(ValueError):
        run(_FakeReader({1: rec}, {1: 10}), [None, None], [1])
    fake = _FakeReader({1: rec, 2: rec}, {1: 10, 2: 10})
    fake._read_many = lambda locs: [(rec, 10)]          # one short
    with pytest.raises(ValueError):
        run(fake, [None, None], [1, 2])
    fake._read_many = lambda locs: [(rec, 10)] * 3      # one over
    with pytest.raises(ValueError):
        run(fake, [None, None], [1, 2])


@pytest.mark.parametrize("run", [_run_pure, _run_compiled])
def test_a_read_that_is_not_a_pair_is_refused(run):
    rec = _Rec(0, None, None)
    fake = _FakeReader({1: rec}, {1: 10})
    fake._read_many = lambda locs: [(rec,)]
    with pytest.raises(ValueError):
        run(fake, [None], [1])
    fake._read_many = lambda locs: [(rec, "10")]
    with pytest.raises(TypeError):
        run(fake, [None], [1])


def test_the_reader_uses_it_when_compiled(opener):
    """A store's query that misses records goes through it, and its entries
    are what the cache counts.  (40 candidates: an answer of 16 to 32 holds
    their frame bodies and reads no record entry, readcache.RAW_FROM.)"""
    if not qfast.COMPILED:
        pytest.skip("pure build")
    s = opener()
    for i in range(40):
        s.put({"concept_path": "d/e", "predicate": "p", "value": i, "confidence": 0.5})
    s.reader.cache.clear()
    got = []
    real = qfast.missed_entries
    qfast.missed_entries = lambda *a: got.append(1) or real(*a)
    try:
        out = s.query("d/e", predicate="p", lens="consensus")
    finally:
        qfast.missed_entries = real
    assert got and len(out.assertions) == 40
    assert s.reader.cache.bytes > 0
