"""The lenses over the index columns give the answers of the lenses over
decoded candidates, to the last bit.

* ``index.value_id`` against its compiled twin, and the property grouping
  relies on: short values are their own id (two ids are equal exactly when
  the values are), equal long values get equal (hashed) ids.
* ``_query.fsum`` (math.fsum's algorithm in C) against ``math.fsum``.
* ``_query.column_rows`` / ``resolve_columns`` against their pure twins
  (``qpure``: lens.py over the rows) on generated columns with ties in
  time, equal values from several classes, zero and equal confidences,
  decay, and damaged input (a rank outside the tables, an ordinal outside
  the columns, a NaN confidence, an unknown lens).
* ``run_query`` of every column lens against the reference path (every
  candidate decoded, ``resolve_groups`` over Assertions: lens.py) on
  generated stores whose keys hold up to a few hundred candidates: ties
  in timestamp, equal values from different sources, long (hashed)
  values, decay, as_of/known_at cuts, retractions, epochs, revisions,
  votes; every page through the cursors.  And with two different values
  forced onto one value id (a collision): still the reference's answer.
* the index snapshot keeps the lens columns; an older snapshot without
  them is not used: the store rebuilds from the WAL and answers the same.
"""
from __future__ import annotations

import logging
import math
import random
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stemedb.core import index as index_mod
from stemedb.core import lens as lens_mod
from stemedb.core import qpure
from stemedb.core import query as Q
from stemedb.core import snapshot as snap
from stemedb.core.format import SNAPSHOT_HEADER, SNAPSHOT_MINOR
from stemedb.timeutil import format_time
from tests.unit.test_query_parity import _norm, _reference

try:
    from stemedb.core import _fast, _query  # type: ignore[attr-defined]
except ImportError:     # a pure-Python build: nothing compiled to compare
    _fast = _query = None

needs_compiled = pytest.mark.skipif(_query is None, reason="compiled extension not built")
T0 = 1_700_000_000
DAY = 86_400
COLUMN_LENSES = list(qpure.COLUMN_LENSES)


def _bits(v):
    """Floats by their bits (so -0.0 and 0.0 differ), recursively."""
    if isinstance(v, float):
        return ("f", struct.pack("<d", v))
    if isinstance(v, (list, tuple)):
        return [_bits(x) for x in v]
    if isinstance(v, dict):
        return {k: _bits(x) for k, x in v.items()}
    return v


# ------------------------------------------------------------------ value ids

@needs_compiled
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_value_id_compiled_matches_pure(v):
    assert _fast.value_id(v) == index_mod.value_id(v)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=15), st.binary(max_size=15))
def test_short_values_are_their_own_id(a, b):
    assert (index_mod.value_id(a) == index_mod.value_id(b)) == (a == b), \
        "a value of up to 15 bytes must group exactly with its equals"
    assert index_mod.value_id(a)[0] & 0xFF == len(a)


def test_long_values_get_equal_hashed_ids():
    v = b'{"dose":"10 mg","route":"oral"}'
    assert index_mod.value_id(v) == index_mod.value_id(bytes(v))
    assert index_mod.value_id(v)[0] & 0xFF == 0xFF


# ------------------------------------------------------------------ fsum

@needs_compiled
@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(-1e300, 1e300) | st.sampled_from([0.0, -0.0, 1e-320, 0.1, 0.7]),
                max_size=40))
def test_fsum_is_math_fsum(xs):
    assert _bits(_query.fsum(xs)) == _bits(math.fsum(xs))


# ------------------------------------------------------------------ generated columns

VALUES = [b'"a"', b'"b"', b"1", b"true", b'{"k":"a long value, hashed"}',
          b'{"k":"another long value!!"}']


@st.composite
def columns(draw):
    n = draw(st.integers(0, 120))
    ts = draw(st.lists(st.sampled_from([0, 5, 9, 3 * DAY * 10**6]) | st.integers(0, 10**15),
                       min_size=n, max_size=n))
    seq = draw(st.permutations(range(1, n + 1)))
    conf = draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]) | st.floats(0.0, 1.0),
                         min_size=n, max_size=n))
    rank = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    vals = draw(st.lists(st.sampled_from(VALUES), min_size=n, max_size=n))
    ids = [index_mod.value_id(v) for v in vals]
    extra = draw(st.integers(0, 3))        # columns longer than the candidates
    cols = {"seq": np.array(list(seq) + [0] * extra, np.int64),
            "ts": np.array(ts + [0] * extra, np.int64),
            "conf": np.array(conf + [0.0] * extra, np.float64),
            "rank": np.array(rank + [0] * extra, np.uint8),
            "va": np.array([a for a, _ in ids] + [0] * extra, np.uint64),
            "vb": np.array([b for _, b in ids] + [0] * extra, np.uint64)}
    ords = draw(st.permutations(range(n)))
    return list(ords), cols


