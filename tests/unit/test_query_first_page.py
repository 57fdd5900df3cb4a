"""A first page of the default view in one call (``qfast.first_page``: the
compiled ``_query.first_page`` and its pure twin ``qpure.first_page``)
answers as ``run_query``'s own path does (issue 9, "The read path,
compiled"):

* over a store with small keys (held answers), keys of more candidates
  than an answer holds, retracted candidates, several predicates and
  descendants, under every lens, with and without the audit: the same
  QueryResult (its fields, in order, and every Assertion's slots), the same
  cache counters and the same audit entries as run_query with the one-call
  path switched off, cached and fresh alike;
* arguments it does not take in their plain form, a store without the
  cache and the trust lens: it returns None and has touched nothing (no
  cache counter, no audit entry), so run_query's checks answer them;
* ``answer_token`` against its twin and ``query._token``'s meaning, a
  damaged generation table refused by both;
* the classes it builds without calling them are the ones it can build
  that way (it refuses others at construction).
"""
from __future__ import annotations

import collections
import copy
import dataclasses
import pickle
import random
import time
import weakref

import orjson
import pytest

from stemedb.core import qfast, qpure
from stemedb.core import query as Q
from stemedb.core import store as store_mod
from stemedb.core.audit import AuditLog
from stemedb.model import Assertion
from stemedb.timeutil import now_us
from tests.unit.test_query_fastpath import clocked  # noqa: F401 (a fixture: the store at a set clock)
from tests.unit.test_query_fastpath import set_first

try:
    from stemedb.core import _query  # type: ignore[attr-defined]
except ImportError:     # a pure-Python build: only the pure twin to compare
    _query = None

T0 = 1_709_294_400       # the fixture's clock: 500 days after T0
LENSES = sorted(Q.LENSES)

PURE = qpure.first_page(Q._FIRST_ENV)
IMPLS = [("pure", PURE)]
if _query is not None:
    IMPLS.append(("compiled", _query.first_page(Q._FIRST_ENV)))


def _off(*_a):
    return None


def _fill(store, seed: int) -> None:
    """Small keys (held answers), one key of 40 candidates (not held), a
    few retractions, children under d/e0 for include_descendants."""
    r = random.Random(seed)
    hashes = []
    for i in range(90):
        path = r.choice(["d/e0", "d/e1", "d/e2", "d/e0/c", "d/e0/c/x"])
        hashes.append(store.put({
            "concept_path": path, "predicate": f"p{r.randrange(3)}",
            "value": r.choice([r.randrange(4), "x" * r.randrange(1, 30), [1, 2], {"k": i % 3}]),
            "confidence": r.choice([0.1, 0.5, 0.9]),
            "source": r.choice([None, "fda://x", "blog://y", "pubmed://1"]),
            "timestamp": T0 + r.randrange(10**6)}).hash)
    for i in range(40):
        store.put({"concept_path": "d/big", "predicate": "p0", "value": i % 7,
                   "confidence": 0.5, "source": "fda://x", "timestamp": T0 + i})
    for h in r.sample(hashes, 5):
        store.retract(hash=h, reason="test")


QUERIES = [(path, kw) for path in ("d/e0", "d/e1", "d/e2", "d/big", "d/none", "d")
           for kw in ({"predicate": "p0"}, {"predicate": "p1", "limit": 2},
                      {"predicate": None}, {"predicate": "p0", "include_descendants": True},
                      {"predicate": "p2", "limit": 1000}, {"predicate": "p9"})] + \
    [("d/e0", {"predicate": "p0", "lens": lens}) for lens in LENSES] + \
    [("d/big", {"predicate": "p0", "lens": lens, "limit": 50}) for lens in LENSES] + \
    [("d/e1", {"predicate": "p1", "agent": "agent-7"})]


def _slots(a: Assertion) -> tuple:
    return (type(a), a.record, a.seq, a.status, a.retraction, a.value)


def _fields(res) -> list:
    """A QueryResult's fields by name, in order, each as a caller reads it
    (a field left unset raises AttributeError), and its instance dict if it
    has one (QueryResult is a __slots__ class: it has none)."""
    return ([(f.name, type(getattr(res, f.name))) for f in dataclasses.fields(res)],
            getattr(res, "__dict__", None))


