"""Record encoding: round trips, framing per docs/format.md, and why a scan stops.

Scans run through both the pure reference (``codec``) and the implementation
the engine uses (``fast``: the compiled twin unless STEMEDB_PURE_PYTHON=1).
"""
from __future__ import annotations

import struct

import google_crc32c
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stemedb.core import codec, fast
from stemedb.core.format import (
    ASSERT_HEAD_SIZE, FLAG_MORE, FRAME_SIZE, MAX_PAYLOAD, REC_ASSERT, REC_RETRACT)
from stemedb.model import prepare_assertion
from tests.conftest import body

SCANNERS = [pytest.param(codec.scan_frames, id="pure"),
            pytest.param(fast.scan_frames, id="engine-" + ("compiled" if fast.COMPILED else "pure"))]


def rec(**over):
    return msgspec.structs.replace(prepare_assertion(body(1, **over)), recorded_at=1_234_567)


H1, H2 = "11" * 32, "22" * 32
VARIANTS = [
    {}, {"source": "fda://x/é"}, {"epoch": "e1"}, {"parent_hash": H1},
    {"derived_from": [H1, H2]}, {"source": "s", "epoch": "ep", "parent_hash": H2,
                                 "derived_from": [H1], "value": None},
    {"concept_path": "日本/\U0001F600", "value": [1, {"a": "b"}]},
    {"value": "x" * 65000, "source": "é" * 500},
]


@pytest.mark.parametrize("over", VARIANTS)
def test_assert_payload_round_trip(over):
    r = rec(**over)
    payload = codec.encode_assert(r)
    assert codec.decode_assert(payload, 0) == r, "decode(encode(r)) must give r back"
    assert codec.decode_assert(b"xx" + payload, 2) == r, "decoding honours the offset"


def test_signed_record_round_trip():
    r = msgspec.structs.replace(rec(), agent_id=b"\x01" * 32, signature=b"\x02" * 64)
    assert codec.decode_assert(codec.encode_assert(r), 0) == r


@pytest.mark.parametrize("over", VARIANTS)
def test_index_fields_agree_with_decode(over):
    r = rec(**over)
    f = codec.index_fields(codec.encode_assert(r), 0)
    assert f == (r.hash, r.recorded_at, r.timestamp, r.lifecycle, r.concept_path, r.predicate,
                 r.source, r.epoch, r.parent_hash, r.derived_from)


def test_assert_head_layout_is_the_documented_one():
    r = rec(source="abc", epoch="e1")
    p = codec.encode_assert(r)
    assert p[:32] == r.hash
    assert struct.unpack_from("<qqd", p, 32) == (r.recorded_at, r.timestamp, r.confidence)
    assert p[58] == 0x01 | 0x08, "present-fields byte: source and epoch"
    lpath, lpred, lsrc, lep = struct.unpack_from("<HHHH", p, 60)
    assert (lpath, lpred, lsrc, lep) == (len(r.concept_path.encode()), len(r.predicate), 3, 2)
    assert p.endswith(r.value_json) and struct.unpack_from("<I", p, 72)[0] == len(r.value_json)
    assert len(p) == ASSERT_HEAD_SIZE + lpath + lpred + 3 + 2 + len(r.value_json)


def test_frame_layout_and_crc_coverage():
    fr = codec.encode_frame(REC_RETRACT, FLAG_MORE, 0x0102030405, b"payload")
    n, crc, t, flags, reserved, seq = struct.unpack_from("<IIBBHQ", fr)
    assert (n, t, flags, reserved, seq) == (7, REC_RETRACT, FLAG_MORE, 0, 0x0102030405)
    assert crc == google_crc32c.value(fr[8:]), "the CRC covers type..payload end (bytes 8..)"
    assert len(fr) == FRAME_SIZE + 7


def _log(n=5, flags=None):
    frames = [codec.encode_frame(REC_ASSERT, (flags or {}).get(i, 0), i + 1,
                                 codec.encode_assert(rec(value=i))) for i in range(n)]
    offs, pos = [], 0
    for f in frames:
        offs.append(pos)
        pos += len(f)
    return b"".join(frames), offs