def _call(fn, *args):
    try:
        return ("ok", _bits(fn(*args)))
    except Exception as exc:            # noqa: BLE001  (the refusal is what is compared)
        return (type(exc).__name__,)


def _cols_args(cols):
    return cols["seq"], cols["ts"], cols["conf"], cols["rank"], cols["va"], cols["vb"]


AT = st.sampled_from([0, 10**15, 2 * 10**15, 2**62]) | st.integers(-2**62, 2**62)


@needs_compiled
@settings(max_examples=250, deadline=None)
@given(columns(), AT, st.booleans(), st.sampled_from(COLUMN_LENSES))
def test_resolve_columns_compiled_matches_the_lens_over_rows(case, at_us, decay, lens_name):
    ords, cols = case
    args = (lens_name, ords, *_cols_args(cols), at_us, decay, lens_mod._HALF_LIFE_US,
            lens_mod._TIER)
    want = _call(qpure.resolve_columns, *args)
    assert want[0] == "ok"
    assert _call(_query.resolve_columns, *args) == want


@needs_compiled
@settings(max_examples=150, deadline=None)
@given(columns(), AT, st.booleans())
def test_column_rows_compiled_matches_pure(case, at_us, decay):
    ords, cols = case
    args = (ords, *_cols_args(cols), at_us, decay, lens_mod._HALF_LIFE_US, lens_mod._TIER)
    assert _call(_query.column_rows, *args) == _call(qpure.column_rows, *args)


@needs_compiled
def test_damaged_columns_are_refused_alike():
    cols = {"seq": np.arange(1, 5, dtype=np.int64), "ts": np.arange(4, dtype=np.int64),
            "conf": np.array([0.5, 0.2, 0.9, 0.1]), "rank": np.array([0, 1, 2, 3], np.uint8),
            "va": np.ones(4, np.uint64), "vb": np.zeros(4, np.uint64)}
    tables = (lens_mod._HALF_LIFE_US, lens_mod._TIER)
    cases = []
    bad_rank = dict(cols, rank=np.array([0, 9, 2, 3], np.uint8))
    nan = dict(cols, conf=np.array([0.5, float("nan"), 0.9, 0.1]))
    short = dict(cols, vb=np.zeros(2, np.uint64))
    for name, c, ords, lens_name in (("rank outside the tables", bad_rank, [0, 1, 2], "authority"),
                                     ("ordinal outside", cols, [0, 4], "recency"),
                                     ("negative ordinal", cols, [-1], "recency"),
                                     ("NaN confidence", nan, [0, 1, 2, 3], "consensus"),
                                     ("unknown lens", cols, [0], "vote"),
                                     ("short column", short, [0, 1], "recency")):
        got = [_call(fn, lens_name, ords, *_cols_args(c), 10**15, True, *tables)
               for fn in (qpure.resolve_columns, _query.resolve_columns)]
        cases.append((name, got))
        if name != "short column":      # the pure twin indexes what it reads
            assert got[0] == got[1], name
    assert dict(cases)["NaN confidence"][1] == ("ok", None), "a NaN declines: rows decide"
    assert dict(cases)["rank outside the tables"][1] == ("IndexError",)
    assert dict(cases)["short column"][1] == ("ValueError",)


# ------------------------------------------------------------------ stores

SOURCES = [None, "fda://l/1", "pubmed://1", "cohort://c", "guideline://g", "forum://f",
           "blog://b"]
STORE_VALUES = ["a", "b", 1, True, {"k": "a long value, so hashed"},
                {"k": "another long value, hashed"}]


@pytest.fixture
def clocked(opener):
    def _open(**kw):
        clock = [T0 * 1_000_000 + 500 * DAY * 1_000_000]
        s = opener(clock=lambda: clock[0], **kw)
        s.test_clock = clock
        return s
    return _open


