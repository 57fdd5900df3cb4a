"""The compiled twins give the pure reference's answers, byte for byte.

Runs only where the extension is built (skips in a pure-Python run, where
there is nothing to compare).
"""
import random

import msgspec
import pytest

from stemedb.core import codec
from stemedb.core.format import FLAG_MORE, REC_ASSERT, REC_RETRACT, SEGMENT_HEADER_SIZE
from stemedb.core.index import str64
from stemedb.model import prepare_assertion

_fast = pytest.importorskip("stemedb.core._fast", reason="compiled extension not built")


def _records(n, seed=7):
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        body = {"concept_path": f"d{rnd.randrange(3)}/é{rnd.randrange(5)}/a",
                "predicate": f"p{rnd.randrange(4)}", "value": {"i": i, "x": rnd.random()},
                "confidence": rnd.random(), "timestamp": 1_700_000_000 + i}
        if rnd.random() < 0.7:
            body["source"] = rnd.choice(["fda://l", "pubmed://9", "source/bad_source", "forum://😀"])
        if i and rnd.random() < 0.3:
            body["derived_from"] = [out[rnd.randrange(len(out))][1].hash.hex()]
        if i and rnd.random() < 0.2:
            body["parent_hash"] = out[rnd.randrange(len(out))][1].hash.hex()
        if rnd.random() < 0.2:
            body["epoch"] = "e1"
        r = msgspec.structs.replace(prepare_assertion(body), recorded_at=1_700_000_000_000_000 + i)
        out.append((body, r))
    return out


def _log(n):
    frames, seq = [b"\0" * SEGMENT_HEADER_SIZE], 0
    for i, (_b, r) in enumerate(_records(n)):
        seq += 1
        frames.append(codec.encode_frame(REC_ASSERT, FLAG_MORE if i % 5 == 1 else 0, seq,
                                         codec.encode_assert(r)))
        if i % 17 == 0:
            seq += 1
            frames.append(codec.encode_frame(REC_RETRACT, 0, seq, b"\x80"))
    return b"".join(frames)


def test_scan_frames_matches_reference_at_every_cut():
    buf = _log(30)
    for end in range(SEGMENT_HEADER_SIZE, len(buf) + 1, 7):
        assert _fast.scan_frames(buf, SEGMENT_HEADER_SIZE, end) == \
            codec.scan_frames(buf, SEGMENT_HEADER_SIZE, end), f"scan differs at end={end}"


def test_scan_frames_matches_reference_on_damage():
    buf = bytearray(_log(30))
    rnd = random.Random(3)
    for _ in range(200):
        b = bytearray(buf)
        b[rnd.randrange(SEGMENT_HEADER_SIZE, len(b))] ^= 1 << rnd.randrange(8)
        b = bytes(b)
        assert _fast.scan_frames(b, SEGMENT_HEADER_SIZE, len(b)) == \
            codec.scan_frames(b, SEGMENT_HEADER_SIZE, len(b)), "damaged log scanned differently"


def test_extract_segment_matches_reference():
    buf = _log(60)
    offsets, types, flags, seqs, _stop, _r = codec.scan_frames(buf, SEGMENT_HEADER_SIZE, len(buf))
    results = []
    for fn in (codec.extract_segment, _fast.extract_segment):
        path_ids, paths, pred_ids, preds = {"d0/é0/a": 0}, ["d0/é0/a"], {}, []
        cols, src, edges, metas = fn(buf, offsets, types, seqs, 3, 10, path_ids, paths,
                                     pred_ids, preds, {"e1": 1})
        results.append(({k: v.tolist() for k, v in cols.items()}, src[0].tolist(),
                        src[1].tolist(), edges, metas, paths, preds))
    assert results[0] == results[1], "compiled extract_segment differs from the reference"


@pytest.mark.parametrize("s", ["", "pubmed://38012345", "source/bad_source", "é✓😀" * 40])
def test_source_key_is_the_same_in_both(s):
    assert _fast.fnv1a64(s) == str64(s)


def test_decode_assert_matches_reference():
    for _body, r in _records(80, seed=11):
        payload = codec.encode_assert(r)
        assert _fast.decode_assert(payload, 0) == codec.decode_assert(payload, 0) == r


@pytest.mark.parametrize("us", [0, 1, 999_999, 1_709_294_400_000_000, 1_709_294_400_123_456,
                                253402300799_999_999, -1, -62135596800_000_000])
def test_format_time_matches_reference(us):
    from stemedb.timeutil import format_time
    assert _fast.format_time(us) == format_time(us)


def test_encode_assert_frames_matches_reference():
    recs = [r for _b, r in _records(50, seed=5)]
    seqs = list(range(100, 150))
    assert _fast.encode_assert_frames(recs, seqs) == codec.encode_assert_frames(recs, seqs)
    assert _fast.encode_assert_frames(recs[:1], seqs[:1]) == codec.encode_assert_frames(recs[:1], seqs[:1])