def _shape(res) -> tuple:
    """Everything a caller can read of a QueryResult."""
    return (type(res), _fields(res), orjson.dumps(res.to_dict()),
            [_slots(a) for a in res.assertions],
            [(type(r), list(r)) for r in res.results], res.extra, res.next_cursor)


def _run(store, monkeypatch, first, queries, rounds=2) -> tuple:
    """Each query ``rounds`` times with ``first`` as run_query's one-call
    path (a cold miss, then answers from the cache): the shapes, the cache
    counters and the audit entries without their ids."""
    set_first(monkeypatch, first)
    store.reader.cache.clear()
    c = store.reader.cache
    c.answer_hits = c.answer_misses = c.record_hits = c.record_misses = 0
    shapes = []
    for _ in range(rounds):
        for path, kw in queries:
            try:
                shapes.append(_shape(store.query(path, **kw)))
            except Exception as exc:  # noqa: BLE001 - compared as outcomes
                shapes.append(("error", type(exc).__name__, getattr(exc, "field", None)))
    stats = store.reader.cache.stats()
    entries = []
    if store.audit is not None:
        store.audit.flush()
        entries = [{k: v for k, v in e.items() if k != "id"}
                   for e in store.audit_queries(limit=10_000)]
    return shapes, stats, entries


@pytest.mark.parametrize("audit", [False, True])
@pytest.mark.parametrize("seed", range(2))
def test_first_pages_answer_as_run_query_does(clocked, monkeypatch, audit, seed):
    store = clocked(audit=audit)
    _fill(store, seed)
    ref_shapes, ref_stats, ref_entries = _run(store, monkeypatch, _off, QUERIES)
    assert ref_stats["answer_hits"] > 0, "the repeats were answered from the cache"
    # (errors are compared as outcomes: most of these queries answer)
    assert sum(s[0] is Q.QueryResult for s in ref_shapes) > len(ref_shapes) * 3 // 4
    n = len(ref_entries)
    for k, (name, first) in enumerate(IMPLS):
        shapes, stats, entries = _run(store, monkeypatch, first, QUERIES)
        assert shapes == ref_shapes, name
        assert stats == ref_stats, name
        if audit:
            # newest first: this run's entries, then the earlier runs'
            assert len(entries) == (k + 2) * n, name
            assert entries[:n] == ref_entries, name


def test_a_held_page_is_served_without_run_querys_path(clocked, monkeypatch):
    """The repeat of a small key comes from the held answer in the one
    call: neither query._resolve nor query._finish runs for it, nor
    run_query (with or without ``cursor=None``); the cold query goes
    through the first two."""
    store = clocked(audit=True)
    _fill(store, 0)
    calls: list[str] = []
    env = list(Q._FIRST_ENV)
    env[10] = lambda *a, **k: calls.append("resolve") or Q._resolve(*a, **k)
    env[11] = lambda *a, **k: calls.append("finish") or Q._finish(*a, **k)
    monkeypatch.setattr(store_mod, "run_query",
                        lambda *a, **k: calls.append("run_query") or Q.run_query(*a, **k))
    makers = [qpure.first_page] + ([_query.first_page] if _query is not None else [])
    for make in makers:
        set_first(monkeypatch, make(tuple(env)))
        store.reader.cache.clear()
        cold = store.query("d/e1", predicate="p1")
        assert calls == ["resolve", "finish"]
        calls.clear()
        warm = store.query("d/e1", predicate="p1")
        assert calls == []
        assert _shape(warm) == _shape(cold)
        # a cursor of None (a pager's first call) is the same plain shape:
        # Store.query serves it by the one call, not through run_query
        assert _shape(store.query("d/e1", predicate="p1", cursor=None)) == _shape(cold)
        assert calls == []


