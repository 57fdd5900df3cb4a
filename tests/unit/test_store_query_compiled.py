"""Store.query's compiled entry (``qfast.store_query``: the compiled
``_query.store_query`` and its pure twin ``qpure.store_query``, which keeps
the Python function) behaves as the Python function it stands for:

* the signature, name, doc and help text users see are the function's
  (the same in both builds);
* every call shape gives the same answer or the same error, word for word
  and naming the same field: plain first pages, keyword ``concept_path``,
  filters, cursors, bad values of every argument, and calls that do not
  bind (missing or extra positionals, repeated or unknown keywords);
* it reads ``query.first_page`` and the store module's ``run_query`` at
  each call, as the function does (tests swap them);
* it refuses to wrap a function of another shape.
"""
from __future__ import annotations

import inspect
import pydoc
import random

import orjson
import pytest

from stemedb.core import qfast, qpure
from stemedb.core import query as Q
from stemedb.core import store as store_mod
from stemedb.core.store import Store
from tests.unit.test_query_fastpath import clocked  # noqa: F401 (a fixture: the store at a set clock)
from tests.unit.test_query_first_page import _fields

try:
    from stemedb.core import _query  # type: ignore[attr-defined]
except ImportError:     # a pure-Python build: only the pure twin to check
    _query = None

needs_compiled = pytest.mark.skipif(_query is None, reason="compiled _query not built")
T0 = 1_709_294_400

# the Python function (the compiled build's Store.query wraps it)
PY = getattr(Store.query, "__wrapped__", Store.query)

SIGNATURE = ("(self, concept_path: 'str', *, predicate=None, include_descendants=False, "
             "lens='recency', limit=100, cursor=None, agent=None, **filters)")


def test_the_build_chooses_and_the_user_sees_one_signature():
    if qfast.COMPILED:
        assert Store.query is not PY and Store.query.__wrapped__ is PY
    else:
        assert Store.query is PY
    assert str(inspect.signature(Store.query)) == SIGNATURE
    for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
        assert getattr(Store.query, attr) == getattr(PY, attr)
    assert Store.query.__qualname__ == "Store.query"
    # help(): the same text; only its header names the compiled function's
    # type ("cython_function_or_method in module ...", not "function")
    assert pydoc.render_doc(Store.query).splitlines()[1:] == \
        pydoc.render_doc(PY).splitlines()[1:]
    text = pydoc.render_doc(Store, renderer=pydoc.plaintext)
    assert " |  query" + SIGNATURE + "\n |      Resolve claims" in text


def test_the_pure_twin_is_the_function_itself():
    def f(self, concept_path, *, a=1):
        return a
    assert qpure.store_query(f, Q) is f


@needs_compiled
def test_it_refuses_a_function_of_another_shape():
    def two(self, concept_path, *, predicate=None):
        return None

    def no_filters(self, concept_path, *, predicate=None, include_descendants=False,
                   lens="recency", limit=100, cursor=None, agent=None):
        return None
    for f in (two, no_filters):
        with pytest.raises(TypeError):
            _query.store_query(f, Q)


def _fill(store, seed: int) -> None:
    r = random.Random(seed)
    hashes = []
    for i in range(60):
        hashes.append(store.put({
            "concept_path": f"d/e{r.randrange(3)}" + ("/c" if i % 7 == 0 else ""),
            "predicate": f"p{r.randrange(2)}", "value": r.choice([1, "x", [1, 2], i]),
            "confidence": r.choice([0.2, 0.9]), "timestamp": T0 + r.randrange(10**6),
            "source": r.choice([None, "fda://x"])}).hash)
    for h in r.sample(hashes, 4):
        store.retract(hash=h, reason="test")


def _outcome(fn):
    try:
        res = fn()
    except Exception as exc:  # noqa: BLE001 - the error itself is compared
        return ("raised", type(exc), str(exc), getattr(exc, "field", None))
    return ("answer", type(res), _fields(res), orjson.dumps(res.to_dict()))


