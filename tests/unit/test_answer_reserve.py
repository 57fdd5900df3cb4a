"""Materialized answers hold their share of the read cache against records'
churn (stemedb/core/readcache.py, ANSWER_RESERVE): a working set of records
above the bound no longer cycles every answer out, the bound still holds,
and answers beyond the reserve are evicted as before."""
from __future__ import annotations

from stemedb import open_store
from stemedb.core import readcache as RC
from tests.conftest import NoFsyncFS


def _claim(i, path):
    return {"concept_path": path, "predicate": "r", "value": i, "confidence": 0.5,
            "source": "fda://x", "timestamp": 1_700_000_000 + i}


def _sizes(cache):
    answers = sum(v.size for v in cache._d.values() if isinstance(v, RC.Answer))
    return cache.bytes == sum(RC._size(v) for v in cache._d.values()), answers


def test_answers_survive_records_churn_within_the_reserve(tmp_path):
    with open_store(str(tmp_path / "d"), fs=NoFsyncFS(), durability="none", audit=False,
                    read_cache_bytes=200_000) as s:
        s.put_batch([_claim(i, f"p{i % 5}") for i in range(5)])
        s.put_batch([_claim(i, f"big{i % 50}") for i in range(5, 3005)])
        cache = s.reader.cache
        want = {p: s.query(f"p{p}", predicate="r").to_dict() for p in range(5)}
        # records enough to fill the cache many times over
        for _ in range(3):
            s.reader.read_records(list(range(5, 3005)))
        exact, answers = _sizes(cache)
        assert exact and cache.bytes <= cache.max_bytes
        assert answers == cache.answer_bytes > 0
        hits = cache.answer_hits
        for p in range(5):
            assert s.query(f"p{p}", predicate="r").to_dict() == want[p]
        assert cache.answer_hits == hits + 5


def test_answers_beyond_the_reserve_are_evicted_and_the_bound_holds(tmp_path):
    with open_store(str(tmp_path / "d"), fs=NoFsyncFS(), durability="none", audit=False,
                    read_cache_bytes=60_000) as s:
        s.put_batch([_claim(i, f"p{i}") for i in range(400)])
        cache = s.reader.cache
        for i in range(400):
            s.query(f"p{i}", predicate="r")
            exact, answers = _sizes(cache)
            assert exact and cache.bytes <= cache.max_bytes
            assert answers == cache.answer_bytes
        # more answers were made than the whole cache holds: most are gone,
        # and records were not all squeezed out below the reserve's share
        assert 0 < cache.answer_bytes
        assert sum(isinstance(v, RC.Answer) for v in cache._d.values()) < 400
        cache.clear()
        assert cache.bytes == cache.answer_bytes == 0


def test_without_the_reserve_records_churn_evicts_answers(tmp_path, monkeypatch):
    """The first test's counterpart: with no reserve the answers are cycled out
    (so that test checks what the reserve does)."""
    monkeypatch.setattr(RC, "ANSWER_RESERVE", 10 ** 9)
    with open_store(str(tmp_path / "d"), fs=NoFsyncFS(), durability="none", audit=False,
                    read_cache_bytes=200_000) as s:
        s.put_batch([_claim(i, f"p{i % 5}") for i in range(5)])
        s.put_batch([_claim(i, f"big{i % 50}") for i in range(5, 3005)])
        cache = s.reader.cache
        for p in range(5):
            s.query(f"p{p}", predicate="r")
        for _ in range(3):
            s.reader.read_records(list(range(5, 3005)))
        assert cache.answer_bytes == 0