BAD_ARGS = [
    ("d/e0", {"predicate": 5}), (5, {}), ("d//x", {}), ("d/e0", {"limit": 0}),
    ("d/e0", {"limit": 1001}), ("d/e0", {"limit": True}), ("d/e0", {"limit": 2.0}),
    ("d/e0", {"lens": "nope"}), ("d/e0", {"lens": 3}), ("d/e0", {"include_descendants": 1}),
    ("d/e0", {"lens": "trust"}), ("d/unknown", {}), ("d/e0", {"predicate": "unknown"}),
]


@pytest.mark.parametrize("name,first", IMPLS)
@pytest.mark.parametrize("path,kw", BAD_ARGS)
def test_what_it_does_not_take_it_leaves_untouched(clocked, name, first, path, kw):
    store = clocked(audit=True)
    _fill(store, 1)
    before = store.reader.cache.stats()
    args = (kw.get("predicate"), kw.get("include_descendants", False),
            kw.get("lens", "recency"), kw.get("limit", 100), None)
    assert first(store.reader, path, *args) is None
    assert store.reader.cache.stats() == before
    store.audit.flush()
    assert store.audit_queries(limit=10) == []


@pytest.mark.parametrize("name,first", IMPLS)
def test_without_the_cache_it_leaves_the_query_to_run_query(clocked, name, first):
    store = clocked(read_cache_bytes=0)
    _fill(store, 0)
    assert store.reader.cache is None
    assert first(store.reader, "d/e0", "p0", False, "recency", 100, None) is None


@pytest.mark.parametrize("name,first", IMPLS)
def test_a_stand_in_audit_log_gets_run_querys_entry(clocked, monkeypatch, name, first):
    """An audit that is not an AuditLog (a tool's capture) is handed what
    qaudit._audit hands it, hits included."""
    store = clocked(audit=True)
    _fill(store, 0)

    class Capture:
        def __init__(self):
            self.items = []
            self.n = 0

        def number(self):
            self.n += 1
            return self.n

        def add(self, item):
            self.items.append(item)

    got = []
    for impl in (_off, first):
        set_first(monkeypatch, impl)
        store.reader.cache.clear()
        cap = Capture()
        monkeypatch.setattr(store.reader, "audit", cap)
        for _ in range(3):
            store.query("d/e1", predicate="p1")
        got.append([x if type(x) is bytes else x() for x in cap.items])
    assert got[0] == got[1]


def test_the_real_clock_is_read_as_now_us(opener, monkeypatch):
    """Under timeutil.now_us (the store's default clock) the compiled call
    reads CLOCK_REALTIME itself: the same microseconds."""
    store = opener(audit=True)
    assert store.reader.clock is now_us
    store.put({"concept_path": "a", "predicate": "b", "value": 1, "confidence": 0.5,
               "timestamp": T0})
    for name, first in IMPLS:
        set_first(monkeypatch, first)
        store.reader.cache.clear()
        store.query("a", predicate="b", limit=1)
        lo = time.time_ns() // 1000
        store.query("a", predicate="b", limit=1)      # from the held answer
        hi = time.time_ns() // 1000
        store.audit.flush()
        e = store.audit.read(limit=1)[0]       # the raw entry, at_us included
        assert lo <= e["at_us"] <= hi, name


# ------------------------------------------------------------------ the QueryResult

def test_query_result_is_a_slotted_dataclass():
    """What the embedded API keeps of QueryResult as a __slots__ class:
    its fields by attribute, in order, with their defaults; ``==``, repr,
    ``dataclasses.replace``/``asdict``, pickling (protocol 2 and up, as an
    Assertion's), copies and weak references.  No instance ``__dict__``
    (``vars()``, a new attribute): what the compiled page sets in place."""
    res = Q.QueryResult("d/e0", "recency", [Q.Result(a=1)], [])
    assert [f.name for f in dataclasses.fields(res)] == [
        "concept_path", "lens", "results", "assertions", "next_cursor", "extra"]
    assert (res.next_cursor, res.extra) == (None, {})
    assert res.extra is not Q.QueryResult("d/e0", "recency", [], []).extra
    assert dataclasses.replace(res, next_cursor="c").next_cursor == "c"
    assert dataclasses.asdict(res)["results"] == [{"a": 1}]
    for proto in range(2, pickle.HIGHEST_PROTOCOL + 1):
        assert pickle.loads(pickle.dumps(res, proto)) == res
    assert weakref.ref(res)() is res
    assert "QueryResult(concept_path='d/e0'" in repr(res)
    assert not hasattr(res, "__dict__")
    res.extra = {"k": 1}        # a field is still assignable
    assert res.extra == {"k": 1}


