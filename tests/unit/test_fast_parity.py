"""The compiled twins give the pure reference's answers, byte for byte.

Runs only where the extension is built (skips in a pure-Python run, where
there is nothing to compare).
"""
import mmap
import random

import google_crc32c
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


@pytest.fixture(params=["sse4.2", "table"])
def crc_path(request):
    """Run the test with the CRC-32C instruction, then with the C table
    (forced through the test hook), restoring the detected path after."""
    got = _fast._crc32c_use_hardware(request.param == "sse4.2")
    try:
        if got != request.param:
            pytest.skip(f"this CPU has no {request.param} crc32 instruction")
        yield got
    finally:
        _fast._crc32c_use_hardware(True)


def test_crc32c_matches_google_crc32c_at_every_length_and_alignment(crc_path):
    rnd = random.Random(9)
    lengths = list(range(0, 80)) + [127, 128, 129, 255, 256, 257, 1000, 4093, 4096, 65537]
    big = bytearray(rnd.randbytes(65537 + 16))
    for n in lengths:
        for align in range(8):
            view = memoryview(big)[align:align + n]
            assert _fast.crc32c(view) == google_crc32c.value(bytes(view)), \
                f"{crc_path}: length {n}, offset {align}"
    for _ in range(300):
        b = rnd.randbytes(rnd.randrange(0, 3000))
        assert _fast.crc32c(b) == google_crc32c.value(b), f"{crc_path}: {len(b)} random bytes"
    assert _fast.crc32c(b"123456789") == 0xE3069283   # the CRC-32C check value


def test_crc32c_takes_bytes_bytearray_memoryview_and_mmap(tmp_path):
    data = bytes(range(256)) * 3
    want = google_crc32c.value(data)
    path = tmp_path / "f"
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert _fast.crc32c(m) == want
    assert _fast.crc32c(data) == _fast.crc32c(bytearray(data)) == want
    assert _fast.crc32c(memoryview(data)[5:]) == google_crc32c.value(data[5:])
    assert _fast.crc32c(b"") == google_crc32c.value(b"") == 0


def test_crc32c_implementation_names_the_path_in_use():
    try:
        assert _fast._crc32c_use_hardware(False) == "table"
        assert _fast.crc32c_implementation() == "table"
    finally:
        _fast._crc32c_use_hardware(True)
    assert _fast.crc32c_implementation() in ("sse4.2", "table")


def test_scan_frames_matches_reference_at_every_cut(crc_path):
    buf = _log(30)
    for end in range(SEGMENT_HEADER_SIZE, len(buf) + 1, 7):
        assert _fast.scan_frames(buf, SEGMENT_HEADER_SIZE, end) == \
            codec.scan_frames(buf, SEGMENT_HEADER_SIZE, end), f"scan differs at end={end}"


def test_scan_frames_matches_reference_on_damage(crc_path):
    buf = bytearray(_log(30))
    rnd = random.Random(3)
    for _ in range(200):
        b = bytearray(buf)
        b[rnd.randrange(SEGMENT_HEADER_SIZE, len(b))] ^= 1 << rnd.randrange(8)
        b = bytes(b)
        assert _fast.scan_frames(b, SEGMENT_HEADER_SIZE, len(b)) == \
            codec.scan_frames(b, SEGMENT_HEADER_SIZE, len(b)), "damaged log scanned differently"


def _damage_cases(buf: bytes):
    """Damaged copies of a clean log, each kind a torn write or corruption makes."""
    frames = codec.scan_frames(buf, SEGMENT_HEADER_SIZE, len(buf))[0]
    rnd = random.Random(5)
    for off in frames[1::4]:
        b = bytearray(buf)
        b[off + 4] ^= 0x10                                    # the stored crc
        yield "crc field", bytes(b)
        b = bytearray(buf)
        b[off + 8] ^= 0x01                                    # the type byte, under the crc
        yield "type byte", bytes(b)
        b = bytearray(buf)
        b[off + rnd.randrange(20, 60)] ^= 0x80                # inside the payload
        yield "payload", bytes(b)
        b = bytearray(buf)
        b[off:off + 4] = (2**28 + 1).to_bytes(4, "little")    # length past MAX_PAYLOAD
        yield "bad length", bytes(b)
        b = bytearray(buf)
        b[off:off + 4] = (10**6).to_bytes(4, "little")        # length past the end
        yield "long length", bytes(b)
        yield "torn", buf[:off + rnd.randrange(1, 40)]
        yield "zeroed tail", buf[:off] + bytes(len(buf) - off)


