"""What the compiled first page (``_query.FirstPage``) reads and calls in
place, held to what the pure twin (``qpure.first_page``, through
``ReadCache.answer`` and ``AuditLog.add``) reads and calls by name:

* a cached answer's token compared without making this query's token
  (``_query.token_is`` against ``qpure.token_is``, the ``!=`` that
  ReadCache.answer asks), damaged and odd tokens included, and a first
  page over a cached answer whose token was damaged: the same miss, page
  and counters in both builds;
* an answer's fields read at their ``__slots__`` offsets: an Answer of
  another class, or with a field deleted, read by name (the same page, or
  the same error, as the twin);
* the read cache's OrderedDict and the audit queue's deque called through
  their methods directly: the same LRU order as the twin's; a subclass of
  either gets its own methods called, as the twin calls them.
"""
from __future__ import annotations

import collections

import pytest

from stemedb.core import qpure
from stemedb.core import query as Q
from tests.unit.test_query_fastpath import clocked  # noqa: F401 (a fixture: the store at a set clock)
from tests.unit.test_query_fastpath import set_first
from tests.unit.test_query_first_page import IMPLS, _fill, _shape

try:
    from stemedb.core import _query  # type: ignore[attr-defined]
except ImportError:     # a pure-Python build: only the pure twin to compare
    _query = None


class Odd:
    """Equal to everything, and unequal to everything too."""

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return True

    __hash__ = object.__hash__


class NeverEqual:
    """Neither equal nor unequal to anything."""

    def __eq__(self, other):
        return False

    def __ne__(self, other):
        return False

    __hash__ = object.__hash__


class Boom:
    def __eq__(self, other):
        raise ArithmeticError("eq")

    def __ne__(self, other):
        raise ArithmeticError("ne")

    __hash__ = object.__hash__


BIG = 2**70
TOKENS = [
    (5, -1, -1, (7,)), (5, -1, -1, (8,)), (6, -1, -1, (7,)), (5, 0, -1, (7,)),
    (5, -1, 0, (7,)), (5, -1, -1, ()), (5, -1, -1, (7, 7)), (5, -1, -1, [7]),
    (5, -1, -1, 7), (5, -1, -1), (5, -1, -1, (7,), 0), None, [5, -1, -1, (7,)], "x",
    (5.0, -1.0, -1, (7.0,)), (True, -1, -1, (7,)), (BIG, -1, -1, (BIG + 1 - 1,)),
    (Odd(), -1, -1, (7,)), (NeverEqual(), -1, -1, (7,)), (5, NeverEqual(), -1, (7,)),
    (5, -1, -1, (NeverEqual(),)), (5, -1, -1, NeverEqual()), (5, -1, -1, Odd()),
    (Boom(), -1, -1, (7,)), (5, -1, -1, (Boom(),)), (5, -1, -1, Boom()), Boom(), Odd(),
    NeverEqual(),
]
GENS = [5, 6, 5.0, BIG, NeverEqual()]
PARTS = [7, 8, 7.0, BIG, NeverEqual(), None]


def _outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - compared as outcomes
        return type(exc)


@pytest.mark.skipif(_query is None, reason="compiled _query not built")
def test_token_is_is_its_twin():
    for tok in TOKENS:
        for gen in GENS:
            for part in PARTS:
                want = _outcome(qpure.token_is, tok, gen, part)
                got = _outcome(_query.token_is, tok, gen, part)
                assert got == want, (tok, gen, part)


def test_the_twin_is_what_the_cache_asks():
    """qpure.token_is is ReadCache.answer's test of a one-part token."""
    for tok in TOKENS[:17]:
        assert qpure.token_is(tok, 5, 7) == (not (tok != (5, -1, -1, (7,))))
    assert qpure.token_is((5, -1, -1, (7,)), 5, 7)
    assert not qpure.token_is((5, -1, -1, (7,)), 6, 7)


def _cached_answer(store):
    [(key, ans)] = [(k, v) for k, v in store.reader.cache._d.items()
                    if isinstance(v, Q.Answer)]
    return key, ans


def _first_of(store, monkeypatch, first, damage):
    """A cold then a warm query of one small key (held) with ``first``,
    ``damage(answer)`` applied to its cached answer in between: the warm
    outcome, the cache counters and the cache's keys."""
    set_first(monkeypatch, first)
    cache = store.reader.cache
    cache.clear()
    cache.answer_hits = cache.answer_misses = 0
    store.query("d/e1", predicate="p1")
    damage(_cached_answer(store)[1])
    try:
        out = _shape(store.query("d/e1", predicate="p1"))
    except Exception as exc:  # noqa: BLE001 - compared as outcomes
        out = ("error", type(exc).__name__)
    return out, cache.answer_hits, cache.answer_misses, len(cache._d)


