"""Edge rules decided after the engine tests found them (see docs/format.md
and docs/semantics.md)."""
import os
import subprocess
import sys

import pytest

from stemedb import open_store
from stemedb.errors import InvalidSignature, ValidationError
from tests.conftest import NoFsyncFS, abandon, body


def test_zero_filled_tail_is_the_clean_end(tmp_path, caplog):
    """After a power cut some file systems leave the file longer, filled with
    zeros, and the active segment is preallocated with zeros anyway: that is
    the clean end of the log (docs/format.md), not corruption, and not a torn
    tail to quarantine either; the store must start."""
    s = open_store(tmp_path, fs=NoFsyncFS())
    hashes = [s.put(body(i)).hash for i in range(5)]
    abandon(s)
    seg = tmp_path / "wal" / "segment-00001.log"
    with open(seg, "ab") as f:
        f.write(b"\0" * 4096)
    with open_store(tmp_path) as s2:
        assert [s2.get(h) is not None for h in hashes] == [True] * 5, "acknowledged writes survive"
    assert not any("Truncated torn write" in r.getMessage() for r in caplog.records)
    assert not os.path.exists(tmp_path / "wal" / "quarantine")


def test_nonzero_garbage_before_the_end_is_still_corruption(tmp_path):
    s = open_store(tmp_path, fs=NoFsyncFS())
    for i in range(3):
        s.put(body(i))
    abandon(s)
    seg = tmp_path / "wal" / "segment-00001.log"
    with open(seg, "ab") as f:
        f.write(b"\0" * 64 + b"\x01" + b"\0" * 64)
    out = subprocess.run([sys.executable, "-m", "stemedb.core.verify", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "Checksum mismatch" in out.stdout, out.stdout


def test_vote_with_agent_id_must_be_signed(tmp_path):
    with open_store(tmp_path, fs=NoFsyncFS()) as s:
        h = s.put(body(1)).hash
        with pytest.raises(InvalidSignature) as exc:
            s.vote(h, 0.9, agent_id="ab" * 32)
        assert exc.value.field == "signature"
        s.vote(h, 0.9)   # an anonymous vote stays possible


@pytest.mark.parametrize("ts", [2**53 / 1e6 + 1, "2300-01-01T00:00:00Z", "1600-01-01T00:00:00Z"])
def test_timestamp_beyond_exact_json_integers_is_refused(tmp_path, ts):
    with open_store(tmp_path, fs=NoFsyncFS()) as s:
        with pytest.raises(ValidationError) as exc:
            s.put(body(1, timestamp=ts))
        assert exc.value.field == "timestamp"


def test_damage_under_a_snapshot_still_refuses_the_start(tmp_path):
    """A clean shutdown leaves a snapshot covering the whole log; a flipped
    byte in the middle must still refuse the start, naming file and offset,
    and change nothing."""
    from stemedb.errors import ChecksumMismatch
    from tests.conftest import tree_bytes
    with open_store(tmp_path, fs=NoFsyncFS()) as s:
        for i in range(20):
            s.put(body(i))
    seg = tmp_path / "wal" / "segment-00001.log"
    raw = bytearray(seg.read_bytes())
    raw[300] ^= 0xFF
    seg.write_bytes(bytes(raw))
    before = {k: v for k, v in tree_bytes(tmp_path).items() if k != "LOCK"}
    with pytest.raises(ChecksumMismatch) as exc:
        open_store(tmp_path)
    assert str(exc.value).startswith(f"Checksum mismatch in WAL segment {seg} at offset ")
    after = {k: v for k, v in tree_bytes(tmp_path).items() if k != "LOCK"}
    assert after == before, "a refused start changes no file"


def test_put_takes_the_librarys_own_assertion_type(tmp_path):
    """The contract: assertions go in as dicts or as the library's own type."""
    with open_store(tmp_path / "a", fs=NoFsyncFS()) as a, \
            open_store(tmp_path / "b", fs=NoFsyncFS()) as b:
        src = a.get(a.put(body(3, source="fda://x", value=None)).hash)
        copied = b.put(src)
        assert copied.created and copied.hash == src.hash, "same claim, same hash elsewhere"
        assert b.get(src.hash).value is None
        assert b.put_batch([src])[0].created is False


def test_a_start_on_a_full_disk_names_the_file_and_the_space(tmp_path, caplog):
    """Issue 8 item 21: a restart while the disk is still full logged only
    ``[Errno 28]``; it must name the file, the bytes needed and the bytes free.
    The snapshot after a rebuild is written in the background (the WAL holds
    everything it would), so the start itself succeeds and answers; the
    snapshot's failure is logged with the file and the space, and the
    close, whose own snapshot meets the full disk too, raises with them."""
    import errno
    import logging
    import shutil

    from stemedb.core.fileio import File, FileSystem

    with open_store(tmp_path, fs=NoFsyncFS()) as s:
        for i in range(20):
            s.put(body(i))
    shutil.rmtree(tmp_path / "db")            # the start must write a new snapshot

    class FullFile(File):
        def write(self, data):
            if self.path.endswith(".tmp"):
                raise OSError(errno.ENOSPC, "No space left on device")
            super().write(data)

    class FullFS(FileSystem):
        file_class = FullFile

    with caplog.at_level(logging.ERROR, logger="stemedb"):
        s = open_store(tmp_path, fs=FullFS())
        assert s.rebuilt and s.count == 20 and s.query(body(3)["concept_path"]).results
        s.checkpoints.settle(30)
        with pytest.raises(OSError) as exc:
            s.close()
    logged = caplog.text
    assert "background snapshot failed" in logged, logged
    for msg in (logged, str(exc.value)):
        assert "snapshot.idx" in msg and "bytes are free there" in msg and "it needs" in msg, msg
    assert exc.value.errno == errno.ENOSPC
    with open_store(tmp_path, fs=NoFsyncFS()) as s:   # nothing was half-written
        assert s.count == 20
