"""The compiled first page keeps a held answer's parameters' JSON with its
line's end (``Answer.ptail`` for pages of ``Answer.plimit``,
_query.FirstPage._kept_line): every line it queues is still audit_head's,
byte for byte, over any order of limits and agents (the kept JSON made
again when the limit changes), a path too long for the answer's reserved
room is not kept (and still written right), an agent audit_head does not
write leaves the entry to qaudit._audit, and the room is counted in the
answer's size."""
from __future__ import annotations

import collections

import orjson
import pytest

from stemedb.core import qfast
from stemedb.core import query as Q
from stemedb.core import readcache as RC
from tests.unit.test_query_fastpath import clocked  # noqa: F401 (a fixture: the store at a set clock)

try:
    from stemedb.core import _query  # type: ignore[attr-defined]
except ImportError:
    _query = None

pytestmark = pytest.mark.skipif(not qfast.COMPILED, reason="kept by the compiled first page")

T0 = 1_709_294_400


def _put(store, path, pred, n=3):
    for i in range(n):
        store.put({"concept_path": path, "predicate": pred, "value": i, "confidence": 0.5,
                   "source": "fda://x", "timestamp": T0 + i})


def _answer(store, path):
    [ans] = [v for k, v in store.reader.cache._d.items()
             if isinstance(v, Q.Answer) and type(k) is tuple and k[0] == path]
    return ans


def _bytes(item):
    """A queued line as the flush writes it: a warm hit's KeptLine (the
    line's pieces) written by audit_take; a finished line as it is."""
    if type(item) is _query.KeptLine:
        data, ends, failed, _ = _query.audit_take(collections.deque([item]), 1, None, None,
                                                  None)
        assert failed == 0 and _query.split_lines(data, ends) == [data]
        return data
    assert type(item) is bytes
    return item


def _check_line(store, path, pred, limit, agent):
    line = _bytes(store.audit._queue.pop())
    entry = orjson.loads(line)
    ans = _answer(store, path)
    params = (path, pred, False, "recency", None, None, None, None, None, False, False,
              limit, None)
    want = _query.audit_head(Q._AUDIT_PARAMS, ans.tail, int(entry["id"][-4:], 16),
                             entry["at_us"], agent, params)
    assert line == want
    return ans


def test_every_line_is_audit_heads_whatever_the_limits_and_agents(clocked):
    store = clocked(audit=True)
    _put(store, "d/e", "p")
    store.query("d/e", predicate="p")               # the answer and its kept end
    store.audit.flush()
    seq = [(100, None), (100, "a"), (100, None), (5, None), (5, 'q "x" \\ é'), (1000, None),
           (100, None), (3, "b"), (3, None)]
    for limit, agent in seq:
        store.query("d/e", predicate="p", limit=limit, agent=agent)
        ans = _check_line(store, "d/e", "p", limit, agent)
        assert ans.plimit == limit and type(ans.ptail) is bytes
        # the parameters' JSON alone (the tail is the answer's own, not
        # held twice), within the room the answer's size reserves
        assert ans.ptail.startswith(b',"params":{') and ans.ptail.endswith(b"}")
        assert not ans.ptail.endswith(ans.tail)
        assert len(ans.ptail) + 33 <= ans.proom


def test_a_path_beyond_the_room_is_not_kept_and_still_written(clocked, monkeypatch):
    store = clocked(audit=True)
    monkeypatch.setattr(RC, "PARAMS_BASE", 40)    # room for almost nothing
    _put(store, "d/long", "p")
    store.query("d/long", predicate="p")
    store.audit.flush()
    for limit in (100, 7, 100):
        store.query("d/long", predicate="p", limit=limit)
        ans = _check_line(store, "d/long", "p", limit, None)
        assert ans.ptail is None and ans.plimit is None and ans.proom == 40 + len("d/long") + 1


def test_an_agent_it_does_not_write_is_left_to_the_writer(clocked):
    store = clocked(audit=True)
    _put(store, "d/e", "p")
    store.query("d/e", predicate="p")
    store.query("d/e", predicate="p", limit=9)                  # kept for 9
    store.audit.flush()
    n = len(store.audit._queue)
    # not UTF-8: no line written here; qaudit._audit queues the entry its way
    res = store.query("d/e", predicate="p", limit=9, agent="\ud800")
    assert len(res.assertions) == 3
    q = store.audit._queue
    assert len(q) == n + 1 and type(q[-1]) not in (bytes, _query.KeptLine)
    q.pop()
    store.query("d/e", predicate="p", limit=9, agent="ok")
    _check_line(store, "d/e", "p", 9, "ok")


def test_the_room_is_counted_in_the_answers_size(clocked):
    store = clocked(audit=True)
    _put(store, "d/e", "p")
    store.query("d/e", predicate="p")
    ans = _answer(store, "d/e")
    assert ans.proom == RC.PARAMS_BASE + len("d/e") + len("p")
    cache = store.reader.cache
    kept = Q.Answer(ans.token, ans.results, list(ans.ords), ans.active)   # not held: no room
    assert kept.proom == 0 and kept.ptail is None
    assert ans.size >= kept.size + ans.proom
    assert cache.bytes >= ans.size


