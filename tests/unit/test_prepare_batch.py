"""The batch record builder (``model.prepare_batch``, compiled by
``_canon.prepare_many``) against its pure twin, the loop of
``prepare_assertion``.

* On generated batches of dicts and of decoded ``AssertionIn`` Structs (good
  items and every kind of bad field, signed items, RFC 3339 and Unix-seconds
  times), the compiled batch gives the records the pure loop gives, or the
  same error: same class, message and field, ``assertions[i].`` prefixed, for
  the same first bad item;
* every record ``prepare_many`` itself builds equals ``prepare_assertion``'s
  (so a slot it fills is never a record the model would refuse), and its hash
  is BLAKE3 of the ``rfc8785`` oracle's bytes;
* the timestamp edges it reads itself (Unix seconds at the 2^53 microsecond
  bounds, halves that round to even, -0.0, huge and non-finite numbers,
  bools) agree with ``timeutil.parse_time``.

The pure path of ``prepare_batch`` runs in every test (``_prepare_many`` set
to None); the compiled comparisons are skipped when the extension is absent.
"""
from __future__ import annotations

import contextlib
import math

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stemedb import model, timeutil
from stemedb.errors import ValidationError
from stemedb.http.schemas import AssertionIn
from stemedb.model import prepare_assertion, prepare_batch

from .test_canon import C, _sign, assertions, compiled_model, needs_twin, oracle_hash, pure_model

NOW = 1_700_000_000_000_000


@contextlib.contextmanager
def _batch_twin(fn):
    saved = model._prepare_many
    model._prepare_many = fn
    try:
        yield
    finally:
        model._prepare_many = saved


def batch_outcome(items, require_signatures=False):
    """The records, or the error as (class, message, field)."""
    try:
        return prepare_batch(items, default_time_us=NOW, require_signatures=require_signatures)
    except ValidationError as exc:
        return (type(exc).__name__, str(exc), exc.field)


def pure_batch(items, require_signatures=False):
    with pure_model(), _batch_twin(None):
        return batch_outcome(items, require_signatures)


def compiled_batch(items, require_signatures=False):
    with compiled_model(), _batch_twin(C.prepare_many):
        return batch_outcome(items, require_signatures)


def loop_outcome(items, require_signatures=False):
    """What put_batch did before prepare_batch: prepare_assertion per item."""
    recs = []
    for i, a in enumerate(items):
        try:
            recs.append(prepare_assertion(a, default_time_us=NOW,
                                          require_signatures=require_signatures))
        except ValidationError as exc:
            e = exc.prefixed(f"assertions[{i}]")
            return (type(e).__name__, str(e), e.field)
    return recs


def _many(items):
    return C.prepare_many(list(items), NOW, model.AssertionRecord,
                          AssertionIn if items and type(items[0]) is AssertionIn else None,
                          msgspec.structs.astuple, msgspec.UNSET)


# ------------------------------------------------------------ the pure path

def test_pure_batch_is_the_loop_of_prepare_assertion():
    items = [{"concept_path": "a/b", "predicate": "p", "value": i, "confidence": 0.5}
             for i in range(5)]
    assert pure_batch(items) == loop_outcome(items)
    bad = items[:3] + [{**items[3], "confidence": 2}] + [{**items[4], "predicate": ""}]
    out = pure_batch(bad)
    assert out[2] == "assertions[3].confidence", "the first bad item names its field"
    assert out == loop_outcome(bad)


def test_an_empty_batch_is_empty():
    assert prepare_batch([], default_time_us=NOW) == []


# ------------------------------------------------------------ compiled = pure

@needs_twin
@settings(max_examples=300, deadline=None)
@given(st.lists(assertions(), min_size=1, max_size=6), st.booleans())
def test_compiled_batch_equals_pure_batch(bodies, required):
    bodies = [_sign(b) for b in bodies]
    pure = pure_batch(bodies, required)
    assert compiled_batch(bodies, required) == pure, "records or the same first error"
    with pure_model():
        assert loop_outcome(bodies, required) == pure
    if isinstance(pure, list):
        for rec, b in zip(pure, bodies):
            assert rec.hash == oracle_hash(rec, b["value"])


@needs_twin
@settings(max_examples=300, deadline=None)
@given(st.lists(assertions(), min_size=1, max_size=6))
def test_every_record_prepare_many_builds_is_prepare_assertions(bodies):
    bodies = [_sign(b) for b in bodies]
    with compiled_model():
        out = _many(bodies)
    assert len(out) == len(bodies)
    for rec, b in zip(out, bodies):
        if rec is None:
            continue    # left to prepare_assertion
        with pure_model():
            assert prepare_assertion(b, default_time_us=NOW) == rec
        assert rec.hash == oracle_hash(rec, b["value"])


@needs_twin
@settings(max_examples=200, deadline=None)
@given(st.lists(assertions(), min_size=1, max_size=6))
def test_decoded_structs_batch_like_their_dicts(bodies):
    bodies = [_sign(b) for b in bodies]
    try:
        items = [msgspec.json.decode(msgspec.json.encode(b), type=AssertionIn) for b in bodies]
    except msgspec.ValidationError:
        return  # the HTTP layer refuses it before the model sees it
    as_dicts = [msgspec.to_builtins(i) for i in items]
    comp = compiled_batch(items)
    assert comp == pure_batch(items) == pure_batch(as_dicts)
    if isinstance(comp, list):      # every item stores: the compiled pass took the plain ones
        with compiled_model():
            out = _many(items)
        for item, rec in zip(items, out):
            plain = (item.agent_id in (None, msgspec.UNSET) and item.signature in (None, msgspec.UNSET)
                     and type(item.timestamp) is not str)
            assert (rec is not None) == plain