def _fill(store, rnd, n):
    """n assertions mostly at one key ("g", "r"): timestamps drawn from a
    few (ties), few values from every class (equal values from different
    sources), long values; retractions, revisions, an epoch and votes."""
    hashes = []
    store.create_epoch("e1")
    for i in range(n):
        body = {"concept_path": rnd.choice(("g", "g", "g", "g/sub")),
                "predicate": rnd.choice(("r", "r", "r", "s")),
                "value": rnd.choice(STORE_VALUES),
                "confidence": rnd.choice((0.0, 0.3, 0.5, 0.5, round(rnd.random(), 3), 1.0)),
                "timestamp": T0 + rnd.choice((0, DAY, 40 * DAY, rnd.randrange(0, 400 * DAY)))}
        src = rnd.choice(SOURCES)
        if src is not None:
            body["source"] = src + f"/{i % 3}"
        if hashes and rnd.random() < 0.05:
            body["parent_hash"] = rnd.choice(hashes)
        if rnd.random() < 0.05:
            body["epoch"] = "e1"
        r = store.put(body)
        hashes.append(r.hash)
        store.test_clock[0] += 1_000_000
        if rnd.random() < 0.04:
            store.retract(hash=rnd.choice(hashes), reason="wrong")
            store.test_clock[0] += 1_000_000
        if rnd.random() < 0.03:
            store.vote(rnd.choice(hashes), 0.7)
        if i == n // 2 and rnd.random() < 0.5:
            store.create_epoch("e2", supersedes=["e1"])
    return hashes


def _compare(store, rnd, lens_name, reader, cuts):
    kw = dict(predicate=rnd.choice(("r", "r", "s")), include_descendants=rnd.random() < 0.2,
              as_of=rnd.choice(cuts), known_at=rnd.choice(cuts), decay=rnd.random() < 0.6,
              include_retracted=rnd.random() < 0.3,
              lifecycle=rnd.choice((None, "any")), epoch=rnd.choice((None, None, "e1")))
    limit = rnd.choice((1, 7, 100, 1000))
    got = store.query("g", lens=lens_name, limit=limit, **kw)
    f = Q.parse_filters(kw["as_of"], kw["known_at"], None, kw["lifecycle"], kw["epoch"],
                        kw["decay"], kw["include_retracted"])
    results, ordered = _reference(reader, lens_name, "g", kw["predicate"],
                                  kw["include_descendants"], f, limit)
    where = f"{lens_name} {kw} limit={limit}"
    assert _bits(_norm(got.results)) == _bits(_norm(results)), where
    seen, cur = list(got.assertions), got.next_cursor
    while cur is not None:
        page = store.query("g", lens=lens_name, limit=limit, cursor=cur, **kw)
        seen += page.assertions
        cur = page.next_cursor
    assert _norm(seen) == _norm(ordered), where


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("every_key", [False, True])   # True: every size through the columns
def test_column_lenses_answer_as_the_lenses_over_decoded_candidates(clocked, monkeypatch, seed,
                                                                    every_key):
    if every_key:
        monkeypatch.setattr(Q, "_rows_pay", lambda candidates, limit, audited: True)
    rnd = random.Random(seed)
    store = clocked(read_cache_bytes=rnd.choice((0, 1 << 20)))
    _fill(store, rnd, rnd.choice((60, 150, 300)))
    cuts = [None, None, format_time(T0 + 30 * DAY), format_time(T0 + 200 * DAY)]
    for lens_name in COLUMN_LENSES:
        for _ in range(6):
            _compare(store, rnd, lens_name, store.reader, cuts)


def test_a_value_id_collision_still_groups_by_value(clocked):
    """Two different long values forced onto one value id: the query reads
    their bytes, sees they differ, and answers as the reference."""
    store = clocked()
    for i in range(80):
        store.put({"concept_path": "g", "predicate": "r", "confidence": 0.5 + (i % 3) / 10,
                   "value": {"k": "the first long value"} if i % 2 else
                            {"k": "the other long value"},
                   "source": ("fda://x", "pubmed://y", "forum://z")[i % 3],
                   "timestamp": T0 + i})
        store.test_clock[0] += 1_000_000
    reader = store.reader
    c = reader.state.cols
    before = [store.query("g", predicate="r", lens=name).results for name in COLUMN_LENSES]
    assert before[2][0]["confidence"] < 1.0, "two values share the weight"
    c.va[:c.n] = c.va[0]
    c.vb[:c.n] = c.vb[0]                # every candidate now claims one value id
    reader.cache.clear()
    for name, want in zip(COLUMN_LENSES, before):
        got = store.query("g", predicate="r", lens=name, decay=False, limit=5)
        assert _bits(_norm(got.results)) == _bits(_norm(want)), name
        f = Q.parse_filters()
        results, ordered = _reference(reader, name, "g", "r", False, f, 5)
        assert _bits(_norm(got.results)) == _bits(_norm(results)), name
        assert _norm(got.assertions) == _norm(ordered[:5]), name