@pytest.mark.parametrize("audit", [False, True])
def test_a_warm_query_result_is_the_callers_own(clocked, monkeypatch, audit):
    """A held answer's page, served twice: a caller changing everything it
    got (the fields, the results dicts, the lists, extra) changes nothing
    the next query gets, in both builds, and every field is set."""
    store = clocked(audit=audit)
    _fill(store, 0)
    got = {}
    for name, first in IMPLS:
        set_first(monkeypatch, first)
        store.reader.cache.clear()
        shapes = []
        for i in range(4):
            res = store.query("d/e1", predicate="p1")
            shapes.append(copy.deepcopy(_shape(res)))     # (before it is changed)
            res.results[0]["winner"] = None
            res.results.append(Q.Result(x=i))
            res.assertions.clear()
            res.extra["x"] = i
            res.concept_path = res.lens = res.next_cursor = "changed"
        assert shapes[1:] == shapes[:1] * 3, name
        assert shapes[0][0] is Q.QueryResult and shapes[0][3], name
        got[name] = shapes[0]
    assert all(v == got["pure"] for v in got.values())


@dataclasses.dataclass
class DictResult:
    """QueryResult as a plain dataclass (an instance dict): the compiled
    page sets its fields by setattr."""
    concept_path: str
    lens: str
    results: list
    assertions: list
    next_cursor: str | None = None
    extra: dict = dataclasses.field(default_factory=dict)


def test_a_query_result_class_with_a_dict_is_set_by_name(clocked):
    """A first page made with a QueryResult class that has an instance dict
    answers what the twin answers with it: the same fields, in the same
    order, in the instance dict."""
    store = clocked(audit=True)
    _fill(store, 0)
    env = list(Q._FIRST_ENV)
    env[7] = DictResult
    got = {}
    for name, make in [("pure", qpure.first_page)] + (
            [("compiled", _query.first_page)] if _query is not None else []):
        first = make(tuple(env))
        store.reader.cache.clear()
        out = []
        for _ in range(3):
            try:
                res = first(store.reader, "d/e1", "p1", False, "recency", 100, None)
                out.append((type(res), vars(res) if hasattr(res, "__dict__") else
                            [getattr(res, n, "unset") for n in
                             ("concept_path", "lens", "next_cursor", "extra")]))
            except Exception as exc:  # noqa: BLE001 - compared as outcomes
                out.append(type(exc))
        got[name] = out
    assert all(v == got["pure"] for v in got.values()), got
    assert got["pure"][1][0] is DictResult      # (the first is the cold page's run_query's)
    assert list(got["pure"][1][1]) == [f.name for f in dataclasses.fields(DictResult)]


# ------------------------------------------------------------------ answer_token

def _tokens(st, paths, pred, desc):
    out = [qpure.answer_token(st, paths, pred, desc, Q.GEN_MASK, Q.GEN_MIX),
           Q._token(st, paths, pred, desc)]
    if _query is not None:
        out.append(_query.answer_token(st, paths, pred, desc, Q.GEN_MASK, Q.GEN_MIX))
    return out


def test_answer_token_is_its_twin(clocked):
    store = clocked()
    _fill(store, 0)
    st = store.state
    for paths in (["d/e0"], ["d/e0", "d/e0/c", "d/e0/c/x"], ["d/none"], ["d/e1", "d/none"], []):
        for pred in ("p0", "p1", "p9", None):
            for desc in (False, True):
                toks = _tokens(st, paths, pred, desc)
                assert all(t == toks[0] for t in toks), (paths, pred, desc)
    before = _tokens(st, ["d/e0"], "p0", False)[0]
    store.put({"concept_path": "d/e0", "predicate": "p0", "value": 9, "confidence": 0.5,
               "timestamp": T0 + 7})
    assert _tokens(st, ["d/e0"], "p0", False)[0] != before