@pytest.mark.parametrize("limit,agent", [(100, None), (7, "a"), (1000, 'q "x" \\ é\u2028')])
def test_a_made_answer_keeps_its_parameters_for_its_first_hit(clocked, limit, agent):
    """The query that makes a held answer keeps its line's parameters' JSON
    in it (session 15; before, its first hit made and kept them): the
    making line and every hit's are audit_head's, the first hit writes
    from the kept bytes (not made again), and they are the bytes a first
    hit keeps for an answer that kept none."""
    store = clocked(audit=True)
    _put(store, "d/e", "p")
    store.query("d/e", predicate="p", limit=limit, agent=agent)         # made
    ans = _check_line(store, "d/e", "p", limit, agent)
    pt = ans.ptail
    assert type(pt) is bytes and ans.plimit == limit
    entries = []
    for _ in range(2):
        store.query("d/e", predicate="p", limit=limit, agent=agent)
        entries.append(orjson.loads(_bytes(store.audit._queue[-1])))
        _check_line(store, "d/e", "p", limit, agent)
        assert ans.ptail is pt and ans.plimit == limit
    ans.ptail = ans.plimit = None       # as an answer made before session 15
    store.query("d/e", predicate="p", limit=limit, agent=agent)
    entries.append(orjson.loads(_bytes(store.audit._queue[-1])))
    _check_line(store, "d/e", "p", limit, agent)
    assert ans.ptail == pt and ans.plimit == limit
    for e in entries:
        del e["id"]
    assert entries[0] == entries[1] == entries[2]


def test_an_answer_made_off_the_first_page_keeps_nothing(clocked):
    """Only the compiled first page vouches for its parameters: an answer
    run_query's own path makes (filed under its long key here) keeps no
    parameters' JSON and no slot, and its lines are still audit_head's."""
    store = clocked(audit=True)
    _put(store, "d/e", "p")
    store.query("d/e", predicate="p", since="2020-01-01T00:00:00Z")
    [ans] = [v for v in store.reader.cache._d.values() if isinstance(v, Q.Answer)]
    assert ans.tail and ans.ptail is None and ans.plimit is None and ans.gslot is None


def test_an_agent_it_does_not_write_at_the_making_keeps_nothing(clocked):
    """A making query whose agent audit_head does not write leaves its
    entry to the writer's path and keeps no parameters; the first hit with
    a plain agent keeps them as before."""
    store = clocked(audit=True)
    _put(store, "d/e", "p")
    store.query("d/e", predicate="p", agent="\ud800")
    q = store.audit._queue
    assert type(q[-1]) not in (bytes, _query.KeptLine)
    ans = _answer(store, "d/e")
    assert ans.ptail is None and ans.plimit is None
    store.query("d/e", predicate="p", agent="ok")
    _check_line(store, "d/e", "p", 100, "ok")
    assert type(ans.ptail) is bytes and ans.plimit == 100


def test_a_made_answer_beyond_the_room_keeps_nothing(clocked, monkeypatch):
    store = clocked(audit=True)
    monkeypatch.setattr(RC, "PARAMS_BASE", 40)
    _put(store, "d/long", "p")
    store.query("d/long", predicate="p")
    ans = _check_line(store, "d/long", "p", 100, None)
    assert ans.ptail is None and ans.plimit is None


@pytest.mark.parametrize("params", [
    ("d/e", "p", False, "recency", None, None, None, None, None, False, False, 9, None),
    ("d/e", "p", False, "recency", None, None, None, None, None, False, False, "9", None),
    ("d/e", "p", False, "recency"),
    ("d/e", "p", False, "recency", None, None, None, None, None, False, False, 9, None, 1.5),
])
def test_audit_head_keep_is_audit_head(params):
    """audit_head_keep's line is audit_head's (None where that is None); it
    keeps the parameters' JSON of a limit that is an int, once, in room."""
    class Ans:
        ptail = plimit = None
        proom = 10_000

    tail = b',"result_hashes":[]}\n'
    for agent in (None, "a", "\ud800"):
        a = Ans()
        want = _query.audit_head(Q._AUDIT_PARAMS, tail, 5, 1_000_000, agent, params)
        got = _query.audit_head_keep(Q._AUDIT_PARAMS, tail, 5, 1_000_000, agent, params, a)
        assert got == want
        if want is None or len(params) < 12 or type(params[11]) is not int:
            assert a.ptail is None and a.plimit is None
            continue
        assert a.plimit == params[11] and want.index(a.ptail) > 0
        assert want.endswith(a.ptail + tail)
        kept = a.ptail
        _query.audit_head_keep(Q._AUDIT_PARAMS, tail, 6, 1_000_000, agent, params[:11] + (3, None), a)
        assert a.ptail is kept and a.plimit == params[11]       # kept once
        a.ptail, a.proom = None, len(kept) + 32
        _query.audit_head_keep(Q._AUDIT_PARAMS, tail, 5, 1_000_000, agent, params, a)
        assert a.ptail is None                                  # beyond its room
