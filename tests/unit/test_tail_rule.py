"""One verdict on the same damaged bytes, from every reader of the log.

Start-up (recovery), ``verify``, ``stemedb backup`` and ``stemedb salvage
--dry-run`` all judge a log through ``stemedb.core.scan``.  Each case below
damages a store one way and asks all four; they must agree: a torn tail is
cut (start), warned about (verify exit 0), left out of a backup and is no
salvage matter; anything else is refused by start and verify with the
contract's checksum line, makes the backup publish nothing, and is what
salvage would cut.
"""
from __future__ import annotations

import io
import logging
import os
import re
import shutil
import struct
from contextlib import redirect_stdout

import pytest

from stemedb import open_store
from stemedb.core import verify
from stemedb.core.format import FRAME, FRAME_SIZE, SEGMENT_HEADER_SIZE
from stemedb.errors import CorruptionError, StemeError
from stemedb.ops import backup, salvage
from tests.conftest import NoFsyncFS, abandon, body, log_end

SEG = os.path.join("wal", "segment-00001.log")


def frames(path) -> list[int]:
    """Offsets of the records of one segment, walked by their lengths up to
    the end of the file or the zero tail of a preallocated active segment."""
    with open(path, "rb") as f:
        buf = f.read()
    offs, pos = [], SEGMENT_HEADER_SIZE
    while pos + FRAME_SIZE <= len(buf) and any(buf[pos:pos + FRAME_SIZE]):
        offs.append(pos)
        pos += FRAME_SIZE + FRAME.unpack_from(buf, pos)[0]
    return offs


def crashed_store(path, n=10, *, close=False):
    """A store with ``n`` assertions and no snapshot (a crash before any)."""
    s = open_store(path, fs=NoFsyncFS(), audit=False)
    hashes = [s.put(body(i)).hash for i in range(n)]
    if close:
        s.close()
    else:
        abandon(s)
    return hashes


def with_tail(path, zeros: int) -> None:
    """The segment as its records and then ``zeros`` zero bytes: 0 as a
    closed store leaves it, more as the preallocated active segment of a
    running or crashed one (docs/design.md).  Every verdict below must be
    the same either way."""
    end = log_end(path)
    with open(path, "r+b") as f:
        f.truncate(end)
        f.seek(end)
        f.write(bytes(zeros))


ZERO_TAILS = [0, 100, 1 << 20]


def flip(path, offset, mask=0x01):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ mask]))


def verdicts(data, tmp_path) -> dict:
    """Ask every reader; returns what each one said."""
    out = {}
    buf = io.StringIO()
    with redirect_stdout(buf):
        out["salvage_rc"] = salvage.main([str(data), "--dry-run"])
    out["salvage"] = buf.getvalue()
    vbuf = io.StringIO()
    out["verify_rc"] = verify.verify(str(data), out=vbuf)
    out["verify"] = vbuf.getvalue()
    bdir = tmp_path / "backups"
    try:
        out["backup"] = backup.take_backup(str(data), str(bdir)).metadata
    except StemeError as exc:   # the refusal is the verdict
        out["backup"] = exc
    out["published"] = sorted(n for n in os.listdir(bdir) if not n.startswith(".")) \
        if bdir.exists() else []
    before = snapshot_tree(data)
    try:
        with open_store(data, audit=False) as s:
            out["open"] = s.count
    except CorruptionError as exc:
        out["open"] = exc
        assert snapshot_tree(data) == before, "a refused start changes nothing"
    return out


def snapshot_tree(root):
    res = {}
    for d, _dirs, files in os.walk(root):
        for n in files:
            if n == "LOCK":
                continue
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                res[os.path.relpath(p, root)] = f.read()
    return res


def assert_refused(v, seg_path, offset=None):
    line = f"Checksum mismatch in WAL segment {seg_path} at offset "
    assert isinstance(v["open"], CorruptionError), f"start must refuse, got {v['open']!r}"
    assert str(v["open"]).startswith(line), str(v["open"])
    if offset is not None:
        assert str(v["open"]).startswith(line + str(offset)), str(v["open"])
    assert v["verify_rc"] == 1 and line in v["verify"], v["verify"]
    assert isinstance(v["backup"], Exception) and line in str(v["backup"]), v["backup"]
    assert v["published"] == [], "a damaged log publishes no backup"
    assert v["salvage_rc"] == 1, v["salvage"]


