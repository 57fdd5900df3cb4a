"""The query path's compiled loops and its lens-over-rows path give the
reference's answers.

* ``_query.filter_ords`` against its pure twin ``qpure.filter_ords`` (both of
  the twin's branches: the loop below ``SMALL`` candidates, numpy above),
  on generated columns, bounds and tables, damaged ones included (an
  ordinal outside the columns, an id outside its table, a bound beyond
  int64): the same ordinals, or the same exception type.
* ``lens.record_rows`` (rows from records, an ordinal in the last slot)
  against ``lens._rows`` (rows from Assertions): the same numbers.
* ``query.rows_answer``, which ``run_query`` uses for the lenses that read
  only rows, against the Assertion path (``resolve_groups`` over every
  decoded candidate) on generated stores with retractions, revisions,
  epochs, several paths and predicates, with the read cache on, off and
  thrashing:
  the same results, order and pages; a damaged log is a ChecksumMismatch.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stemedb.core import lens as lens_mod
from stemedb.core import qfast, qpure
from stemedb.core import query as Q
from stemedb.core.reader import take
from stemedb.errors import ChecksumMismatch
from tests.conftest import log_end
from stemedb.timeutil import format_time

try:
    from stemedb.core import _query  # type: ignore[attr-defined]
except ImportError:     # a pure-Python build: nothing compiled to compare
    _query = None

needs_compiled = pytest.mark.skipif(_query is None, reason="compiled _query not built")

I64 = st.integers(-2**63, 2**63 - 1)
BOUND = st.one_of(st.none(), st.integers(-50, 150), I64, st.integers(-2**70, 2**70))


@st.composite
def filter_case(draw):
    n = draw(st.integers(0, 90))
    ts = draw(st.lists(st.integers(-20, 120) | I64, min_size=n, max_size=n))
    rec = draw(st.lists(st.integers(-20, 120), min_size=n, max_size=n))
    seq = draw(st.lists(st.integers(0, 120), min_size=n, max_size=n))
    lc = draw(st.lists(st.integers(-2, 7), min_size=n, max_size=n))      # -2, 6, 7: damaged
    ep = draw(st.lists(st.integers(-1, 4), min_size=n, max_size=n))
    ords = draw(st.lists(st.integers(-3, n + 3) if draw(st.booleans()) else
                         st.integers(0, max(0, n - 1)), max_size=120)) if n else \
        draw(st.lists(st.integers(-2, 2), max_size=3))
    lc_ok = draw(st.none() | st.lists(st.booleans(), min_size=1, max_size=8))
    ep_ok = draw(st.none() | st.lists(st.booleans(), min_size=1, max_size=5))
    bounds = [draw(BOUND) for _ in range(4)]
    cols = (np.array(ts, dtype=np.int64), np.array(rec, dtype=np.int64),
            np.array(seq, dtype=np.int64), np.array(lc, dtype=np.int8),
            np.array(ep, dtype=np.int32))
    return ords, cols, bounds, lc_ok, ep_ok


def _outcome(fn, *args):
    try:
        return fn(*args)
    except (IndexError, ValueError) as exc:
        return type(exc)


def _loop_only(ords, *rest):
    """The twin's loop branch whatever the size (the definition)."""
    old = qpure.SMALL
    qpure.SMALL = 1 << 30
    try:
        return qpure.filter_ords(ords, *rest)
    finally:
        qpure.SMALL = old


@needs_compiled
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(filter_case())
@example(([0, 1], (np.array([5, 5], np.int64), np.array([0, 0], np.int64),
                   np.array([1, 2], np.int64), np.array([0, -1], np.int8),
                   np.array([0, 0], np.int32)), [None, None, None, None], [True], None))
def test_filter_ords_compiled_matches_pure(case):
    ords, cols, (as_of, known_at, since, seq_bound), lc_ok, ep_ok = case
    args = (list(ords), *cols, as_of, known_at, since, seq_bound, lc_ok, ep_ok)
    want = _outcome(_loop_only, *args)
    assert _outcome(qpure.filter_ords, *args) == want, "the twin's two branches agree"
    assert _outcome(_query.filter_ords, *args) == want


@needs_compiled
def test_filter_ords_damaged_input_raises_in_both():
    ts = np.arange(60, dtype=np.int64)
    lc = np.zeros(60, dtype=np.int8)
    ep = np.zeros(60, dtype=np.int32)
    cols = (ts, ts.copy(), ts.copy(), lc, ep)
    for fn in (qpure.filter_ords, _query.filter_ords):
        for ords in ([60], [-1], list(range(59)) + [61]):      # outside the columns
            with pytest.raises(IndexError):
                fn(ords, *cols, None, None, None, None, None, None)
        bad = lc.copy()
        bad[3] = 9                                             # a lifecycle id past its table
        for ords in ([3], list(range(60))):
            with pytest.raises(IndexError):
                fn(ords, ts, ts, ts, bad, ep, 0, None, None, None, [True] * 6, None)
        short = np.arange(10, dtype=np.int64)                  # an ordinal past the columns
        with pytest.raises(IndexError):
            fn([12], short, short, short, lc[:10], ep[:10], None, None, None, None, None, None)


