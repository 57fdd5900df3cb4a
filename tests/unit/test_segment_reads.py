"""Sealed segments' records are read by pread, never through a mapping
(segment.py, docs/design.md "Memory"): after an open and reads of every
record no part of the WAL is mapped into the process (a mapping would map
~64 KiB of the log for each record read, the whole WAL after a few
thousand scattered reads); recovery's scan maps a sealed segment and lets
go of the mapping when it is done; Segment.read and Segment.buffer give
the file's bytes."""
from __future__ import annotations

import gc
import os

import pytest

from stemedb import open_store
from stemedb.core.segment import Segment
from tests.conftest import NoFsyncFS

needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="Linux /proc")


def _claim(i):
    return {"concept_path": f"p{i % 7}", "predicate": "r",
            "value": {"n": i, "pad": "x" * (i % 900)}, "confidence": 0.5,
            "source": "fda://x", "timestamp": 1_700_000_000 + i}


def _mapped(path_part: str) -> list[str]:
    with open("/proc/self/maps") as f:
        return [line for line in f if path_part in line]


@pytest.fixture
def data_dir(tmp_path):
    d = str(tmp_path / "d")
    s = open_store(d, fs=NoFsyncFS(), durability="none", audit=False, segment_size=16384)
    for k in range(0, 300, 10):
        s.put_batch([_claim(i) for i in range(k, k + 10)])
    s.close()
    return d


@needs_proc
@pytest.mark.parametrize("snapshot", [True, False])
def test_no_wal_page_is_mapped_after_open_and_reads(data_dir, snapshot):
    if not snapshot:    # the rebuild's scan maps and applies every segment
        os.remove(os.path.join(data_dir, "db", "indexes", "snapshot.idx"))
    wal_dir = os.path.join(data_dir, "wal")
    s = open_store(data_dir, fs=NoFsyncFS(), durability="none", audit=False,
                   segment_size=16384)
    try:
        segs = s.wal.segments
        assert len(segs) > 3 and all(seg.sealed for seg in segs[:-1])
        assert s.rebuilt is not snapshot
        gc.collect()
        assert _mapped(wal_dir) == [], "recovery's scan let go of every segment's mapping"
        want = [s.reader._read(int(loc))[0] for loc in s.state.cols.loc[:s.state.count]]
        assert s.reader.read_records(list(range(300))) == want
        assert len(s.query("p3", predicate="r", limit=100).results) > 0
        assert all(seg._map is None for seg in segs)
        assert _mapped(wal_dir) == [], "records are pread, not read through a mapping"
    finally:
        s.close()


def test_buffer_maps_a_sealed_segment_until_unmap(data_dir):
    s = open_store(data_dir, fs=NoFsyncFS(), durability="none", audit=False,
                   segment_size=16384)
    try:
        seg = s.wal.segments[1]
        with open(seg.path, "rb") as f:
            raw = f.read(seg.size)
        buf = seg.buffer()
        assert bytes(buf) == raw and seg.buffer() is buf, "one mapping, kept"
        assert seg.read(100, 50) == raw[100:150]
        assert seg.read(seg.size - 10, 50) == raw[-10:], "short at the end, as a slice"
        view = memoryview(buf)          # a view alive: the mapping cannot close
        seg.unmap()
        assert seg._map is None and bytes(view[:64]) == raw[:64], \
            "pages dropped (MADV_DONTNEED), read back from the file when touched"
        view.release()
        again = seg.buffer()
        assert again is not buf and bytes(again) == raw
        seg.unmap()
        seg.unmap()                     # twice is nothing
        assert seg._map is None
    finally:
        s.close()


def test_active_segment_buffer_is_a_fresh_read(tmp_path):
    seg = Segment.create(NoFsyncFS(), str(tmp_path), 1, 1, b"L" * 8)
    try:
        with open(seg.path, "rb") as f:
            raw = f.read()
        assert not seg.sealed and seg.buffer() == raw and seg._map is None
        seg.seal()
        assert seg._map is None, "sealing maps nothing"
        assert bytes(seg.buffer()) == raw and seg._map is not None
    finally:
        seg.close()
    assert seg._map is None and seg._fd == -1
