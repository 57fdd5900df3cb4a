"""``_canon.assertion_answer`` (the compiled writer of one assertion of a query
answer) against its pure twin ``answer.assertion_bytes_py``: the same bytes
for every record the model builds, None (the pure twin decides) for a record
it cannot write, and the answer of ``POST /v1/query`` the same either way."""
from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stemedb import canonical
from stemedb.http import answer
from stemedb.model import AssertionRecord, prepare_assertion

try:    # the build itself, so the pure run (STEMEDB_PURE_PYTHON=1) checks the parity too
    from stemedb.core import _canon  # type: ignore[attr-defined]
except ImportError:
    _canon = None
pytestmark = pytest.mark.skipif(_canon is None, reason="the compiled extension is not built")
if _canon is not None and not canonical.COMPILED:
    answer.configure_compiled(_canon)
H = bytes(range(32))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53 - 1), 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(1e15, 1e22) | st.floats(-1e22, -1e15) | st.floats(1e-8, 1e-5)
    | st.text(st.characters(exclude_categories=("Cs",))),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(st.characters(exclude_categories=("Cs",)), max_size=5), inner,
                      max_size=4),
    max_leaves=12)


def _record(**over):
    b = {"concept_path": "drugs/semaglutide", "predicate": "risk", "value": "rare",
         "confidence": 0.8, "timestamp": 1_700_000_000}
    b.update(over)
    return prepare_assertion({k: v for k, v in b.items() if v is not None})


def _same(rec, seq=7, status="active"):
    got = _canon.assertion_answer(rec, seq, status)
    want = answer.assertion_bytes_py(rec, seq, status)
    assert got == want, (got, want)
    msgspec.json.decode(got)     # and it is JSON


@settings(max_examples=300, deadline=None)
@given(value=json_values, conf=st.floats(0.0, 1.0),
       path=st.text(st.characters(exclude_categories=("Cs", "Cc", "Zs")), min_size=1,
                    max_size=20).filter(lambda s: s.strip() == s and "/" not in s
                                        and s not in (".", "..") and "\x85" not in s))
def test_compiled_equals_pure_on_generated_values(value, conf, path):
    try:
        rec = _record(value=value, confidence=conf, concept_path="a/" + path)
    except ValueError:      # a value the model refuses (too big...): not stored
        return
    _same(rec)


@pytest.mark.parametrize("value", [
    "1.5", "e", "a\"1.5", "\\", "\\\"", "x\\\"e\"", ["a.b", 1, {"e": "E"}], 1.0, -0.0, 1e21,
    1e-6, 0.000123, 2**53 - 1, -(2**53 - 1), {"z": 1, "a": [True, None]}, "\u2028\x00\x7f",
    "\U0001F600", {"\U0001F600": 1, "\uffff": 2}, [], {}, "",
    1e16, 1e17, 1e20, 1.5e20, 123456789012345678.0, 9007199254740993.0, 2.0**53, -1e20,
    [1e19, 12, "1e19"], 9_007_199_254_740_991, 1234567890123456, 0.5, 1e-6, 1.5e-7,
    1e-5, 1.5e-5, 0.00001234, -0.000001, [0.000001, 0.5], {"a": 0.0000015}, 0.1, 10.5,
    1234567890123456.5, -0.5, [0.5], 100.25,
])
def test_compiled_equals_pure_on_edge_values(value):
    _same(_record(value=value))



@pytest.mark.parametrize("value", [0.5, [1, 0.25, "x.e"], {"a": 10.5}, 0.00001, 123.456])
def test_fractions_are_copied_as_they_are(value):
    # the common values take no detour through orjson and msgspec
    from stemedb.canonical import canonical_json
    assert _canon.value_as_is(canonical_json(value))


@pytest.mark.parametrize("over", [
    {}, {"source": "fda://x"}, {"source": "é \"quoted\" \\ /"}, {"epoch": None},
    {"lifecycle": "approved", "source_class": "expert"}, {"timestamp": -1_000_000_000},
    {"timestamp": 1.25}, {"timestamp": "2024-03-01T12:00:00.123456+05:30"},
    {"confidence": 1e-05}, {"confidence": 0}, {"confidence": 1},
    {"concept_path": "é/\U0001F600/x y"},
])
def test_compiled_equals_pure_on_fields(over):
    _same(_record(**over))


