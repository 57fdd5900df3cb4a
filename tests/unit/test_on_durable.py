"""The open's "on durable" step (``opening.on_durable``) applies a group of
single puts request by request in one call (``fast.apply_puts``), without
``records.group_frames``; every other group goes through
``State.apply_group``.  Both must leave the state ``apply_group`` leaves:
the same columns, maps (recent dicts included), generations and counters,
and the checkpoint anchor moved with every group.  Runs in whichever build is
active (both modes in CI): pure, only a group of one takes the direct path.
"""
import threading
from types import SimpleNamespace

import pytest

from stemedb.core import fast, records
from stemedb.core.format import FLAG_MORE, REC_ASSERT
from stemedb.core.opening import on_durable
from stemedb.core.state import SMALL_GROUP, State
from stemedb.core.wal import Request

from .test_index_records import _log, _scan, _state_view
from .test_index_small_groups import _recent


def _requests(buf, offs, types, seqs):
    """The log as the writer queues it: a single put's request (its
    ``frames`` as ``Writer._put_one`` sets them), a batch's (the records of
    one FLAG_MORE run), a meta record's (``apply_arg``); ``locs`` where the
    WAL would have written each."""
    out, i = [], 0
    while i < len(offs):
        j = i + 1
        if types[i] == REC_ASSERT:
            while j < len(offs) and buf[offs[j - 1] + 9] & FLAG_MORE:
                j += 1
        end = offs[j] if j < len(offs) else len(buf)
        data = buf[offs[i]:end]
        sizes = [(offs[k + 1] if k + 1 < j else end) - offs[k] for k in range(i, j)]
        if types[i] != REC_ASSERT:
            req = Request(data, sizes, [(types[i], seqs[i], None)])
        elif j == i + 1:
            req = Request(data, sizes, None, ((0,), (REC_ASSERT,), [seqs[i]]))
        else:
            req = Request(data, sizes, None, ([o - offs[i] for o in offs[i:j]],
                                              types[i:j], seqs[i:j]))
        req.locs = [(1, offs[i])]
        out.append(req)
        i = j
    return out


class _Checkpoints:
    def __init__(self):
        self.anchor = None
        self.seen = []

    def applied(self, anchor, n):
        self.seen.append((anchor, n))


def _through(reqs, sizes, direct):
    """A fresh State that applied ``reqs`` in groups of ``sizes`` (cycled):
    through on_durable, or through apply_group(group_frames(group))."""
    st = State()
    cp = _Checkpoints()
    parts = [SimpleNamespace(reader=SimpleNamespace(state=st, lock=threading.RLock()),
                             checkpoints=cp)]
    i = k = 0
    while i < len(reqs):
        group = reqs[i:i + sizes[k % len(sizes)]]
        k += 1
        i += len(group)
        anchor = {"segment": 1, "offset": group[-1].locs[0][1] + len(group[-1].data)}
        if direct:
            on_durable(parts, group, anchor)
        else:
            st.apply_group(*records.group_frames(group))
            cp.anchor = anchor
            cp.applied(anchor, sum(len(r.sizes) for r in group))
        assert cp.anchor is anchor
    return st, cp.seen


@pytest.mark.parametrize("seed,sizes", [(7, [1]), (8, [2, 3, SMALL_GROUP]),
                                        (9, [1, SMALL_GROUP + 1, 4])])
def test_on_durable_leaves_the_state_apply_group_leaves(seed, sizes):
    buf, _h = _log(500, seed=seed)
    reqs = _requests(buf, *_scan(buf))
    assert sum(1 for r in reqs if r.frames is not None and len(r.sizes) == 1) > 200
    assert any(r.apply_arg for r in reqs) and any(len(r.sizes) > 1 for r in reqs)
    mine, seen_mine = _through(reqs, sizes, True)
    ref, seen_ref = _through(reqs, sizes, False)
    assert seen_mine == seen_ref, "the same records counted per group"
    assert _recent(mine) == _recent(ref)
    assert mine.key_gen == ref.key_gen and mine.path_gen == ref.path_gen
    assert mine.check() == [] and ref.check() == []
    assert _state_view(mine) == _state_view(ref)


def test_a_group_with_anything_but_single_puts_goes_through_apply_group(monkeypatch):
    """A batch's request, a meta record's, or a request whose frames name
    another type, alone or in a group of puts: the whole group to
    apply_group, never _apply_one for part of it."""
    buf, _h = _log(60, seed=10)
    reqs = _requests(buf, *_scan(buf))
    calls = []
    monkeypatch.setattr(State, "apply_group", lambda self, *a: calls.append(list(a[3])))
    singles = [r for r in reqs if r.frames is not None and len(r.sizes) == 1]
    others = [r for r in reqs if r.frames is None or len(r.sizes) > 1]
    assert len(singles) > 10 and len(others) >= 3
    st = State()
    parts = [SimpleNamespace(reader=SimpleNamespace(state=st, lock=threading.RLock()),
                             checkpoints=_Checkpoints())]
    on_durable(parts, [singles[0]], {})
    assert calls == [] and st.count == 1, "a single put: _apply_one"
    on_durable(parts, singles[1:3], {})
    if fast.COMPILED:
        assert calls == [] and st.count == 3, "a few single puts, compiled: _apply_one"
    else:
        assert calls == [[r.frames[2][0] for r in singles[1:3]]] and st.count == 1
    for other in others[:3]:
        calls.clear()
        on_durable(parts, [singles[5], other], {})
        assert calls == [records.group_frames([singles[5], other])[3]], "the whole group"
        calls.clear()
        on_durable(parts, [other], {})
        assert len(calls) == 1
    calls.clear()
    on_durable(parts, singles[6:6 + SMALL_GROUP + 1], {})
    assert len(calls) == 1, "more than SMALL_GROUP: apply_group"
    bad = Request(singles[7].data, singles[7].sizes, None, ((0,), (REC_ASSERT + 100,), [1]))
    bad.locs = singles[7].locs
    calls.clear()
    on_durable(parts, [bad], {})
    assert calls == [[1]], "frames naming another type: apply_group"
