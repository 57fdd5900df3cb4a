"""Answers that hold their candidates' frame bodies (readcache.raw_pack, one
bytes object) instead of decoded records: an answer of RAW_FROM..HELD_MAX
candidates ranked over the columns (query.rows_answer) whose every
candidate was shown.  The same answers as without the cache, first pages
(compiled FirstPage / qpure.first_page), shorter pages and later pages
(query._answer_shown over a range), with retractions, in both builds; the
compiled raw_records is its pure twin's, damaged input included; the
answer's size estimate covers what it holds."""
from __future__ import annotations

import random
import struct
import tempfile
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stemedb.core import qfast, qpure
from stemedb.core import query as Q
from stemedb.core import readcache as CACHE
from stemedb.core.lens import LENSES
from tests.unit import test_read_cache as RC
from tests.unit.test_query_first_page import IMPLS, _shape, _slots
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
                   if isinstance(v, CACHE.Answer) and v.held is not None})


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
                 for v in s.reader.cache._d.values() if isinstance(v, CACHE.Answer)}
        assert kinds == {25: "bytes", 5: "list"}


def test_raw_records_is_its_twin(tmp_path):
    with _open(str(tmp_path / "d"), Clock(), audit=False) as s:
        _fill(s, keys=1, n=12)
        got = s.reader.raw_frames(list(range(12)))
        assert got is not None
        raw, seqs = got
        assert CACHE.raw_count(raw) == 12 and seqs == list(range(1, 13))
        want = s.reader.read_records(list(range(12)))
    twins = [qpure.raw_records] + ([_query.raw_records] if _query is not None else [])
    seq_twins = [qpure.raw_seqs] + ([_query.raw_seqs] if _query is not None else [])
    from stemedb.core import fast

    def outcome(fn, *a):
        try:
            return ("ok", fn(*a))
        except Exception as exc:  # noqa: BLE001 - compared as outcomes
            return ("error", type(exc).__name__)
    assert qpure.raw_records(raw, 0, 12, fast.decode_assert, CACHE.BODY_PAYLOAD) == want
    bad = [raw, raw[:3], b"", raw[:40], b"\xff\xff\xff\x7f" + raw[4:], raw[:-7],
           raw[:8] + b"\xff\xff\x00\x00" + raw[12:], bytearray(raw)]
    for blob in bad:
        for lo, hi in [(0, 12), (3, 5), (-2, 100), (5, 2), (0, 0), (11, 12)]:
            outs = [outcome(t, blob, lo, hi, fast.decode_assert, CACHE.BODY_PAYLOAD)
                    for t in twins]
            assert all(o == outs[0] for o in outs), (blob[:12], lo, hi, outs)
            outs = [outcome(t, blob, lo, hi, CACHE.BODY_SEQ) for t in seq_twins]
            assert all(o == outs[0] for o in outs), (blob[:12], lo, hi, outs)
    assert qpure.raw_seqs(raw, 0, 12, CACHE.BODY_SEQ) == seqs


@pytest.mark.parametrize("audit", [False, True])
def test_a_raw_answers_size_estimate_covers_what_it_holds(tmp_path, rows, audit):
    """Each key asked twice: with the audit on, the first query makes the
    answer's audit line end (``tail``), the second keeps its parameters'
    JSON (``ptail``, compiled); both are in what the estimate must cover."""
    with _open(str(tmp_path / "d"), Clock(), audit=audit) as s:
        _fill(s, keys=60, n=20)
        s.reader.cache = CACHE.ReadCache(1 << 40)
        s.query("k0", predicate="r", lens="consensus", limit=100)   # imports, first calls
        s.query("k0", predicate="r", lens="consensus", limit=100)
        if audit:
            s.audit.flush()
        s.reader.cache = cache = CACHE.ReadCache(1 << 40)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for k in range(1, 60):
                for _ in range(2):
                    s.query(f"k{k}", predicate="r", lens="consensus", limit=100)
            if audit:
                s.audit.flush()     # (the queued lines are not the cache's)
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        answers = [v for v in cache._d.values() if isinstance(v, CACHE.Answer)]
        assert len(answers) == 59 and all(type(a.held[0]) is bytes for a in answers)
        # the estimate itself (the bound is charged RAW_CHARGE times it)
        assert all(type(a.held[0]) is bytes for a in answers)
        assert cache.bytes / CACHE.RAW_CHARGE >= used, (cache.bytes / 59, used / 59)
        assert CACHE.RAW_CHARGE >= 1
    if audit and qfast.COMPILED:
        assert all(type(a.tail) is bytes and a.tail and type(a.ptail) is bytes
                   for a in answers)


