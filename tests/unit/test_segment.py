"""Segment files: the 40-byte header, its errors (`WAL magic byte validation
failed: <file>`), version refusal, and the WAL's checks across segments.
A refused start changes no byte on disk."""
from __future__ import annotations

import os
import struct

import google_crc32c
import pytest

from stemedb import open_store
from stemedb.core.format import SEGMENT_HEADER_SIZE, SEGMENT_MAGIC
from stemedb.core.segment import Segment, encode_header, read_header
from stemedb.errors import BadMagic, CorruptionError, UnsupportedFormat
from tests.conftest import NoFsyncFS, body, tree_bytes


def test_header_round_trip_and_layout(tmp_path):
    log_id = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    raw = encode_header(7, 1234, log_id)
    assert len(raw) == SEGMENT_HEADER_SIZE == 40
    assert raw[:8] == SEGMENT_MAGIC == b"STEMEWAL"
    assert struct.unpack_from("<HHIQ", raw, 8) == (1, 0, 7, 1234), "major, minor, number, first seq"
    assert raw[24:32] == log_id and raw[32:36] == b"\0\0\0\0"
    assert struct.unpack_from("<I", raw, 36)[0] == google_crc32c.value(raw[:36])
    p = tmp_path / "s.log"
    p.write_bytes(raw)
    assert read_header(str(p)) == (7, 1234, log_id)


def test_segment_create_leaves_a_complete_header_and_no_temp_file(tmp_path):
    seg = Segment.create(NoFsyncFS(), str(tmp_path), 3, 10, b"L" * 8)
    assert os.listdir(tmp_path) == ["segment-00003.log"], "created via a temp file and a rename"
    assert read_header(seg.path) == (3, 10, b"L" * 8)
    assert seg.size == SEGMENT_HEADER_SIZE and seg.check() == []
    seg.close()


@pytest.fixture
def store_dir(tmp_path):
    d = str(tmp_path / "data")
    s = open_store(d, fs=NoFsyncFS(), audit=False, segment_size=4096)
    for i in range(40):
        s.put(body(i, value="z" * 200))
    s.close()
    wal = os.path.join(d, "wal")
    assert len([n for n in os.listdir(wal) if n.endswith(".log")]) >= 3
    return d


def seg(d, n):
    return os.path.join(d, "wal", f"segment-{n:05d}.log")


def patch(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def refused(d, exc_type):
    before = tree_bytes(d)
    with pytest.raises(exc_type) as exc:
        open_store(d, fs=NoFsyncFS(), audit=False, segment_size=4096)
    assert tree_bytes(d) == before, "a refused start changes no byte of any file"
    return exc.value


@pytest.mark.parametrize("n", [1, 2, "last"])
def test_wrong_magic_is_refused_naming_the_file(store_dir, n):
    if n == "last":
        n = len([x for x in os.listdir(os.path.join(store_dir, "wal")) if x.endswith(".log")])
    path = seg(store_dir, n)
    patch(path, 0, b"XTEMEWAL")
    err = refused(store_dir, BadMagic)
    assert str(err) == f"WAL magic byte validation failed: {path}"
    assert err.file == path and err.offset == 0


def test_damaged_header_checksum_is_refused(store_dir):
    path = seg(store_dir, 2)
    patch(path, 12, b"\x09")                      # segment number changed, CRC no longer holds
    err = refused(store_dir, BadMagic)
    assert str(err).startswith(f"WAL magic byte validation failed: {path}")


def test_file_shorter_than_a_header_is_refused(store_dir):
    path = seg(store_dir, 1)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:10])
    err = refused(store_dir, BadMagic)
    assert str(err).startswith(f"WAL magic byte validation failed: {path}")


def test_unknown_major_version_is_refused_naming_both_versions(store_dir):
    path = seg(store_dir, 1)
    raw = bytearray(open(path, "rb").read(36))
    raw[8:10] = struct.pack("<H", 2)
    patch(path, 0, bytes(raw) + google_crc32c.value(bytes(raw)).to_bytes(4, "little"))
    err = refused(store_dir, UnsupportedFormat)
    assert "2.0" in str(err) and "1.x" in str(err) and path in str(err)


def test_newer_minor_version_is_read(store_dir):
    path = seg(store_dir, 1)
    raw = bytearray(open(path, "rb").read(36))
    raw[10:12] = struct.pack("<H", 5)
    patch(path, 0, bytes(raw) + google_crc32c.value(bytes(raw)).to_bytes(4, "little"))
    with open_store(store_dir, fs=NoFsyncFS(), audit=False, segment_size=4096) as s:
        assert s.count == 40, "minor versions only add: 1.5 files are read by 1.0"


def test_a_missing_segment_is_refused(store_dir):
    os.remove(seg(store_dir, 2))
    err = refused(store_dir, CorruptionError)
    assert "missing" in str(err) and err.file == seg(store_dir, 3)


def test_a_segment_of_another_store_is_refused(store_dir, tmp_path):
    other = str(tmp_path / "other")
    with open_store(other, fs=NoFsyncFS(), audit=False) as s:
        s.put(body(1))
    raw = open(seg(other, 1), "rb").read(SEGMENT_HEADER_SIZE)
    own = open(seg(store_dir, 2), "rb").read(SEGMENT_HEADER_SIZE)
    number_and_seq = own[12:24]
    foreign = raw[:12] + number_and_seq + raw[24:36]
    foreign += google_crc32c.value(foreign).to_bytes(4, "little")
    patch(seg(store_dir, 2), 0, foreign)
    err = refused(store_dir, CorruptionError)
    assert "another store" in str(err), "segments with another log id are not mixed in"


def test_leftover_temp_segment_is_ignored(store_dir):
    with open(os.path.join(store_dir, "wal", "segment-00099.log.tmp"), "wb") as f:
        f.write(b"half a header")
    with open_store(store_dir, fs=NoFsyncFS(), audit=False, segment_size=4096) as s:
        assert s.count == 40, "a temp file from a crashed rotation is not a segment"