def test_compiled_equals_pure_with_every_optional_field():
    rec = _record()
    full = msgspec.structs.replace(rec, parent_hash=H, derived_from=[H, bytes(32)],
                                   agent_id=bytes(range(32, 64)), signature=bytes(64),
                                   epoch="e1", recorded_at=1_764_000_000_123_456)
    for status in ("active", "retracted"):
        for seq in (0, 1, 2**40):
            _same(full, seq, status)


@pytest.mark.parametrize("damage", [
    {"concept_path": "a\ud800"}, {"source": "\udfff"}, {"hash": "not bytes"},
    {"confidence": 1}, {"source_class": 9}, {"lifecycle": -1}, {"derived_from": ["x"]},
    {"value_json": "not bytes"}, {"parent_hash": "ab"}, {"epoch": 5},
])
def test_a_record_it_cannot_write_goes_to_the_pure_twin(damage):
    rec = msgspec.structs.replace(_record(), **damage)
    assert _canon.assertion_answer(rec, 1, "active") is None


def test_a_non_string_status_goes_to_the_pure_twin():
    assert _canon.assertion_answer(_record(), 1, None) is None


@pytest.mark.skipif(not canonical.COMPILED, reason="the build is not in use (STEMEDB_PURE_PYTHON=1)")
def test_the_answer_uses_the_compiled_bytes(store):
    # the query answer holds the compiled bytes as Raw, equal to the pure Struct's
    store.put({"concept_path": "a/b", "predicate": "p", "value": 1.5, "confidence": 0.5,
               "timestamp": 1})
    a = store.query("a/b", predicate="p").assertions[0]
    out = answer.assertion_out(a)
    assert type(out) is msgspec.Raw
    assert bytes(out) == msgspec.json.encode(answer.assertion_json(a))


@settings(max_examples=500, deadline=None)
@given(us=st.integers(-62135596800 * 10**6, 253402300799 * 10**6 + 999_999)
       | st.integers(-(2**70), 2**70))
def test_the_compiled_time_is_format_time(us):
    import orjson

    from stemedb.timeutil import format_time
    try:
        want = orjson.dumps(format_time(us))
    except (ValueError, OverflowError, OSError) as exc:     # the pure formatter refuses it
        with pytest.raises(type(exc)):
            _canon.answer_time(us)
        return
    assert _canon.answer_time(us) == want


@pytest.mark.parametrize("us", [0, -1, 1, 999_999, -1_000_000, -86_400_000_000 - 1,
                                951_782_400_000_000, 4_107_542_399_999_999,
                                -30_610_224_000_000_001, 253402300799999999])
def test_the_compiled_time_on_edges(us):
    import orjson

    from stemedb.timeutil import format_time
    assert _canon.answer_time(us) == orjson.dumps(format_time(us))


def test_the_list_writer_equals_the_pure_list(store):
    """``_canon.assertions_answer`` (a page in one call) against the pure
    Structs encoded as a list: retracted assertions (written by the pure
    twin), revised, derived, floats, and records the compiled pass declines."""
    from stemedb.model import Assertion
    hashes = [store.put({"concept_path": "a/b", "predicate": "p", "value": v,
                         "confidence": c, "timestamp": 1_700_000_000 + i}).hash
              for i, (v, c) in enumerate([(1.5, 0.5), ("x", 1e-05), ({"k": [0.000001]}, 0.0),
                                          (None, 1.0), ([1e20], 0.3333333333333333)])]
    store.put({"concept_path": "a/b", "predicate": "p", "value": "rev", "confidence": 0.5,
               "parent_hash": hashes[0], "derived_from": hashes[1:3], "timestamp": 1})
    store.retract(hash=hashes[3], reason="wrong")
    page = store.query("a/b", predicate="p", include_retracted=True, lifecycle="any",
                       limit=1000).assertions
    assert any(a.retraction is not None for a in page)
    damaged = Assertion(msgspec.structs.replace(page[0].record, confidence=1), 99)
    for items in (page, page + [damaged], [damaged], []):
        want = msgspec.json.encode([answer.assertion_json(a) for a in items])
        assert _canon.assertions_answer(items, answer._one_bytes) == want
        assert msgspec.json.encode(answer.assertions_out(items)) == want