@pytest.mark.parametrize("zeros", ZERO_TAILS)
def test_one_flipped_byte_in_record_3_of_10_is_refused_everywhere(tmp_path, zeros):
    """Issue 8 item 7: before, backup published 2 assertions as if the rest were in flight."""
    data = tmp_path / "data"
    crashed_store(data)
    seg = data / SEG
    with_tail(seg, zeros)
    offs = frames(seg)
    flip(seg, offs[2] + FRAME_SIZE + 40)        # inside record 3's payload
    v = verdicts(data, tmp_path)
    assert_refused(v, str(seg), offs[2])
    assert "would cut" in v["salvage"]
    assert "7 valid records after them (seqs 4-10)" in v["salvage"]
    assert "kept: 2 records, up to seq 2" in v["salvage"], v["salvage"]


@pytest.mark.parametrize("zeros", ZERO_TAILS)
@pytest.mark.parametrize("bit", [0x01, 0x10, 0x80])
def test_one_flipped_length_bit_mid_segment_is_damage_not_a_torn_tail(tmp_path, bit, zeros):
    """Issue 8 item 14: a length that runs past the end, with good records after it."""
    data = tmp_path / "data"
    crashed_store(data, 30)
    seg = data / SEG
    with_tail(seg, zeros)
    offs = frames(seg)
    flip(seg, offs[12] + 2, bit)                # the third byte of record 13's length
    v = verdicts(data, tmp_path)
    assert_refused(v, str(seg), offs[12])
    assert "would cut" in v["salvage"]
    assert "17 valid records after them (seqs 14-30)" in v["salvage"], v["salvage"]


@pytest.mark.parametrize("zeros", ZERO_TAILS)
def test_a_real_torn_tail_is_cut_and_agreed_on(tmp_path, zeros):
    """The last record's write cut after 30 bytes: at the end of the file, or
    over the preallocated zeros (the rest of its frame and after it zero)."""
    data = tmp_path / "data"
    hashes = crashed_store(data)
    seg = data / SEG
    offs = frames(seg)
    size = log_end(seg)
    with open(seg, "r+b") as f:
        f.truncate(offs[-1] + 30)
        if zeros:
            f.truncate(size + zeros)
    frame_end = size
    v = verdicts(data, tmp_path)
    assert v["salvage_rc"] == 0 and "nothing to salvage" in v["salvage"]
    assert v["verify_rc"] == 0 and "warning: torn write" in v["verify"], v["verify"]
    torn = (frame_end if zeros else offs[-1] + 30) - offs[-1]
    assert f"{torn} bytes after offset {offs[-1]}" in v["verify"], v["verify"]
    assert v["backup"]["assertion_count"] == 9 and len(v["published"]) == 1
    assert v["open"] == 9
    assert size > offs[-1] + 30
    q = os.listdir(data / "wal" / "quarantine")
    assert q == [f"segment-00001.log.{offs[-1]}.torn"], q
    assert os.path.getsize(data / "wal" / "quarantine" / q[0]) == torn
    with open_store(data, audit=False) as s:
        assert [s.get(h) is not None for h in hashes] == [True] * 9 + [False]


