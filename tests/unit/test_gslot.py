"""The compiled first page's second way to a cached answer
(``FirstPage._gslot_hit``): a hit keeps the generation slot of the answer's
one-part token in the answer (``Answer.gslot``), and later hits test the
token against that slot without looking the path and predicate up.  Held
to the pure twin (``qpure.first_page``, which never reads ``gslot``):
the same pages, errors, hit and miss counts and LRU order, over answers
whose token or kept slot was damaged after the slot was kept, and over
writes that move the key's generation."""
from __future__ import annotations

import pytest

from stemedb.core import query as Q
from tests.unit.test_first_page_inplace import DAMAGES
from tests.unit.test_query_fastpath import clocked  # noqa: F401 (a fixture: the store at a set clock)
from tests.unit.test_query_fastpath import set_first
from tests.unit.test_query_first_page import IMPLS, _fill, _shape

try:
    from stemedb.core import _query  # type: ignore[attr-defined]
except ImportError:
    _query = None

KEYS = [("d/e1", "p1"), ("d/e2", "p0"), ("d/e0", None), ("d/e1", None), ("d/e2", "p2")]


def _cached(store, key):
    return store.reader.cache._d[(key[0], key[1], False, "recency")]


def _outcome(store, key):
    try:
        return _shape(store.query(key[0], predicate=key[1]))
    except Exception as exc:  # noqa: BLE001 - compared as outcomes
        return ("error", type(exc).__name__)


def _state(store):
    c = store.reader.cache
    return c.answer_hits, c.answer_misses, [k for k in c._d if type(k) is tuple]


def _third_of(store, monkeypatch, first, key, damage):
    """Cold, warm (the compiled page keeps the slot), ``damage``, then two
    more: the outcomes and the cache's counters and answer order."""
    set_first(monkeypatch, first)
    cache = store.reader.cache
    cache.clear()
    cache.answer_hits = cache.answer_misses = 0
    out = [_outcome(store, key), _outcome(store, key)]
    damage(_cached(store, key))
    out += [_outcome(store, key), _outcome(store, key)]
    return out, _state(store)


GSLOT_DAMAGES = {
    "gslot-none": lambda a: setattr(a, "gslot", None),
    "gslot-str": lambda a: setattr(a, "gslot", "7"),
    "gslot-float": lambda a: setattr(a, "gslot", 7.0),
    "gslot-big": lambda a: setattr(a, "gslot", 1 << 80),
    "gslot-out": lambda a: setattr(a, "gslot", 1 << 20),
    "gslot-negative-out": lambda a: setattr(a, "gslot", -(1 << 20)),
    "gslot-other-sign": lambda a: setattr(a, "gslot", -1 - a.gslot if type(a.gslot) is int else 0),
    "gslot-deleted": lambda a: delattr(a, "gslot"),
    "gslot-bool": lambda a: setattr(a, "gslot", True),
}


@pytest.mark.parametrize("audit", [False, True])
@pytest.mark.parametrize("damage", sorted(DAMAGES) + sorted(GSLOT_DAMAGES))
@pytest.mark.parametrize("key", KEYS[:3])
def test_a_kept_slot_hit_is_the_twins(clocked, monkeypatch, audit, damage, key):
    store = clocked(audit=audit)
    _fill(store, 0)
    fn = DAMAGES.get(damage) or GSLOT_DAMAGES[damage]
    got = {name: _third_of(store, monkeypatch, first, key, fn) for name, first in IMPLS}
    assert all(v == got["pure"] for v in got.values()), got
    if damage == "none":
        assert got["pure"][1][:2] == (3, 1), "the three repeats were answer hits"


@pytest.mark.skipif(_query is None, reason="the compiled page keeps the slot")
def test_the_slot_is_kept_and_used(clocked, monkeypatch):
    """The compiled page keeps the slot in the answer it makes (a path's as
    -1 - slot; before session 15 at the answer's first hit), the pure one
    never; a kept slot serves the next hit, and the slot a made answer
    keeps is the one its first hit keeps when it has none."""
    store = clocked(audit=True)
    _fill(store, 0)
    cache = store.reader.cache
    for name, first in IMPLS:
        set_first(monkeypatch, first)
        cache.clear()
        for key in KEYS:
            store.query(key[0], predicate=key[1])
            g = _cached(store, key).gslot                  # made: kept at once, compiled
            if name == "pure":
                assert g is None
                continue
            assert type(g) is int and ((g < 0) == (key[1] is None))
            hits = cache.answer_hits
            store.query(key[0], predicate=key[1])
            assert cache.answer_hits == hits + 1 and _cached(store, key).gslot == g
            _cached(store, key).gslot = None                 # as an answer made before
            store.query(key[0], predicate=key[1])           # the first hit keeps it
            assert _cached(store, key).gslot == g
    # the kept slot is the one the ids give (state.gen_slot's formula)
    st = store.reader.state
    for key in KEYS:
        pid = st.path_ids[key[0]]
        want = (-1 - (pid & Q.GEN_MASK) if key[1] is None
                else (pid * Q.GEN_MIX + st.pred_ids[key[1]]) & Q.GEN_MASK)
        assert _cached(store, key).gslot == want


@pytest.mark.skipif(_query is None, reason="the compiled page keeps the slot")
def test_a_made_answers_first_hit_takes_the_slots_way(clocked, monkeypatch):
    """The first hit of an answer the compiled page made takes _gslot_hit's
    way: the path's and predicate's ids are not looked up (a State whose
    id dicts lost the key still serves it; the ids' way, or run_query's,
    would find no such path)."""
    store = clocked(audit=True)
    _fill(store, 0)
    set_first(monkeypatch, IMPLS[-1][1])
    store.reader.cache.clear()
    key = KEYS[0]
    want = _outcome(store, key)                     # made
    st = store.reader.state
    monkeypatch.setattr(st, "path_ids", {k: v for k, v in st.path_ids.items() if k != key[0]})
    monkeypatch.setattr(st, "pred_ids", {k: v for k, v in st.pred_ids.items() if k != key[1]})
    assert _outcome(store, key) == want


def test_a_write_moves_the_kept_slots_generation(clocked, monkeypatch):
    """Hits with kept slots, then a write to one key (its generation and its
    path's move): every key's next page is a fresh computation's."""
    store = clocked(audit=True)
    _fill(store, 0)
    cache = store.reader.cache
    for n, (name, first) in enumerate(IMPLS):
        set_first(monkeypatch, first)
        cache.clear()
        for _ in range(3):
            for k in KEYS:
                _outcome(store, k)
        value = 12345 + n
        store.put({"concept_path": "d/e1", "predicate": "p1", "value": value, "source": "w",
                   "confidence": 0.99, "timestamp": 1_700_000_000 + n})
        misses = cache.answer_misses
        got = [_outcome(store, k) for k in KEYS]
        # d/e1 p1 and d/e1's path-wide answer were made afresh; the others hit
        assert cache.answer_misses - misses == 2, name
        assert str(value) in repr(got[0])
        set_first(monkeypatch, IMPLS[0][1])
        cache.clear()
        assert got == [_outcome(store, k) for k in KEYS], name