def test_qfast_says_which_runs():
    assert qfast.COMPILED == (_query is not None and qfast.filter_ords is _query.filter_ords)
    assert qfast.COMPILED == (_query is not None and qfast.resolve_columns is _query.resolve_columns)


# ------------------------------------------------------------ the stores

T0 = 1_709_294_400
SOURCES = ("fda://l", "nct://N1", "pubmed://9", "cohort://c", "forum://t", "blog://b", None)


def _fill(store, rnd, n):
    """n assertions over 2 paths (one a child) x 2 predicates, few values,
    every source class; then retractions, revisions and an epoch."""
    hashes = []
    for i in range(n):
        body = {"concept_path": rnd.choice(("g", "g/sub")), "predicate": rnd.choice(("r", "s")),
                "value": rnd.choice(("a", "b", 1, {"k": 2})),
                "confidence": rnd.choice((0.0, 0.3, 0.5, round(rnd.random(), 3), 1.0)),
                "timestamp": T0 + rnd.randrange(0, 400 * 86400)}
        src = rnd.choice(SOURCES)
        if src is not None:
            body["source"] = src
        if hashes and rnd.random() < 0.1:
            body["parent_hash"] = rnd.choice(hashes)
        if rnd.random() < 0.1:
            body["epoch"] = "e1"
        if "epoch" in body and not store.reader.state.epochs.get("e1"):
            store.create_epoch("e1")
        hashes.append(store.put(body).hash)
        store.test_clock[0] += 1_000_000
        if rnd.random() < 0.1:
            store.retract(hash=rnd.choice(hashes), reason="wrong")
            store.test_clock[0] += 1_000_000
    return hashes


@pytest.fixture
def clocked(opener):
    def _open(**kw):
        clock = [T0 * 1_000_000 + 500 * 86400 * 1_000_000]
        s = opener(clock=lambda: clock[0], **kw)
        s.test_clock = clock
        return s
    return _open


def _reference(reader, lens_name, concept_path, predicate, include_descendants, f, limit):
    """run_query's answer the Assertion way: every candidate decoded, then
    resolve_groups (what run_query did for every lens before rows_answer)."""
    lens_obj = lens_mod.get_lens(lens_name)
    with reader.lock:
        f.seq_bound = reader.state.last_seq
        f.rec_bound = reader.state.last_recorded_at
        f.at_us = reader.clock()
        paths = [concept_path]
        if include_descendants:
            paths += reader.state.descendant_paths(concept_path)
        active, retracted = Q.gather(reader, paths, predicate, f)
        cands = Q.shown_many(reader, active, f)
        rcands = Q.shown_many(reader, retracted, f) if f.include_retracted else []
        ctx = Q._context(reader, f, cands, active)
    _groups, results, ordered = Q.resolve_groups(lens_obj, cands, ctx, concept_path, predicate,
                                                 include_descendants)
    if rcands:
        ordered = ordered + sorted(rcands, key=lambda a: (-a.timestamp_us, -a.seq))
    return results, ordered


def _norm(v):
    """An answer with its Assertions as (hash, seq, status, retraction)."""
    if hasattr(v, "record"):
        return ("A", v.hash, v.seq, v.status, v.retraction)
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v


ROW_LENSES = sorted(name for name, x in lens_mod.LENSES.items() if x.rows_only)


def test_the_rows_lenses_are_the_ones_that_read_only_rows():
    assert ROW_LENSES == ["authority", "confidence", "consensus", "layered", "recency"]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("cache", ["off", "on", "thrashing"])
