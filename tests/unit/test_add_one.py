"""``_fast.add_one`` against its pure twin ``records.add_one``: one applied
assertion's map entries (hash, index key, path, source) and its two answer
generation steps, as ``State._apply_one`` makes them in the compiled build.

Both are given the same inputs, a merge included (``MERGE_AT`` lowered), and
must leave the same maps and generation lists, or refuse the same bad input
with the same error before changing anything.  The pure build's
``_apply_one`` runs the twin's lines itself; ``test_index_small_groups``
holds its result equal to the group paths' in both builds.

The compiled half is skipped in the pure run (STEMEDB_PURE_PYTHON=1).
"""
import random

import numpy as np
import pytest

from stemedb.core import fast, index, records
from stemedb.core.index import MultiMap

_fast = fast._fast
compiled = pytest.mark.skipif(_fast is None, reason="pure-Python run")
IMPLS = [pytest.param(records.add_one, id="pure"),
         pytest.param(getattr(_fast, "add_one", None), id="compiled", marks=compiled)]


def _maps():
    return [MultiMap(np.uint64), MultiMap(np.int64), MultiMap(np.int64), MultiMap(np.uint64)]


def _snap(maps, kgen, pgen):
    return ([(dict(m.recent), m.n_recent, m.keys.tolist(), m.vals.tolist()) for m in maps],
            list(kgen), list(pgen))


def _run(fn, ops, slots=64, pred_bits=24, mix=40503):
    maps, kgen, pgen = _maps(), [0] * slots, [0] * slots
    for o, (hk, pid, qid, src) in enumerate(ops):
        key = (pid << pred_bits) | qid
        fn(maps[0], hk, maps[1], key, maps[2], pid, maps[3], src, o, kgen, pgen, mix, pred_bits)
    return _snap(maps, kgen, pgen)


def _ops(seed, n):
    r = random.Random(seed)
    return [(r.getrandbits(64), r.randrange(40), r.randrange(9),
             None if r.random() < 0.3 else r.getrandbits(64)) for _ in range(n)]


def test_the_chooser():
    assert fast.add_one is (records.add_one if _fast is None else _fast.add_one)


@compiled
@pytest.mark.parametrize("seed", range(4))
def test_same_maps_and_generations(seed, monkeypatch):
    monkeypatch.setattr(index, "MERGE_AT", 50)      # both read it per call: merges happen
    ops = _ops(seed, 400)
    assert _run(_fast.add_one, ops) == _run(records.add_one, ops)
    # the generations moved: one step per record in each list
    _, kgen, pgen = _run(_fast.add_one, ops)
    assert sum(kgen) == sum(pgen) == 400


@compiled
def test_same_slots_for_large_and_negative_ids():
    # pid * mix overflows 64 bits in C; Python's result, masked, is the same
    ops = [(1, (1 << 38) + 5, 3, None), (2, -7, 0, 5), (3, (1 << 39) - 1, (1 << 24) - 1, None)]
    for bits in (24, 8, 0):
        got = _run(_fast.add_one, [(h, p, q & ((1 << bits) - 1), s) for h, p, q, s in ops],
                   pred_bits=bits)
        want = _run(records.add_one, [(h, p, q & ((1 << bits) - 1), s) for h, p, q, s in ops],
                    pred_bits=bits)
        assert got == want


@pytest.mark.parametrize("fn", IMPLS)
@pytest.mark.parametrize("kgen, pgen, err", [
    ([0] * 6, [0] * 6, ValueError),          # not a power of two
    ([], [], ValueError),
    ([0] * 8, [0] * 4, ValueError),          # lengths differ
    ((0,) * 8, [0] * 8, TypeError),          # not lists
    ([0] * 8, (0,) * 8, TypeError),
])
def test_bad_generation_lists_change_nothing(fn, kgen, pgen, err):
    maps = _maps()
    with pytest.raises(err):
        fn(maps[0], 1, maps[1], 2, maps[2], 0, maps[3], 3, 0, kgen, pgen, 40503, 24)
    assert all(m.recent == {} and m.n_recent == 0 for m in maps)


@pytest.mark.parametrize("fn", IMPLS)
@pytest.mark.parametrize("pid, key, bits, err", [
    (1 << 63, 5, 24, OverflowError),
    (0, -(1 << 63) - 1, 24, OverflowError),
    (0, 5, 63, ValueError),
    (0, 5, -1, ValueError),
])
def test_bad_ids_change_nothing(fn, pid, key, bits, err):
    maps, kgen, pgen = _maps(), [0] * 8, [0] * 8
    with pytest.raises(err):
        fn(maps[0], 1, maps[1], key, maps[2], pid, maps[3], None, 0, kgen, pgen, 40503, bits)
    assert all(m.recent == {} and m.n_recent == 0 for m in maps)
    assert kgen == [0] * 8 and pgen == [0] * 8