def test_the_list_writer_wants_bytes_from_its_fallback(store):
    store.put({"concept_path": "a/b", "predicate": "p", "value": 1, "confidence": 0.5})
    h = store.query("a/b").assertions[0].hash
    store.retract(hash=h, reason="r")
    page = store.query("a/b", include_retracted=True).assertions
    with pytest.raises(TypeError):
        _canon.assertions_answer(page, lambda a: "not bytes")


@settings(max_examples=300, deadline=None)
@given(conf=st.floats(0.0, 1.0) | st.sampled_from([0.0, 1.0, 1e-4, 9.999999999999999e-05,
                                                    1e-05, 5e-324, 0.1, 1 / 3]))
def test_the_compiled_confidence_is_msgspecs(conf):
    _same(msgspec.structs.replace(_record(), confidence=conf))


@settings(max_examples=300, deadline=None)
@given(conf=st.floats(allow_nan=True, allow_infinity=True)
       | st.sampled_from([0.0, -0.0, 1.0, 1e-4, 9.999999999999999e-05, 1e-05, 1e16,
                          9999999999999998.0, 0.1, 1 / 3, -0.5]))
def test_the_confidence_table_gives_what_it_was_given(conf):
    # put_conf keeps repr's digits per double (by its bits); the first call
    # fills the slot, the second reads it, and a value that shares the slot
    # (another double) must not be read back for this one
    want = msgspec.json.encode(conf)
    assert _canon.answer_conf(conf) == want
    assert _canon.answer_conf(conf) == want
    other = -conf if conf == conf else 0.25
    assert _canon.answer_conf(other) == msgspec.json.encode(other)
    assert _canon.answer_conf(conf) == want


def test_the_confidence_table_on_colliding_values():
    # 1,024 slots: thousands of distinct confidences must each come back as their own
    import random
    r = random.Random(9)
    confs = [round(r.random(), r.randrange(1, 17)) for _ in range(5000)] + [0.0, -0.0]
    for _ in range(2):
        for c in confs:
            assert _canon.answer_conf(c) == msgspec.json.encode(c), c


@pytest.mark.parametrize("value,as_is", [
    (True, True), (False, True), ([None], True), ([True, False, None, 1, "e"], True),
    ({"t": True, "f": False}, True), ("true e", True), ([1e21, True], False),
    ([True, 1e-7], False), ({"false": 1.5e300}, False), ([False, "x", 2], True),
])
def test_true_and_false_are_no_exponent(value, as_is):
    # their e is a letter of the literal: the value is copied as it is, and
    # an exponent after them still is not
    from stemedb.canonical import canonical_json
    assert _canon.value_as_is(canonical_json(value)) is as_is
    _same(_record(value=value))


# The string writer reads eight bytes at a time while none needs an escape:
# every escape at every offset of strings around the word size, and text of
# every kind, against msgspec's encoding of the same str.
_ESCAPED = [chr(c) for c in range(0x20)] + ['"', "\\", "\x7f", "\x80", "é", "\u2028", "😀"]


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 15, 16, 17, 31, 33])
def test_the_string_writer_on_every_offset(n):
    for ch in _ESCAPED:
        for at in range(n + 1):
            s = "a" * at + ch + "b" * (n - at)
            assert _canon.answer_str(s) == msgspec.json.encode(s), (n, at, ch)
    assert _canon.answer_str("x" * n) == msgspec.json.encode("x" * n)


@settings(max_examples=500, deadline=None)
@given(s=st.text(st.characters(exclude_categories=("Cs",)), max_size=80)
       | st.text(st.sampled_from(["a", '"', "\\", "\x00", "\x1f", " ", "\x7f", "é", "\n"]),
                 max_size=40))
def test_the_string_writer_is_msgspecs(s):
    assert _canon.answer_str(s) == msgspec.json.encode(s)


