"""Reader._read_many (the read cache's misses in one pass: every frame read
by pread, sealed segment or not) gives what Reader._read gives, record
for record, over sealed and active segments; a damaged frame raises what
_read raises for it."""
from __future__ import annotations

import pytest

from stemedb import open_store
from stemedb.core.format import FRAME_SIZE
from stemedb.errors import ChecksumMismatch
from tests.conftest import NoFsyncFS


def _claim(i):
    return {"concept_path": f"p{i % 7}", "predicate": "r",
            "value": {"n": i, "pad": "x" * (i % 900)}, "confidence": 0.5,
            "source": "fda://x", "timestamp": 1_700_000_000 + i}


@pytest.fixture
def store(tmp_path):
    s = open_store(str(tmp_path / "d"), fs=NoFsyncFS(), durability="none", audit=False,
                   segment_size=16384)
    for k in range(0, 300, 10):
        s.put_batch([_claim(i) for i in range(k, k + 10)])
    yield s
    s.close()


def _locs(s):
    return [int(x) for x in s.state.cols.loc[:s.state.count]]


def test_read_many_is_read_record_for_record(store):
    r = store.reader
    segs = r.wal.segments
    assert len(segs) > 3 and all(seg.sealed for seg in segs[:-1]) and not segs[-1].sealed
    locs = _locs(store)
    assert r._read_many(locs) == [r._read(loc) for loc in locs]
    assert r._read_many(locs[::-1]) == [r._read(loc) for loc in locs[::-1]]
    assert r._read_many([]) == []
    assert (r.read_records(list(range(300)))
            == [r._read(loc)[0] for loc in locs])


@pytest.mark.parametrize("where", ["crc", "length", "offset"])
def test_a_damaged_sealed_frame_raises_as_read_does(store, where):
    r = store.reader
    seg = r.wal.segments[1]
    locs = [loc for loc in _locs(store) if loc >> 40 == seg.number]
    loc = locs[len(locs) // 2]
    off = loc & ((1 << 40) - 1)
    with open(seg.path, "rb") as f:
        data = bytearray(f.read(seg.size))
    if where == "crc":
        data[off + FRAME_SIZE + 3] ^= 0x10          # a payload byte: the CRC no longer fits
    elif where == "length":
        data[off:off + 4] = (len(data)).to_bytes(4, "little")   # runs past the segment
    if where == "offset":
        loc = (seg.number << 40) | (len(data) - 3)   # fewer bytes than a frame header
    else:
        with open(seg.path, "r+b") as f:    # the file: a sealed segment's records are pread
            f.write(data)
    outcomes = []
    # and one record alone (read_record's _read_one)
    for fn in (lambda: r._read(loc), lambda: r._read_many([locs[0], loc])[1],
               lambda: r._read_one(loc)):
        try:
            fn()
            outcomes.append("ok")
        except Exception as exc:  # noqa: BLE001 - compared below
            outcomes.append(type(exc))
    assert outcomes[0] == outcomes[1] == outcomes[2] != "ok"
    if where != "offset":
        assert outcomes[0] is ChecksumMismatch


@pytest.mark.parametrize("cached", [True, False])
def test_single_and_uncached_reads_are_read_record_for_record(store, monkeypatch, cached):
    """read_record (one record: _read_one, through _read_many when compiled)
    and read_records with the cache off (one _read_many call when compiled)
    give _read's records, and every ordinal's record the same either way."""
    r = store.reader
    if not cached:
        monkeypatch.setattr(r, "cache", None)
    locs = _locs(store)
    want = [r._read(loc)[0] for loc in locs]
    assert [r.read_record(o) for o in range(300)] == want
    assert r.read_records(list(range(300))[::-1]) == want[::-1]
    assert [r._read_one(loc) for loc in locs] == [r._read(loc) for loc in locs]
