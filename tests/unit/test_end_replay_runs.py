"""State.end_replay's index runs sorted two at a time (state.add_runs, the
compiled build's large rebuilds) give the maps that one after the other
gives: on arrays of every key shape, on a rebuilt store (the threshold
lowered so a small store takes the threaded path), and an error raised in
the second thread reaches the caller."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from stemedb import open_store
from stemedb.core import state as state_mod
from stemedb.core.index import MultiMap
from tests.conftest import NoFsyncFS, body


def _maps(runs_spec):
    return [(MultiMap(dt), keys, first, vals) for dt, keys, first, vals in runs_spec]


def _spec(n, rng):
    ords = rng.permutation(n).astype(np.int32)
    return [(np.uint64, rng.integers(0, 2**64, n, dtype=np.uint64), 10, None),
            (np.int64, rng.integers(0, 2**40, n, dtype=np.int64), 10, None),
            (np.int64, rng.integers(0, 50, n, dtype=np.int64), 10, None),
            (np.uint64, np.repeat(rng.integers(0, 2**64, n // 4 + 1, dtype=np.uint64), 4)[:n],
             0, ords)]


def _dump(m: MultiMap):
    return m.keys.tolist(), m.vals.tolist(), {k: list(v) for k, v in m.recent.items()}


@pytest.mark.parametrize("n", [5, 300, 4000])
def test_two_at_a_time_equals_one_after_the_other(n, monkeypatch):
    rng = np.random.default_rng(n)
    spec = _spec(n, rng)
    monkeypatch.setattr(state_mod.fast, "COMPILED", True)
    monkeypatch.setattr(state_mod, "PARALLEL_RUN", 1)
    threaded = _maps(spec)
    state_mod.add_runs(threaded)
    plain = _maps(spec)
    for m, keys, first, vals in plain:
        m.add_run(keys, first, vals)
    assert [_dump(m) for m, *_ in threaded] == [_dump(m) for m, *_ in plain]
    assert all(len(m) == n for m, *_ in threaded)


def test_an_error_in_the_second_thread_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(state_mod.fast, "COMPILED", True)
    monkeypatch.setattr(state_mod, "PARALLEL_RUN", 1)

    class Boom(MultiMap):
        def add_run(self, *a, **kw):
            raise RuntimeError("boom")
    rng = np.random.default_rng(1)
    runs = [(Boom(np.uint64), rng.integers(0, 2**64, 50, dtype=np.uint64), 0, None),
            (MultiMap(np.uint64), rng.integers(0, 2**64, 50, dtype=np.uint64), 0, None)]
    with pytest.raises(RuntimeError, match="boom"):
        state_mod.add_runs(runs)
    runs.reverse()
    with pytest.raises(RuntimeError, match="boom"):
        state_mod.add_runs(runs)


def _index_dump(s):
    st = s.state
    return [(_dump(m), m.n_recent) for m in (st.by_hash, st.by_key, st.by_path, st.by_source)]


def test_a_rebuilt_store_has_the_same_maps_either_way(tmp_path, monkeypatch):
    data = str(tmp_path / "data")
    with open_store(data, fs=NoFsyncFS(), audit=False) as s:
        s.put_batch([body(i, source=f"pubmed://{i % 37}" if i % 5 else None)
                     for i in range(3000)])
        for i in range(40):
            s.put(body(10_000 + i, source="fda://x"))
    dumps = []
    for compiled, at in ((False, 10**9), (True, 100)):
        monkeypatch.setattr(state_mod.fast, "COMPILED", compiled)
        monkeypatch.setattr(state_mod, "PARALLEL_RUN", at)
        shutil.rmtree(os.path.join(data, "db", "indexes"))
        with open_store(data, fs=NoFsyncFS(), audit=False) as s:
            assert s.rebuilt
            dumps.append(_index_dump(s))
    assert dumps[0] == dumps[1]
    assert len(dumps[0][3][0][0]) + dumps[0][3][1] == 2400 + 40, "the sources were indexed"