def test_the_string_writer_declines_what_is_not_utf8():
    assert _canon.answer_str("a\ud800b") is None


def test_the_time_writer_keeps_no_stale_day():
    # the writer keeps the last day's date text: times of one day, of the
    # next, of a far one and back must each be their own
    import orjson

    from stemedb.timeutil import format_time
    day = 86_400_000_000
    base = 1_764_201_600_000_000
    for us in [base, base + 1, base + day - 1, base + day, base - 1, base, -day * 400,
               base + 3 * day + 12_345, base, 253402300799999999, base, -30_610_224_000_000_000]:
        assert _canon.answer_time(us) == orjson.dumps(format_time(us)), us


# The whole query answer in one call (_canon.query_answer) against the pure
# document (answer.query_doc encoded): results of the usual shape written
# here, any other (layered's, a retracted winner, odd types or key orders)
# by the pure twin, and top-level fields it cannot write declined.
def _doc_bytes(result):
    return answer._encode(answer.query_doc(result))


def _compiled_doc(result):
    return _canon.query_answer(result.concept_path, result.lens, result.results,
                               result.assertions, result.next_cursor, answer._one_bytes,
                               answer._result_bytes)


def test_the_document_writer_on_every_lens(store):
    from stemedb.core.lens import LENSES
    roots = [store.put({"concept_path": "drugs/x", "predicate": "risk", "value": v,
                        "confidence": c, "timestamp": 1_700_000_000 + i}).hash
             for i, (v, c) in enumerate([("rare", 0.9), ("common", 0.35), (1.5, 0.0),
                                         ({"a": [1, "é\n"]}, 1.0), ("rare", 1e-5)])]
    store.put({"concept_path": "drugs/x/y", "predicate": "other", "value": "x",
               "confidence": 0.5, "parent_hash": roots[0], "timestamp": 1_700_000_100})
    store.retract(hash=roots[1], reason="wrong")
    for lens in sorted(LENSES):
        for extra in ({}, {"include_retracted": True}, {"limit": 2},
                      {"include_descendants": True}, {"predicate": "nothing"}):
            r = store.query("drugs/x", lens=lens, **extra)
            assert _compiled_doc(r) == _doc_bytes(r), (lens, extra)
            if r.next_cursor:
                r2 = store.query("drugs/x", lens=lens, cursor=r.next_cursor, **extra)
                assert _compiled_doc(r2) == _doc_bytes(r2)


def test_the_document_writer_on_odd_results(store):
    from stemedb.core.query import QueryResult, Result
    store.put({"concept_path": "drugs/x", "predicate": "risk", "value": "rare",
               "confidence": 0.9, "timestamp": 1_700_000_000})
    r = store.query("drugs/x", lens="consensus")
    base = dict(r.results[0])
    w = base["winner"]
    odd = [
        {**base, "confidence": 1},                      # an int
        {**base, "confidence": True},                   # a bool: not a number here
        {**base, "conflict_score": float("nan")},       # msgspec writes null
        {**base, "confidence": 1e-7},                   # msgspec's exponent
        {**base, "candidates_count": 2**70},            # beyond a long long
        {**base, "predicate": None},
        {**base, "winner": None},
        {k: base[k] for k in reversed(list(base))},     # another key order
        {**base, "layers": []},                         # a seventh key
        {k: v for k, v in base.items() if k != "winner"},
        Result(base),
        {**base, "concept_path": 'a\\"b\x01'},
    ]
    for res in odd:
        q = QueryResult("drugs/x", "consensus", [res], [w, w], 'cur\\"sor')
        assert _compiled_doc(q) == _doc_bytes(q), res


def test_the_document_writer_declines_top_level_fields_it_cannot_write():
    assert _canon.query_answer("a\ud800", "recency", [], [], None, answer._one_bytes,
                               answer._result_bytes) is None
    assert _canon.query_answer("a", 1, [], [], None, answer._one_bytes,
                               answer._result_bytes) is None
    assert _canon.query_answer("a", "recency", [], [], 5, answer._one_bytes,
                               answer._result_bytes) is None
    assert _canon.query_answer("a", "recency", [], [], "c\ud800", answer._one_bytes,
                               answer._result_bytes) is None
    assert _canon.query_answer("a", "recency", [], [], None, answer._one_bytes,
                               answer._result_bytes) == (
        b'{"concept_path":"a","lens":"recency","results":[],"assertions":[],"next_cursor":null}')


