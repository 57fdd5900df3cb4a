"""Index snapshots: a snapshot is an exact copy of the in-memory state at a
log position, so loading it answers exactly like rebuilding from the WAL."""
from __future__ import annotations

import os
import shutil

import pytest

from stemedb import open_store
from stemedb.core import snapshot
from stemedb.errors import CorruptionError, UnsupportedFormat
from tests.conftest import NoFsyncFS, body

AGENT = "a1" * 32


def dump(st) -> dict:
    """Every part of a State as plain data (merges the MultiMaps' recent dicts)."""
    out = {k: v.tolist() for k, v in st.cols.arrays().items()}
    for name in ("by_hash", "by_key", "by_path", "by_source"):
        m = getattr(st, name)
        m.merge()
        out[name] = (m.keys.tolist(), m.vals.tolist())
    for name in ("path_names", "pred_names", "epoch_names", "dependents", "revisions",
                 "retracted", "votes", "outcomes", "last_seq", "last_recorded_at", "records"):
        out[name] = getattr(st, name)
    out["sorted_paths"] = list(st.sorted_paths)
    out["path_ids"] = st.path_ids
    out["pred_ids"] = st.pred_ids
    out["epochs"] = {k: vars(v) for k, v in st.epochs.items()}
    out["retractions"] = [vars(r) for r in st.retractions]
    return out


def rich_store(path, **kw):
    """A store holding every record type and every kind of edge."""
    s = open_store(path, fs=NoFsyncFS(), audit=False, **kw)
    hs = [s.put(body(i, source=f"pubmed://{i % 3}")).hash for i in range(30)]
    s.create_epoch("e1", description="d")
    s.create_epoch("e2", supersedes=["e1"])
    s.put_batch([body(40, epoch="e1", parent_hash=hs[0]),
                 body(41, derived_from=[hs[1], hs[2]], epoch="e2", concept_path="x/é/ü")])
    s.retract(hash=hs[5], reason="r1")
    s.retract(concept_path="drugs/d2/risk", reason="r2", cascade=True)
    s.vote(hs[6], 0.3)
    s.vote(hs[6], 0.9)
    s.record_outcome(AGENT, True)
    s.record_outcome(AGENT, False)
    s.put(body(50, source="source/bad", parent_hash=hs[7]))
    return s


def test_snapshot_round_trip_is_exact(tmp_path):
    s = rich_store(str(tmp_path / "d"))
    pos = s._position()
    data = snapshot.encode(s.state, pos)
    path = snapshot.write(NoFsyncFS(), str(tmp_path / "db"), data)
    assert os.listdir(tmp_path / "db" / "indexes") == ["snapshot.idx"], "no temp file left"
    st, pos2 = snapshot.read(path)
    assert pos2 == pos, "the snapshot records the log position it covers"
    assert dump(st) == dump(s.state), "a snapshot reloads to exactly the same state"
    assert st.check() == []
    s.close()


def test_open_from_snapshot_equals_full_rebuild(tmp_path):
    d = str(tmp_path / "d")
    rich_store(d, segment_size=4096).close()
    s = open_store(d, fs=NoFsyncFS(), audit=False, segment_size=4096)
    assert s.replayed == 0 and not s.rebuilt, "the clean-close snapshot covers everything"
    from_snapshot = dump(s.state)
    s.close()
    shutil.rmtree(os.path.join(d, "db"))
    s = open_store(d, fs=NoFsyncFS(), audit=False, segment_size=4096)
    assert s.rebuilt
    assert dump(s.state) == from_snapshot, "snapshot and rebuild from the WAL agree exactly"
    s.close()


def test_incremental_apply_equals_rebuild(tmp_path):
    """The write path (apply per group) and the rebuild path (bulk per segment) agree."""
    d = str(tmp_path / "d")
    s = rich_store(d, segment_size=4096)
    live = dump(s.state)
    s.close()
    shutil.rmtree(os.path.join(d, "db"))
    s = open_store(d, fs=NoFsyncFS(), audit=False, segment_size=4096)
    assert dump(s.state) == live
    s.close()


def _snap_bytes(tmp_path):
    s = rich_store(str(tmp_path / "d"))
    data = snapshot.encode(s.state, s._position())
    s.close()
    return bytearray(data)


@pytest.mark.parametrize("damage,exc", [
    (lambda b: b.__setitem__(slice(0, 8), b"NOTASNAP"), CorruptionError),
    (lambda b: b.__setitem__(len(b) - 1, b[-1] ^ 1), CorruptionError),
    (lambda b: b.__setitem__(60, b[60] ^ 1), CorruptionError),
    (lambda b: b.__setitem__(8, 2), UnsupportedFormat),
    (lambda b: b.__delitem__(slice(30, None)), CorruptionError),
])
def test_a_damaged_snapshot_is_refused(tmp_path, damage, exc):
    raw = _snap_bytes(tmp_path)
    damage(raw)
    p = tmp_path / "bad.idx"
    p.write_bytes(bytes(raw))
    with pytest.raises(exc):
        snapshot.read(str(p))
