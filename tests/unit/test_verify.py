"""python -m stemedb.core.verify: one line per finding; exit 0 consistent
(a torn tail is a warning), 1 on corruption or mismatch, 2 when it cannot run."""
import json
import subprocess
import sys

from stemedb import open_store
from tests.conftest import NoFsyncFS, abandon, body


def verify(path):
    out = subprocess.run([sys.executable, "-m", "stemedb.core.verify", str(path)],
                         capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout


def make(tmp_path, n=10):
    with open_store(tmp_path, fs=NoFsyncFS()) as s:
        for i in range(n):
            s.put(body(i))
    return tmp_path / "wal" / "segment-00001.log"


def test_a_cleanly_closed_store_is_consistent(tmp_path):
    make(tmp_path)
    code, out = verify(tmp_path)
    assert code == 0, out
    assert "10 assertions" in out and out.strip().splitlines()[-1].startswith("ok:")


def test_a_held_lock_means_it_cannot_run(tmp_path):
    make(tmp_path)
    with open_store(tmp_path, fs=NoFsyncFS()):
        code, out = verify(tmp_path)
    assert code == 2 and "locked by PID" in out, out


def test_not_a_data_directory(tmp_path):
    code, out = verify(tmp_path / "nope")
    assert code == 2 and "not a directory" in out


def test_a_torn_tail_is_a_warning(tmp_path):
    seg = make(tmp_path)
    with open(seg, "ab") as f:
        f.write(b"\x40\x00\x00\x00partial")
    code, out = verify(tmp_path)
    assert code == 0, out
    assert any(line.startswith("warning: torn write at end of WAL segment") for line in out.splitlines())


def test_a_flipped_byte_is_corruption_named_by_file_and_offset(tmp_path):
    seg = make(tmp_path)
    raw = bytearray(seg.read_bytes())
    raw[200] ^= 0x10
    seg.write_bytes(bytes(raw))
    code, out = verify(tmp_path)
    assert code == 1
    assert f"error: Checksum mismatch in WAL segment {seg} at offset" in out, out


def test_a_bad_header_is_named(tmp_path):
    seg = make(tmp_path)
    raw = bytearray(seg.read_bytes())
    raw[0:4] = b"XXXX"
    seg.write_bytes(bytes(raw))
    code, out = verify(tmp_path)
    assert code == 1 and "WAL magic byte validation failed" in out


def test_metadata_behind_the_wal_is_a_warning_ahead_is_an_error(tmp_path):
    s = open_store(tmp_path, fs=NoFsyncFS())
    for i in range(5):
        s.put(body(i))
    s.snapshot()
    for i in range(5, 8):
        s.put(body(i))
    abandon(s)   # a crash: metadata.json says 5, the WAL holds 8
    code, out = verify(tmp_path)
    assert code == 0 and "metadata.json says 5 assertions, the WAL holds 8" in out, out
    meta = json.loads((tmp_path / "metadata.json").read_text())
    meta["assertion_count"] = 99
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    code, out = verify(tmp_path)
    assert code == 1 and "data is missing" in out


def test_a_snapshot_from_another_history_is_a_mismatch(tmp_path):
    make(tmp_path / "a")
    make(tmp_path / "b", n=3)
    (tmp_path / "a" / "db" / "indexes" / "snapshot.idx").write_bytes(
        (tmp_path / "b" / "db" / "indexes" / "snapshot.idx").read_bytes())
    code, out = verify(tmp_path / "a")
    assert code == 1 and "index snapshot" in out, out


def test_help_exits_0_and_usage_errors_exit_2(capsys):
    from stemedb.core.verify import main
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m stemedb.core.verify DATA_DIR") and "Exit 0" in out
    assert main([]) == 2 and main(["--bogus"]) == 2 and main(["a", "b"]) == 2


def test_a_snapshot_from_an_older_version_is_a_warning_not_damage(tmp_path):
    """After an upgrade the old snapshot is ignored and rebuilt from the WAL at
    the next start (test_query_columns), so verify must not call it damage."""
    from stemedb.core.format import SNAPSHOT_HEADER, SNAPSHOT_MINOR
    make(tmp_path)
    path = tmp_path / "db" / "indexes" / "snapshot.idx"
    with open(path, "r+b") as fh:       # the header of a snapshot from before the lens columns
        magic, major, minor, mlen, digest = SNAPSHOT_HEADER.unpack(fh.read(SNAPSHOT_HEADER.size))
        assert minor == SNAPSHOT_MINOR
        fh.seek(0)
        fh.write(SNAPSHOT_HEADER.pack(magic, major, SNAPSHOT_MINOR - 1, mlen, digest))
    code, out = verify(tmp_path)
    assert code == 0, out
    warning = [ln for ln in out.splitlines() if ln.startswith("warning:") and "snapshot" in ln]
    assert len(warning) == 1 and "older version" in warning[0] and \
        "rebuilt" in warning[0] and "next start" in warning[0], out
    assert not [ln for ln in out.splitlines() if ln.startswith("error:")], out
    assert "10 assertions" in out and out.strip().splitlines()[-1].startswith("ok:")
    # and the store does rebuild it: the next verify finds a current snapshot
    with open_store(tmp_path, fs=NoFsyncFS()) as s:
        assert s.count == 10
    code, out = verify(tmp_path)
    assert code == 0 and not [ln for ln in out.splitlines() if "snapshot" in ln and
                              ln.startswith("warning:")], out
