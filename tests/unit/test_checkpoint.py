"""Checkpoints.write_soon (a snapshot in the background) and stop (none
after the store's close lets the WAL and LOCK go)."""
from __future__ import annotations

import os

from stemedb.core import snapshot as snap
from tests.conftest import body


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