# ------------------------------------------------ the hit's decode, both twins

class _Held:
    """What a held page reads of an answer, set by hand (damaged on purpose)."""

    def __init__(self, held, ords):
        self.held, self.ords = held, ords


def _page_outcome(fn, *args):
    try:
        got = fn(*args)
    except Exception as exc:  # noqa: BLE001 - compared as outcomes
        return ("error", type(exc).__name__)
    return ("ok", None if got is None else [_slots(a) for a in got])


def _damaged(raw: bytes) -> list[bytes]:
    """``raw`` (raw_pack's, 20 bodies) broken in the ways a blob can be."""
    n = CACHE.raw_count(raw)
    offs = list(struct.unpack_from(f"<{n + 1}I", raw, 4))

    def with_offs(new):
        return raw[:4] + struct.pack(f"<{n + 1}I", *new) + raw[4 + 4 * (n + 1):]
    swapped = offs[:]
    swapped[3], swapped[4] = swapped[4], swapped[3]
    short = offs[:]
    short[6] = short[5] + 40           # body 5 cut to 40 bytes (past its seq)
    tiny = offs[:]
    tiny[6] = tiny[5] + 6              # body 5 cut before its seq ends
    past = offs[:]
    past[-1] += 1                       # the last body's end past the object
    huge_len = bytearray(raw)
    huge_len[offs[2] + CACHE.BODY_PAYLOAD + 72:offs[2] + CACHE.BODY_PAYLOAD + 76] = b"\xff\xff\xff\x0f"
    return [raw[:3], b"", raw[:40], raw[:-7], raw + b"tail bytes",
            struct.pack("<I", n - 1) + raw[4:], struct.pack("<I", n + 1) + raw[4:],
            b"\xff\xff\xff\x7f" + raw[4:], with_offs(swapped), with_offs(short),
            with_offs(tiny), with_offs(past), bytes(huge_len)]


@pytest.mark.skipif(_query is None, reason="the compiled twin is not built")
def test_the_held_page_is_its_twin(tmp_path, rows):
    """FirstPage's hit decode (_page, through held_page) against
    qpure.held_page on the same answers: a raw one, a list one, a raw one
    damaged every way _damaged knows, a retracted candidate, a held object
    of the wrong type."""
    from stemedb.model import Assertion
    fp = _query.first_page(Q._FIRST_ENV).__self__
    with _open(str(tmp_path / "d"), Clock(), audit=False) as s:
        hashes = _fill(s, keys=2, n=20)
        s.put_batch([claim(i, path="small", ts=i) for i in range(5)])
        for key in ("k0", "k1", "small"):
            s.query(key, predicate="r", lens="consensus", limit=100)
        got = {k[0]: v for k, v in s.reader.cache._d.items() if isinstance(v, CACHE.Answer)}
        st_ = s.reader.state
        raw_ans, small = got["k0"], got["small"]
        assert type(raw_ans.held[0]) is bytes and type(small.held[0]) is list

        def both(ans):
            outs = (_page_outcome(fp.held_page, st_, ans),
                    _page_outcome(qpure.held_page, st_, ans, Assertion))
            assert outs[0] == outs[1], outs
            return outs[0]
        ok = both(raw_ans)
        assert ok[0] == "ok" and [a[1] for a in ok[1]] == s.reader.read_records(
            list(raw_ans.ords))
        assert both(small)[0] == "ok"
        raw = raw_ans.held[0]
        kinds = set()
        for blob in _damaged(raw):
            o = both(_Held((blob, None), raw_ans.ords))
            kinds.add(o if o[0] == "error" else ("ok", o[1] is None))
        # refused (ValueError, or the decoder's own error on a cut body) or,
        # for bytes past the last body, the page itself; never "retracted"
        assert ("error", "ValueError") in kinds and ("ok", True) not in kinds, kinds
        # the same bodies under fewer or more candidates than they hold
        ords = raw_ans.ords
        assert both(_Held((raw, None), ords[:19])) == ("error", "ValueError")
        assert both(_Held((raw, None), list(ords) + [ords[0]])) == ("error", "ValueError")
        assert both(_Held((bytearray(raw), None), ords))[0] == "error"
        # a retracted candidate: neither serves the held page
        s.retract(hash=hashes[3], reason="bad")
        assert both(raw_ans) == ("ok", None)


