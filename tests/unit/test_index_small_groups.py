"""The few-record paths of ``State.apply_group`` (a single put's group goes
through scalar reads and ``MultiMap.add``; a group of up to ``SMALL_GROUP``
through ``add_many``; a larger one through ``add_run``) hold what the
general path holds: the same maps, recent dicts included, and the same
answer generations.  ``sorted_paths``, kept lazily, reads as every concept
path sorted, between writes and after a snapshot load.  Runs in whichever
build is active (both modes in CI).
"""
import random

import numpy as np
import pytest
from sortedcontainers import SortedList

from stemedb.core import records
from stemedb.core.format import FLAG_MORE, REC_ASSERT
from stemedb.core.state import SMALL_GROUP, State
from stemedb.core.wal import Request

from .test_index_records import _log, _scan, _state_view


def _apply_in(buf, offs, types, seqs, sizes):
    """A fresh State that applied the log in groups of ``sizes`` (cycled),
    never splitting a batch (FLAG_MORE), as the WAL would."""
    st = State()
    i, k = 0, 0
    while i < len(offs):
        j = min(len(offs), i + sizes[k % len(sizes)])
        k += 1
        while j < len(offs) and types[j - 1] == REC_ASSERT and buf[offs[j - 1] + 9] & FLAG_MORE:
            j += 1
        start, end = offs[i], offs[j] if j < len(offs) else len(buf)
        st.apply_group(buf[start:end], [o - start for o in offs[i:j]], types[i:j], seqs[i:j],
                       (1 << 40) + start, 1)
        i = j
    return st


def _recent(st):
    return {name: (dict(getattr(st, name).recent), getattr(st, name).n_recent)
            for name in ("by_hash", "by_key", "by_path", "by_source")}


@pytest.mark.parametrize("seed", [4, 5])
def test_single_record_groups_hold_what_small_groups_hold(seed):
    buf, _h = _log(600, seed=seed)
    offs, types, seqs = _scan(buf)
    ones = _apply_in(buf, offs, types, seqs, [1])
    smalls = _apply_in(buf, offs, types, seqs, [2, 3, SMALL_GROUP])
    larges = _apply_in(buf, offs, types, seqs, [SMALL_GROUP + 1, 40])
    # the maps are young: every group went to the recent dicts, none to the runs
    for st in (ones, smalls):
        assert all(len(getattr(st, m).keys) == 0 for m in ("by_hash", "by_key", "by_path"))
    assert _recent(ones) == _recent(smalls)
    assert ones.by_source.n_recent > 100
    # each key's and path's generation moved once per assertion written there
    # (plus the touches of revisions and votes), whatever the grouping
    assert ones.key_gen == smalls.key_gen == larges.key_gen
    assert ones.path_gen == smalls.path_gen == larges.path_gen
    assert sum(ones.path_gen) >= ones.count
    for st in (ones, smalls, larges):
        assert st.check() == []
    assert _state_view(ones) == _state_view(smalls) == _state_view(larges)


def test_a_single_put_request_frames_as_the_general_loop_does():
    buf, _h = _log(30, seed=6)
    offs, types, seqs = _scan(buf)
    for i in range(len(offs)):
        end = offs[i + 1] if i + 1 < len(offs) else len(buf)
        req = Request(buf[offs[i]:end], [end - offs[i]], [(types[i], seqs[i], None)])
        req.locs = [(3, 1000 + offs[i])]
        two = Request(b"", [], [])          # an empty request after it: the loop's path
        two.locs = [(3, 0)]
        assert records.group_frames([req]) == records.group_frames([req, two]) == \
            (req.data, [0], [types[i]], [seqs[i]], (3 << 40) + 1000 + offs[i], 3)


def test_sorted_paths_reads_every_path_sorted_between_writes():
    buf, _h = _log(300, seed=7)
    offs, types, seqs = _scan(buf)
    st = State()
    rnd = random.Random(7)
    i = 0
    while i < len(offs):
        j = min(len(offs), i + rnd.choice([1, 1, 2, 30]))
        start, end = offs[i], offs[j] if j < len(offs) else len(buf)
        st.apply_group(buf[start:end], [o - start for o in offs[i:j]], types[i:j], seqs[i:j],
                       (1 << 40) + start, 1)
        i = j
        if rnd.random() < 0.3:
            assert list(st.sorted_paths) == sorted(st.path_names)
        if rnd.random() < 0.1:
            st.path_id(f"zz/new{i}")
    assert list(st.sorted_paths) == sorted(st.path_names)
    some = st.path_names[5]
    assert st.descendant_paths(some.rsplit("/", 1)[0]) == \
        sorted(p for p in st.path_names if p.startswith(some.rsplit("/", 1)[0] + "/"))
    # a loaded state sets it whole (snapshot.py); later writes add to it
    loaded = State()
    loaded.path_names = list(st.path_names)
    loaded.path_ids = {p: k for k, p in enumerate(loaded.path_names)}
    loaded.sorted_paths = SortedList(loaded.path_names)
    loaded.path_id("a/later")
    assert list(loaded.sorted_paths) == sorted(st.path_names + ["a/later"])
    assert loaded.check() == []


def test_a_one_record_group_past_the_merge_point_merges(monkeypatch):
    from stemedb.core import index
    monkeypatch.setattr(index, "MERGE_AT", 16)
    buf, _h = _log(60, seed=8)
    offs, types, seqs = _scan(buf)
    ones = _apply_in(buf, offs, types, seqs, [1])
    assert len(ones.by_key.keys) > 0 and ones.by_key.n_recent < 16
    assert np.all(np.diff(ones.by_key.keys) >= 0)
    assert _state_view(ones) == _state_view(_apply_in(buf, offs, types, seqs, [len(offs)]))


def test_a_group_of_mixed_requests_frames_each_record_at_its_offset():
    buf, _h = _log(40, seed=9)
    offs, types, seqs = _scan(buf)
    ends = offs[1:] + [len(buf)]
    rnd = random.Random(9)
    group, i = [], 0
    while i < len(offs):
        j = min(len(offs), i + rnd.choice([1, 1, 3]))      # puts and small batches
        req = Request(buf[offs[i]:ends[j - 1]], [ends[k] - offs[k] for k in range(i, j)],
                      [(types[k], seqs[k], None) for k in range(i, j)])
        req.locs = [(2, offs[i])]
        group.append(req)
        i = j
    assert len(group) > 10 and any(len(r.sizes) > 1 for r in group)
    got = records.group_frames(group)
    assert got == (buf[offs[0]:], [o - offs[0] for o in offs], list(types), list(seqs),
                   (2 << 40) + offs[0], 2)


def test_replay_sorts_its_paths_before_the_first_query():
    buf, _h = _log(200, seed=10)
    offs, types, seqs = _scan(buf)
    st = State()
    st.begin_replay()
    st.apply_group(buf[offs[0]:], [o - offs[0] for o in offs], types, seqs, 1 << 40, 1)
    assert st._sorted_n == 0                # applied, not yet sorted
    st.end_replay()
    assert st._sorted_n == len(st.path_names) > 50
    assert list(st._sorted) == sorted(st.path_names)
