"""``_query.audit_line``, the compiled audit line, against its reference:
``orjson.dumps(query._entry(...))`` plus a newline (issue 9, "The audit
entry costs the query nothing it can avoid").

The query thread writes the line; the audit writer only joins and writes
bytes.  So the line must be the entry the writer would have built from the
same pieces: the same JSON (escapes, non-BMP text, ints at the int64 edges,
weights to the bit), byte for byte wherever a weight's text is orjson's
(Python's repr writes 1e-05 where orjson writes 0.00001: the same double).
Where the line cannot be written here it says so (None) and the caller
queues the entry for the writer as before: a time before the epoch or past
the year 9999, an int beyond int64, a parameter that is not a str, int or
bool, a lone surrogate.  Each None is checked to be one of those.
"""
from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stemedb.core import qaudit, qfast
from stemedb.core import query as Q
from stemedb.core.lens import _HALF_LIFE_US
from stemedb.model import Assertion, AssertionRecord

try:
    from stemedb.core import _query  # type: ignore[attr-defined]
except ImportError:         # the pure-only install: nothing compiled to hold
    _query = None

pytestmark = pytest.mark.skipif(_query is None, reason="compiled _query not built")

INT64 = 2**63
MAX_STAMP = 253402300799999999      # 9999-12-31T23:59:59.999999Z
TEXT = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ['a"b', "back\\slash", "\x00\x08\t\n\x0c\r\x1f\x7f", "\u2028é😀", "drugs/x"])
PARAM = st.one_of(st.none(), TEXT, st.booleans(),
                  st.integers(-INT64, INT64 - 1), st.sampled_from([0, 1, 100, -1]))
ODD_PARAM = st.one_of(st.integers(INT64, 2**70), st.integers(-2**70, -INT64 - 1),
                      st.floats(allow_nan=True), st.lists(st.integers(-1000, 1000), max_size=2),
                      st.just("\ud800"))
REC = st.tuples(st.integers(-2**62, 2**62), st.floats(0.0, 1.0), st.integers(0, 5),
                st.binary(min_size=32, max_size=32))
AT = st.one_of(st.integers(0, 2**53), st.integers(1_700_000_000_000_000, MAX_STAMP),
               st.integers(MAX_STAMP - 3, MAX_STAMP + 3), st.integers(-2**62, -1),
               st.integers(MAX_STAMP, INT64 - 1), st.just(0))


def _assertions(items):
    return [Assertion(AssertionRecord(hash=h, recorded_at=0, timestamp=ts, confidence=c,
                                      source_class=rank, lifecycle=0, concept_path="g",
                                      predicate="r", value_json=b"1"), i + 1)
            for i, (ts, c, rank, h) in enumerate(items)]


def _line(*args):
    return _query.audit_line(Q._AUDIT_PARAMS, _HALF_LIFE_US, *args)


def _writable(number, at, agent, params, more, active) -> bool:
    """What audit_line promises to write (everything else gives None)."""
    def plain(v):
        if type(v) is str:
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return False
            return True
        return v is None or type(v) is bool or (type(v) is int and -INT64 <= v < INT64)
    return (type(number) is int and 0 <= at <= MAX_STAMP and plain(agent)
            and all(plain(v) for v in params) and -INT64 <= more < INT64
            and -INT64 <= active < INT64)


@settings(max_examples=400, deadline=None)
@given(st.lists(REC, max_size=22), st.lists(REC, max_size=4), AT, AT, st.booleans(),
       st.integers(0, 2**70), st.integers(-3, 5), st.one_of(st.none(), TEXT),
       st.lists(PARAM, min_size=13, max_size=13), st.integers(0, 40))
def test_the_line_is_the_entry_orjson_writes(top, winners, at, at_us, decay, number, more,
                                             agent, params, extra):
    params = tuple(params)
    top_a, win_a = _assertions(top), _assertions(winners)
    active = len(top) + extra
    args = (number, at, agent, params, win_a, more, top_a, at_us, decay, active)
    line = _line(*args)
    # the same line from its two halves (a materialized answer keeps the tail)
    tail = _query.audit_tail(_HALF_LIFE_US, win_a, more, top_a, at_us, decay, active)
    halves = None if tail is None else _query.audit_head(Q._AUDIT_PARAMS, tail, number, at,
                                                         agent, params)
    assert halves == line
    if not _writable(number, at, agent, params, more, active):
        assert line is None
        return
    want = Q._entry(*args)
    if any(not math.isfinite(c["weight"]) for c in want["contributing"]):
        assert line is None
        return
    assert line is not None and line.endswith(b"\n") and line.count(b"\n") == 1
    got = orjson.loads(line)
    assert got == orjson.loads(orjson.dumps(want))
    # the weights to the bit, and floats where the entry has floats
    assert [(type(c["weight"]), c["weight"]) for c in got["contributing"]] == \
        [(type(c["weight"]), c["weight"]) for c in want["contributing"]]
    if all(orjson.dumps(c["weight"]) == repr(c["weight"]).encode()
           for c in want["contributing"]):
        assert line == orjson.dumps(want) + b"\n", "byte for byte"


@settings(max_examples=200, deadline=None)
@given(st.lists(PARAM, min_size=13, max_size=13), st.integers(0, 12), ODD_PARAM)
def test_a_parameter_it_does_not_write_leaves_the_entry_to_the_writer(params, i, odd):
    params[i] = odd
    args = (1, 1_700_000_000_000_000, None, tuple(params), [], 0, [], 0, False, 0)
    assert _line(*args) is None
    if type(odd) is list or type(odd) is float and math.isfinite(odd):
        orjson.dumps(Q._entry(*args))       # the writer still writes these


@pytest.mark.parametrize("agent", ["\ud800", "ok\udfff"])
def test_a_lone_surrogate_is_left_to_the_writer(agent):
    args = (1, 1_700_000_000_000_000, agent, ("g",) + (None,) * 12, [], 0, [], 0, False, 0)
    assert _line(*args) is None
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps(Q._entry(*args))       # which drops and counts it, as before


EDGE_INTS = sorted({s * (10**k + d) for k in range(19) for d in (-1, 0, 1) for s in (1, -1)
                    if -INT64 <= s * (10**k + d) < INT64} | {0, INT64 - 1, -INT64, -INT64 + 1})


@pytest.mark.parametrize("v", EDGE_INTS)
def test_integers_at_each_number_of_digits_are_orjsons(v):
    """Every integer parameter, ``at_us`` and count is written as orjson
    writes it (the compiled line writes two digits a step): each power of
    ten and its neighbours, both signs, int64's ends."""
    params = ("g", None, False, "recency", None, None, None, None, None, False, False, v, None)
    at = min(abs(v), MAX_STAMP)
    args = (abs(v) % 2**16, at, None, params, [], v, [], 0, False, v)
    line = _line(*args)
    assert line == orjson.dumps(Q._entry(*args)) + b"\n"


def test_a_dict_of_parameters_is_left_to_the_writer():
    params = dict(zip(Q._AUDIT_PARAMS, ("g",) + (None,) * 12))
    assert _line(1, 0, None, params, [], 0, [], 0, False, 0) is None


def test_the_query_path_uses_the_compiled_line():
    if qfast.COMPILED:
        assert qaudit._LINE is not None and qaudit._LINE.func is _query.audit_line
    else:                   # STEMEDB_PURE_PYTHON=1: the writer builds every entry
        assert qaudit._LINE is None