# ------------------------------------------- property: large keys, full pages

# Keys of 16 or more candidates (some over HELD_MAX, after the writes) asked
# with pages that show all of them: raw answers made and served, their later
# pages, retractions and epochs in between; every answer, cached and fresh,
# compared (tests/unit/test_read_cache.py's Run and interleavings).
big_query = st.tuples(
    st.sampled_from(["g", "g", "g/a"]), st.sampled_from([None, "r", "r", "r"]),
    st.booleans(),                                       # include_descendants
    st.sampled_from(sorted(LENSES)),
    st.sampled_from([None, None, None, 0, 6]),           # as_of
    st.sampled_from([None, None, None, 1]),              # known_at
    st.sampled_from([None, None, None, 1]),              # since
    st.sampled_from([None, None, None, "any"]),          # lifecycle
    st.sampled_from([None, None, None, "e0"]),           # epoch
    st.sampled_from([False, False, True]), st.booleans(),   # decay, include_retracted
    st.sampled_from([100, 100, 32, 20, 16, 7]),          # limit: mostly every candidate
    st.integers(0, 3),
).map(lambda q: q[:4] + (None,) * 5 + (False,) + q[10:12] if q[12] else q[:12])
# (three queries in four without a filter or decay: the answers kept)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(14, 34), st.integers(0, 10), st.randoms(use_true_random=False),
       st.lists(big_query, min_size=1, max_size=3), RC.ops, st.booleans(), st.booleans())
def test_cached_large_answers_equal_fresh_ones(n_g, n_ga, rnd, queries, program, audit,
                                               forced):
    if not qfast.COMPILED:
        forced = True       # (pure ranks over the columns from 48 candidates only)
    clock = RC.Clock()
    with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory() as d, \
            RC._open(d, clock, audit=audit) as s:
        if forced:
            mp.setattr(Q, "_rows_pay", lambda candidates, limit, audited: True)
        run = RC.Run(s, clock, queries)
        for path, n in (("g", n_g), ("g/a", n_ga)):
            for i in range(n):
                run.put(path, "r", rnd.randrange(4), rnd.choice([0.2, 0.5, 0.9, 0.123456789]),
                        rnd.randrange(6), rnd.choice(RC.SOURCES), None, None, None,
                        rnd.choice([None, None, None, 0]))
        n = len(s.query("g", predicate="r", lens="consensus", limit=100).assertions)
        made = _held_kinds(s)      # (n: the same claim twice is one candidate)
        if (Q.ROWS_FROM if not forced else CACHE.RAW_FROM) <= n <= CACHE.HELD_MAX:
            assert made == ["bytes"], (made, n, forced, audit)
        run.ask("g", "r", False, "consensus", None, None, None, None, None, False, False, 100)
        for op in program:
            getattr(run, op[0])(*op[1:])
        if audit:
            # every query was asked twice, cached then fresh: their entries agree
            s.audit.flush()
            entries = [{k: v for k, v in e.items() if k != "id"}
                       for e in s.audit_queries(limit=100_000)]
            entries = entries[:-1]      # (newest first: the lone first query's)
            assert len(entries) % 2 == 0 and entries[0::2] == entries[1::2]


def test_a_held_answers_named_candidates_are_the_audits():
    from stemedb.core.qaudit import AUDIT_CONTRIBUTORS
    assert CACHE.TAIL_NAMED == AUDIT_CONTRIBUTORS
