"""The preallocated active segment (docs/design.md, "Preallocated active segment").

The WAL keeps zeros, written and synced, ahead of the active segment's
records, so that a group's fdatasync flushes data only; sealing and close cut
the file to its records, and recovery reads the zeros as the clean end and
appends over them.  The scanner's side (every reader agrees on zeros) is in
test_tail_rule.py; crashes inside the zeros are in tests/stress.
"""
from __future__ import annotations

import errno
import logging
import os

import pytest

from stemedb import open_store
from stemedb.core.format import SEGMENT_HEADER_SIZE
from stemedb.core.wal import PREALLOC
from stemedb.errors import StoreFaulted
from tests.conftest import NoFsyncFS, _CountingFile, abandon, body, log_end

SEG1 = os.path.join("wal", "segment-00001.log")


class _Recording(_CountingFile):
    def write(self, data) -> None:
        self.fs.events.append(("write", os.path.basename(self.path), len(data)))
        super().write(data)

    def zero_fill(self, start: int, end: int) -> None:
        self.fs.events.append(("zero", os.path.basename(self.path), start, end))
        if self.fs.no_space:
            os.ftruncate(self.fd, start + 100)      # a part of the zeros got in
            raise OSError(errno.ENOSPC, "No space left on device")
        super().zero_fill(start, end)

    def sync(self) -> None:
        self.fs.events.append(("sync", os.path.basename(self.path)))
        if self.fs.fail_sync_after_zeros and self.fs.events[-2][0] == "zero":
            raise OSError(errno.EIO, "injected fsync failure")
        super().sync()

    def sync_all(self) -> None:
        self.fs.events.append(("sync_all", os.path.basename(self.path)))
        super().sync()

    def truncate(self, size: int) -> None:
        self.fs.events.append(("truncate", os.path.basename(self.path), size))
        super().truncate(size)


class RecordingFS(NoFsyncFS):
    """The real file layer without the physical flush, with a log of what the
    WAL asked of it, in order."""

    file_class = _Recording

    def __init__(self):
        super().__init__()
        self.events: list[tuple] = []
        self.fail_sync_after_zeros = False
        self.no_space = False


def big_batch(n=1100, start=0):
    """More than PREALLOC bytes in one group."""
    return [body(i, value="x" * 1000) for i in range(start, start + n)]


def test_open_zeroes_ahead_and_syncs_before_any_write(tmp_path):
    data = tmp_path / "data"
    fs = RecordingFS()
    s = open_store(data, fs=fs, audit=False)
    seg = data / SEG1
    assert os.path.getsize(seg) == SEGMENT_HEADER_SIZE + PREALLOC
    ev = [e for e in fs.events if e[1] == "segment-00001.log"]
    assert ev == [("zero", "segment-00001.log", SEGMENT_HEADER_SIZE, SEGMENT_HEADER_SIZE + PREALLOC),
                  ("sync", "segment-00001.log")], ev
    fs.events.clear()
    s.put(body(0))
    assert fs.events == [("write", "segment-00001.log", log_end(seg) - SEGMENT_HEADER_SIZE),
                         ("sync", "segment-00001.log")], "a put over the zeros: one write, one sync"
    assert os.path.getsize(seg) == SEGMENT_HEADER_SIZE + PREALLOC, "written over, not appended"
    s.close()
    assert os.path.getsize(seg) == log_end(seg), "a closed log ends at its last record"
    assert fs.events[-2:] == [("truncate", "segment-00001.log", log_end(seg)),
                              ("sync_all", "segment-00001.log")], "cut, and the size made durable"


def test_a_group_past_the_zeros_zeroes_more_first(tmp_path):
    data = tmp_path / "data"
    fs = RecordingFS()
    s = open_store(data, fs=fs, audit=False)
    s.put(body(0))
    before = log_end(data / SEG1)
    fs.events.clear()
    s.put_batch(big_batch(start=1))
    end = log_end(data / SEG1)
    assert end - before > PREALLOC
    assert fs.events == [("zero", "segment-00001.log", SEGMENT_HEADER_SIZE + PREALLOC, end + PREALLOC),
                         ("sync", "segment-00001.log"),
                         ("write", "segment-00001.log", end - before),
                         ("sync", "segment-00001.log")], fs.events
    assert os.path.getsize(data / SEG1) == end + PREALLOC
    s.close()


def test_rotation_seals_each_segment_at_its_exact_size(tmp_path):
    data = tmp_path / "data"
    fs = RecordingFS()
    s = open_store(data, fs=fs, audit=False, segment_size=4096)
    for i in range(60):
        s.put(body(i, value="y" * 200))
    names = sorted(n for n in os.listdir(data / "wal") if n.startswith("segment-"))
    assert len(names) >= 3
    for n in names[:-1]:
        p = data / "wal" / n
        assert os.path.getsize(p) == log_end(p) <= 4096, f"{n} sealed at its records"
        cut = fs.events.index(("truncate", n, log_end(p)))
        assert fs.events[cut + 1] == ("sync_all", n), "the sealed size is durable"
        created = [i for i, e in enumerate(fs.events) if e[0] == "write"
                   and e[1] == names[names.index(n) + 1] + ".tmp"]
        assert created and created[0] > cut, "before the next segment exists"
    active = data / "wal" / names[-1]
    assert os.path.getsize(active) == 4096, "zeros up to segment_size, not past it"
    s.close()
    assert os.path.getsize(active) == log_end(active)
    with open_store(data, audit=False) as s2:
        assert s2.count == 60


