"""Start-up recovery as the contract's "On disk and in the log" says: the log
lines, index rebuilds, snapshot trust, the one torn-tail rule, and refusal
(changing nothing) on corruption."""
from __future__ import annotations

import logging
import os
import re
import shutil

import pytest

from stemedb import open_store
from stemedb.core import codec
from stemedb.core.format import FLAG_MORE, FRAME_SIZE, REC_ASSERT, SEGMENT_HEADER_SIZE
from stemedb.errors import ChecksumMismatch, CorruptionError
from stemedb.model import prepare_assertion
from tests.conftest import NoFsyncFS, abandon, append_to_log, body, log_end, tree_bytes


@pytest.fixture
def data(tmp_path):
    return str(tmp_path / "data")


def op(data, **kw):
    kw.setdefault("fs", NoFsyncFS())
    kw.setdefault("audit", False)
    return open_store(data, **kw)


def seg_path(data, n=1):
    return os.path.join(data, "wal", f"segment-{n:05d}.log")


def frames(path):
    """Offsets and flags of the records in a segment file, and its bytes up to
    the end of the last record (without the zero tail of a preallocated one)."""
    with open(path, "rb") as f:
        buf = f.read()
    offsets, _t, flags, seqs, stop, _r = codec.scan_frames(buf, SEGMENT_HEADER_SIZE, len(buf))
    return list(offsets), list(flags), buf[:stop]


def ends_at(path, end):
    """The segment's records end at ``end``, and nothing but zeros follows
    (the active segment's preallocated space)."""
    with open(path, "rb") as f:
        buf = f.read()
    return log_end(path) == end and not any(buf[end:])


def messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "stemedb"]


def fill(s, n=10, start=0):
    return [s.put(body(i)).hash for i in range(start, start + n)]


def state_view(s):
    """What a user can see of a store: every assertion with seq and status."""
    out = {}
    st = s.state
    for o in range(st.count):
        h = st.cols.hash_of(o).hex()
        a = s.get(h)
        out[h] = (a.seq, a.status, a.value, (a.retraction or {}).get("seq"))
    return out, s.count, s.last_seq, sorted(st.epochs)


# ------------------------------------------------------------------ log lines and rebuilds

def test_deleting_db_indexes_rebuilds_with_the_documented_log_lines(data, caplog):
    s = op(data)
    hs = fill(s, 10)
    s.put_batch([body(i) for i in range(20, 25)])
    s.create_epoch("e1")
    s.put(body(30, epoch="e1", parent_hash=hs[0], derived_from=[hs[1]]))
    s.retract(hash=hs[2], reason="wrong")
    s.vote(hs[3], 0.4)
    before = state_view(s)
    records = s.state.records
    s.close()
    shutil.rmtree(os.path.join(data, "db", "indexes"))
    caplog.set_level(logging.INFO, logger="stemedb")
    caplog.clear()      # only this open's lines (an earlier test may have left INFO on)
    s = op(data)
    msgs = messages(caplog)
    assert msgs[0] == "Starting WAL recovery..."
    assert "Rebuilding indexes..." in msgs, "a missing snapshot forces a rebuild"
    assert f"Replayed {records} entries from WAL" in msgs
    done = [m for m in msgs if m.startswith("Index rebuild complete in")]
    assert done and re.fullmatch(r"Index rebuild complete in \d+(\.\d+)?s", done[0])
    assert msgs[-1] == "Startup complete"
    assert msgs.index("Rebuilding indexes...") < msgs.index(done[0]) < msgs.index("Startup complete")
    assert state_view(s) == before, "the rebuilt indexes answer exactly as before"
    assert s.check() == []
    s.checkpoints.settle(30)    # written in the background once the store answers
    assert os.path.exists(os.path.join(data, "db", "indexes", "snapshot.idx")), \
        "a rebuild writes a fresh snapshot"
    s.close()


def test_open_from_snapshot_replays_only_the_tail(data, caplog):
    s = op(data)
    fill(s, 10)
    s.close()
    s = op(data)
    fill(s, 4, start=100)
    s.retract(concept_path="drugs/d1/risk", reason="x")
    before = state_view(s)
    abandon(s)                     # no snapshot at close: the snapshot covers the first 10
    caplog.set_level(logging.INFO, logger="stemedb")
    s = op(data)
    msgs = messages(caplog)
    assert "Rebuilding indexes..." not in msgs, "a matching snapshot is used"
    assert "Replayed 5 entries from WAL" in msgs, "only the records after the snapshot replay"
    assert state_view(s) == before and s.check() == []
    s.close()