@pytest.mark.parametrize("zeros", [1, 19, 20, 4096, 1 << 20])
def test_a_zero_tail_is_the_clean_end_everywhere(tmp_path, zeros, caplog):
    """Zeros after the last record of the last segment are the preallocated
    space of the active segment: no torn write, nothing cut or quarantined,
    nothing left out of a backup, and the store appends over them."""
    data = tmp_path / "data"
    crashed_store(data)
    seg = data / SEG
    with_tail(seg, zeros)
    end = log_end(seg)
    caplog.set_level(logging.WARNING, logger="stemedb")
    v = verdicts(data, tmp_path)
    assert v["verify_rc"] == 0 and v["salvage_rc"] == 0 and v["open"] == 10
    assert "warning: torn" not in v["verify"], v["verify"]
    assert v["backup"]["assertion_count"] == 10
    bseg = os.path.join(tmp_path / "backups", v["published"][0], SEG)
    assert os.path.getsize(bseg) == end, "a backup holds the records, not the zeros"
    assert not any("torn" in r.getMessage() for r in caplog.records)
    assert not os.path.exists(data / "wal" / "quarantine")
    with open_store(data, audit=False) as s:
        assert log_end(seg) == end, "reopened on the zeros: the log is unchanged"
        s.put(body(50))
    assert log_end(seg) > end and os.path.getsize(seg) == log_end(seg), "closed: cut to its records"


def test_zeros_after_the_records_of_a_sealed_segment_are_damage(tmp_path):
    """Only the active segment is preallocated; a sealed one is cut to its
    records when sealed, so zeros after them are corruption, refused."""
    data = tmp_path / "data"
    s = open_store(data, fs=NoFsyncFS(), audit=False, segment_size=4096)
    for i in range(40):
        s.put(body(i, value="y" * 200))
    abandon(s)
    first = data / SEG
    assert os.path.getsize(first) == log_end(first) <= 4096, "sealed at its exact size"
    with_tail(first, 64)
    v = verdicts(data, tmp_path)
    assert_refused(v, str(first), log_end(first))


def test_a_later_page_of_a_group_without_the_earlier_one_is_damage(tmp_path):
    """The limit of the zero tail: a group's write that reached the disk out
    of order (a later record whole, the one before it still zeros) leaves a
    valid record after a failing one; the scanner cannot tell that from
    damage and refuses it (salvage cuts it)."""
    data = tmp_path / "data"
    crashed_store(data)
    seg = data / SEG
    offs = frames(seg)
    with open(seg, "r+b") as f:
        f.seek(offs[-2])
        f.write(bytes(offs[-1] - offs[-2]))     # record 9 never landed, record 10 did
    v = verdicts(data, tmp_path)
    assert_refused(v, str(seg), offs[-2])


@pytest.mark.parametrize("zeros", ZERO_TAILS)
def test_a_log_cut_below_its_snapshot_is_refused(tmp_path, zeros):
    """Issue 8 item 14: after a clean shutdown, cutting the last bytes (records the
    snapshot and metadata.json say exist) used to start healthy, rewrite both and
    reuse the lost seqs."""
    data = tmp_path / "data"
    crashed_store(data, 40, close=True)
    seg = data / SEG
    offs = frames(seg)
    with open(seg, "r+b") as f:
        f.truncate(offs[-5] + 7)                # mid-record: looks like a torn write
        f.truncate(offs[-5] + 7 + zeros)
    v = verdicts(data, tmp_path)
    assert_refused(v, str(seg))
    assert "is durable according to" in str(v["open"])
    assert "seqs 36-40 are not in this directory" in v["salvage"], v["salvage"]


@pytest.mark.parametrize("zeros", ZERO_TAILS)
def test_a_log_cut_at_a_record_boundary_below_metadata_is_refused(tmp_path, zeros):
    data = tmp_path / "data"
    crashed_store(data, 40, close=True)
    seg = data / SEG
    offs = frames(seg)
    with open(seg, "r+b") as f:
        f.truncate(offs[-3])                    # whole records only: no torn bytes at all
        f.truncate(offs[-3] + zeros)            # (and the zero tail: the same verdict)
    with pytest.raises(CorruptionError, match="ends at seq 37.*seq 40 is durable according to metadata.json"):
        open_store(data, audit=False)
    buf = io.StringIO()
    assert verify.verify(str(data), out=buf) == 1
    assert "seq 40 is durable according to" in buf.getvalue()


