"""``_fast.encode_assert_frames`` reads an ``AssertionRecord``'s fields at
their slot offsets (``_fast.use_record_type``, taken at import by
``stemedb.core.fast`` after a check on a probe record) and writes every
frame into one buffer.  Its frames equal the pure twin's (``codec``) for
records of that type, for records of any other type with the same
attributes (looked up one by one), for large batches (the buffer grows),
signed and unsigned, with every optional field; and ``use_record_type``
refuses a class whose fields are not plain slots, after which the lookups
give the same frames.  Skipped in the pure run.
"""
import random
from collections import namedtuple

import msgspec
import pytest

from stemedb.core import codec, fast
from stemedb.model import AssertionRecord, prepare_assertion

_fast = fast._fast
pytestmark = pytest.mark.skipif(_fast is None, reason="pure-Python run")

Duck = namedtuple("Duck", AssertionRecord.__struct_fields__)


def _records(n, seed=1, big=False):
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        body = {"concept_path": f"d{rnd.randrange(3)}/é{rnd.randrange(5)}/a" + "x" * rnd.randrange(40),
                "predicate": f"p{rnd.randrange(4)}",
                "value": ("v" * rnd.randrange(3000) if big else {"i": i, "x": rnd.random()}),
                "confidence": rnd.random(), "timestamp": 1_700_000_000 + i}
        if rnd.random() < 0.6:
            body["source"] = rnd.choice(["fda://l", "pubmed://9", "forum://😀"])
        if out and rnd.random() < 0.3:
            body["derived_from"] = [out[rnd.randrange(len(out))].hash.hex()
                                    for _ in range(rnd.randrange(1, 4))]
            body["derived_from"] = sorted(set(body["derived_from"]))
        if out and rnd.random() < 0.2:
            body["parent_hash"] = out[rnd.randrange(len(out))].hash.hex()
        if rnd.random() < 0.2:
            body["epoch"] = "e1"
        r = prepare_assertion(body, default_time_us=5)
        if rnd.random() < 0.2:      # a signed record's two extra fields
            r = msgspec.structs.replace(r, agent_id=bytes([i % 256]) * 32,
                                        signature=bytes([(i + 1) % 256]) * 64)
        out.append(r)
    return out


def test_the_record_type_is_read_by_offset():
    assert _fast.record_type_in_use() is AssertionRecord


@pytest.mark.parametrize("n,big", [(1, False), (2, False), (300, False), (40, True)])
@pytest.mark.parametrize("stamp", [None, 1_700_000_000_123_456])
def test_frames_equal_the_pure_twin(n, big, stamp):
    recs = _records(n, seed=n, big=big)
    seqs = list(range(10, 10 + n))
    want = fast.encode_assert_frames_py(recs, seqs, stamp)
    assert _fast.encode_assert_frames(recs, seqs, stamp) == want
    # the same records as another type: each field looked up
    ducks = [Duck(*msgspec.structs.astuple(r)) for r in recs]
    assert _fast.encode_assert_frames(ducks, seqs, stamp) == want
    # mixed, and from a tuple of records
    mixed = tuple(d if i % 2 else r for i, (r, d) in enumerate(zip(recs, ducks)))
    assert _fast.encode_assert_frames(mixed, seqs, stamp) == want


def test_an_empty_group_and_short_seqs():
    assert _fast.encode_assert_frames([], []) == codec.encode_assert_frames([], []) == (b"", [])
    with pytest.raises(IndexError):
        _fast.encode_assert_frames(_records(3), [1, 2])


def test_a_missing_attribute_raises_as_a_lookup_does():
    Part = namedtuple("Part", AssertionRecord.__struct_fields__[:-1])
    r = _records(1)[0]
    part = Part(*msgspec.structs.astuple(r)[:-1])
    with pytest.raises(AttributeError):
        _fast.encode_assert_frames([part], [1])


def test_a_record_type_without_plain_slots_is_refused():
    class Props:
        def __init__(self, rec):
            self._r = rec

    for name in AssertionRecord.__struct_fields__:
        setattr(Props, name, property(lambda self, name=name: getattr(self._r, name)))
    recs = _records(20, seed=9)
    seqs = list(range(20))
    want = codec.encode_assert_frames(recs, seqs)
    probe = Props(recs[0])
    try:
        assert _fast.use_record_type(Props, probe) is False
        assert _fast.record_type_in_use() is None
        assert _fast.encode_assert_frames(recs, seqs) == want       # by lookups
        assert _fast.encode_assert_frames([Props(r) for r in recs], seqs) == want
        # a probe of another type is refused too
        assert _fast.use_record_type(AssertionRecord, Duck(*msgspec.structs.astuple(recs[0]))) is False
    finally:
        assert _fast.use_record_type(AssertionRecord, recs[0]) is True
    assert _fast.record_type_in_use() is AssertionRecord
    assert _fast.encode_assert_frames(recs, seqs) == want