def test_wal_only_restore_is_refused_until_the_loss_is_accepted(data, caplog):
    """Putting an older copy of wal/ back under a newer snapshot and metadata.json
    looks exactly like a log that lost its end: start refuses (it used to
    rebuild and reuse the lost seqs), and `stemedb salvage` accepts the loss."""
    from stemedb.ops import salvage
    s = op(data)
    fill(s, 10)
    s.close()
    backup = data + ".walbackup"
    shutil.copytree(os.path.join(data, "wal"), backup)
    s = op(data)
    later = fill(s, 15, start=50)
    s.close()                      # the snapshot now covers 25 assertions
    shutil.rmtree(os.path.join(data, "wal"))
    shutil.copytree(backup, os.path.join(data, "wal"))
    with pytest.raises(CorruptionError, match="ends at seq 10, but seq 25 is durable"):
        op(data)
    assert salvage.main([data]) == 0
    caplog.set_level(logging.INFO, logger="stemedb")
    s = op(data)
    msgs = messages(caplog)
    assert "Rebuilding indexes..." in msgs and any(
        m.startswith("Index rebuild complete in") for m in msgs)
    assert s.count == 10 and s.last_seq == 10, "counts come from the restored WAL"
    assert all(s.get(h) is None for h in later), "nothing of the newer snapshot leaks in"
    assert s.put(body(500)).seq == 11, "seqs continue from the restored log"
    assert s.check() == []
    s.close()


def test_snapshot_from_another_history_is_not_trusted(data, caplog):
    """Same store, same length of log, different records at the snapshot's anchor."""
    s = op(data)
    fill(s, 5)
    s.close()
    wal_then = data + ".wal0"
    shutil.copytree(os.path.join(data, "wal"), wal_then)
    s = op(data)
    fill(s, 5, start=10)
    s.close()
    snap = os.path.join(data, "db", "indexes", "snapshot.idx")
    shutil.copy(snap, data + ".snap")
    shutil.rmtree(os.path.join(data, "wal"))
    shutil.copytree(wal_then, os.path.join(data, "wal"))
    # a proper WAL-only restore sets aside what counts the newer records
    shutil.rmtree(os.path.join(data, "db"))
    os.remove(os.path.join(data, "metadata.json"))
    s = op(data)
    other = fill(s, 5, start=20)            # same sizes, other content
    s.close()
    shutil.copy(data + ".snap", snap)       # the stale snapshot comes back
    caplog.set_level(logging.INFO, logger="stemedb")
    s = op(data)
    assert "Rebuilding indexes..." in messages(caplog)
    assert s.count == 10 and all(s.get(h) for h in other), "the WAL's history wins"
    s.close()


def test_wal_of_another_store_is_rebuilt_not_mixed(data, caplog):
    s = op(data)
    fill(s, 8)
    s.close()
    other = data + ".other"
    t = op(other)
    hs = fill(t, 3, start=40)
    t.close()
    shutil.rmtree(os.path.join(data, "wal"))
    shutil.copytree(os.path.join(other, "wal"), os.path.join(data, "wal"))
    caplog.set_level(logging.INFO, logger="stemedb")
    s = op(data)
    assert any("belongs to another log" in m for m in messages(caplog))
    assert s.count == 3 and all(s.get(h) for h in hs)
    s.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "version"])