@pytest.mark.parametrize("scan", SCANNERS)
def test_scan_reads_every_record_and_stops_at_end(scan):
    buf, offs = _log(5, {1: FLAG_MORE})
    offsets, types, flags, seqs, stop, reason = scan(buf, 0, len(buf))
    assert list(offsets) == offs and list(seqs) == [1, 2, 3, 4, 5]
    assert list(types) == [REC_ASSERT] * 5 and list(flags) == [0, FLAG_MORE, 0, 0, 0]
    assert (stop, reason) == (len(buf), codec.STOP_END)


@pytest.mark.parametrize("scan", SCANNERS)
def test_scan_from_an_offset(scan):
    buf, offs = _log(4)
    offsets, *_rest, stop, reason = scan(buf, offs[2], len(buf))
    assert list(offsets) == offs[2:] and reason == codec.STOP_END


@pytest.mark.parametrize("scan", SCANNERS)
@pytest.mark.parametrize("cut", [1, FRAME_SIZE - 1, FRAME_SIZE, FRAME_SIZE + 5])
def test_scan_stops_incomplete_on_a_cut_record(scan, cut):
    buf, offs = _log(3)
    short = buf[:offs[2] + cut]
    offsets, *_rest, stop, reason = scan(short, 0, len(short))
    assert list(offsets) == offs[:2], "the whole records before the cut are read"
    assert (stop, reason) == (offs[2], codec.STOP_INCOMPLETE)


@pytest.mark.parametrize("scan", SCANNERS)
@pytest.mark.parametrize("where", [8, 9, 12, 19, 20, 60, -1])
def test_scan_stops_on_checksum_for_any_covered_byte(scan, where):
    buf, offs = _log(3)
    b = bytearray(buf)
    pos = (offs[2] if where < 0 else offs[1]) + (where if where >= 0 else 0)
    if where < 0:
        pos = len(b) - 1
    b[pos] ^= 0x40
    offsets, *_rest, stop, reason = scan(bytes(b), 0, len(b))
    bad = offs[2] if where < 0 else offs[1]
    assert (stop, reason) == (bad, codec.STOP_CHECKSUM), f"a flipped byte at {pos} is caught"
    assert list(offsets) == [o for o in offs if o < bad]


@pytest.mark.parametrize("scan", SCANNERS)
def test_scan_stops_on_a_crc_field_flip(scan):
    buf, offs = _log(2)
    b = bytearray(buf)
    b[offs[1] + 4] ^= 1
    *_r, stop, reason = scan(bytes(b), 0, len(b))
    assert (stop, reason) == (offs[1], codec.STOP_CHECKSUM)


@pytest.mark.parametrize("scan", SCANNERS)
def test_scan_stops_on_an_impossible_length(scan):
    buf, offs = _log(2)
    b = bytearray(buf)
    struct.pack_into("<I", b, offs[1], MAX_PAYLOAD + 1)
    *_r, stop, reason = scan(bytes(b), 0, len(b))
    assert (stop, reason) == (offs[1], codec.STOP_BADLEN)


@pytest.mark.parametrize("scan", SCANNERS)
def test_scan_of_nothing(scan):
    offsets, *_r, stop, reason = scan(b"", 0, 0)
    assert list(offsets) == [] and (stop, reason) == (0, codec.STOP_END)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 2, 3, 4, 5]), st.booleans(), st.binary(max_size=300)),
                max_size=12), st.data())
def test_scan_any_frames_then_any_truncation(frames, data):
    """Any log cut anywhere scans to exactly the whole records before the cut."""
    buf = b"".join(codec.encode_frame(t, FLAG_MORE if m else 0, i + 1, p)
                   for i, (t, m, p) in enumerate(frames))
    cut = data.draw(st.integers(0, len(buf)))
    for scan in (codec.scan_frames, fast.scan_frames):
        offsets, types, flags, seqs, stop, reason = scan(buf[:cut], 0, cut)
        whole = [i for i in range(len(frames))
                 if sum(FRAME_SIZE + len(p) for _t, _m, p in frames[:i + 1]) <= cut]
        assert list(seqs) == [i + 1 for i in whole]
        assert list(types) == [frames[i][0] for i in whole]
        assert reason == (codec.STOP_END if stop == cut else codec.STOP_INCOMPLETE)