def test_a_damaged_generation_table_is_refused_by_both(clocked, monkeypatch):
    store = clocked()
    _fill(store, 0)
    st = store.state
    monkeypatch.setattr(st, "key_gen", st.key_gen[:100])
    with pytest.raises(ValueError):
        qpure.answer_token(st, ["d/e0"], "p0", False, Q.GEN_MASK, Q.GEN_MIX)
    if _query is not None:
        with pytest.raises(ValueError):
            _query.answer_token(st, ["d/e0"], "p0", False, Q.GEN_MASK, Q.GEN_MIX)
    monkeypatch.setattr(st, "key_gen", st.path_gen)
    monkeypatch.setattr(st, "path_gen", st.path_gen[:100])
    with pytest.raises(ValueError):
        qpure.answer_token(st, ["d/e0"], "p0", False, Q.GEN_MASK, Q.GEN_MIX)


@pytest.mark.parametrize("pid", [-5, 2**40 + 3, "x", 1.5, None])
@pytest.mark.parametrize("table", ["path_ids", "pred_ids"])
def test_a_damaged_id_gives_both_the_same_token_or_error(clocked, monkeypatch, pid, table):
    """One path (the compiled token's short way) and two, with the path's
    or the predicate's id replaced: the same token, or the same error
    type, from both (None: not stored, as the twin's ``.get`` reads it)."""
    store = clocked()
    _fill(store, 0)
    st = store.state
    monkeypatch.setattr(st, table, dict(getattr(st, table), **{
        "d/e0" if table == "path_ids" else "p0": pid}))
    for paths in (["d/e0"], ["d/e0", "d/e1"]):
        for pred in ("p0", "p9", None):
            got = []
            for fn in [qpure.answer_token] + ([_query.answer_token] if _query else []):
                try:
                    got.append(fn(st, paths, pred, False, Q.GEN_MASK, Q.GEN_MIX))
                except (TypeError, OverflowError) as exc:
                    got.append(TypeError if isinstance(exc, TypeError) else OverflowError)
            assert all(g == got[0] for g in got), (pid, paths, pred, got)


# ------------------------------------------------------------------ construction

@pytest.mark.skipif(_query is None, reason="compiled _query not built")
def test_it_refuses_classes_it_cannot_build_in_place():
    env = list(Q._FIRST_ENV)

    class WithDict:
        _UNSET = object()

        def __init__(self, record, seq):
            self.record = record

    class Slotted:
        __slots__ = ("record", "seq", "status")
        _UNSET = object()

    class NotDict(dict):
        def __init__(self, *a):
            super().__init__(*a)

    @dataclasses.dataclass(slots=True)
    class MissingSlot:      # (QueryResult without ``extra``: nowhere to set it)
        concept_path: str
        lens: str
        results: list
        assertions: list
        next_cursor: str | None = None

    class ReadOnly:         # (a field that is no writable slot)
        __slots__ = ("concept_path", "lens", "results", "assertions", "next_cursor")
        extra = property(lambda self: {})

    for i, bad in ((8, WithDict), (8, Slotted), (6, NotDict), (7, MissingSlot), (7, ReadOnly)):
        e = list(env)
        e[i] = bad
        with pytest.raises(TypeError):
            _query.first_page(tuple(e))
    assert qfast.first_page is (_query.first_page if qfast.COMPILED else qpure.first_page)


@pytest.mark.parametrize("max_queue", [0, 1, 2, 40, 511, 512, 513, 2000, 10**6])
def test_below_quick_below_add_only_appends(tmp_path, max_queue):
    """The compiled call appends its line itself below ``quick_below``:
    there AuditLog.add neither drains, drops nor wakes the writer."""
    from stemedb.core import audit as audit_mod
    log = AuditLog(str(tmp_path), max_queue=max_queue)
    try:
        assert log.quick_below <= audit_mod.WAKE_AT
        assert log.quick_below <= max_queue // 2
    finally:
        log.close()