DAMAGES = {
    "none": lambda a: None,
    "gen": lambda a: setattr(a, "token", (a.token[0] + 1,) + a.token[1:]),
    "part": lambda a: setattr(a, "token", a.token[:3] + ((a.token[3][0] + 1,),)),
    "float": lambda a: setattr(a, "token", (float(a.token[0]), -1.0, -1, (float(a.token[3][0]),))),
    "list": lambda a: setattr(a, "token", list(a.token)),
    "short": lambda a: setattr(a, "token", a.token[:3]),
    "parts-list": lambda a: setattr(a, "token", a.token[:3] + (list(a.token[3]),)),
    "none-token": lambda a: setattr(a, "token", None),
    "odd": lambda a: setattr(a, "token", (Odd(), -1, -1, (Odd(),))),
    "never": lambda a: setattr(a, "token", a.token[:3] + ((NeverEqual(),),)),
    "boom": lambda a: setattr(a, "token", (Boom(),) + a.token[1:]),
    "no-token": lambda a: delattr(a, "token"),
    "no-held": lambda a: delattr(a, "held"),
    "no-results": lambda a: delattr(a, "results"),
    "no-active": lambda a: delattr(a, "active"),
    "active-none": lambda a: setattr(a, "active", None),
    "active-big": lambda a: setattr(a, "active", 10**6),
    "no-tail": lambda a: delattr(a, "tail"),
    "no-ptail": lambda a: delattr(a, "ptail"),
    "no-ords": lambda a: delattr(a, "ords"),
    # shapes the compiled hit's prefetches (_query.stemedb_warm_page) pass
    # over without reading through them: the page is the twin's
    "held-list": lambda a: setattr(a, "held", list(a.held)),
    "held-three": lambda a: setattr(a, "held", a.held + ([],)),
    "held-none-item": lambda a: setattr(a, "held", (a.held[0], None)),
    "results-tuple": lambda a: setattr(a, "results", tuple(a.results)),
    "results-many": lambda a: setattr(a, "results", list(a.results) * 70),
    "results-dicts": lambda a: setattr(a, "results", [dict(r) for r in a.results]),
}


@pytest.mark.parametrize("audit", [False, True])
@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_cached_answer_is_read_as_the_twin_reads_it(clocked, monkeypatch, audit,
                                                               damage):
    store = clocked(audit=audit)
    _fill(store, 0)
    got = {name: _first_of(store, monkeypatch, first, DAMAGES[damage])
           for name, first in IMPLS}
    assert all(v == got["pure"] for v in got.values()), got
    if damage == "none":
        assert got["pure"][1:3] == (1, 1), "the repeat was an answer hit"


class Sub(Q.Answer):
    """An Answer of another class, its ``held`` a property (read by name)."""

    __slots__ = ()
    held = property(lambda self: None)


def test_an_answer_of_another_class_is_read_by_name(clocked, monkeypatch):
    store = clocked(audit=True)
    _fill(store, 0)

    def to_sub(a):
        a.__class__ = Sub

    got = {name: _first_of(store, monkeypatch, first, to_sub)
           for name, first in IMPLS}
    assert all(v == got["pure"] for v in got.values()), got


class Moves(collections.OrderedDict):
    moved: list = []

    def move_to_end(self, key, last=True):
        Moves.moved.append(key)
        super().move_to_end(key, last)


class Queue(collections.deque):
    added: list = []

    def append(self, x):
        Queue.added.append(type(x).__name__)
        super().append(x)


KEYS = [("d/e0", "p0"), ("d/e1", "p1"), ("d/e2", "p0"), ("d/e0", "p0"), ("d/e1", "p1"),
        ("d/e2", "p2"), ("d/e0", "p0")]


@pytest.mark.parametrize("subclass", [False, True])
def test_the_cache_order_and_the_queue_are_the_twins(clocked, monkeypatch, subclass):
    """The same LRU order of the read cache after the same hits, and, for
    an OrderedDict or deque subclass, the same calls of its own methods."""
    store = clocked(audit=True)
    _fill(store, 2)
    cache, audit = store.reader.cache, store.audit
    got = {}
    for name, first in IMPLS:
        set_first(monkeypatch, first)
        cache.clear()
        audit.flush()
        if subclass:
            monkeypatch.setattr(cache, "_d", Moves())
            monkeypatch.setattr(audit, "_queue", Queue())
        Moves.moved, Queue.added = [], []
        for path, pred in KEYS:
            store.query(path, predicate=pred)
        keys = [k for k in cache._d if type(k) is tuple]
        got[name] = (keys, list(Moves.moved), len(audit._queue))
        if subclass:
            assert len(Queue.added) == len(KEYS), (name, Queue.added)
        audit.flush()
    assert all(v == got["pure"] for v in got.values()), got
    if subclass:
        assert got["pure"][1], "the subclass's move_to_end was called"


class Plain:
    """An answer class without __slots__: every field read by name."""


@pytest.mark.skipif(_query is None, reason="compiled _query not built")
def test_an_answer_class_without_slots_is_read_by_name(clocked, monkeypatch):
    """A FirstPage made for an Answer class without slots (reader.Answer
    changed) still serves reader.Answer's answers, by name."""
    store = clocked(audit=True)
    _fill(store, 0)
    env = list(Q._FIRST_ENV)
    env[-1] = Plain
    first = _query.first_page(tuple(env))
    got = {name: _first_of(store, monkeypatch, f, DAMAGES["none"])
           for name, f in IMPLS + [("plain", first)]}
    assert all(v == got["pure"] for v in got.values()), got
