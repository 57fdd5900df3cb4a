"""run_query's one-frame path for a decayed first page of one key under a
column lens (query._decayed_page, compiled) gives what the general path
(_resolve + _finish) gives: the same results (winner, confidence and
conflict score to the bit, counts), the same page in the same order, the
same cursor and the same audit entry, on keys of every shape: short and
hashed values, values repeated across classes, every source class, future
timestamps, retracted and revised candidates, a key of 16 or more
candidates (the rows path), an empty key, and a layered lens (which the
one-frame path leaves to the general one)."""
from __future__ import annotations

import json
import random

import pytest

from stemedb import open_store
from stemedb.core import qaudit, qfast
from stemedb.core import query as Q
from tests.conftest import NoFsyncFS

NOW = 1_800_000_000 * 1_000_000
DAY_US = 86_400 * 1_000_000
SOURCES = ("fda://x", "pubmed://1", "nhanes://s", "expert://e", "forum://t", None)
LENSES = ("recency", "confidence", "consensus", "authority", "layered")


def _value(r: random.Random):
    k = r.randrange(6)
    if k == 0:
        return r.randrange(3)                                  # short, inline
    if k == 1:
        return {"text": "x" * 40, "n": r.randrange(2)}        # hashed, often repeated
    if k == 2:
        return {"text": "y" * 60 + str(r.randrange(1000))}    # hashed, distinct
    return ("a", "b", "c")[r.randrange(3)]


def _fill(s, r: random.Random) -> list[tuple[str, str]]:
    keys = []
    for k, n in enumerate((1, 2, 3, 4, 5, 7, 9, 15, 16, 23, 40)):
        path, pred = f"t/k{k}", "p"
        keys.append((path, pred))
        for i in range(n):
            ts = NOW - r.randrange(-30, 2000) * DAY_US + r.randrange(1_000_000)
            s.put({"concept_path": path, "predicate": pred, "value": _value(r),
                   "confidence": round(r.random(), 3), "source": SOURCES[r.randrange(6)],
                   "timestamp": ts / 1e6})
    # one key with a candidate retracted and one revised
    got = [s.put({"concept_path": "t/r", "predicate": "p", "value": i,
                  "confidence": 0.5 + i / 10, "source": SOURCES[i % 6],
                  "timestamp": (NOW - i * 50 * DAY_US) / 1e6}) for i in range(5)]
    s.retract(hash=got[1].hash, reason="test")
    keys.append(("t/r", "p"))
    s.put({"concept_path": "t/only-other", "predicate": "q", "value": 1, "confidence": 0.5,
           "timestamp": NOW / 1e6})
    keys.append(("t/only-other", "p"))      # the path exists, the key has no candidate
    keys.append(("t/nowhere", "p"))
    return keys


def _answer(s, path, pred, lens, limit):
    res = s.query(path, predicate=pred, lens=lens, decay=True, limit=limit, agent="ag")
    d = res.to_dict()
    # the floats to the bit, and the page's hashes in order
    bits = [(r["confidence"].hex(), r["conflict_score"].hex()) for r in res.results
            if isinstance(r.get("confidence"), float)]
    return d, bits, [a.hash for a in res.assertions], res.next_cursor


