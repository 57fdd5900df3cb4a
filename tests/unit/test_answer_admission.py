"""Answers that thrash (readcache.ANSWER_WINDOW): a cycle of keys whose
answers do not all fit the read cache, the shape of bench_http's query
clients, is LRU's worst case (every answer evicted before its key comes
round again); the cache then keeps one new answer in ADMIT_EVERY, which
live through several cycles and are hit.  Admission decides only whether
an answer is kept: every answer, kept or not, equals a fresh computation.
A working set that fits keeps every answer.  Also: ``qfast.held_size``
(compiled ``_query.held_size``) against readcache.record_size."""
from __future__ import annotations

import random

import pytest

from stemedb import open_store
from stemedb.core import readcache as RC
from stemedb.model import AssertionRecord
from tests.conftest import NoFsyncFS

try:
    from stemedb.core import _query  # type: ignore[attr-defined]
except ImportError:         # the pure-only install: nothing compiled to hold
    _query = None

T0 = 1_709_294_400


def _store(path, cache_bytes):
    return open_store(path, fs=NoFsyncFS(), durability="none", audit=False,
                      read_cache_bytes=cache_bytes, clock=lambda: (T0 + 86400) * 1_000_000)


def _fill(s, keys, per=8):
    s.put_batch([{"concept_path": f"k/{i % keys}", "predicate": "r", "value": i,
                  "confidence": round(0.1 + 0.8 * ((i * 37) % 100) / 100, 2),
                  "source": "fda://x" if i % 3 else "forum://y", "timestamp": T0 + i}
                 for i in range(keys * per)])


def _fresh(s, path):
    saved, s.reader.cache = s.reader.cache, None
    try:
        return s.query(path, predicate="r", lens="consensus").to_dict()
    finally:
        s.reader.cache = saved


def test_a_cycle_larger_than_the_cache_is_hit_once_answers_are_admitted_sparingly(tmp_path):
    keys = 200
    with _store(str(tmp_path / "d"), 1_000_000) as s:
        _fill(s, keys)
        cache = s.reader.cache
        order = [f"k/{(i * 7) % keys}" for i in range(keys)]    # one fixed cycle
        hits = []
        for _cycle in range(12):
            h0 = cache.answer_hits
            for p in order:
                got = s.query(p, predicate="r", lens="consensus").to_dict()
                assert got == _fresh(s, p)
            hits.append(cache.answer_hits - h0)
        assert cache.answer_thrashing
        # plain LRU over a cycle longer than what fits: no hit at all
        assert hits[0] == 0 and sum(hits[-4:]) > 4 * keys // 10, hits
        assert cache.bytes <= 1_000_000


def test_a_working_set_that_fits_keeps_every_answer(tmp_path):
    with _store(str(tmp_path / "d"), 8_000_000) as s:
        _fill(s, 50)
        cache = s.reader.cache
        for _cycle in range(30):
            for i in range(50):
                s.query(f"k/{(i * 7) % 50}", predicate="r", lens="consensus")
        assert not cache.answer_thrashing
        assert cache.answer_misses == 50 and cache.answers_evicted == 0


def test_the_verdict_turns_off_when_lookups_hit_again(tmp_path):
    with _store(str(tmp_path / "d"), 1_000_000) as s:
        _fill(s, 200)
        cache = s.reader.cache
        for _cycle in range(4):
            for i in range(200):
                s.query(f"k/{(i * 7) % 200}", predicate="r", lens="consensus")
        assert cache.answer_thrashing
        for _ in range(RC.ANSWER_WINDOW * 3 // 4):       # a few keys, asked again and again
            for i in range(4):
                s.query(f"k/{i}", predicate="r", lens="consensus")
        assert cache.answer_thrashing       # judged when an answer is to be kept:
        s.query("k/5", predicate="r", lens="recency")     # a miss
        assert not cache.answer_thrashing


def _records(n, seed=1):
    r = random.Random(seed)
    out = []
    for i in range(n):
        out.append(AssertionRecord(
            hash=bytes([i % 256]) * 32, recorded_at=i, timestamp=i, confidence=0.5,
            source_class=i % 6, lifecycle=0, concept_path="p/" + "é" * r.randrange(0, 9),
            predicate="r" * r.randrange(1, 5), value_json=b"1" * r.randrange(1, 300),
            source=None if r.random() < 0.3 else "fda://" + "x" * r.randrange(0, 20),
            epoch=None if r.random() < 0.7 else "e" * r.randrange(1, 5),
            parent_hash=None if r.random() < 0.7 else b"\1" * 32,
            derived_from=None if r.random() < 0.6 else [b"\2" * 32] * r.randrange(0, 4),
            agent_id=None if r.random() < 0.8 else b"\3" * 32,
            signature=None))
    return out


# _query.held_size's twin is what the pure build runs in its place (Answer):
# the sum of readcache.record_size over the held records
needs_compiled = pytest.mark.skipif(_query is None, reason="needs the compiled _query module")


@needs_compiled
@pytest.mark.parametrize("n", [0, 1, 20, 33])
def test_held_size_is_record_sizes_sum(n):
    recs = _records(n, seed=n)
    want = sum(RC.HELD_BYTES + RC.record_size(rec) for rec in recs)
    assert _query.held_size(recs, RC.HELD_BYTES, RC.RECORD_OVERHEAD) == want


@needs_compiled
@pytest.mark.parametrize("bad,exc", [(None, TypeError), ((), TypeError), ([object()], AttributeError)])
def test_held_size_refuses_what_is_not_a_list_of_records(bad, exc):
    with pytest.raises(exc):
        _query.held_size(bad, RC.HELD_BYTES, RC.RECORD_OVERHEAD)
