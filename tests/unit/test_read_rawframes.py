"""Answers that hold their candidates' frame bodies (reader.raw_pack, one
bytes object) instead of decoded records: an answer of RAW_FROM..HELD_MAX
candidates ranked over the columns (query.rows_answer) whose every
candidate was shown.  The same answers as without the cache, first pages
(compiled FirstPage / qpure.first_page), shorter pages and later pages
(query._answer_shown over a range), with retractions, in both builds; the
compiled raw_records is its pure twin's, damaged input included; the
answer's size estimate covers what it holds."""
from __future__ import annotations

import random
import tracemalloc

import pytest

from stemedb.core import qfast, qpure
from stemedb.core import query as Q
from stemedb.core import reader as R
from stemedb.core.lens import LENSES
from tests.unit.test_query_first_page import IMPLS, _shape
from tests.unit.test_query_fastpath import set_first
from tests.unit.test_read_cache import Clock, _open, claim

try:
    from stemedb.core import _query  # type: ignore[attr-defined]
except ImportError:     # a pure-Python build: only the pure twin
    _query = None


@pytest.fixture
def rows(monkeypatch):
    """Every key ranked over the columns (the pure build's threshold is 48
    candidates and twice the page: raw answers are made there only so)."""
    monkeypatch.setattr(Q, "_rows_pay", lambda candidates, limit, audited: True)


def _fill(s, keys=3, n=20, seed=0):
    r = random.Random(seed)
    hashes = []
    for k in range(keys):
        for i in range(n):
            hashes.append(s.put(claim(
                r.choice([i % 5, "x" * r.randrange(1, 40), {"k": i % 3}]), path=f"k{k}",
                conf=r.choice([0.2, 0.5, 0.9]), ts=r.randrange(10**6),
                source=r.choice([None, "fda://x", "blog://y", "pubmed://1"]))).hash)
    return hashes


def _pages(s, path, **kw):
    res = s.query(path, **kw)
    out = [_shape(res)]
    while res.next_cursor and len(out) < 6:
        res = s.query(path, cursor=res.next_cursor, **kw)
        out.append(_shape(res))
    return out


QUERIES = [dict(predicate="r", lens=lens, limit=limit)
           for lens in sorted(LENSES) for limit in (100, 100, 5, 20, 7)] + \
    [dict(predicate="r", lens="consensus", limit=100, include_retracted=True)]


def _held_kinds(s):
    return sorted({type(v.held[0]).__name__ for v in s.reader.cache._d.values()
                   if isinstance(v, R.Answer) and v.held is not None})


@pytest.mark.parametrize("impl", [n for n, _ in IMPLS])
@pytest.mark.parametrize("audit", [False, True])
def test_raw_answers_answer_as_fresh_ones(tmp_path, monkeypatch, rows, impl, audit):
    clock = Clock()
    with _open(str(tmp_path / "d"), clock, audit=audit) as s:
        hashes = _fill(s)
        s.retract(hash=hashes[23], reason="bad")       # one of k1's candidates
        set_first(monkeypatch, dict(IMPLS)[impl])
        cached = [_pages(s, f"k{k}", **kw) for _ in range(2) for k in range(3) for kw in QUERIES]
        assert "bytes" in _held_kinds(s), "raw answers were made"
        assert s.reader.cache.answer_hits > 0
        saved, s.reader.cache = s.reader.cache, None
        try:
            fresh = [_pages(s, f"k{k}", **kw) for _ in range(2) for k in range(3)
                     for kw in QUERIES]
        finally:
            s.reader.cache = saved
        assert cached == fresh
        if audit:
            s.audit.flush()
            entries = [{k: v for k, v in e.items() if k != "id"}
                       for e in s.audit_queries(limit=100_000)]
            assert len(entries) % 2 == 0
            half = len(entries) // 2
            assert entries[:half] == entries[half:]


def test_compiled_builds_raw_answers_by_default(tmp_path):
    """Compiled, a 20-candidate key goes over the columns (ROWS_FROM) and
    its answer holds raw frames; a 5-candidate key keeps decoded records."""
    if not qfast.COMPILED:
        pytest.skip("the pure build makes raw answers only over the columns (see rows)")
    with _open(str(tmp_path / "d"), Clock(), audit=False) as s:
        _fill(s, keys=1, n=20)
        _fill(s, keys=1, n=5, seed=1)      # k0 again: 25 candidates
        s.put_batch([claim(i, path="small", ts=i) for i in range(5)])
        s.query("k0", predicate="r", lens="consensus", limit=100)
        s.query("small", predicate="r", lens="consensus", limit=100)
        kinds = {v.ords.tolist().__len__(): type(v.held[0]).__name__
                 for v in s.reader.cache._d.values() if isinstance(v, R.Answer)}
        assert kinds == {25: "bytes", 5: "list"}


def test_raw_records_is_its_twin(tmp_path):
    with _open(str(tmp_path / "d"), Clock(), audit=False) as s:
        _fill(s, keys=1, n=12)
        got = s.reader.raw_frames(list(range(12)))
        assert got is not None
        raw, seqs = got
        assert R.raw_count(raw) == 12 and seqs == list(range(1, 13))
        want = s.reader.read_records(list(range(12)))
    twins = [qpure.raw_records] + ([_query.raw_records] if _query is not None else [])
    seq_twins = [qpure.raw_seqs] + ([_query.raw_seqs] if _query is not None else [])
    from stemedb.core import fast

    def outcome(fn, *a):
        try:
            return ("ok", fn(*a))
        except Exception as exc:  # noqa: BLE001 - compared as outcomes
            return ("error", type(exc).__name__)
    assert qpure.raw_records(raw, 0, 12, fast.decode_assert, R.BODY_PAYLOAD) == want
    bad = [raw, raw[:3], b"", raw[:40], b"\xff\xff\xff\x7f" + raw[4:], raw[:-7],
           raw[:8] + b"\xff\xff\x00\x00" + raw[12:], bytearray(raw)]
    for blob in bad:
        for lo, hi in [(0, 12), (3, 5), (-2, 100), (5, 2), (0, 0), (11, 12)]:
            outs = [outcome(t, blob, lo, hi, fast.decode_assert, R.BODY_PAYLOAD)
                    for t in twins]
            assert all(o == outs[0] for o in outs), (blob[:12], lo, hi, outs)
            outs = [outcome(t, blob, lo, hi, R.BODY_SEQ) for t in seq_twins]
            assert all(o == outs[0] for o in outs), (blob[:12], lo, hi, outs)
    assert qpure.raw_seqs(raw, 0, 12, R.BODY_SEQ) == seqs


def test_a_raw_answers_size_estimate_covers_what_it_holds(tmp_path, rows):
    with _open(str(tmp_path / "d"), Clock(), audit=False) as s:
        _fill(s, keys=60, n=20)
        s.reader.cache = R.ReadCache(1 << 40)
        s.query("k0", predicate="r", lens="consensus", limit=100)   # imports, first calls
        s.reader.cache = cache = R.ReadCache(1 << 40)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for k in range(1, 60):
                s.query(f"k{k}", predicate="r", lens="consensus", limit=100)
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        answers = [v for v in cache._d.values() if isinstance(v, R.Answer)]
        assert len(answers) == 59 and all(type(a.held[0]) is bytes for a in answers)
        assert cache.bytes >= used, (cache.bytes / 59, used / 59)
