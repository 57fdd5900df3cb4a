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
    (lambda b: b.clear(), CorruptionError),
    (lambda b: b.__delitem__(slice(len(b) - 100, None)), CorruptionError),
])
def test_a_damaged_snapshot_is_refused(tmp_path, damage, exc):
    raw = _snap_bytes(tmp_path)
    damage(raw)
    p = tmp_path / "bad.idx"
    p.write_bytes(bytes(raw))
    with pytest.raises(exc):
        snapshot.read(str(p))


def test_a_mapped_snapshot_takes_writes_and_is_never_written(tmp_path, monkeypatch):
    """The columns and sorted runs of a state opened from a snapshot are views
    over the mapped file; writes grow them by copying (columns past their
    capacity, runs at a merge), the file and the mapping stay byte for byte
    what they were, and a new snapshot can replace the mapped file."""
    from stemedb.core import index
    monkeypatch.setattr(index, "MERGE_AT", 4)        # merge the runs within a few writes
    d = str(tmp_path / "d")
    rich_store(d).close()
    path = snapshot.snapshot_path(os.path.join(d, "db"))
    with open(path, "rb") as f:
        original = f.read()
    s = open_store(d, fs=NoFsyncFS(), audit=False)
    assert not s.rebuilt and s.replayed == 0
    st = s.state
    mm = snapshot.mapping_of(st.cols.seq)
    assert mm is not None, "the columns are views over the mapped snapshot, not heap copies"
    for name in ("by_hash", "by_key", "by_path", "by_source"):
        assert snapshot.mapping_of(getattr(st, name).keys) is mm, name
    fd = os.open(path, os.O_RDONLY)                  # the mapped inode, across the rename
    try:
        hs = [s.put(body(100 + i, source=f"pubmed://{i}")).hash for i in range(40)]
        s.put_batch([body(200 + i, parent_hash=hs[i]) for i in range(20)])
        s.retract(hash=hs[3], reason="r")
        s.vote(hs[4], 0.5)
        s.create_epoch("e3", supersedes=["e2"])
        s.put(body(300, epoch="e3", derived_from=[hs[5], hs[6]]))
        assert snapshot.mapping_of(st.cols.seq) is None, "the columns grew into the heap"
        assert snapshot.mapping_of(st.by_key.keys) is None, "the runs merged into the heap"
        assert st.check() == []
        s.snapshot()                                 # replaces the mapped file by rename
        assert bytes(mm) == original, "nothing was written into the mapping"
        assert os.pread(fd, len(original) + 1, 0) == original, "the mapped file is unchanged"
        live = dump(s.state)
        s.put(body(400))                             # still writable after the new snapshot
        live_after = dump(s.state)
    finally:
        os.close(fd)
    s.close()
    with open(path, "rb") as f:
        assert f.read() != original, "the close wrote a new snapshot"
    s = open_store(d, fs=NoFsyncFS(), audit=False)
    assert not s.rebuilt and s.replayed == 0
    assert dump(s.state) == live_after
    s.close()
    shutil.rmtree(os.path.join(d, "db"))
    s = open_store(d, fs=NoFsyncFS(), audit=False)
    assert s.rebuilt and dump(s.state) == live_after, "the snapshots agree with a rebuild"
    assert live != live_after
    s.close()


def test_arrays_are_aligned_and_an_unaligned_snapshot_still_reads(tmp_path, monkeypatch):
    """New snapshots put every array on a 64-byte boundary (aligned views);
    one written without that padding (before it existed) reads the same, its
    unaligned arrays copied."""
    s = rich_store(str(tmp_path / "d"))
    pos = s._position()
    want = dump(s.state)
    st, _ = snapshot.read(snapshot.write(NoFsyncFS(), str(tmp_path / "a"),
                                         snapshot.encode(s.state, pos)))
    for arr in list(st.cols.arrays().values()) + [st.by_key.keys, st.by_hash.vals]:
        assert arr.flags.aligned and snapshot.mapping_of(arr) is not None
        assert arr.__array_interface__["data"][0] % snapshot.ALIGN == 0
    assert dump(st) == want
    monkeypatch.setattr(snapshot, "ALIGN", 1)         # the layout before alignment
    data = snapshot.encode(s.state, pos)
    s.close()
    st, _ = snapshot.read(snapshot.write(NoFsyncFS(), str(tmp_path / "u"), data))
    arrays = list(st.cols.arrays().values()) + [getattr(st, m).keys for m in
                                                ("by_hash", "by_key", "by_path", "by_source")]
    assert all(a.flags.aligned for a in arrays)
    assert dump(st) == want
