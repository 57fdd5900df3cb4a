"""_query.audit_head writes into one buffer kept between calls: lines of
any length, in any order, are each the bytes audit_line writes (a long
line, then short ones, then the buffer dropped and made again), and every
string, wherever its first escape falls, is written as orjson writes it."""
from __future__ import annotations

import orjson
import pytest

from stemedb.core import query as Q
from stemedb.core.lens import _HALF_LIFE_US
from stemedb.model import Assertion, AssertionRecord

try:
    from stemedb.core import _query  # type: ignore[attr-defined]
except ImportError:         # the pure-only install: nothing compiled to hold
    _query = None

pytestmark = pytest.mark.skipif(_query is None, reason="compiled _query not built")

AT = 1_790_000_000_123_456


def _top(n):
    return [Assertion(AssertionRecord(hash=bytes([i % 256]) * 32, recorded_at=0,
                                      timestamp=i, confidence=0.5, source_class=1,
                                      lifecycle=0, concept_path="g", predicate="r",
                                      value_json=b"1"), i + 1) for i in range(n)]


def _params(path, pred="p", limit=100):
    return (path, pred, False, "recency", None, None, None, None, None, False, False, limit,
            None)


def _both(path, agent=None, top=4, pred="p"):
    t = _top(top)
    args = (7, AT, agent, _params(path, pred))
    tail = _query.audit_tail(_HALF_LIFE_US, t[:1], 0, t, AT, False, len(t))
    head = _query.audit_head(Q._AUDIT_PARAMS, tail, *args)
    line = _query.audit_line(Q._AUDIT_PARAMS, _HALF_LIFE_US, *args, t[:1], 0, t, AT, False,
                             len(t))
    return head, line


@pytest.mark.parametrize("sizes", [[10, 100_000, 10, 70_000, 5, 200_000, 1],
                                   [1, 2, 3], [70_000, 70_000]])
def test_long_and_short_lines_in_turn(sizes):
    for n in sizes:
        head, line = _both("d/" + "x" * n, agent="a" * (n // 2))
        assert head == line and head is not None
        e = orjson.loads(head)
        assert e["params"]["concept_path"] == "d/" + "x" * n and e["agent"] == "a" * (n // 2)


ODD = ['"', "\\", "\n", "\x00", "\x1f", "\x7f", "é", "\u2028", "😀", "\t", "\r", "\x08", "\x0c"]


@pytest.mark.parametrize("odd", ODD)
@pytest.mark.parametrize("at", [0, 1, 5, 40])
def test_escapes_anywhere_in_a_string(odd, at):
    base = "abcdefghij" * 5
    s = base[:at] + odd + base[at:] + odd
    for path, agent, pred in ((s, None, "p"), ("d/e", s, "p"), ("d/e", None, s),
                              (odd, odd, odd)):
        head, line = _both(path, agent=agent, pred=pred)
        assert head == line and head is not None
        e = orjson.loads(head)
        assert (e["params"]["concept_path"], e["agent"], e["params"]["predicate"]) == \
            (path, agent, pred)
        # the strings' JSON as orjson writes it, byte for byte
        assert orjson.dumps(path) in head and orjson.dumps(pred) in head
        if agent is not None:
            assert orjson.dumps(agent) in head


def test_an_unencodable_string_leaves_the_buffer_usable():
    t = _top(2)
    tail = _query.audit_tail(_HALF_LIFE_US, t[:1], 0, t, AT, False, 2)
    assert _query.audit_head(Q._AUDIT_PARAMS, tail, 1, AT, "\ud800", _params("d/e")) is None
    head, line = _both("d/after")
    assert head == line and orjson.loads(head)["params"]["concept_path"] == "d/after"
