"""The write path's compiled helpers that keep objects away from the garbage
collector: ``_fast.map_add`` / ``map_add_many`` (``MultiMap.add`` /
``add_many``), ``_fast.add_recent``'s new lists and ``_fast.pending_add``
(the writer's in-flight hashes).  Each gives what its pure twin gives
(the same dict contents, counters and merges, the same errors); the
compiled one's new containers are not tracked by the GC, which is safe
only because they hold ints (and, for pending, the request, which holds
no reference back): checked here, with a collection that still frees a
request once nothing else refers to it.

The compiled half is skipped in the pure run (STEMEDB_PURE_PYTHON=1).
"""
import gc
import random
import weakref

import numpy as np
import pytest

from stemedb.core import fast, index
from stemedb.core.index import MultiMap

_fast = fast._fast
compiled = pytest.mark.skipif(_fast is None, reason="pure-Python run")


def _pairs(seed, n, keyspace):
    r = random.Random(seed)
    return [r.randrange(keyspace) - keyspace // 3 for _ in range(n)]


def _state(m):
    return dict(m.recent), m.n_recent, m.keys.tolist(), m.vals.tolist()


def test_pure_twins_are_the_multimap_methods():
    if _fast is None:
        assert fast.map_add is MultiMap.add
        assert fast.map_add_many is MultiMap.add_many
        assert fast.pending_add is fast.pending_add_py


@compiled
@pytest.mark.parametrize("seed,keyspace", [(1, 5), (2, 400), (3, 1 << 40)])
def test_map_add_matches_multimap_add(seed, keyspace):
    keys = _pairs(seed, 3000, keyspace)
    a, b = MultiMap(), MultiMap()
    for o, k in enumerate(keys):
        MultiMap.add(a, k, o)
        _fast.map_add(b, k, o)
        assert b.n_recent == a.n_recent
    assert _state(a) == _state(b)
    for lst in b.recent.values():
        assert not gc.is_tracked(lst)
        assert all(type(x) is int for x in lst)


@compiled
@pytest.mark.parametrize("merge_at", [None, 16])
def test_map_add_merges_where_the_pure_one_does(monkeypatch, merge_at):
    # the merge point: MERGE_AT additions (read per call, as MultiMap.add
    # reads it); both sides merge into equal runs
    if merge_at is not None:
        monkeypatch.setattr(index, "MERGE_AT", merge_at)
    a, b = MultiMap(), MultiMap()
    n = index.MERGE_AT + 5
    keys = _pairs(7, n, 1000)
    for o, k in enumerate(keys):
        MultiMap.add(a, k, o)
        _fast.map_add(b, k, o)
        if o == index.MERGE_AT - 1:
            assert a.n_recent == b.n_recent == 0 and len(b.keys) == index.MERGE_AT
    assert _state(a) == _state(b)
    assert a.get(keys[0]) == b.get(keys[0])


@compiled
@pytest.mark.parametrize("ords_kind", ["range", "list"])
def test_map_add_many_matches_add_many(ords_kind):
    a, b = MultiMap(), MultiMap()
    first = 0
    for size in [1, 2, 5, 8, 3, 1, 7] * 20:
        keys = _pairs(first, size, 30)
        ords = range(first, first + size)
        if ords_kind == "list":
            ords = list(ords)
        MultiMap.add_many(a, keys, ords)
        _fast.map_add_many(b, keys, ords)
        first += size
    assert _state(a) == _state(b)
    assert not any(gc.is_tracked(v) for v in b.recent.values())
    # no ordinals for the keys: refused, nothing added
    before = _state(b)
    with pytest.raises(ValueError):
        _fast.map_add_many(b, [1, 2, 3], range(5, 7))
    assert _state(b) == before
    with pytest.raises(TypeError):
        _fast.map_add_many(b, (1, 2), range(2))       # keys must be a list
    # the merge past MERGE_AT, once, as add_many does
    c, d = MultiMap(), MultiMap()
    keys = _pairs(11, index.MERGE_AT + 10, 5000)
    MultiMap.add_many(c, keys, range(len(keys)))
    _fast.map_add_many(d, keys, range(len(keys)))
    assert _state(c) == _state(d) and d.n_recent == 0


@compiled
def test_add_recent_lists_are_untracked_and_equal():
    keys = np.array(_pairs(5, 2000, 300), dtype=np.int64)
    ra, rb = {}, {}
    assert index.add_recent(ra, keys, 10) == _fast.add_recent(rb, keys, 10) == len(keys)
    assert ra == rb
    assert not any(gc.is_tracked(v) for v in rb.values())
    vals = np.arange(2000, dtype=np.int32)[::-1].copy()
    ra, rb = {}, {}
    index.add_recent(ra, keys.view(np.uint64), 0, vals)
    _fast.add_recent(rb, keys.view(np.uint64), 0, vals)
    assert ra == rb


class _Rec:
    def __init__(self, h):
        self.hash = h


class _Req:
    error = None


@pytest.mark.parametrize("impl", ["pure", "compiled"])
def test_pending_add(impl):
    if impl == "compiled" and _fast is None:
        pytest.skip("pure-Python run")
    add = fast.pending_add_py if impl == "pure" else _fast.pending_add
    recs = [_Rec(bytes([i]) * 32) for i in range(50)]
    seqs = list(range(100, 150))
    req = _Req()
    pending = {b"x" * 32: (7, None)}
    add(pending, recs, seqs, req)
    expect = {b"x" * 32: (7, None)}
    expect.update({r.hash: (s, req) for r, s in zip(recs, seqs)})
    assert pending == expect
    if impl == "compiled":
        assert not any(gc.is_tracked(pending[r.hash]) for r in recs)
    # any sequences (a tuple of records, a range of seqs) give the same entries
    seq_in = {}
    add(seq_in, tuple(recs), range(100, 150), req)
    assert seq_in == {r.hash: (s, req) for r, s in zip(recs, seqs)}
    # a hash given twice: the later entry stands, as dict.update gives
    again = {}
    add(again, [recs[0], recs[1], recs[0]], [1, 2, 3], req)
    assert again == {recs[0].hash: (3, req), recs[1].hash: (2, req)}
    # mismatched lengths are refused before anything is added
    bad = {}
    with pytest.raises(ValueError):
        add(bad, recs[:3], [1, 2], req)
    assert bad == {}
    # a record without a hash: the attribute error, as the pure twin raises
    with pytest.raises(AttributeError):
        add({}, [object()], [1], req)


@compiled
def test_an_untracked_pending_entry_frees_its_request():
    # the entry holds the request; once the entry and every other reference
    # are gone, the request (even one in a cycle of its own) is collected
    class Req:
        error = None

    req = Req()
    req.me = req                     # a cycle through the request itself
    ref = weakref.ref(req)
    pending = {}
    _fast.pending_add(pending, [_Rec(b"a" * 32)], [1], req)
    del req
    gc.collect()
    assert ref() is not None          # held by the entry
    pending.clear()
    gc.collect()
    assert ref() is None


# ------------------------------------------------ the merge's compiled twins
# _fast.recent_items (the recent dict as two arrays) and _fast.merge_runs
# (two sorted runs merged, the recent one after equal keys) against
# index.recent_items_py and index.merge_runs_py, which MultiMap.merge uses in
# the pure run; and a MultiMap merged either way holds the same run.

@compiled
@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
@pytest.mark.parametrize("seed", [1, 2])
def test_recent_items_matches_the_pure_twin(dtype, seed):
    rnd = random.Random(seed)
    recent = {}
    n = 0
    for o in range(2000):
        k = rnd.randrange(50) if rnd.random() < 0.5 else rnd.getrandbits(63)
        recent.setdefault(k, []).append(o)
        n += 1
    want = index.recent_items_py(recent, n, dtype)
    got = _fast.recent_items(recent, n, dtype)
    for w, g in zip(want, got):
        assert w.dtype == g.dtype and w.tolist() == g.tolist()
    # fewer pairs than asked: both refuse; more: both take the first n
    with pytest.raises(ValueError):
        index.recent_items_py(recent, n + 1, dtype)
    with pytest.raises(ValueError):
        _fast.recent_items(recent, n + 1, dtype)
    for w, g in zip(index.recent_items_py(recent, n - 7, dtype), _fast.recent_items(recent, n - 7, dtype)):
        assert w.tolist() == g.tolist()
    assert [x.tolist() for x in _fast.recent_items({}, 0, dtype)] == [[], []]


@compiled
def test_recent_items_refuses_what_does_not_fit():
    with pytest.raises(OverflowError):
        _fast.recent_items({-1: [0]}, 1, np.uint64)
    with pytest.raises((OverflowError, ValueError)):
        index.recent_items_py({-1: [0]}, 1, np.uint64)
    with pytest.raises(OverflowError):
        _fast.recent_items({1: [1 << 31]}, 1, np.int64)
    with pytest.raises((OverflowError, ValueError)):
        index.recent_items_py({1: [1 << 31]}, 1, np.int64)
    with pytest.raises(ValueError):
        _fast.recent_items({1: [1]}, 1, np.int32)


def _runs(rnd, dtype, n, k, keyspace):
    lo = 0 if dtype == np.uint64 else -keyspace
    keys = np.array(sorted(rnd.randrange(lo, keyspace) for _ in range(n)), dtype=dtype)
    ks = np.array(sorted(rnd.randrange(lo, keyspace) for _ in range(k)), dtype=dtype)
    if dtype == np.uint64 and n and k:      # keys past 2**63: unsigned order
        keys[-1] = np.uint64(2**64 - 1)
        ks[0] = np.uint64(2**63 + 5)
        ks.sort()
    return keys, np.arange(n, dtype=np.int32), ks, np.arange(n, n + k, dtype=np.int32)


@compiled
@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
@pytest.mark.parametrize("n,k,keyspace", [(0, 0, 5), (0, 10, 5), (10, 0, 5), (300, 200, 20),
                                          (1000, 50, 1 << 40), (5, 500, 3)])
def test_merge_runs_matches_the_pure_twin(dtype, n, k, keyspace):
    keys, vals, ks, vs = _runs(random.Random(n * 7 + k), dtype, n, k, keyspace)
    wk, wv = index.merge_runs_py(keys, vals, ks, vs)
    gk, gv = _fast.merge_runs(keys, vals, ks, vs)
    assert gk.dtype == wk.dtype and gv.dtype == wv.dtype == np.int32
    assert gk.tolist() == wk.tolist() and gv.tolist() == wv.tolist()
    # a run in another byte order or strided (a mapped snapshot's view) merges the same
    gk2, gv2 = _fast.merge_runs(keys.astype(keys.dtype.newbyteorder(">")), vals,
                                np.repeat(ks, 2)[::2], vs)
    assert gk2.tolist() == wk.tolist() and gv2.tolist() == wv.tolist()


@compiled
def test_merge_runs_refuses_mismatched_arrays():
    keys, vals, ks, vs = _runs(random.Random(3), np.int64, 20, 10, 100)
    for args in [(keys, vals, ks.astype(np.uint64), vs), (keys, vals.astype(np.int64), ks, vs),
                 (keys, vals[:-1], ks, vs), (keys.reshape(4, 5), vals, ks, vs),
                 (keys.astype(np.int32), vals, ks.astype(np.int32), vs)]:
        with pytest.raises(ValueError):
            _fast.merge_runs(*args)


@pytest.mark.parametrize("twins", ["pure", "compiled"])
def test_a_merge_gives_the_same_run_either_way(twins, monkeypatch):
    if twins == "compiled" and _fast is None:
        pytest.skip("pure-Python run")
    if twins == "compiled":
        monkeypatch.setattr(index, "_recent_items", _fast.recent_items)
        monkeypatch.setattr(index, "_merge_runs", _fast.merge_runs)
    else:
        monkeypatch.setattr(index, "_recent_items", None)
        monkeypatch.setattr(index, "_merge_runs", None)
    rnd = random.Random(4)
    m = MultiMap(np.uint64)
    m.extend(np.array(sorted(rnd.getrandbits(64) for _ in range(500)), dtype=np.uint64),
             np.arange(500, dtype=np.int32))
    ref = {}
    for i, (k, o) in enumerate(zip(m.keys.tolist(), m.vals.tolist())):
        ref.setdefault(k, []).append(o)
    for o in range(500, 1500):
        k = rnd.getrandbits(64) if rnd.random() < 0.7 else m.keys.tolist()[rnd.randrange(500)]
        MultiMap.add(m, k, o)
        ref.setdefault(k, []).append(o)
    m.merge()
    assert m.n_recent == 0 and m.recent == {}
    assert np.all(m.keys[1:] >= m.keys[:-1])
    assert m.check("m") == []
    for k, want in ref.items():
        assert m.get(k) == want


# ------------------------------------------- a failed batch leaves nothing behind
# The compiled pending_add's tuples are not tracked by the GC; a failed
# request's error carries a traceback whose frames reach the writer, so an
# entry left in _pending would hold a cycle the collector cannot see.  The
# writer drops a failed batch's entries when its wait returns, and close()
# forgets the rest: a faulted store, closed and dropped, is collected.

def _faulted_store(path):
    from stemedb import open_store
    from stemedb.errors import StoreFaulted

    from .test_group_commit import SlowSyncFS, body

    fs = SlowSyncFS()
    s = open_store(str(path), fs=fs, audit=False, durability="fsync")
    s.put_batch([body(i) for i in range(3)])
    fs.fail = True
    batch = [body(100 + i) for i in range(5)]
    with pytest.raises(StoreFaulted):
        s.put_batch(batch)
    return s


def test_a_failed_batch_leaves_no_pending_entry(tmp_path):
    s = _faulted_store(tmp_path / "a")
    try:
        assert s.writer._pending == {}, "the failed batch's entries went when its wait returned"
    finally:
        s.close()


def test_a_faulted_store_closed_and_dropped_is_collected(tmp_path):
    s = _faulted_store(tmp_path / "b")
    w = weakref.ref(s.writer)
    s.close()
    assert s.writer._pending == {} and not s.writer._settled
    del s
    gc.collect()
    assert w() is None, "nothing keeps the faulted store's writer alive"