# -- session 11: the decimal confidence writer and the slot reads ------------

@settings(max_examples=1000, deadline=None)
@given(m=st.integers(1, 10**15 - 1), k=st.integers(0, 8), neg=st.booleans())
def test_the_decimal_writer_is_repr(m, k, neg):
    # w_decimal writes x when it is the double nearest m / 10**k (at most six
    # places, 15 digits) and must then write repr's digits, which are
    # msgspec's in this range; else it declines (dtoa decides)
    x = (-m if neg else m) / 10**k
    got = _canon.answer_decimal(x)
    if not 1e-4 <= abs(x) < 1e15:
        assert got is None
        return
    if got is not None:
        assert got == repr(x).encode() == msgspec.json.encode(x), (x, got)
    if k <= 6 and len(str(m)) <= 15:
        assert got is not None, x     # a decimal it is for: written, not declined


@settings(max_examples=500, deadline=None)
@given(x=st.floats(allow_nan=True, allow_infinity=True))
def test_the_decimal_writer_on_any_double(x):
    got = _canon.answer_decimal(x)
    assert got is None or got == repr(x).encode() == msgspec.json.encode(x), (x, got)


@pytest.mark.parametrize("x", [
    0.0001, 0.00011, 0.000123, 0.05, 0.5, 0.95, 1.0, 5.0, -0.75, 0.123, 12345.678,
    123456789012345.0, 99999999999999.9, 0.999999, 1.000001, 0.1 + 0.2, 1 / 3, 1e15,
    999999999999999.0, 9.999999999999999e-05, 0.0, -0.0, 5e-324, float("nan"), float("inf"),
])
def test_the_decimal_writer_on_edges(x):
    got = _canon.answer_decimal(x)
    assert got is None or got == repr(x).encode() == msgspec.json.encode(x), (x, got)
    # and the whole confidence path (table, decimal, dtoa) is msgspec's, twice
    for _ in range(2):
        assert _canon.answer_conf(x) == msgspec.json.encode(x), x


def test_three_decimal_confidences_take_the_decimal_writer():
    # the workload's confidences (round(x, 3) in 0.05..1.0) never need dtoa
    for i in range(50, 1001):
        x = round(i / 1000, 3)
        assert _canon.answer_decimal(x) == repr(x).encode(), x


def _page(store):
    from stemedb.model import Assertion
    store.create_epoch("e1")
    hashes = [store.put({"concept_path": "a/b", "predicate": "p", "value": v,
                         "confidence": c, "timestamp": 1_700_000_000 + i,
                         "source": "https://x.org/é"}).hash
              for i, (v, c) in enumerate([(1.5, 0.5), ("x", 1e-05), ({"k": [0.000001]}, 0.0),
                                          (None, 1.0), ([1e20], 0.3333333333333333)])]
    store.put({"concept_path": "a/b", "predicate": "p", "value": "rev", "confidence": 0.5,
               "parent_hash": hashes[0], "derived_from": hashes[1:3], "epoch": "e1",
               "timestamp": 1})
    store.retract(hash=hashes[3], reason="wrong")
    page = store.query("a/b", predicate="p", include_retracted=True, lifecycle="any",
                       limit=1000).assertions
    assert any(a.retraction is not None for a in page)
    assert all(type(a) is Assertion for a in page)
    return page


def test_the_slot_reads_equal_the_attribute_reads(store):
    """configure_slots: the writer reads records and assertions from their
    slots; the bytes are those of the attribute reads (slots off) and of the
    pure Structs, on a page with every optional field, a retraction and a
    record the writer declines."""
    from stemedb.model import Assertion, AssertionRecord
    page = _page(store)
    damaged = Assertion(msgspec.structs.replace(page[0].record, confidence=1), 99)

    class Sub(Assertion):
        __slots__ = ()

    sub = Sub(page[1].record, page[1].seq, page[1].status, page[1].retraction)
    items = page + [damaged, sub]
    want = msgspec.json.encode([answer.assertion_json(a) for a in items])
    try:
        assert _canon.configure_slots(None, None) == (False, False)
        off = _canon.assertions_answer(items, answer._one_bytes)
        assert _canon.configure_slots(AssertionRecord, Assertion) == (True, True)
        on = _canon.assertions_answer(items, answer._one_bytes)
    finally:
        _canon.configure_slots(AssertionRecord, Assertion)
    assert off == on == want