@pytest.mark.parametrize("seed,line", [(1, True), (2, True), (3, True), (4, False)])
def test_the_decayed_page_is_the_general_paths(tmp_path, monkeypatch, seed, line):
    """(``line`` False: the entry queued for the writer thread, as the pure
    build and a line the compiled one does not write queue it)"""
    if not line:
        monkeypatch.setattr(qaudit, "_LINE", None)
    r = random.Random(seed)
    s = open_store(str(tmp_path / "d"), fs=NoFsyncFS(), clock=lambda: NOW,
                   durability="none", audit=True)
    try:
        keys = _fill(s, r)
        calls = []
        real = Q._decayed_page

        def counted(*a, **k):
            calls.append(a[1])
            return real(*a, **k)
        monkeypatch.setattr(Q, "_decayed_page", counted)
        cases = [(p, q, lens, limit) for p, q in keys for lens in LENSES for limit in (1, 3, 100)]
        fast = [_answer(s, *c) for c in cases]
        if qfast.COMPILED:
            assert len(calls) == len([c for c in cases if c[2] != "layered"]), \
                "every decayed query of one key under a column lens took the one-frame path"
        else:
            assert not calls, "the pure build keeps run_query's path"
        fast_audit = s.audit_queries(limit=len(cases))
        monkeypatch.setattr(Q, "_DECAYED_LENSES", frozenset())
        calls.clear()
        general = [_answer(s, *c) for c in cases]
        assert not calls
        general_audit = s.audit_queries(limit=len(cases))
        for c, a, b in zip(cases, fast, general):
            assert a == b, c
        assert len(fast_audit) == len(general_audit) == len(cases)

        def same(e):
            return json.dumps({k: v for k, v in e.items() if k != "id"}, sort_keys=True)
        assert [same(e) for e in fast_audit] == [same(e) for e in general_audit]
        assert any(e["contributing"] for e in fast_audit)
    finally:
        s.close()


def test_the_decayed_page_reads_the_clock_once_for_the_lens(tmp_path):
    """The lens's "now" is the first page's (its cursor carries it), and
    decay is measured at it: a candidate's confidence is decayed exactly
    as lens.effective_confidence decays it at that time."""
    from stemedb.core.lens import effective_confidence
    t = [NOW]
    s = open_store(str(tmp_path / "d"), fs=NoFsyncFS(), clock=lambda: t[0],
                   durability="none", audit=False)
    try:
        for i in range(3):
            s.put({"concept_path": "c", "predicate": "p", "value": i, "confidence": 0.9,
                   "source": "pubmed://1", "timestamp": (NOW - (i + 1) * 100 * DAY_US) / 1e6})
        t[0] = NOW + 37 * DAY_US + 12345
        res = s.query("c", predicate="p", lens="confidence", decay=True, limit=1)
        w = res.results[0]["winner"]
        assert res.results[0]["confidence"] == effective_confidence(w, at_us=t[0], decay=True)
        assert res.next_cursor is not None
        nxt = s.query("c", predicate="p", lens="confidence", decay=True, limit=1,
                      cursor=res.next_cursor)
        assert nxt.results == res.results
    finally:
        s.close()


def _outcome(fn):
    try:
        res = fn()
    except Exception as exc:  # noqa: BLE001 - the error itself is compared
        return ("raised", type(exc), str(exc), getattr(exc, "field", None))
    d = res.to_dict()
    return ("answer", type(res), json.dumps(d, sort_keys=True),
            [(r["confidence"].hex(), r["conflict_score"].hex()) for r in res.results
             if isinstance(r.get("confidence"), float)])


def test_store_query_with_decay_answers_or_fails_as_the_function(tmp_path):
    """The compiled Store.query hands decay=True alone to query.decayed_query:
    every answer and every error (word for word, the same field) is the
    Python Store.query's."""
    from stemedb.core.store import Store
    py = getattr(Store.query, "__wrapped__", Store.query)
    s = open_store(str(tmp_path / "d"), fs=NoFsyncFS(), clock=lambda: NOW,
                   durability="none", audit=True)
    try:
        keys = _fill(s, random.Random(7))
        shapes = [((p,), {"predicate": q, "lens": lens, "limit": lim})
                  for p, q in keys for lens in LENSES for lim in (1, 100)]
        shapes += [(("t/k3",), kw) for kw in (
            {}, {"predicate": "p"}, {"predicate": "p", "include_descendants": True},
            {"predicate": "nope"}, {"predicate": 5}, {"predicate": "p", "lens": "nope"},
            {"predicate": "p", "lens": None}, {"predicate": "p", "lens": "trust"},
            {"predicate": "p", "lens": "vote"}, {"predicate": "p", "limit": 0},
            {"predicate": "p", "limit": 1001}, {"predicate": "p", "limit": True},
            {"predicate": "p", "limit": "5"}, {"predicate": "p", "include_descendants": "yes"},
            {"predicate": "p", "agent": 5}, {"predicate": "p", "agent": "a"},
            {"predicate": "p", "cursor": None}, {"predicate": "p", "cursor": "garbage"})]
        shapes += [((p,), {"predicate": "p"}) for p in ("", "t", "t/", "/x", 3, b"t/k3")]
        for args, kw in shapes:
            kw = dict(kw, decay=True)
            want = _outcome(lambda: py(s, *args, **kw))
            got = _outcome(lambda: s.query(*args, **kw))
            assert got == want, (args, kw)
        # decay given as anything but True, or with another filter: the function's own
        for kw in ({"decay": 1}, {"decay": "yes"}, {"decay": False},
                   {"decay": True, "include_retracted": True}, {"decay": True, "as_of": NOW}):
            kw = dict(kw, predicate="p")
            assert _outcome(lambda: s.query("t/k4", **kw)) == _outcome(lambda: py(s, "t/k4", **kw))
    finally:
        s.close()


