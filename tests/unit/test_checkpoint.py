"""Checkpoints.write_soon (a snapshot in the background) and stop (none
after the store's close lets the WAL and LOCK go)."""
from __future__ import annotations

import os
import shutil
import threading

from stemedb.core import snapshot as snap
from stemedb.core.checkpoint import Checkpoints
from tests.conftest import abandon, body


def test_write_soon_writes_a_snapshot_of_the_state(opener, data):
    s = opener(snapshot_interval=0)
    for i in range(25):
        s.put(body(i))
    path = snap.snapshot_path(os.path.join(data, "db"))
    before = os.path.getmtime(path) if os.path.exists(path) else None
    s.checkpoints.write_soon().join(timeout=30)
    state, pos = snap.read(path)
    assert state.count == 25 and pos["last_seq"] == s.state.last_seq
    assert before is None or os.path.getmtime(path) >= before
    assert not state.check()


def test_after_stop_a_background_write_writes_nothing(opener, data):
    s = opener(snapshot_interval=0)
    for i in range(5):
        s.put(body(i))
    s.close()                               # its snapshot, then stop()
    path = snap.snapshot_path(os.path.join(data, "db"))
    os.remove(path)
    os.remove(os.path.join(data, "metadata.json"))
    s.checkpoints.write_soon().join(timeout=30)
    assert not os.path.exists(path) and not os.path.exists(os.path.join(data, "metadata.json"))


def test_a_store_reopened_after_a_background_snapshot_uses_it(opener, data):
    s = opener(snapshot_interval=0)
    for i in range(12):
        s.put(body(i))
    s.checkpoints.write_soon().join(timeout=30)
    for i in range(12, 15):
        s.put(body(i))
    s.close()
    again = opener()
    assert not again.rebuilt and again.count == 15


def test_the_snapshot_after_a_rebuild_does_not_hold_up_the_open(opener, data, monkeypatch):
    """A start that rebuilt the indexes from the WAL answers before its new
    snapshot is written: that one is written in the background, as the
    periodic ones are.  Held here until the store has answered a query and
    taken a put; once written, the next start loads it."""
    s = opener()
    for i in range(30):
        s.put(body(i))
    s.close()
    shutil.rmtree(os.path.join(data, "db"))
    go, started = threading.Event(), threading.Event()
    write = Checkpoints.write

    def held(self, *, background=False):
        if background:
            started.set()
            assert go.wait(30), "the test never let the background snapshot go"
        write(self, background=background)
    monkeypatch.setattr(Checkpoints, "write", held)
    s = opener()
    try:
        assert s.rebuilt and started.wait(30), "the snapshot after the rebuild runs in the background"
        path = snap.snapshot_path(os.path.join(data, "db"))
        assert not os.path.exists(path), "the open returned before its snapshot was written"
        assert s.count == 30 and s.query(body(7)["concept_path"]).results
        assert s.put(body(30)).created
    finally:
        go.set()
    s.checkpoints.settle(30)
    state, pos = snap.read(path)
    assert state.count >= 30 and not state.check()
    s.close()
    again = opener()
    assert not again.rebuilt and again.count == 31


def test_a_crash_before_the_background_snapshot_rebuilds_again(opener, data, monkeypatch):
    """Killed before the snapshot after a rebuild is written: the next start
    rebuilds again, with everything the WAL holds (no snapshot, no loss)."""
    s = opener()
    for i in range(20):
        s.put(body(i))
    s.close()
    shutil.rmtree(os.path.join(data, "db"))
    monkeypatch.setattr(Checkpoints, "write_soon", lambda self: None)   # never gets to run
    s = opener()
    assert s.rebuilt
    s.put(body(20))
    abandon(s)                              # as kill -9: no close, no snapshot
    monkeypatch.undo()
    again = opener()
    assert again.rebuilt and again.count == 21