def test_an_assertion_with_an_empty_slot_fails_as_before():
    from stemedb.model import Assertion
    a = Assertion.__new__(Assertion)       # no slot set: the attribute read raises
    with pytest.raises(AttributeError):
        _canon.assertions_answer([a], answer._one_bytes)
    a.retraction = None                    # retraction set, record not
    with pytest.raises(AttributeError):
        _canon.assertions_answer([a], answer._one_bytes)


def test_configure_slots_refuses_other_layouts():
    from stemedb.model import Assertion, AssertionRecord

    class Other(msgspec.Struct):           # other fields
        hash: bytes
        seq: int

    class Props:                           # properties, not slots
        record = property(lambda s: None)
        seq = status = retraction = record

    class Sub(Assertion):                  # its descriptors are the base's
        __slots__ = ()

    try:
        assert _canon.configure_slots(Other, Props) == (False, False)
        assert _canon.configure_slots(AssertionRecord, Sub) == (True, False)
        assert _canon.configure_slots(5, "x") == (False, False)
    finally:
        assert _canon.configure_slots(AssertionRecord, Assertion) == (True, True)


# c_value_as_is reads a string's text eight bytes at a time while no byte is
# '"' or '\\': a quote or backslash at every offset of strings around the
# word size, each followed by what must not be copied as it is (an
# exponent, a tiny fraction) and by what may.
@pytest.mark.parametrize("n", [0, 1, 6, 7, 8, 9, 15, 16, 17, 24, 31, 33])
def test_the_value_scan_on_every_offset(n):
    import orjson

    from stemedb.canonical import canonical_json
    for ch in ['"', "\\", "e", "E", "1", "é", "\x01", "\\\"", "\"\\"]:
        for at in range(n + 1):
            s = "a" * at + ch + "b" * (n - at)
            for value, as_is in (([s, 1e21], False), ([s, 0.0000015], False),
                                 ({s: [1e-7]}, False), ([s, 1.5, True], True),
                                 ({s: s, "x": [s, 12]}, True), (s, True)):
                vj = canonical_json(value)
                assert _canon.value_as_is(vj) is as_is, (n, at, ch, value)
                if as_is:
                    assert msgspec.json.encode(orjson.loads(vj)) == vj


@settings(max_examples=500, deadline=None)
@given(value=json_values)
def test_a_value_copied_as_it_is_is_msgspecs(value):
    # the scan's promise: what it copies is what msgspec writes of the decoded value
    import orjson

    from stemedb.canonical import canonical_json
    try:
        vj = canonical_json(value)
    except (ValueError, TypeError):
        return
    if _canon.value_as_is(vj):
        assert msgspec.json.encode(orjson.loads(vj)) == vj, vj


def test_source_class_and_lifecycle_are_written_from_their_json():
    # configure_answer writes each source class and lifecycle once; a table
    # that is not text is refused
    from stemedb.model import LIFECYCLES, SOURCE_CLASSES
    from stemedb.timeutil import format_time
    with pytest.raises(ValueError):
        _canon.configure_answer(SOURCE_CLASSES + (5,), LIFECYCLES, format_time,
                                answer._encode, answer._value_bytes, msgspec.structs.astuple)
    with pytest.raises(ValueError):
        _canon.configure_answer(SOURCE_CLASSES, LIFECYCLES + ("a\ud800",), format_time,
                                answer._encode, answer._value_bytes, msgspec.structs.astuple)
    answer.configure_compiled(_canon)
    for sc in range(len(SOURCE_CLASSES)):
        for lc in range(len(LIFECYCLES)):
            _same(msgspec.structs.replace(_record(), source_class=sc, lifecycle=lc))
