"""The write path's compiled glue gives its pure twins' answers.

``_fast.encode_assert_frames(records, seqs, recorded_at)`` (the writer's
stamp framed in, no record copied), ``_fast.add_recent`` (a group's keys
into a MultiMap's recent dict) and ``_fast.bump_gens`` (a group's answer
generations) against ``fast.encode_assert_frames_py``,
``index.add_recent`` and ``records.bump_gens``, on generated and on
damaged input (both refuse it, with ValueError).  The pure twins are also
held to what they replace (a copied record, ``MultiMap.add``, one bump per
key), so the pure run checks something too.
"""
import random

import msgspec
import numpy as np
import pytest

from stemedb.core import codec, fast, index, records
from stemedb.core.format import REC_ASSERT
from stemedb.core.index import Columns, MultiMap
from stemedb.core.state import GEN_MIX, GEN_SLOTS, PRED_BITS, gen_slot
from stemedb.model import prepare_assertion

try:
    from stemedb.core import _fast  # type: ignore[attr-defined]
except ImportError:         # a pure-Python build: only the pure twins are checked
    _fast = None
needs_fast = pytest.mark.skipif(_fast is None, reason="compiled extension not built")


def _records(n, seed=3):
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        body = {"concept_path": f"d{rnd.randrange(3)}/é{rnd.randrange(5)}/a",
                "predicate": f"p{rnd.randrange(4)}", "value": {"i": i, "x": rnd.random()},
                "confidence": rnd.random(), "timestamp": 1_700_000_000 + i}
        if rnd.random() < 0.6:
            body["source"] = rnd.choice(["fda://l", "pubmed://9", "forum://😀"])
        if out and rnd.random() < 0.3:
            body["derived_from"] = [out[rnd.randrange(len(out))].hash.hex()]
        if out and rnd.random() < 0.2:
            body["parent_hash"] = out[rnd.randrange(len(out))].hash.hex()
        if rnd.random() < 0.2:
            body["epoch"] = "e1"
        out.append(prepare_assertion(body, default_time_us=5))
    return out


STAMPS = [0, 1, 1_700_000_000_123_456, -1, (1 << 63) - 1, -(1 << 63)]
BAD_STAMPS = [1 << 63, -(1 << 63) - 1, 1.5, "1", True, b"\x01"]


@pytest.mark.parametrize("stamp", STAMPS)
def test_a_stamped_frame_is_the_frame_of_the_stamped_record(stamp):
    recs = _records(40)
    seqs = list(range(7, 47))
    want = codec.encode_assert_frames(
        [msgspec.structs.replace(r, recorded_at=stamp) for r in recs], seqs)
    assert fast.encode_assert_frames_py(recs, seqs, stamp) == want, \
        "the pure twin frames the writer's stamp as a copied record would carry it"
    assert fast.encode_assert_frames_py(recs, seqs) == codec.encode_assert_frames(recs, seqs)
    if _fast is not None:
        assert _fast.encode_assert_frames(recs, seqs, stamp) == want
        assert _fast.encode_assert_frames(recs[:1], seqs[:1], stamp) == \
            fast.encode_assert_frames_py(recs[:1], seqs[:1], stamp)
        assert _fast.encode_assert_frames(recs, seqs, None) == codec.encode_assert_frames(recs, seqs)


@pytest.mark.parametrize("stamp", BAD_STAMPS)
def test_a_stamp_that_is_no_int64_is_refused_by_both(stamp):
    recs = _records(3)
    twins = [fast.encode_assert_frames_py] + ([_fast.encode_assert_frames] if _fast else [])
    for encode in twins:
        with pytest.raises(ValueError, match="recorded_at must be an int64"):
            encode(recs, [1, 2, 3], stamp)