def test_scan_frames_matches_reference_on_each_kind_of_damage(crc_path):
    buf = _log(40)
    n = 0
    for kind, b in _damage_cases(buf):
        for start in (SEGMENT_HEADER_SIZE, SEGMENT_HEADER_SIZE + 1, len(b) // 2):
            got = _fast.scan_frames(b, start, len(b))
            assert got == codec.scan_frames(b, start, len(b)), f"{kind}, start {start}"
            n += got[5] != codec.STOP_END
    assert n > 30, "the damage cases must stop the scan"


def test_scan_frames_matches_reference_on_a_long_log_through_mmap(crc_path, tmp_path):
    buf = _log(400)
    path = tmp_path / "segment"
    path.write_bytes(buf)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        got = _fast.scan_frames(m, SEGMENT_HEADER_SIZE, len(buf))
    assert got == codec.scan_frames(buf, SEGMENT_HEADER_SIZE, len(buf))
    assert got[5] == codec.STOP_END and len(got[0]) > 400


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


def _extract_both(buf, seed_paths=(), seed_preds=()):
    offsets, types, _f, seqs, _stop, _r = codec.scan_frames(buf, SEGMENT_HEADER_SIZE, len(buf))
    results = []
    for fn in (codec.extract_segment, _fast.extract_segment):
        paths, preds = list(seed_paths), list(seed_preds)
        path_ids = {p: i for i, p in enumerate(paths)}
        pred_ids = {p: i for i, p in enumerate(preds)}
        cols, src, edges, metas = fn(buf, offsets, types, seqs, 2, 0, path_ids, paths,
                                     pred_ids, preds, {"e1": 1})
        results.append(({k: v.tolist() for k, v in cols.items()}, src[0].tolist(),
                        src[1].tolist(), edges, metas, paths, preds, path_ids, pred_ids))
    return results


def test_extract_segment_interns_thousands_of_names_like_the_reference():
    """The compiled extract finds a seen path or predicate by its raw bytes in
    its own table: past its first sizes (1,024 and 256 slots), with names
    shorter and longer than 8 bytes, non-ASCII paths, sharing prefixes, repeated
    out of order, and ids already given by earlier segments."""
    rnd = random.Random(21)
    names = [f"d/{'é' * (i % 3)}{i}/{'x' * (i % 13)}y" for i in range(2500)]
    preds = [f"p{i}" if i % 2 else f"predicate_{'long' * (i % 4)}_{i}" for i in range(300)]
    frames, seq = [b"\0" * SEGMENT_HEADER_SIZE], 0
    for i in range(6000):
        body = {"concept_path": names[rnd.randrange(len(names))] if i >= 2500 else names[i],
                "predicate": rnd.choice(preds), "value": i, "confidence": 0.5,
                "timestamp": 1_700_000_000 + i}
        if i % 3:
            body["source"] = f"pubmed://{rnd.randrange(50)}"
        r = msgspec.structs.replace(prepare_assertion(body), recorded_at=1 + i)
        seq += 1
        frames.append(codec.encode_frame(REC_ASSERT, 0, seq, codec.encode_assert(r)))
    buf = b"".join(frames)
    plain, compiled = _extract_both(buf)
    assert compiled == plain
    assert len(plain[5]) == 2500 and len(plain[6]) == 300
    seeded = _extract_both(buf, seed_paths=names[1000:1500][::-1], seed_preds=preds[:7])
    assert seeded[1] == seeded[0]


def test_extract_segment_refuses_bad_utf8_like_the_reference():
    r = _records(1)[0][1]
    frame = bytearray(codec.encode_frame(REC_ASSERT, 0, 1, codec.encode_assert(r)))
    at = 20 + 76 + 1                      # inside the concept path
    frame[at] = 0xFF
    buf = b"\0" * SEGMENT_HEADER_SIZE + bytes(frame)
    offsets, types, seqs = [SEGMENT_HEADER_SIZE], [REC_ASSERT], [1]
    for fn in (codec.extract_segment, _fast.extract_segment):
        with pytest.raises(UnicodeDecodeError):
            fn(buf, offsets, types, seqs, 1, 0, {}, [], {}, [], {})


def test_the_rebuilds_index_sort_is_numpys_stable_sort():
    import numpy as np

    from stemedb.core.state import stable_order
    rng = np.random.default_rng(4)
    cases = [rng.integers(0, 5, 1000), rng.integers(0, 2**40, 5000),
             rng.integers(0, 2**31, 3000, dtype=np.int64),
             rng.integers(0, 2**63, 4000, dtype=np.uint64),
             np.repeat(rng.integers(0, 2**63, 300, dtype=np.uint64), 7),
             rng.integers(0, 100, 2000).astype(np.int32), np.array([-3, 5, -3, 0, 5]),
             rng.integers(0, 2**46, 70000), rng.integers(2**45, 2**47, 70000),
             np.array([], dtype=np.int64), np.array([7])]
    for keys in cases:
        assert stable_order(keys).tolist() == np.argsort(keys, kind="stable").tolist(), keys.dtype


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
    from stemedb.timeutil import _format_py  # the pure reference, never the twin
    assert _fast.format_time(us) == _format_py(us)


def test_encode_assert_frames_matches_reference(crc_path):
    recs = [r for _b, r in _records(50, seed=5)]
    seqs = list(range(100, 150))
    assert _fast.encode_assert_frames(recs, seqs) == codec.encode_assert_frames(recs, seqs)
    assert _fast.encode_assert_frames(recs[:1], seqs[:1]) == codec.encode_assert_frames(recs[:1], seqs[:1])


def test_compiled_layout_constants_equal_format_py():
    """format.py is the one description of the byte layout: the compiled
    module's constants (its DEFs, exported as FORMAT) must say the same."""
    from stemedb.core import format as F
    assert _fast.FORMAT, "the compiled module exports its layout constants"
    for name, value in _fast.FORMAT.items():
        assert getattr(F, name) == value, f"{name}: _fast.pyx says {value}, format.py {getattr(F, name)}"
    assert F.FRAME.size == _fast.FORMAT["FRAME_SIZE"]
    assert F.ASSERT_HEAD.size == _fast.FORMAT["ASSERT_HEAD_SIZE"]