GOOD = {"concept_path": "drugs/x", "predicate": "p", "value": {"k": [1, 2.5]},
        "confidence": 0.5, "source": "fda://x", "timestamp": 1709294400}


@needs_twin
def test_the_compiled_pass_takes_plain_items_and_leaves_the_rest():
    items = [GOOD, {**GOOD, "timestamp": "2024-03-01T12:00:00Z"}, {**GOOD, "confidence": 2},
             {**GOOD, "extra": 1}, {k: v for k, v in GOOD.items() if k != "value"},
             {**GOOD, "agent_id": "a" * 64}, ["not", "a", "dict"], None,
             {**GOOD, "timestamp": None, "source": None, "parent_hash": "b" * 64,
              "derived_from": ["c" * 64], "epoch": "e1", "lifecycle": "approved",
              "source_class": "expert"}]
    with compiled_model():
        out = _many(items)
    taken = [r is not None for r in out]
    assert taken == [True, False, False, False, False, False, False, False, True]
    last = out[-1]
    assert last.timestamp == NOW and last.parent_hash == b"\xbb" * 32
    assert last.derived_from == [b"\xcc" * 32] and last.epoch == "e1"


@needs_twin
@pytest.mark.parametrize("i,field,bad", [
    (0, "confidence", 2), (3, "confidence", math.nan), (3, "concept_path", "a//b"),
    (1, "predicate", "p\n"), (2, "value", 2**53), (3, "timestamp", "yesterday"),
    (3, "timestamp", True), (3, "timestamp", 1e20), (3, "source", "a\x00"),
    (3, "derived_from", ["a" * 64, "a" * 64]), (3, "agent_id", "A" * 64),
])
def test_a_bad_item_is_named_with_its_field(i, field, bad):
    items = [dict(GOOD, value=k) for k in range(5)]
    items[i] = {**items[i], field: bad}
    items[4] = {**items[4], "confidence": -1}       # a later bad item is not the one named
    comp = compiled_batch(items)
    assert comp == pure_batch(items)
    assert comp[2] == f"assertions[{i}].{field}"


@needs_twin
def test_unknown_and_missing_fields_are_named_like_the_loop():
    for bad in ({**GOOD, "colour": "red"}, {k: v for k, v in GOOD.items() if k != "confidence"}):
        items = [GOOD, bad]
        assert compiled_batch(items) == pure_batch(items) == loop_outcome(items)
    items = [GOOD, "text"]
    assert compiled_batch(items) == pure_batch(items)
    assert compiled_batch(items) == loop_outcome(items)
    assert compiled_batch(items)[2] == "assertions[1]"     # not an object: the item is named


# ------------------------------------------------------------ timestamps

TIMES = [0, -0.0, 0.0, 1, -1, 1709294400, 9007199254, -9007199254, 9007199255, -9007199255,
         9007199254.740991, 9007199254.7409915, -9007199254.740991, 9007199254.740992,
         0.0000005, 0.0000015, 0.0000025, -0.0000005, -0.0000025, 1.5e-7, 1709294400.123456,
         1709294400.1234565, 1e12, 1e13, -1e13, 9.99e12, 10**13, 10**20, -10**20,
         math.inf, -math.inf, math.nan, True, False, 2**63, -2**63, 2**64]


@needs_twin
@settings(max_examples=1000, deadline=None)
@given(st.integers(-10**10, 10**10) | st.floats(allow_nan=True) | st.floats(-1e10, 1e10)
       | st.sampled_from(TIMES))
@example(0.5e-6)
def test_unix_seconds_are_read_as_parse_time_reads_them(ts):
    body = {**GOOD, "timestamp": ts}
    try:
        want = timeutil.parse_time(ts, "timestamp")
    except ValidationError:
        want = None
    with compiled_model():
        got = _many([body])[0]
    if want is None:
        assert got is None, "a time parse_time refuses is left to the model"
    else:
        assert got is not None and got.timestamp == want


def test_the_hashed_time_bounds_are_the_compiled_ones():
    assert timeutil.MIN_US == -(2**53 - 1) and timeutil.MAX_US == 2**53 - 1


# ------------------------------------------------------------ one put

def one_outcome(body, require_signatures=False):
    try:
        return model.prepare_one(body, default_time_us=NOW, require_signatures=require_signatures)
    except ValidationError as exc:
        return (type(exc).__name__, str(exc), exc.field)


@needs_twin
@settings(max_examples=300, deadline=None)
@given(assertions(), st.booleans())
def test_prepare_one_is_prepare_assertion(b, required):
    """Store.put's builder: the record or the unprefixed error of the pure model."""
    b = _sign(b)
    with pure_model(), _batch_twin(None):
        pure = one_outcome(b, required)
        assert pure == (prepare_assertion(b, default_time_us=NOW, require_signatures=required)
                        if isinstance(pure, model.AssertionRecord) else pure)
    with compiled_model(), _batch_twin(C.prepare_many):
        assert one_outcome(b, required) == pure
    try:
        item = msgspec.json.decode(msgspec.json.encode(b), type=AssertionIn)
    except msgspec.ValidationError:
        return
    with pure_model(), _batch_twin(None):
        pure_item = one_outcome(item, required)
    with compiled_model(), _batch_twin(C.prepare_many):
        assert one_outcome(item, required) == pure_item


def test_prepare_one_names_the_field_without_a_prefix():
    out = one_outcome({**GOOD, "confidence": 2})
    assert out[2] == "confidence"