def test_decay_reads_the_store_modules_run_query_at_each_call(tmp_path, monkeypatch):
    """As the Python Store.query does: a run_query swapped into the store
    module gets every decayed call, with Store.query's keywords."""
    from stemedb.core import store as store_mod
    s = open_store(str(tmp_path / "d"), fs=NoFsyncFS(), clock=lambda: NOW,
                   durability="none", audit=False)
    try:
        _fill(s, random.Random(8))
        want = _outcome(lambda: s.query("t/k3", predicate="p", lens="authority", decay=True))
        calls = []
        real = store_mod.run_query

        def run(*a, **k):
            calls.append((a, k))
            return real(*a, **k)
        monkeypatch.setattr(store_mod, "run_query", run)
        got = _outcome(lambda: s.query("t/k3", predicate="p", lens="authority", decay=True))
        assert got == want
        assert calls == [((s.reader, "t/k3"), {
            "predicate": "p", "lens": "authority", "limit": 100, "include_descendants": False,
            "cursor": None, "agent": None, "decay": True})]
    finally:
        s.close()


# ------------------------------------------- decay at the edges of exact C doubles
# _query._decayed (the column lenses) and _query._entry_weight (the audit's
# weights) compute in C doubles only while every operand is exact there
# (|t|, |at|, age and the half-life below 2**53) and compare against EXACT as
# a C int; at and around that edge they must give Python's numbers.