def _keys(rnd, n, dtype):
    if dtype == np.uint64:
        pool = [rnd.randrange(1 << 64) for _ in range(max(1, n // 3))] + [0, (1 << 64) - 1]
    else:
        pool = [rnd.randrange(-(1 << 63), 1 << 63) for _ in range(max(1, n // 3))] + [0, -1]
    return np.array([rnd.choice(pool) for _ in range(n)], dtype=dtype)


def _adders():
    return [index.add_recent] + ([_fast.add_recent] if _fast else [])


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
@pytest.mark.parametrize("with_vals", [False, True])
def test_add_recent_leaves_the_dict_one_add_per_pair_leaves(dtype, with_vals):
    rnd = random.Random(11)
    for n in (0, 1, 7, 300):
        keys = _keys(rnd, n, dtype)
        vals = np.array(sorted(rnd.sample(range(10_000), n)), dtype=np.int32) if with_vals else None
        one = MultiMap(dtype)
        one.add(int(keys[0]) if n else 5, 2)        # an existing entry to append to
        for i, k in enumerate(keys.tolist()):
            one.add(k, int(vals[i]) if with_vals else 40 + i)
        for add in _adders():
            recent = {(int(keys[0]) if n else 5): [2]}
            assert add(recent, keys, 40, vals) == n
            assert recent == one.recent, f"{add} puts every pair where MultiMap.add does"
            assert all(type(k) is int for k in recent), "keys are Python ints, as tolist gives"


def test_add_run_through_either_adder_builds_the_same_map():
    rnd = random.Random(12)
    maps = [MultiMap(np.uint64) for _ in _adders()]
    at = 0
    for _ in range(60):
        k = rnd.choice([1, 9, 200])
        keys = _keys(rnd, k, np.uint64)
        for m, add in zip(maps, _adders()):
            m.add_run(keys, at, None, add)
        at += k
    for m in maps:
        assert m.check("hash") == []
        assert m.recent == maps[0].recent and m.n_recent == maps[0].n_recent
        assert np.array_equal(m.keys, maps[0].keys) and np.array_equal(m.vals, maps[0].vals)


def test_add_recent_refuses_what_it_cannot_read():
    ok = np.arange(4, dtype=np.int64)
    bad = [(ok.astype(np.int32), None), (ok.astype(np.float64), None),
           (ok.reshape(2, 2), None), (np.arange(8, dtype=np.int64)[::2], None),
           (ok, np.arange(3, dtype=np.int32)), (ok, np.arange(4, dtype=np.int64)),
           (ok, np.arange(8, dtype=np.int32)[::2])]
    for add in _adders():
        for keys, vals in bad:
            recent: dict = {}
            with pytest.raises(ValueError, match="add_recent"):
                add(recent, keys, 0, vals)
            assert recent == {}, "a refused call adds nothing"


def _benders():
    return [records.bump_gens] + ([_fast.bump_gens] if _fast else [])


def test_bump_gens_moves_each_keys_slots_as_gen_slot_says():
    rnd = random.Random(13)
    keys = np.array([rnd.randrange(1 << 40) for _ in range(500)]
                    + [(5 << PRED_BITS) | 3] * 3 + [-1, -(1 << 63), (1 << 63) - 1, 0],
                    dtype=np.int64)
    want_k, want_p = [0] * GEN_SLOTS, [0] * GEN_SLOTS
    for key in keys.tolist():
        pid = key >> PRED_BITS
        if key >= 0:
            assert (pid * GEN_MIX + (key & ((1 << PRED_BITS) - 1))) & (GEN_SLOTS - 1) == \
                gen_slot(pid, key & ((1 << PRED_BITS) - 1))
        want_k[(pid * GEN_MIX + (key & ((1 << PRED_BITS) - 1))) & (GEN_SLOTS - 1)] += 1
        want_p[pid & (GEN_SLOTS - 1)] += 1
    for bump in _benders():
        kg, pg = [0] * GEN_SLOTS, [0] * GEN_SLOTS
        bump(kg, pg, keys, GEN_MIX, PRED_BITS)
        assert kg == want_k and pg == want_p, f"{bump} bumps each key's slots once"
    small_k, small_p = [0] * 8, [0] * 8
    for bump in _benders():
        kg, pg = [0] * 8, [0] * 8
        bump(kg, pg, keys[:50], 3, 4)
        if bump is records.bump_gens:
            small_k, small_p = kg, pg
        assert (kg, pg) == (small_k, small_p), "other table sizes and bit counts agree too"


def test_bump_gens_refuses_what_it_cannot_read():
    keys = np.arange(5, dtype=np.int64)
    bad = [([0] * 6, [0] * 6, keys), ([0] * 8, [0] * 4, keys), ([], [], keys),
           ([0] * 8, [0] * 8, keys.astype(np.uint64)), ([0] * 8, [0] * 8, keys.reshape(5, 1)),
           ([0] * 8, [0] * 8, np.arange(10, dtype=np.int64)[::2])]
    for bump in _benders():
        for kg, pg, ks in bad:
            with pytest.raises(ValueError, match="bump_gens"):
                bump(kg, pg, ks, GEN_MIX, PRED_BITS)
            assert not any(kg) and not any(pg), "a refused call bumps nothing"


@needs_fast
def test_the_chosen_twins_are_the_compiled_ones_in_a_compiled_run():
    if fast.COMPILED:
        assert fast.encode_assert_frames is _fast.encode_assert_frames
        assert fast.add_recent is _fast.add_recent and fast.bump_gens is _fast.bump_gens


def _framed(recs):
    """One frame per record (a single put's request each), at 0."""
    return [codec.encode_frame(REC_ASSERT, 0, 10 + i, codec.encode_assert(r))
            for i, r in enumerate(recs)]


def _index_ones():
    return [records.index_one] + ([_fast.index_one] if _fast else [])


def _run_one(index_one, frames, epochs):
    cols = Columns(4)
    tables: tuple = ({}, [], {}, [], dict(epochs))
    got = []
    for i, fr in enumerate(frames):
        if cols.n >= cols.cap:
            cols._grow(cols.n + 1)
        got.append(index_one(fr, 0, 10 + i, (2 << 40) + 100 * i, cols.n, cols.rows, *tables))
        cols.n += 1
    return got, {k: v.tolist() for k, v in cols.arrays().items()}, tables


def test_index_one_writes_the_row_index_records_writes():
    recs = _records(60, seed=21)
    frames = _framed(recs)
    epochs = {"e1": 1}
    results = [_run_one(f, frames, epochs) for f in _index_ones()]
    # the reference: index_records of each frame alone, into its own columns
    cols = Columns(4)
    tables: tuple = ({}, [], {}, [], dict(epochs))
    for i, fr in enumerate(frames):
        cols._grow(cols.n + 1)
        hk, sk, so = np.empty(1, np.uint64), np.empty(1, np.uint64), np.empty(1, np.int32)
        records.index_records(fr, [0], [REC_ASSERT], [10 + i], (2 << 40) + 100 * i, cols.n,
                              *cols.rows, hk, sk, so, *tables)
        cols.n += 1
    want = {k: v.tolist() for k, v in cols.arrays().items()}
    for got, arrays, tabs in results:
        assert arrays == want and tabs == tables, "index_one writes index_records' row"
        assert got == results[0][0], "both twins hand back the same keys and citations"
    for (hk, key, pid, src, rec, edge), r in zip(results[0][0], recs):
        assert hk == int.from_bytes(r.hash[:8], "little") and rec == r.recorded_at
        assert (src is None) == (r.source is None)
        assert (edge is None) == (r.parent_hash is None and r.derived_from is None)
        assert key >> PRED_BITS == pid


def test_index_one_refuses_a_damaged_record_as_index_records_does():
    from stemedb.errors import CorruptionError
    r = _records(5, seed=22)
    fr = _framed(r)[0]
    with_epoch = next(f for f, x in zip(_framed(r), r) if x.epoch is not None) \
        if any(x.epoch for x in r) else _framed([msgspec.structs.replace(r[0], epoch="e1")])[0]
    cases = [(fr[:k], 0) for k in (0, 7, 20, 60, 96, len(fr) - 1)] + [(fr, 3), (fr, -1), (fr, len(fr))]
    for index_one in _index_ones():
        for buf, off in cases:
            cols = Columns(4)
            with pytest.raises(CorruptionError):
                index_one(buf, off, 1, 0, 0, cols.rows, {}, [], {}, [], {})
        cols = Columns(4)
        with pytest.raises(CorruptionError, match="names epoch"):
            index_one(with_epoch, 0, 1, 0, 0, cols.rows, {}, [], {}, [], {})
        with pytest.raises(ValueError, match="first must be"):
            index_one(fr, 0, 1, 0, -1, cols.rows, {}, [], {}, [], {})
        with pytest.raises(ValueError, match="13 arrays"):
            index_one(fr, 0, 1, 0, 0, cols.rows[:12], {}, [], {}, [], {})


def _finders():
    return [index.find_hash] + ([_fast.find_hash] if _fast else [])


def test_find_hash_finds_what_multimap_get_and_a_compare_find():
    rnd = random.Random(31)
    n = 400
    hashes = np.frombuffer(bytes(rnd.randrange(256) for _ in range(32 * n)),
                           dtype=np.uint8).reshape(n, 32).copy()
    hashes[7, :8] = hashes[3, :8]               # prefix twins: in the run
    hashes[350, :8] = hashes[300, :8]           # and in the recent dict
    hashes[399, :8] = hashes[5, :8]             # and across the two
    m = MultiMap(np.uint64)
    pre = np.ascontiguousarray(hashes[:, :8]).view(np.uint64).reshape(n)
    m.extend(pre[:250].copy(), np.arange(250, dtype=np.int32))
    for o in range(250, n):
        m.add(int(pre[o]), o)
    probes = [hashes[o].tobytes() for o in range(n)]
    probes += [bytes(32), hashes[3, :8].tobytes() + bytes(24), b"\xff" * 32]
    for h in probes:
        want = next((o for o in m.get(int.from_bytes(h[:8], "little"))
                     if hashes[o].tobytes() == h), None)
        for find in _finders():
            assert find(m.keys, m.vals, m.recent, hashes, h) == want, f"{find} on {h.hex()}"
    empty = MultiMap(np.uint64)
    for find in _finders():
        assert find(empty.keys, empty.vals, {}, hashes, probes[0]) is None


def test_find_hash_refuses_what_it_cannot_read():
    hashes = np.zeros((4, 32), np.uint8)
    keys, vals = np.array([0], np.uint64), np.array([0], np.int32)
    bad = [(keys, vals, hashes, b"\0" * 31), (keys.astype(np.int64), vals, hashes, bytes(32)),
           (keys, vals.astype(np.int64), hashes, bytes(32)), (keys, vals[:0], hashes, bytes(32)),
           (keys, vals, hashes[:, :16], bytes(32)), (keys, vals, hashes.astype(np.int8), bytes(32))]
    for find in _finders():
        for k, v, hs, h in bad:
            with pytest.raises(ValueError, match="find_hash"):
                find(k, v, {}, hs, h)
        with pytest.raises(IndexError):     # a map naming a row the columns lack
            find(np.array([0], np.uint64), np.array([9], np.int32), {}, hashes, bytes(32))
        with pytest.raises(IndexError):
            find(keys[:0], vals[:0], {0: [9]}, hashes, bytes(32))


def test_find_hashes_is_find_hash_of_each():
    rnd = random.Random(32)
    n = 300
    hashes = np.frombuffer(bytes(rnd.randrange(256) for _ in range(32 * n)),
                           dtype=np.uint8).reshape(n, 32).copy()
    hashes[9, :8] = hashes[2, :8]
    m = MultiMap(np.uint64)
    pre = np.ascontiguousarray(hashes[:, :8]).view(np.uint64).reshape(n)
    m.extend(pre[:200].copy(), np.arange(200, dtype=np.int32))
    for o in range(200, 250):                  # rows 250.. are not in the map
        m.add(int(pre[o]), o)
    probes = [hashes[o].tobytes() for o in rnd.sample(range(n), 120)] + [bytes(32)]
    want = [index.find_hash(m.keys, m.vals, m.recent, hashes, h) for h in probes]
    assert want.count(None) > 10 and want.count(None) < len(want)
    finders = [index.find_hashes] + ([_fast.find_hashes] if _fast else [])
    for find in finders:
        assert find(m.keys, m.vals, m.recent, hashes, probes) == want
        assert find(m.keys, m.vals, m.recent, hashes, []) == []
        for bad in ([bytes(31)], [bytes(32), "x" * 32]):
            with pytest.raises(ValueError, match="find_hash"):
                find(m.keys, m.vals, m.recent, hashes, bad)
        with pytest.raises(ValueError, match="find_hash"):
            find(m.keys.astype(np.int64), m.vals, m.recent, hashes, probes)


def test_find_hash_refuses_a_hash_that_is_not_32_bytes():
    hashes = np.zeros((4, 32), np.uint8)
    for find in _finders():
        for h in ("x" * 32, bytearray(32), memoryview(bytes(32)), None):
            with pytest.raises(ValueError, match="find_hash"):
                find(np.array([0], np.uint64), np.array([0], np.int32), {}, hashes, h)