# ------------------------------------------------------------------ snapshots

def test_the_snapshot_keeps_the_lens_columns(clocked):
    store = clocked()
    rnd = random.Random(7)
    _fill(store, rnd, 40)
    st_ = store.reader.state
    data = snap.encode(st_, {"segment": 1})
    path = store.path + "/snap-test.idx"
    with open(path, "wb") as fh:
        fh.write(data)
    loaded, _pos = snap.read(path)
    for name in ("conf", "rank", "va", "vb"):
        assert getattr(loaded.cols, name)[:loaded.cols.n].tolist() == \
            getattr(st_.cols, name)[:st_.cols.n].tolist(), name


def test_an_older_snapshot_is_rebuilt_from_the_wal(opener, data, caplog):
    store = opener(clock=lambda: T0 * 1_000_000)
    for i in range(30):
        store.put({"concept_path": "g", "predicate": "r", "value": ("a", "b")[i % 2],
                   "confidence": 0.5, "source": "fda://x" if i % 5 else "forum://y",
                   "timestamp": T0 + i})
    want = store.query("g", predicate="r", lens="authority").results
    store.close()
    path = snap.snapshot_path(data + "/db")
    with open(path, "r+b") as fh:       # the header of a snapshot from before the columns
        head = bytearray(fh.read(SNAPSHOT_HEADER.size))
        magic, major, minor, mlen, digest = SNAPSHOT_HEADER.unpack(bytes(head))
        assert minor == SNAPSHOT_MINOR
        fh.seek(0)
        fh.write(SNAPSHOT_HEADER.pack(magic, major, SNAPSHOT_MINOR - 1, mlen, digest))
    with pytest.raises(snap.StaleSnapshot):
        snap.read(path)
    with caplog.at_level(logging.WARNING, logger="stemedb"):
        again = opener(clock=lambda: T0 * 1_000_000)
    assert "before the lens columns" in caplog.text and "rebuilding" in caplog.text
    assert _norm(again.query("g", predicate="r", lens="authority").results) == _norm(want)
    again.close()
    _magic, _major, minor, _l, _d = SNAPSHOT_HEADER.unpack(open(path, "rb").read(52))
    assert minor == SNAPSHOT_MINOR, "the rebuilt store wrote a current snapshot"


# ------------------------------------------------------------------ audit weights

@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-2**62, 2**62), st.floats(0.0, 1.0), st.integers(0, 5)),
                max_size=20), AT, st.booleans())
def test_audit_weights_are_the_effective_confidences(items, at_us, decay):
    from stemedb.model import Assertion, AssertionRecord
    top = [Assertion(AssertionRecord(hash=bytes([i]) * 32, recorded_at=0, timestamp=ts,
                                     confidence=c, source_class=rank, lifecycle=0,
                                     concept_path="g", predicate="r", value_json=b"1"), i + 1)
           for i, (ts, c, rank) in enumerate(items)]
    got = Q._contributing(top, at_us, decay)
    want = [{"hash": a.hash, "weight": lens_mod.effective_confidence(a, at_us=at_us, decay=decay)}
            for a in top]
    assert _bits(got) == _bits(want)


@pytest.mark.parametrize("seed", range(3))
def test_small_keys_ranked_from_the_columns_answer_as_the_reference(clocked, monkeypatch, seed):
    """Below ROWS_FROM every candidate is decoded for the page, and the
    compiled build ranks them from the columns (query._shown_resolution):
    the same answers as lens.py over the decoded candidates."""
    from stemedb.core import qfast
    calls = []
    real = Q.columns_resolution

    def counted(*args):
        calls.append(1)
        return real(*args)
    monkeypatch.setattr(Q, "columns_resolution", counted)
    rnd = random.Random(100 + seed)
    store = clocked()
    _fill(store, rnd, 14)               # every key below ROWS_FROM
    cuts = [None, format_time(T0 + 30 * DAY)]
    for lens_name in COLUMN_LENSES:
        for _ in range(5):
            _compare(store, rnd, lens_name, store.reader, cuts)
    assert bool(calls) == qfast.COMPILED, "the compiled build ranks small keys from the columns"