def test_a_crashed_store_reopens_on_its_zeros(tmp_path, caplog):
    data = tmp_path / "data"
    s = open_store(data, fs=NoFsyncFS(), audit=False)
    hs = [s.put(body(i)).hash for i in range(5)]
    abandon(s)
    seg = data / SEG1
    end, size = log_end(seg), os.path.getsize(seg)
    assert size == SEGMENT_HEADER_SIZE + PREALLOC > end
    caplog.set_level(logging.INFO, logger="stemedb")
    fs = RecordingFS()
    s = open_store(data, fs=fs, audit=False)
    assert not [e for e in fs.events if e[1] == "segment-00001.log"], \
        "the zeros are reused: nothing cut, nothing zeroed again"
    assert not any("Truncated torn write" in r.getMessage() for r in caplog.records)
    assert not os.path.exists(data / "wal" / "quarantine")
    assert os.path.getsize(seg) == size
    h = s.put(body(99)).hash
    assert log_end(seg) > end and os.path.getsize(seg) == size, "appended where the records end"
    abandon(s)
    with open_store(data, audit=False) as s2:
        assert all(s2.get(x) is not None for x in hs + [h]) and s2.count == 6


def test_a_torn_group_over_the_zeros_is_cut_and_zeroed_again(tmp_path, caplog):
    """A crash during a group: its frame reached the disk in part, zeros after."""
    data = tmp_path / "data"
    s = open_store(data, fs=NoFsyncFS(), audit=False)
    for i in range(5):
        s.put(body(i))
    end = log_end(data / SEG1)
    s.put(body(5))
    new_end = log_end(data / SEG1)
    abandon(s)
    with open(data / SEG1, "r+b") as f:
        f.seek(end + 25)
        f.write(bytes(new_end - end - 25))       # only its first 25 bytes landed
    caplog.set_level(logging.WARNING, logger="stemedb")
    fs = RecordingFS()
    s = open_store(data, fs=fs, audit=False)
    warn = [r.getMessage() for r in caplog.records if "Truncated torn write" in r.getMessage()]
    assert len(warn) == 1 and f": {new_end - end} bytes moved" in warn[0], warn
    assert s.count == 5
    assert ("zero", "segment-00001.log", end, end + PREALLOC) in fs.events, "zeroed again"
    assert os.path.getsize(data / SEG1) == end + PREALLOC
    s.put(body(6))
    s.close()


def test_a_failed_sync_of_the_zeros_stops_writes(tmp_path):
    data = tmp_path / "data"
    fs = RecordingFS()
    s = open_store(data, fs=fs, audit=False)
    s.put(body(0))
    fs.fail_sync_after_zeros = True
    with pytest.raises(StoreFaulted, match="outcome of this write is unknown"):
        s.put_batch(big_batch(start=1))
    syncs = fs.events.count(("sync", "segment-00001.log"))
    with pytest.raises(StoreFaulted, match="writes are stopped"):
        s.put(body(5000))
    assert fs.events.count(("sync", "segment-00001.log")) == syncs, "never retried"
    assert not any(e[0] == "write" and e[2] > PREALLOC for e in fs.events), \
        "the group was not written over zeros whose sync failed"
    abandon(s)
    with open_store(data, audit=False) as s2:
        assert s2.count == 1


def test_no_space_for_the_zeros_appends_without_them(tmp_path, caplog):
    data = tmp_path / "data"
    fs = RecordingFS()
    s = open_store(data, fs=fs, audit=False)
    s.put(body(0))
    size = os.path.getsize(data / SEG1)
    fs.no_space = True
    caplog.set_level(logging.WARNING, logger="stemedb")
    res = s.put_batch(big_batch(start=1))
    assert len(res) == 1100
    assert any("No space to preallocate" in r.getMessage() for r in caplog.records)
    assert ("truncate", "segment-00001.log", size) in fs.events, "the part of the zeros is cut"
    assert os.path.getsize(data / SEG1) == log_end(data / SEG1), "appended, the file grew"
    n = len([e for e in fs.events if e[0] == "zero"])
    s.put_batch(big_batch(start=2000))
    assert len([e for e in fs.events if e[0] == "zero"]) == n, "not tried again"
    s.close()
    with open_store(data, audit=False) as s2:
        assert s2.count == 2201


def test_durability_none_does_not_preallocate(tmp_path):
    data = tmp_path / "data"
    fs = RecordingFS()
    s = open_store(data, fs=fs, audit=False, durability="none")
    s.put(body(0))
    assert not [e for e in fs.events if e[0] == "zero"]
    assert os.path.getsize(data / SEG1) == log_end(data / SEG1)
    s.close()