def test_unusable_snapshot_is_rebuilt(data, caplog, damage):
    s = op(data)
    hs = fill(s, 10)
    s.close()
    snap = os.path.join(data, "db", "indexes", "snapshot.idx")
    raw = bytearray(open(snap, "rb").read())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0xFF
    elif damage == "truncate":
        raw = raw[:len(raw) // 2]
    elif damage == "garbage":
        raw = bytearray(b"not a snapshot")
    else:
        raw[8] = 9                         # major version 9
    open(snap, "wb").write(bytes(raw))
    caplog.set_level(logging.INFO, logger="stemedb")
    s = op(data)
    msgs = messages(caplog)
    assert any(m.startswith("Index snapshot unusable") for m in msgs), msgs
    assert "Rebuilding indexes..." in msgs
    assert s.count == 10 and all(s.get(h) for h in hs)
    s.close()


def test_lost_wal_with_metadata_is_refused(data):
    s = op(data)
    fill(s, 3)
    s.close()
    shutil.rmtree(os.path.join(data, "wal"))
    with pytest.raises(CorruptionError) as exc:
        op(data)
    assert "restore the WAL" in str(exc.value), "a lost WAL is not mistaken for a new store"


# ------------------------------------------------------------------ corruption: refuse, change nothing

def _no_snapshot(data):
    shutil.rmtree(os.path.join(data, "db"), ignore_errors=True)


def test_checksum_mismatch_inside_the_log_refuses_and_changes_nothing(data):
    s = op(data)
    fill(s, 10)
    s.close()
    _no_snapshot(data)
    path = seg_path(data)
    offs, _f, buf = frames(path)
    b = bytearray(buf)
    b[offs[4] + FRAME_SIZE + 40] ^= 0x01       # a byte in the 5th record's payload
    open(path, "wb").write(bytes(b))
    before = tree_bytes(data)
    with pytest.raises(ChecksumMismatch) as exc:
        op(data)
    assert str(exc.value) == f"Checksum mismatch in WAL segment {path} at offset {offs[4]}"
    assert (exc.value.file, exc.value.offset) == (path, offs[4])
    assert tree_bytes(data) == before, "a refused start changes no byte of any file"


def test_damage_in_a_sealed_segment_refuses_even_with_a_torn_tail(data):
    s = op(data, segment_size=4096)
    for i in range(40):
        s.put(body(i, value="x" * 200))
    s.close()
    _no_snapshot(data)
    assert os.path.exists(seg_path(data, 3))
    path = seg_path(data, 1)
    offs, _f, buf = frames(path)
    b = bytearray(buf)
    b[offs[2] + 10] ^= 0x80
    open(path, "wb").write(bytes(b))
    last = sorted(os.listdir(os.path.join(data, "wal")))[-1]
    with open(os.path.join(data, "wal", last), "ab") as f:
        f.write(b"\x01\x02\x03")                # and a torn tail at the very end
    before = tree_bytes(data)
    with pytest.raises(ChecksumMismatch) as exc:
        op(data, segment_size=4096)
    assert str(exc.value) == f"Checksum mismatch in WAL segment {path} at offset {offs[2]}"
    assert tree_bytes(data) == before, "the torn tail is not cut when the log is corrupt"
    assert not os.path.exists(os.path.join(data, "wal", "quarantine"))


def test_a_sealed_segment_cut_short_is_corruption(data):
    s = op(data, segment_size=4096)
    for i in range(30):
        s.put(body(i, value="x" * 200))
    s.close()
    _no_snapshot(data)
    path = seg_path(data, 1)
    offs, _f, buf = frames(path)
    open(path, "wb").write(buf[:offs[-1] + 30])
    before = tree_bytes(data)
    with pytest.raises(ChecksumMismatch) as exc:
        op(data, segment_size=4096)
    assert str(exc.value).startswith(
        f"Checksum mismatch in WAL segment {path} at offset {offs[-1]}")
    assert tree_bytes(data) == before


def test_bad_crc_followed_by_more_records_is_corruption_not_a_torn_tail(data):
    s = op(data)
    fill(s, 5)
    abandon(s)
    _no_snapshot(data)
    path = seg_path(data)
    offs, _f, buf = frames(path)
    b = bytearray(buf)
    b[offs[3] + 4] ^= 0x01                      # the 4th record's CRC field
    open(path, "wb").write(bytes(b))
    before = tree_bytes(data)
    with pytest.raises(ChecksumMismatch) as exc:
        op(data)
    assert exc.value.offset == offs[3]
    assert tree_bytes(data) == before


def test_seqs_that_do_not_increase_are_corruption(data):
    s = op(data)
    fill(s, 3)
    abandon(s)
    _no_snapshot(data)
    path = seg_path(data)
    offs, _f, buf = frames(path)
    r = prepare_assertion(body(77))
    # a valid record whose seq goes back to 2
    append_to_log(path, codec.encode_frame(REC_ASSERT, 0, 2, codec.encode_assert(r)))
    with pytest.raises(ChecksumMismatch) as exc:
        op(data)
    assert str(exc.value).startswith(f"Checksum mismatch in WAL segment {path} at offset {len(buf)}")


def test_a_read_never_returns_damaged_bytes(data):
    """Open checks every CRC; a read checks again, for damage while running."""
    s = op(data)
    hs = fill(s, 5)
    s.close()
    path = seg_path(data)
    offs, _f, buf = frames(path)
    s = op(data)
    b = bytearray(buf)
    b[offs[1] + FRAME_SIZE + 80] ^= 0x01
    with open(path, "r+b") as f:      # the disk goes bad under a running store
        f.write(bytes(b))
    with pytest.raises(ChecksumMismatch) as exc:
        s.get(hs[1])
    assert exc.value.offset == offs[1]
    assert s.get(hs[0]).value == {"i": 0}, "undamaged records still read"
    s.close()


# ------------------------------------------------------------------ the torn tail

def _torn_open(data, caplog, **kw):
    caplog.set_level(logging.INFO, logger="stemedb")
    s = op(data, **kw)
    warn = [m for m in messages(caplog) if m.startswith("Truncated torn write")]
    return s, warn


@pytest.mark.parametrize("snapshot", [True, False])
@pytest.mark.parametrize("tail", ["half-frame", "head-only", "few-bytes", "bad-last-crc"])
def test_torn_tail_is_cut_and_kept_aside(data, caplog, tail, snapshot):
    s = op(data)
    hs = fill(s, 6)
    s.close()
    if not snapshot:
        _no_snapshot(data)
    path = seg_path(data)
    offs, _f, buf = frames(path)
    extra = codec.encode_frame(REC_ASSERT, 0, 7, codec.encode_assert(prepare_assertion(body(99))))
    if tail == "half-frame":
        torn, good = extra[:len(extra) // 2], buf
    elif tail == "head-only":
        torn, good = extra[:FRAME_SIZE], buf
    elif tail == "few-bytes":
        torn, good = b"\x07" * 7, buf
    else:                     # a whole last record whose CRC is wrong, ending at EOF
        torn, good = extra[:-1] + bytes([extra[-1] ^ 1]), buf
    open(path, "wb").write(good + torn)
    s, warn = _torn_open(data, caplog)
    qpath = os.path.join(data, "wal", "quarantine", f"segment-00001.log.{len(good)}.torn")
    assert warn == [f"Truncated torn write at end of WAL segment {path}: {len(torn)} bytes "
                    f"moved to {qpath}"], "the contract's warning, naming file, size and path"
    assert open(qpath, "rb").read() == torn, "the cut bytes are kept in wal/quarantine/"
    assert ends_at(path, len(good)), "the segment ends at the last whole record"
    assert all(s.get(h) for h in hs) and s.count == len(hs)
    r = s.put(body(500))
    s.close()
    s = op(data)
    assert s.get(r.hash) is not None and s.count == len(hs) + 1, "writes after a cut are kept"
    s.close()


def test_a_batch_cut_short_vanishes_whole(data, caplog):
    s = op(data)
    kept = fill(s, 3)
    batch = [r.hash for r in s.put_batch([body(i) for i in range(10, 14)])]
    abandon(s)
    path = seg_path(data)
    offs, flags, buf = frames(path)
    assert flags[3:6] == [FLAG_MORE] * 3 and flags[6] == 0, "a batch is a MORE-linked group"
    open(path, "wb").write(buf[:offs[6] + 25])  # its last record is cut
    s, warn = _torn_open(data, caplog)
    assert warn and f"{len(buf[:offs[6] + 25]) - offs[3]} bytes" in warn[0]
    assert all(s.get(h) is None for h in batch), "a batch is all or nothing"
    assert all(s.get(h) for h in kept) and s.count == 3
    assert ends_at(path, offs[3])
    s.close()


def test_an_open_group_with_every_record_whole_is_still_cut(data, caplog):
    s = op(data)
    fill(s, 2)
    s.put_batch([body(i) for i in range(10, 13)])
    abandon(s)
    path = seg_path(data)
    offs, flags, buf = frames(path)
    open(path, "wb").write(buf[:offs[4]])       # the batch's closing record is missing
    s, warn = _torn_open(data, caplog)
    assert warn and s.count == 2, "records of a group whose last record is missing are cut"
    s.close()


def test_torn_tail_in_the_last_of_several_segments(data, caplog):
    s = op(data, segment_size=4096)
    hs = [s.put(body(i, value="y" * 200)).hash for i in range(40)]
    abandon(s)
    last = sorted(n for n in os.listdir(os.path.join(data, "wal")) if n.endswith(".log"))[-1]
    path = os.path.join(data, "wal", last)
    append_to_log(path, b"\xff" * 13)
    s, warn = _torn_open(data, caplog, segment_size=4096)
    assert len(warn) == 1 and path in warn[0]
    assert s.count == 40 and all(s.get(h) for h in hs)
    s.close()