EXACT = 2**53
EDGE_T = [EXACT - 1, EXACT, EXACT + 1, -EXACT + 1, -EXACT, -EXACT - 1, 0, 1, -1,
          EXACT // 2, -(EXACT // 2), 2**62, -2**62, 10**15, 2**63 - 1, -2**63]
EDGE_AT = [EXACT - 1, EXACT, EXACT + 1, -EXACT + 1, -EXACT, 0, 10**15,
           EXACT // 2 + 5, EXACT - 2, 2**62, -2**62, 2**63 - 1]


def _edge_cases():
    r = random.Random(5)
    for at in EDGE_AT:
        for _ in range(6):
            n = r.randrange(1, 9)
            yield at, [(r.choice(EDGE_T) + r.randrange(-3, 4) if r.random() < 0.8
                        else r.choice(EDGE_T), r.choice([0.0, 0.3, 0.77, 1.0]),
                        r.randrange(6)) for _ in range(n)]


def _clamp64(t):
    return max(-2**63, min(2**63 - 1, t))


@pytest.mark.skipif(not qfast.COMPILED, reason="compiled _query not built")
def test_column_decay_at_the_exact_edges_is_the_pure_twins():
    import math

    import numpy as np

    from stemedb.core import _query, qpure
    from stemedb.core.lens import _HALF_LIFE_US, _TIER

    def bits(x):
        if isinstance(x, float):
            return x.hex() if math.isfinite(x) else repr(x)
        if isinstance(x, (list, tuple)):
            return [bits(v) for v in x]
        if isinstance(x, dict):
            return {k: bits(v) for k, v in x.items()}
        return x

    def outcome(fn, *args):
        try:
            return ("ok", bits(fn(*args)))
        except Exception as exc:  # noqa: BLE001 - the refusal is compared
            return (type(exc).__name__,)
    for at, items in _edge_cases():
        n = len(items)
        cols = (np.arange(1, n + 1, dtype=np.int64),
                np.array([_clamp64(t) for t, _, _ in items], np.int64),
                np.array([c for _, c, _ in items], np.float64),
                np.array([k for _, _, k in items], np.uint8),
                np.array([0x0100 + (i % 3) for i in range(n)], np.uint64),
                np.zeros(n, np.uint64))
        ords = list(range(n))
        for decay in (True, False):
            want = outcome(qpure.column_rows, ords, *cols, at, decay, _HALF_LIFE_US, _TIER)
            assert outcome(_query.column_rows, ords, *cols, at, decay, _HALF_LIFE_US,
                           _TIER) == want, (at, items)
            for lens in ("recency", "confidence", "consensus", "authority", "layered"):
                want = outcome(qpure.resolve_columns, lens, ords, *cols, at, decay,
                               _HALF_LIFE_US, _TIER)
                got = outcome(_query.resolve_columns, lens, ords, *cols, at, decay,
                              _HALF_LIFE_US, _TIER)
                assert got == want, (lens, at, items)


@pytest.mark.skipif(not qfast.COMPILED, reason="compiled _query not built")
def test_audit_weights_at_the_exact_edges_are_the_entrys():
    from stemedb.core import _query
    from stemedb.core.lens import _HALF_LIFE_US
    from stemedb.model import Assertion, AssertionRecord
    for at, items in _edge_cases():
        top = [Assertion(AssertionRecord(hash=bytes([i]) * 32, recorded_at=0, timestamp=t,
                                         confidence=c, source_class=k, lifecycle=0,
                                         concept_path="g", predicate="r", value_json=b"1"),
                         i + 1)
               for i, (t, c, k) in enumerate(items)]
        for decay in (True, False):
            want = [w["weight"] for w in Q._contributing(top, at, decay)]
            line = _query.audit_line(Q._AUDIT_PARAMS, _HALF_LIFE_US, 1, 10**15, None,
                                     (None,) * 13, top[:1], 0, top, at, decay, len(top))
            if any(w != w or w in (float("inf"), float("-inf")) for w in want):
                assert line is None
                continue
            got = [w["weight"] for w in json.loads(line)["contributing"]]
            assert [w.hex() for w in got] == [w.hex() for w in want], (at, items, decay)
            entry = _query.audit_entry(Q._AUDIT_PARAMS, _HALF_LIFE_US, str, 1, 10**15, None,
                                       (None,) * 13, top[:1], 0, top, at, decay, len(top))
            assert [c["weight"].hex() for c in entry["contributing"]] == \
                [w.hex() for w in want]


@pytest.mark.skipif(not qfast.COMPILED, reason="compiled _query not built")
@pytest.mark.parametrize("table", [
    [True, False, True, False], [False] * 4, [True] * 4, [1, 0, 2, 0], [True, 0, None, 1],
    (True, False, True, True), [True, False, "x", ""], [True, False], [], [True, 1.0, 0.0, False]])
def test_filter_ords_reads_any_table_as_the_pure_twin(table):
    """_query._table reads a list of bools in C and anything else as before:
    the kept ordinals (or the refusal: an id past the table) are qpure's."""
    import numpy as np

    from stemedb.core import _query, qpure
    n = 8
    cols = (np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64),
            np.arange(1, n + 1, dtype=np.int64), np.array([i % 4 for i in range(n)], np.int8),
            np.zeros(n, np.int32))
    for ords in (list(range(n)), [3, 1, 2], [0]):
        for lc_ok, ep_ok in ((table, None), (None, table), (table, table)):
            args = (list(ords), *cols, None, None, None, None, lc_ok, ep_ok)

            def outcome(fn):
                try:
                    return ("ok", fn(*args))
                except Exception as exc:  # noqa: BLE001 - the refusal is compared
                    return (type(exc).__name__,)
            assert outcome(_query.filter_ords) == outcome(qpure.filter_ords), (ords, lc_ok, ep_ok)