def _shapes(s, cursor):
    """(positional args after the store, keywords), as users might call."""
    ok = [((p,), kw) for p in ("d/e0", "d/e1", "d/e0/c", "d/none")
          for kw in ({}, {"predicate": "p0"}, {"predicate": "p1", "limit": 2},
                     {"predicate": "p0", "lens": "consensus", "include_descendants": True},
                     {"predicate": "p0", "limit": 1000, "cursor": None},
                     {"lens": "trust"}, {"predicate": "p0", "agent": "a-1"},
                     {"predicate": "p0", "as_of": T0 + 500_000},
                     {"predicate": "p0", "decay": True}, {"include_retracted": True})]
    ok += [((), {"concept_path": "d/e0", "predicate": "p0"}),
           (("d/e0",), {"predicate": "p0", "limit": 2, "cursor": cursor})]
    bad = [((), {}), (("d/e0", "p0"), {}), (("d/e0", "p0"), {"predicate": "p0"}),
           (("d/e0",), {"concept_path": "d/e0"}), (("d/e0",), {"self": s}),
           (("d/e0",), {"foo": 1}), (("d/e0",), {"predicate": "p0", "bar": 2, "lens": "x"}),
           ((3,), {}), ((b"d/e0",), {}), (("",), {}), (("d/e0",), {"predicate": 5}),
           (("d/e0",), {"lens": None}), (("d/e0",), {"lens": "nope"}),
           (("d/e0",), {"limit": 0}), (("d/e0",), {"limit": 1001}), (("d/e0",), {"limit": True}),
           (("d/e0",), {"limit": "5"}), (("d/e0",), {"include_descendants": "yes"}),
           (("d/e0",), {"agent": 5}), (("d/e0",), {"cursor": "garbage"}),
           (("d/e0",), {"cursor": ""}), (("d/e0",), {"as_of": "x"}),
           (("d/e0",), {"lifecycle": "nope"})]
    return ok + bad


@needs_compiled
@pytest.mark.parametrize("audit", [False, True])
def test_every_call_shape_answers_or_fails_as_the_function(clocked, audit):
    s = clocked(audit=audit)
    _fill(s, 1)
    compiled = _query.store_query(PY, Q)
    cursor = PY(s, "d/e0", predicate="p0", limit=2).next_cursor
    assert cursor
    for args, kw in _shapes(s, cursor):
        for _ in range(2):     # a computed answer, then a held one
            want = _outcome(lambda: PY(s, *args, **kw))
            got = _outcome(lambda: compiled(s, *args, **kw))
            assert got == want, (args, kw)
    # unbound calls, self by keyword included
    assert _outcome(lambda: compiled(self=s, concept_path="d/e0")) == \
        _outcome(lambda: PY(self=s, concept_path="d/e0"))
    assert _outcome(lambda: compiled()) == _outcome(lambda: PY())
    # bound, through the class: the same object answers
    assert _outcome(lambda: s.query("d/e1", predicate="p1")) == \
        _outcome(lambda: PY(s, "d/e1", predicate="p1"))


def test_it_reads_first_page_and_run_query_at_each_call(clocked, monkeypatch):
    s = clocked()
    _fill(s, 2)
    want = orjson.dumps(PY(s, "d/e0", predicate="p0").to_dict())
    real_first, real_run = Q.first_page, store_mod.run_query
    calls = []

    def first(*a):
        calls.append(("first", a))
        return real_first(*a)
    monkeypatch.setattr(Q, "first_page", first)
    res = s.query("d/e0", predicate="p0", limit=100)
    assert orjson.dumps(res.to_dict()) == want
    assert calls == [("first", (s.reader, "d/e0", "p0", False, "recency", 100, None))]

    def declined(*a):
        calls.append(("declined", a))

    def run(*a, **k):
        calls.append(("run", a, k))
        return real_run(*a, **k)
    calls.clear()
    monkeypatch.setattr(Q, "first_page", declined)
    monkeypatch.setattr(store_mod, "run_query", run)
    res = s.query("d/e0", predicate="p0", agent="x")
    assert orjson.dumps(res.to_dict()) == want
    assert calls == [
        ("declined", (s.reader, "d/e0", "p0", False, "recency", 100, "x")),
        ("run", (s.reader, "d/e0"), {"predicate": "p0", "lens": "recency", "limit": 100,
                                     "include_descendants": False, "cursor": None,
                                     "agent": "x"}),
        # (run_query asks the first page itself too)
        ("declined", (s.reader, "d/e0", "p0", False, "recency", 100, "x"))]
    calls.clear()       # a filter: the function's own path, run_query with it
    PY_res = s.query("d/e0", predicate="p0", decay=False)
    # (decay=False is run_query's default: it asks the first page itself)
    assert [c[0] for c in calls] == ["run", "declined"] and calls[0][2]["decay"] is False

    assert orjson.dumps(PY_res.to_dict()) == want
    monkeypatch.delattr(Q, "first_page")
    with pytest.raises(AttributeError):
        s.query("d/e0", predicate="p0")