@pytest.mark.skipif(not qfast.COMPILED, reason="the kept end is written by the compiled audit")
@pytest.mark.parametrize("agent", [None, "agent-7", 'a "quoted" \\ agent é\u2028'])
def test_the_line_of_a_held_answer_is_audit_heads(clocked, agent):
    """The line the compiled call queues (its parameters' names written
    from the JSON it keeps, _name_keys) is audit_head's, byte for byte:
    queued as a KeptLine of its pieces, written by the flush's audit_take."""
    store = clocked(audit=True)
    _fill(store, 0)
    first = _query.first_page(Q._FIRST_ENV)
    store.query("d/e1", predicate="p1", agent=agent)        # the answer and its kept end
    store.audit.flush()
    out = first(store.reader, "d/e1", "p1", False, "recency", 100, agent)
    assert out is not None
    kept = store.audit._queue.pop()
    assert type(kept) is _query.KeptLine
    line, ends, failed, _ = _query.audit_take(collections.deque([kept]), 1, None, None, None)
    assert failed == 0 and _query.split_lines(line, ends) == [line]
    [ans] = [v for v in store.reader.cache._d.values()
             if isinstance(v, Q.Answer) and v.tail is not None]
    entry = orjson.loads(line)
    params = ("d/e1", "p1", False, "recency", None, None, None, None, None, False, False,
              100, None)
    want = _query.audit_head(Q._AUDIT_PARAMS, ans.tail, int(entry["id"][-4:], 16),
                             entry["at_us"], agent, params)
    assert line == want


@pytest.mark.skipif(_query is None, reason="compiled _query not built")
def test_name_keys_are_the_names_json():
    names = Q._AUDIT_PARAMS + ('a"b', "é\u2028", "\x01\\")
    assert _query.name_keys(names) == tuple(orjson.dumps(n) + b":" for n in names)


@pytest.mark.parametrize("changed", [
    {}, {"as_of": "2024-03-01T00:00:00Z"}, {"known_at": "2024-03-01T00:00:00Z"},
    {"since": "2024-03-01T00:00:00Z"}, {"lifecycle": "approved"}, {"lifecycle": "any"},
    {"epoch": "e1"}, {"decay": True}, {"include_retracted": True}])
@pytest.mark.parametrize("pinned", [False, True])
def test_answer_key_short_only_for_the_default_view(changed, pinned):
    """query._answer_key files the default view's first page (what
    first_page asks) under (path, predicate, include_descendants, lens)
    and anything else (a filter not at its default, a cursor's pin) under
    the whole 12-tuple: keys of two lengths are never equal, so no other
    view can take the default one's answer or give it its own."""
    f = Q.parse_filters(**changed)
    f.seq_bound, f.rec_bound, f.at_us = 7, 8, 9
    key = Q._answer_key("d/e0", "p0", False, "recency", f, pinned)
    if not changed and not pinned:
        assert key == ("d/e0", "p0", False, "recency")
    else:
        assert len(key) == 12 and key[:4] == ("d/e0", "p0", False, "recency")
        assert key[11] == ((7, 8, 9) if pinned else None)
        assert key != ("d/e0", "p0", False, "recency")


@pytest.mark.parametrize("name,first", IMPLS)
def test_first_page_and_run_query_share_the_default_answer(clocked, monkeypatch, name, first):
    """The answer the one-call path files is the one run_query finds (an
    answer hit, no second answer), and the reverse; a filtered query of
    the same key is a miss filed beside it."""
    store = clocked()
    _fill(store, 3)
    cache = store.reader.cache
    out = first(store.reader, "d/e1", "p1", False, "recency", 100, None)
    assert out is not None
    h, n = cache.answer_hits, len(cache._d)
    set_first(monkeypatch, _off)
    assert Q.run_query(store.reader, "d/e1", predicate="p1").assertions == out.assertions
    assert (cache.answer_hits, len(cache._d)) == (h + 1, n)
    Q.run_query(store.reader, "d/e2", predicate="p0")           # run_query files it
    h = cache.answer_hits
    assert first(store.reader, "d/e2", "p0", False, "recency", 100, None) is not None
    assert cache.answer_hits == h + 1
    m = cache.answer_misses
    Q.run_query(store.reader, "d/e1", predicate="p1", lifecycle="any")
    assert cache.answer_misses == m + 1
