"""The in-memory indexes: MultiMap against a dict-of-lists model (with merges),
Columns growth, location packing, and the State's own check()."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from stemedb.core import index
from stemedb.core.index import Columns, MultiMap, pack_loc, unpack_loc


class MultiMapMachine(RuleBasedStateMachine):
    """Random adds, bulk extends and merges; every get agrees with the model.

    MERGE_AT is lowered to 7 so automatic merges happen within a few steps.
    Keys span the full uint64 range (the hash index uses all 64 bits).
    """

    def __init__(self):
        super().__init__()
        self._old_merge_at = index.MERGE_AT
        index.MERGE_AT = 7
        self.m = MultiMap(np.uint64)
        self.model: dict[int, list[int]] = {}
        self.next_ord = 0
        self.keys_seen = [0, 2**64 - 1, 2**63, 5]

    def teardown(self):
        index.MERGE_AT = self._old_merge_at

    keys = st.one_of(st.sampled_from([0, 1, 5, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))

    @rule(key=keys)
    def add(self, key):
        self.m.add(key, self.next_ord)
        self.model.setdefault(key, []).append(self.next_ord)
        self.keys_seen.append(key)
        self.next_ord += 1

    @rule(pairs=st.lists(keys, max_size=20))
    def extend(self, pairs):
        ords = np.arange(self.next_ord, self.next_ord + len(pairs), dtype=np.int32)
        self.m.extend(np.array(pairs, dtype=np.uint64), ords)
        for k, o in zip(pairs, ords.tolist()):
            self.model.setdefault(k, []).append(o)
            self.keys_seen.append(k)
        self.next_ord += len(pairs)

    @rule()
    def merge(self):
        self.m.merge()
        assert not self.m.recent and self.m.n_recent == 0, "merge empties the recent dict"

    @precondition(lambda self: self.keys_seen)
    @rule(data=st.data())
    def get(self, data):
        k = data.draw(st.sampled_from(self.keys_seen) | self.keys)
        assert self.m.get(k) == self.model.get(k, []), \
            f"get({k}) must list the key's ordinals in ascending order"

    @invariant()
    def consistent(self):
        assert self.m.check("test") == [], "MultiMap.check must find nothing"
        assert len(self.m) == sum(len(v) for v in self.model.values())


TestMultiMap = MultiMapMachine.TestCase
TestMultiMap.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


def test_multimap_build_is_sorted_and_stable():
    keys = np.array([5, 1, 5, 3, 1], dtype=np.int64)
    m = MultiMap.build(keys, np.arange(5, dtype=np.int32))
    assert m.get(5) == [0, 2] and m.get(1) == [1, 4] and m.get(3) == [3] and m.get(9) == []
    assert m.check("b") == []


def test_multimap_check_reports_damage():
    m = MultiMap.build(np.array([1, 2, 3]), np.arange(3, dtype=np.int32))
    m.keys = m.keys[::-1].copy()
    assert m.check("x"), "an out-of-order run must be reported"
    m = MultiMap.build(np.array([1, 2, 3]), np.arange(3, dtype=np.int32))
    m.vals = m.vals[:2]
    assert m.check("x"), "keys and values of different lengths must be reported"


def test_columns_grow_and_keep_rows():
    c = Columns(capacity=16)
    for i in range(100):
        assert c.append(i + 1, i, i, i, i, i, 0, 0, bytes([i]) * 32) == i
    assert c.n == 100 and c.cap >= 100
    assert c.seq[:100].tolist() == list(range(1, 101)), "rows survive growth"
    assert c.hash_of(42) == bytes([42]) * 32
    back = Columns.from_arrays(c.arrays())
    assert back.n == 100 and back.hash_of(99) == bytes([99]) * 32
    back.append(101, 0, 0, 0, 0, 0, 0, 0, b"\xff" * 32)
    assert back.n == 101 and back.seq[100] == 101, "columns loaded from arrays can still grow"


@pytest.mark.parametrize("seg,off", [(1, 0), (1, 40), (99999, 2**40 - 1), (2**20, 123)])
def test_location_packing_round_trips(seg, off):
    assert unpack_loc(pack_loc(seg, off)) == (seg, off)


def test_str64_is_fnv1a_64():
    # reference values of FNV-1a 64
    assert index.str64("") == 0xCBF29CE484222325
    assert index.str64("a") == 0xAF63DC4C8601EC8C
    assert index.str64("foobar") == 0x85944171F73967E8


def test_add_many_equals_one_add_per_pair(monkeypatch):
    """A group's keys in one add_many leave the map exactly as one add per
    (key, ordinal), merges included (MERGE_AT crossed inside a group)."""
    monkeypatch.setattr(index, "MERGE_AT", 7)
    rnd = np.random.default_rng(5)
    one, many = MultiMap(np.int64), MultiMap(np.int64)
    o = 0
    for size in (1, 3, 9, 2, 20, 1, 5):
        keys = rnd.integers(0, 6, size).tolist()
        for i, k in enumerate(keys):
            one.add(k, o + i)
        many.add_many(keys, range(o, o + size))
        o += size
    for k in range(6):
        assert many.get(k) == one.get(k)
    assert len(many) == len(one) == o
    assert many.check("m") == []
    many.merge(), one.merge()
    assert many.keys.tolist() == one.keys.tolist() and many.vals.tolist() == one.vals.tolist()


def test_group_apply_equals_per_record_apply():
    """State.apply_asserts: one group larger than SMALL_GROUP (the vectorized
    path) builds exactly the state of the same records one group each."""
    from stemedb.core.state import SMALL_GROUP, State
    hs = [bytes([i % 7]) * 4 + i.to_bytes(4, "little") + bytes(24) for i in range(40)]
    items = [(i + 1, 1 + i // 30, 40 + 100 * i,
              (hs[i], 1000 + i, 500 + i, 0, f"p/{i % 5}", f"q{i % 3}",
               f"pubmed://{i % 4}" if i % 3 else None, None,
               hs[i - 1] if i % 10 == 9 else None, [hs[0], hs[1]] if i == 35 else None))
             for i in range(40)]
    grouped, single = State(), State()
    grouped.apply_asserts(items[:4])
    grouped.apply_asserts(items[4:])
    assert len(items) - 4 > SMALL_GROUP
    for it in items:
        single.apply_asserts([it])
    for name in ("by_hash", "by_key", "by_path", "by_source"):
        a, b = getattr(grouped, name), getattr(single, name)
        a.merge(), b.merge()
        assert a.keys.tolist() == b.keys.tolist() and a.vals.tolist() == b.vals.tolist(), name
    for name, arr in grouped.cols.arrays().items():
        assert arr.tolist() == single.cols.arrays()[name].tolist(), name
    for name in ("dependents", "revisions", "last_seq", "last_recorded_at", "records",
                 "path_names", "pred_names"):
        assert getattr(grouped, name) == getattr(single, name), name
    assert grouped.check() == []
