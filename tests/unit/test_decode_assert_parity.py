"""_fast.decode_assert against the pure codec.decode_assert, for every kind
of buffer it is given: ``bytes`` (read through its data pointer, what
read_frames and the reader pass), ``bytearray``, ``memoryview`` and
``mmap`` (read through a typed memoryview), at an offset inside a larger
buffer, and on short or damaged input (every truncation of a payload,
length fields past the buffer, bad UTF-8, a negative offset), where the
compiled function must give the reference's answer or raise its error,
never read past the buffer.

Runs only where the extension is built.
"""
import mmap
import random
import struct

import msgspec
import pytest

from stemedb.core import codec
from stemedb.core.format import ASSERT_HEAD_SIZE
from stemedb.model import prepare_assertion

_fast = pytest.importorskip("stemedb.core._fast", reason="compiled extension not built")


def _records(n, seed):
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        body = {"concept_path": f"d{rnd.randrange(3)}/é{rnd.randrange(5)}/a",
                "predicate": f"p{rnd.randrange(4)}",
                "value": {"i": i, "s": "😀" * rnd.randrange(3)},
                "confidence": rnd.random(), "timestamp": 1_700_000_000 + i}
        if rnd.random() < 0.7:
            body["source"] = rnd.choice(["fda://l", "pubmed://9", "forum://😀"])
        if i and rnd.random() < 0.4:
            body["derived_from"] = [o.hash.hex() for o in
                                    rnd.sample(out, min(len(out), rnd.randrange(1, 4)))]
        if i and rnd.random() < 0.3:
            body["parent_hash"] = out[rnd.randrange(len(out))].hash.hex()
        if rnd.random() < 0.3:
            body["epoch"] = "e1"
        r = msgspec.structs.replace(prepare_assertion(body),
                                    recorded_at=1_700_000_000_000_000 + i)
        if rnd.random() < 0.3:     # a signed record: agent id and signature after the rest
            r = msgspec.structs.replace(r, agent_id=bytes(range(32)),
                                        signature=bytes(range(64, 128)))
        out.append(r)
    return out


RECORDS = _records(60, seed=5)


def _outcome(fn, buf, off):
    try:
        return ("ok", fn(buf, off))
    except Exception as e:  # noqa: BLE001 - the error itself is what is compared
        return ("error", type(e), str(e))


def _same(buf, off):
    want = _outcome(codec.decode_assert, buf, off)
    got = _outcome(_fast.decode_assert, buf, off)
    assert got == want, (type(buf).__name__, off)
    return want


def _kinds(b: bytes):
    return [b, bytearray(b), memoryview(b), memoryview(bytearray(b))]


def test_every_buffer_kind_decodes_as_the_reference():
    kinds = set()
    for r in RECORDS:
        payload = codec.encode_assert(r)
        for buf in _kinds(payload):
            assert _same(buf, 0) == ("ok", r)
        framed = b"\x07" * 13 + payload + b"\xff" * 5       # at an offset, bytes after it
        for buf in _kinds(framed):
            assert _same(buf, 13) == ("ok", r)
        kinds.add((r.source is not None, r.epoch is not None, r.parent_hash is not None,
                   r.derived_from is not None, r.signature is not None))
    assert len(kinds) >= 12, "the generated records cover the optional fields' combinations"


def test_an_mmap_decodes_as_the_reference():
    payloads = [codec.encode_assert(r) for r in RECORDS[:10]]
    blob = b"".join(payloads)
    m = mmap.mmap(-1, len(blob))
    try:
        m.write(blob)
        off = 0
        for r, p in zip(RECORDS, payloads):
            assert _same(m, off) == ("ok", r)
            off += len(p)
    finally:
        m.close()


def test_every_truncation_gives_the_references_answer_or_error():
    for r in RECORDS[:20]:
        payload = codec.encode_assert(r)
        for cut in range(len(payload)):
            for buf in (payload[:cut], bytearray(payload[:cut])):
                _same(buf, 0)
            _same(b"ab" + payload[:cut], 2)


def test_damaged_input_gives_the_references_answer_or_error():
    payload = codec.encode_assert(RECORDS[3])
    lens = ASSERT_HEAD_SIZE - 16            # lpath, lpred, lsrc, lep, nd, 2 reserved, lval
    cases = []
    for field_off, fmt, value in [(lens, "<H", 0xFFFF), (lens + 2, "<H", 0xFFFF),
                                  (lens + 4, "<H", 0xFFFF), (lens + 6, "<H", 0xFFFF),
                                  (lens + 8, "<H", 0xFFFF), (lens + 12, "<I", 0xFFFFFFFF),
                                  (lens + 12, "<I", 0), (58, "<B", 0xFF)]:
        b = bytearray(payload)
        struct.pack_into(fmt, b, field_off, value)
        cases.append(bytes(b))
    bad_utf8 = bytearray(payload)
    bad_utf8[ASSERT_HEAD_SIZE] = 0xFF           # the path's first byte
    cases.append(bytes(bad_utf8))
    for c in cases:
        for buf in _kinds(c):
            _same(buf, 0)
    for buf in _kinds(payload):
        for off in (-1, -len(payload), len(payload), len(payload) + 5):
            _same(buf, off)
    for buf in (b"", bytearray(), memoryview(b"")):
        _same(buf, 0)


def test_a_non_buffer_raises_as_the_reference():
    for bad in (None, 12, "text"):
        assert _outcome(_fast.decode_assert, bad, 0)[0] == "error"
        assert _outcome(codec.decode_assert, bad, 0)[0] == "error"