@pytest.mark.parametrize("rows_from", [0, Q.ROWS_FROM])    # 0: always rows
def test_rows_answer_matches_the_assertion_path(clocked, monkeypatch, seed, cache, rows_from):
    if rows_from == 0:          # every query of a rows_only lens through rows_answer
        monkeypatch.setattr(Q, "_rows_pay", lambda candidates, limit, audited: True)
    rnd = random.Random(seed)
    # small segments: rows read from sealed (mapped) segments and the active one
    store = clocked(read_cache_bytes=0 if cache == "off" else 1 << 20, segment_size=4096)
    _fill(store, rnd, rnd.choice((5, 30, 80)))
    reader = store.reader
    if cache == "thrashing":    # misses read as rows from the log, hits from the cache
        for o in range(0, reader.state.count, 2):
            reader.read_record(o)
        monkeypatch.setattr(reader.cache, "records", _keep_thrashing(reader.cache))
    cuts = [None, format_time(T0 + 200 * 86400)]
    for lens_name in ROW_LENSES:
        for _ in range(8):
            kw = dict(predicate=rnd.choice(("r", "s", None)),
                      include_descendants=rnd.random() < 0.5,
                      as_of=rnd.choice(cuts), known_at=rnd.choice(cuts),
                      decay=rnd.random() < 0.5, include_retracted=rnd.random() < 0.5,
                      lifecycle=rnd.choice((None, "any")), epoch=rnd.choice((None, "e1")))
            if kw["epoch"] == "e1" and "e1" not in reader.state.epochs:
                kw["epoch"] = None
            if kw["predicate"] is None:
                kw["include_descendants"] = False
            limit = rnd.choice((1, 3, 100))
            got = store.query("g", lens=lens_name, limit=limit, **kw)
            f = Q.parse_filters(kw["as_of"], kw["known_at"], None, kw["lifecycle"], kw["epoch"],
                                kw["decay"], kw["include_retracted"])
            results, ordered = _reference(reader, lens_name, "g", kw["predicate"],
                                          kw["include_descendants"], f, limit)
            where = f"{lens_name} {kw} limit={limit}"
            assert _norm(got.results) == _norm(results), where
            assert _norm(got.assertions) == _norm(ordered[:limit]), where
            # every page, through the cursors
            seen, cur = list(got.assertions), got.next_cursor
            while cur is not None:
                page = store.query("g", lens=lens_name, limit=limit, cursor=cur, **kw)
                seen += page.assertions
                cur = page.next_cursor
            assert _norm(seen) == _norm(ordered), where


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(-2**62, 2**62), st.floats(0.0, 1.0),
                          st.integers(0, 5), st.sampled_from([b'"a"', b'1', b'{"k":2}'])),
                max_size=20),
       st.integers(-2**62, 2**62), st.booleans())
def test_record_rows_are_the_numbers_rows_reads(items, at_us, decay):
    from stemedb.model import Assertion, AssertionRecord
    recs = [AssertionRecord(hash=bytes(32), recorded_at=0, timestamp=ts, confidence=c,
                            source_class=rank, lifecycle=0, concept_path="g", predicate="r",
                            value_json=v) for ts, c, rank, v in items]
    seqs = list(range(1, len(recs) + 1))
    ords = [10 * s for s in seqs]
    got = lens_mod.record_rows(ords, recs, seqs, at_us, decay)
    got.sort(reverse=True)
    want = lens_mod._rows([Assertion(r, s) for r, s in zip(recs, seqs)], at_us, decay)
    assert [g[:6] for g in got] == [w[:6] for w in want]
    assert [g[6] for g in got] == [10 * w[6].seq for w in want], "the ordinal in the last slot"
    with pytest.raises(ValueError):
        lens_mod.record_rows(ords[:-1] + [1, 2], recs, seqs, at_us, decay)


def test_take_reads_the_column(clocked):
    col = np.arange(100, dtype=np.int64) * 3
    for ords in ([], [5], list(range(0, 100, 7)), list(range(40))):
        assert take(col, ords) == [3 * o for o in ords]


def _keep_thrashing(cache):
    """``cache.records`` with the thrashing verdict held on (a test's few
    lookups would otherwise end the window with it recomputed)."""
    records = cache.records
    cache.thrashing = True

    def held(locs):
        out = records(locs)
        cache.thrashing = True
        return out
    return held


def test_a_damaged_log_is_a_checksum_mismatch(clocked, monkeypatch):
    import glob
    import os
    monkeypatch.setattr(Q, "_rows_pay", lambda candidates, limit, audited: True)
    store = clocked(read_cache_bytes=0)
    for i in range(30):
        store.put({"concept_path": "g", "predicate": "r", "value": f"v{i}", "confidence": 0.5,
                   "timestamp": T0 + i})
    assert store.query("g", predicate="r").results[0]["candidates_count"] == 30
    [seg] = glob.glob(os.path.join(store.path, "**", "segment-*.log"), recursive=True)
    size = log_end(seg)                 # the records (the active segment's zeros follow)
    with open(seg, "r+b") as fh:        # a byte in the middle of the log's records
        fh.seek(size // 2)
        b = fh.read(1)
        fh.seek(size // 2)
        fh.write(bytes([b[0] ^ 0x40]))
    with pytest.raises(ChecksumMismatch) as err:
        store.query("g", predicate="r")
    assert err.value.file == seg