def test_salvage_cuts_at_the_first_bad_record_and_the_store_starts(tmp_path, capsys):
    data = tmp_path / "data"
    hashes = crashed_store(data, 30, close=True)
    seg = data / SEG
    offs = frames(seg)
    flip(seg, offs[12] + 2, 0x10)
    with pytest.raises(CorruptionError):
        open_store(data, audit=False)
    assert salvage.main([str(data)]) == 0
    said = capsys.readouterr().out
    assert "17 valid records after them (seqs 14-30)" in said
    assert "kept: 12 records, up to seq 12" in said, said
    q = os.listdir(data / "wal" / "quarantine")
    assert any(n.startswith("segment-00001.log.") and ".salvaged-" in n for n in q), q
    assert any(n.startswith("metadata.json.salvaged-") for n in q), "nothing is deleted"
    assert any(n.startswith("snapshot.idx.salvaged-") for n in q), q
    from stemedb.ops import archivestate
    assert archivestate.timeline(str(data)), "a salvage starts a new archive timeline"
    with open_store(data, audit=False) as s:
        assert s.count == 12
        assert all(s.get(h) is not None for h in hashes[:12])
        assert s.put(body(999)).seq == 13
    assert verify.verify(str(data), out=io.StringIO()) == 0
    assert salvage.main([str(data)]) == 0
    assert "nothing to salvage" in capsys.readouterr().out


def test_salvage_moves_later_segments_whole(tmp_path, capsys):
    data = tmp_path / "data"
    s = open_store(data, fs=NoFsyncFS(), audit=False, segment_size=4096)
    for i in range(100):
        s.put(body(i))
    abandon(s)
    segs = sorted(os.listdir(data / "wal"))
    segs = [n for n in segs if n.startswith("segment-")]
    assert len(segs) >= 3
    first = data / "wal" / segs[0]
    flip(first, frames(first)[1] + FRAME_SIZE + 3)
    assert salvage.main([str(data)]) == 0
    said = capsys.readouterr().out
    m = re.search(r"and (\d+) valid records after them \(seqs 3-100\)", said)
    assert m and int(m.group(1)) == 98, said
    assert [n for n in os.listdir(data / "wal") if n.startswith("segment-")] == [segs[0]]
    with open_store(data, audit=False) as s2:
        assert s2.count == 1


def test_salvage_refuses_a_locked_store(tmp_path, capsys):
    data = tmp_path / "data"
    with open_store(data, fs=NoFsyncFS(), audit=False):
        assert salvage.main([str(data)]) == 2
    assert "locked" in capsys.readouterr().err


def test_snapshot_racing_a_group_commit_is_a_consistent_cut(tmp_path):
    """Issue 8 item 13: a periodic snapshot taken after the leader wrote a group
    but before the group reached the indexes claimed the group; restart refused."""
    data = tmp_path / "data"
    s = open_store(data, fs=NoFsyncFS(), audit=False)
    s.put(body(0))
    apply_group = s.wal.on_durable

    def racing(group, anchor):
        s.snapshot()                    # the snapshot thread wins the race for _ilock
        apply_group(group, anchor)
    s.wal.on_durable = racing
    for i in range(1, 4):
        s.put(body(i))
    abandon(s)
    with open_store(data, audit=False) as s2:
        assert s2.count == 4 and not s2.rebuilt, "the snapshot matched its log"
        assert s2.replayed == 1


def test_a_snapshot_that_does_not_match_is_rebuilt_not_refused(tmp_path, caplog):
    """A snapshot whose seq does not match the log at its position (as the race
    above used to write) is ignored and rebuilt, never a refusal to start."""
    from stemedb.core import snapshot as snap
    data = tmp_path / "data"
    s = open_store(data, fs=NoFsyncFS(), audit=False)
    for i in range(5):
        s.put(body(i))
    with s.reader.lock:
        pos = s._position()
        pos["last_seq"] -= 2            # the state lags the position it claims
        s.state.last_seq -= 2
        data_ = snap.encode(s.state, pos)
        s.state.last_seq += 2
    snap.write(s.fs, str(data / "db"), data_)
    abandon(s)
    with open_store(data, audit=False) as s2:
        assert s2.rebuilt and s2.count == 5
