"""The compiled ``_query.NewAssertions`` (``Reader.assertions``' batch of
active Assertions, slots set in place) and ``_query.read_clock`` against
their pure twins ``qpure.new_assertions`` and ``qpure.read_clock``: the
same objects, the same refusals of bad input, and a store's queries
through them (session 8, issue 9)."""
from __future__ import annotations

import gc
import time

import pytest

from stemedb import open_store
from stemedb.core import qfast, qpure
from stemedb.core import reader as R
from stemedb.model import Assertion, AssertionRecord
from stemedb.timeutil import now_us

try:
    from stemedb.core import _query  # type: ignore[attr-defined]
except ImportError:         # the pure-only install: nothing compiled to hold
    _query = None

compiled = pytest.mark.skipif(_query is None, reason="compiled _query not built")


def _recs(n):
    return [AssertionRecord(hash=bytes([i]) * 32, recorded_at=i, timestamp=i, confidence=0.5,
                            source_class=i % 6, lifecycle=0, concept_path="g", predicate="p",
                            value_json=b"1") for i in range(n)]


def _slots(a: Assertion):
    return (a.record, a.seq, a.status, a.retraction, a._value is Assertion._UNSET)


def _makers():
    out = [qpure.new_assertions(Assertion)]
    if _query is not None:
        out.append(_query.new_assertions(Assertion))
    return out


@pytest.mark.parametrize("n", [0, 1, 4, 33])
def test_the_twins_build_the_same_assertions(n):
    recs, seqs = _recs(n), list(range(100, 100 + n))
    want = [_slots(Assertion(r, s)) for r, s in zip(recs, seqs)]
    for make in _makers():
        got = make(recs, seqs)
        assert type(got) is list and all(type(a) is Assertion for a in got)
        assert [_slots(a) for a in got] == want
        assert [a.hash for a in got] == [r.hash.hex() for r in recs]
        assert all(gc.is_tracked(a) == gc.is_tracked(Assertion(recs[0], 1)) for a in got)


@pytest.mark.parametrize("recs,seqs,exc", [
    ([None], [], ValueError), ([], [1], ValueError), ((), [], TypeError),
    ([], (), TypeError), (None, [], TypeError),
])
def test_the_twins_refuse_the_same_bad_input(recs, seqs, exc):
    for make in _makers():
        with pytest.raises(exc):
            make(recs, seqs)


@compiled
def test_a_class_with_a_dict_is_refused():
    class Loose:
        _UNSET = object()
    with pytest.raises(TypeError):
        _query.new_assertions(Loose)


@compiled
def test_the_compiled_objects_outlive_their_inputs():
    make = _query.new_assertions(Assertion)
    got = make(_recs(3), [1, 2, 3])
    gc.collect()
    assert [a.seq for a in got] == [1, 2, 3] and got[2].record.timestamp == 2


def test_read_clock_twins():
    for rc in [qpure.read_clock] + ([_query.read_clock] if _query is not None else []):
        assert rc(lambda: 42, now_us) == 42          # a stand-in clock is called
        a = time.time_ns() // 1000
        b = rc(now_us, now_us)
        c = time.time_ns() // 1000
        assert type(b) is int and a <= b <= c
        with pytest.raises(ZeroDivisionError):
            rc(lambda: 1 // 0, now_us)


def test_reader_uses_the_compiled_batch_when_compiled():
    assert (R._ACTIVE is not None) == qfast.COMPILED


def test_query_answers_through_them(tmp_path):
    s = open_store(str(tmp_path / "d"), durability="none")
    try:
        hashes = [s.put({"concept_path": "a/b", "predicate": "p", "value": i,
                         "confidence": 0.1 * (i + 1), "source": "fda://x",
                         "timestamp": 1_700_000_000 + i}).hash for i in range(5)]
        for lens in ("recency", "authority"):
            r = s.query("a/b", predicate="p", lens=lens, decay=True)
            assert sorted(a.hash for a in r.assertions) == sorted(hashes)
            assert all(a.status == "active" and a.retraction is None for a in r.assertions)
        s.retract(hash=hashes[0], reason="x")
        r = s.query("a/b", predicate="p", lens="authority", decay=True, include_retracted=True)
        assert {a.hash: a.status for a in r.assertions}[hashes[0]] == "retracted"
    finally:
        s.close()


@compiled
def test_the_audit_lines_stamp_is_right_when_seconds_repeat_and_change():
    """_jstamp keeps the last second's date and time: lines of the same
    second, the next one, and an earlier one again all stamp their own."""
    from stemedb.core import qaudit
    from stemedb.timeutil import format_time
    import orjson
    base = 1_764_201_600_123_456
    for at in (base, base + 1, base + 999_999, base + 1_000_000, base - 86_400_000_000 * 400,
               base, 0, 253402300799999999, base + 5):
        line = _query.audit_line(qaudit._AUDIT_PARAMS, qaudit._HALF_LIFE_US, 7, at, None,
                                 ("g",) + (None,) * 12, [], 0, [], at, False, 0)
        assert orjson.loads(line)["at"] == format_time(at)
