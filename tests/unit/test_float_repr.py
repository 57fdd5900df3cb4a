"""``_query._repr_of``: the audit line's weight text, Python's repr of the
double, rewritten from orjson's shortest digits (``_query.float_repr``)
instead of dtoa's (``PyOS_double_to_string``, ~7,500 instructions a decayed
weight).  Its reference is ``repr``: held equal on random bit patterns, on
weight-like values, and at the notation's edges (where repr turns to an
exponent, zeros, subnormals, the largest double).  A text it does not
expect is declined (None), and the line then writes that weight with
PyOS_double_to_string, as before: held by the damaged texts below and by
test_audit_line.py's byte-for-byte check of whole lines.
"""
from __future__ import annotations

import math
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

try:
    from stemedb.core import _query  # type: ignore[attr-defined]
except ImportError:         # the pure-only install: nothing compiled to hold
    _query = None

pytestmark = pytest.mark.skipif(_query is None, reason="compiled _query not built")

EDGES = [0.0, -0.0, 1e-05, -1e-05, 1e-4, 9.999e-5, 0.00012345, 1.5e-07, 2.5e-10, 1e16, -1e16,
         1e15, 9999999999999998.0, 1234500000000000.0, 123456789012345680.0, 5e-324,
         2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 0.30000000000000004, 1.0,
         123.0, 1e22, 1e-300, 1e100, 1e-100, 0.5, 1 / 3, 2 / 3, 100.0, 1e-07, 12.5]


@pytest.mark.parametrize("v", EDGES)
def test_the_edges_are_repr(v):
    assert _query.float_repr(v) == repr(v)


def test_random_bit_patterns_and_weights_are_repr():
    r = random.Random(20261127)
    vals = [struct.unpack("<d", struct.pack("<Q", r.getrandbits(64)))[0] for _ in range(60_000)]
    vals += [r.random() * 2.0 ** (-r.random() * 80) for _ in range(60_000)]
    vals += [round(r.random(), r.randrange(1, 8)) for _ in range(20_000)]
    for v in vals:
        if math.isfinite(v):
            assert _query.float_repr(v) == repr(v), v


@settings(max_examples=2000, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_any_finite_float_is_repr(v):
    assert _query.float_repr(v) == repr(v)


@pytest.mark.parametrize("text,want", [
    (b"0.00001", "1e-05"), (b"1.5e-7", "1.5e-07"), (b"1e+16", "1e+16"), (b"1e16", "1e+16"),
    (b"1234500000000000.0", "1234500000000000.0"), (b"0.0", "0.0"), (b"-0.0", "-0.0"),
    (b"12", "12.0"), (b"-0.5", "-0.5"), (b"5e-324", "5e-324"), (b"1.0e2", "100.0"),
])
def test_texts_it_rewrites(text, want):
    assert _query.repr_of_text(text) == want


@pytest.mark.parametrize("text", [
    b"", b"-", b".", b"abc", b"1..2", b"1e", b"1e+", b"1e+12345", b"1x", b"1.2.3", b"NaN",
    b"Infinity", b"1e5 ", b" 1", b"123456789012345678", b"0." + b"1" * 18, b"1" * 41, b"--1",
])
def test_texts_it_does_not_expect_are_declined(text):
    assert _query.repr_of_text(text) is None
