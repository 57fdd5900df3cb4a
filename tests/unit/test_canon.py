"""The compiled hash path (stemedb/core/_canon.pyx) against its oracle and
its pure twin.

* ``_canon.value_json`` equals the ``rfc8785`` package (the oracle) and the
  pure ``canonical_json_py`` on generated JSON values (floats from every bit
  pattern, subnormals, 1e21, -0.0, 5e-324, integers to +/-(2^53-1), escapes,
  control characters, non-BMP keys and values, nesting), and declines (None)
  exactly where the pure path refuses, which then raises the same error;
* the field-check twins (``path_ok``, ``source_ok``) accept exactly what the
  pure checks accept;
* ``hashed_assertion`` writes the pure twin's bytes, and ``prepare_assertion``
  gives the same record compiled and pure, equal to the oracle's hash;
* a decoded ``AssertionIn`` Struct (the HTTP path, no dict round trip) gives
  the record and the errors the dict gives.

The compiled tests run whenever the extension is built, also under
STEMEDB_PURE_PYTHON=1 (which only changes what the engine selects).
"""
from __future__ import annotations

import contextlib
import math
import os
import struct
import subprocess
import sys
from collections import OrderedDict
from enum import IntEnum

import blake3
import msgspec
import pytest
import rfc8785
from hypothesis import example, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from stemedb import canonical, model
from stemedb.canonical import NotJSON, canonical_json_py
from stemedb.errors import ValidationError
from stemedb.http.schemas import AssertionIn
from stemedb.model import prepare_assertion

try:
    from stemedb.core import _canon as C
except ImportError:  # not built: the parity tests have nothing to compare
    C = None

needs_twin = pytest.mark.skipif(C is None, reason="stemedb.core._canon is not built")

MAX_SAFE = 2**53 - 1

# ------------------------------------------------------------- strategies


def _bits_to_float(n: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", n))[0]


SPECIAL_FLOATS = [
    0.0, -0.0, 1e21, -1e21, 1e20, 999999999999999900000.0, 1e22, 1e23, 1e16, 1e-5, 1e-6, 1e-7,
    5e-7, 1.5e-7, 5e-324, -5e-324, 2.225073858507201e-308, 2.2250738585072014e-308,
    1.7976931348623157e308, -1.7976931348623157e308, float(2**53), float(2**53 + 2),
    float(MAX_SAFE), 123456789012345680.0, 0.1, 1 / 3, 4.35, 0.000123, 100.0, -2.5]
floats = (st.floats(allow_nan=False, allow_infinity=False)          # subnormals included
          | st.integers(0, 2**64 - 1).map(_bits_to_float).filter(math.isfinite)
          # short decimals (a confidence such as 0.399), the twin's no-dtoa path, and
          # their neighbours one ulp away, which must not take it
          | st.builds(lambda m, p, ulp: math.nextafter(m / 10**p, ulp * math.inf) if ulp else m / 10**p,
                      st.integers(-10**16, 10**16), st.integers(0, 24), st.sampled_from([0, 0, -1, 1]))
          | st.sampled_from(SPECIAL_FLOATS))
ints = st.integers(-MAX_SAFE, MAX_SAFE) | st.sampled_from([0, -1, MAX_SAFE, -MAX_SAFE, 2**31, 2**32])
TRICKY = ['"', "\\", "\x00", "\x01", "\x1f", "\x7f", "\x80", "\x9f", "\b", "\f", "\n", "\r", "\t",
          "/", "\u2028", "\u2029", "\ud7ff", "\ue000", "\uffff", "\ufeff", "\U00010000",
          "\U0001F600", "\U0010FFFF", "a", "Z", "é", "\u00a0"]
texts = st.text(max_size=12) | st.text(st.sampled_from(TRICKY), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | ints | floats | texts,
    lambda kids: st.lists(kids, max_size=5) | st.tuples(kids, kids)
    | st.dictionaries(texts, kids, max_size=6),
    max_leaves=25)


def nest(depth: int):
    v = 1
    for _ in range(depth):
        v = [v]
    return v


# ------------------------------------------------------ canonical JSON


@needs_twin
@settings(max_examples=600, deadline=None)
@given(json_values)
@example({"\ue000": 1, "\U0001F600": 2, "\uffff": 3, "a": 4})
@example(["\x00\x1f\x7f\"\\\b\f\n\r\t\u2028"])
@example([1e21, -0.0, 5e-324, 1e-7, 2.0**53, MAX_SAFE, -MAX_SAFE])
def test_compiled_value_json_equals_rfc8785(v):
    want = rfc8785.dumps(v)
    assert C.value_json(v) == want, "the compiled canonical bytes must be RFC 8785's"
    assert canonical_json_py(v) == want, "the pure reference must be RFC 8785's"


@needs_twin
@settings(max_examples=1000, deadline=None)
@given(floats)
def test_compiled_numbers_are_ecmascript(x):
    want = rfc8785.dumps(x)
    assert C.number_json(x) == want
    assert C.value_json(x) == want
    assert C.value_json({"k": [x]}) == b'{"k":[' + want + b"]}"


@needs_twin
def test_non_bmp_keys_sort_by_utf16_code_units():
    # U+1F600 is D83D DE00 in UTF-16: before U+E000, though after it by code point
    out = C.value_json({"\ue000": 1, "\U0001F600": 2, "a": 3})
    assert out == '{"a":3,"\U0001F600":2,"\ue000":1}'.encode()
    assert out == rfc8785.dumps({"\ue000": 1, "\U0001F600": 2, "a": 3})


class _Int(IntEnum):
    A = 1


REFUSED = [
    2**53, -(2**53), 10**30, float("nan"), float("inf"), -float("inf"), "\ud800",
    {"a": [1, 2**60]}, {"\udfff": 1}, {1: 2}, {"k": {None: 1}}, nest(65), {"x": nest(64)},
    {1, 2}, b"bytes", _Int.A, OrderedDict(a=1), [object()], {"k": float("nan")},
]


@needs_twin
@pytest.mark.parametrize("v", REFUSED, ids=range(len(REFUSED)))
def test_twin_declines_where_the_reference_refuses_with_the_same_error(v):
    assert C.value_json(v) is None, "the twin must leave every refusal to the reference"
    with pytest.raises(NotJSON) as pure:
        canonical_json_py(v)
    with pytest.raises(NotJSON) as chosen:
        canonical.canonical_json(v)
    assert (str(chosen.value), chosen.value.path) == (str(pure.value), pure.value.path)


@needs_twin
def test_twin_leaves_no_utf8_copy_inside_the_callers_strings():
    """PyUnicode_AsUTF8AndSize would cache a UTF-8 copy in every non-ASCII str
    it reads (the concept paths and values a store keeps) for its lifetime."""
    texts = ["drugs/é" + str(i) for i in range(3)] + ["x\U0001F600"]
    sizes = [sys.getsizeof(t) for t in texts]
    C.value_json({texts[3]: texts[0]})
    C.path_ok(texts[1]), C.source_ok(texts[2]), C.name_ok(texts[0])
    C.hashed_assertion(None, texts[1], 0.5, None, None, "proposed", None, "p", texts[2],
                       "anecdotal", 1, b"1")
    assert [sys.getsizeof(t) for t in texts] == sizes


@needs_twin
def test_depth_limit_is_the_references():
    assert C.value_json(nest(64)) == canonical_json_py(nest(64)) == b"[" * 64 + b"1" + b"]" * 64
    assert C.value_json(nest(65)) is None


# ----------------------------------------------------------- field checks


def _passes(check, v) -> bool:
    try:
        check(v)
    except ValidationError:
        return False
    return True


PATH_CHARS = ["a", "b", "/", ".", " ", "\t", "\u00a0", "\u2003", "\u3000", "\x85", "\x7f", "\x1f",
              "\x1c", "\x9f", "\xa0", "é", "\U0001F600", "\ud800", "\u200b", '"', "\\"]


@needs_twin
@settings(max_examples=800, deadline=None)
@given(st.text(st.sampled_from(PATH_CHARS), max_size=12) | st.text(max_size=12))
@example("a" * 512)
@example("a" * 513)
@example("é" * 256)
@example("é" * 257)
@example("drugs/semaglutide")
@example("a/./b")
@example("a/../b")
@example("a/.../b")
@example(".a/b.")
@example("a/ b")
@example("a/b\u3000")
def test_path_twin_accepts_exactly_what_the_check_accepts(s):
    assert C.path_ok(s) == _passes(model.check_concept_path, s), repr(s)


@needs_twin
@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from(PATH_CHARS + [":", "\x80", "\u0100"]), max_size=12)
       | st.text(max_size=12))
@example("x" * 1024)
@example("x" * 1025)
@example("é" * 512)
@example("é" * 513)
@example("")
def test_source_twin_accepts_exactly_what_the_check_and_utf8_accept(s):
    def pure(v):
        model.check_source(v)
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("not UTF-8", field="source") from None
    assert C.source_ok(s) == _passes(pure, s), repr(s)


@needs_twin
@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from(list("aZ09_.:-/ \n\x00é") + ["\U0001F600", "\ud800"]),
               max_size=10) | st.text(max_size=10))
@example("a" * 128)
@example("a" * 129)
@example("p\n")
@example("")
def test_name_twin_accepts_exactly_what_the_check_accepts(s):
    assert C.name_ok(s) == _passes(lambda v: model.check_name(v, "predicate"), s), repr(s)


@needs_twin
def test_check_twins_refuse_non_strings():
    for v in (None, 5, b"a/b", ["a"]):
        assert C.path_ok(v) is False and C.source_ok(v) is False and C.name_ok(v) is False


def _source_class_by_pattern(source):
    """infer_source_class as the pattern defines it (the reference)."""
    if source:
        m = model._SCHEME_RE.match(source)
        if m:
            return model.SCHEME_CLASS.get(m.group(1).lower(), "anecdotal")
    return "anecdotal"


SCHEMES = sorted(model.SCHEME_CLASS) + ["FDA", "PubMed", "x-y", "1fda", "fda+x", "\u212aa", "http"]


@settings(max_examples=500, deadline=None)
@given(st.builds(lambda pre, sep, rest: pre + sep + rest,
                 st.sampled_from(SCHEMES) | st.text(max_size=6),
                 st.sampled_from([":", "://", "", "/"]), st.text(max_size=6)))
@example("\u212aoo:x")     # KELVIN SIGN lowers to ASCII k
@example(":fda")
@example("fda")
def test_source_class_lookup_equals_the_pattern(source):
    assert model.infer_source_class(source) == _source_class_by_pattern(source)


@needs_twin
def test_unset_to_none():
    u = msgspec.UNSET
    assert C.unset_to_none(("a", 1, u, None, u), u, 2) == ["a", 1, None, None, None]
    assert C.unset_to_none(("a", u, u), u, 2) == 1


# ------------------------------------------------------------ the hashed object

HEX = st.text("0123456789abcdef", min_size=64, max_size=64)
names = st.from_regex(r"[A-Za-z0-9_.:\-]{1,12}", fullmatch=True)


@needs_twin
@settings(max_examples=400, deadline=None)
@given(agent=st.none() | HEX, path=st.text(st.sampled_from(["a", "/", "é", '"', "\\", "\U0001F600"]),
                                            min_size=1, max_size=10),
       conf=st.floats(0, 1), derived=st.none() | st.lists(HEX, min_size=1, max_size=3),
       epoch=st.none() | names, lifecycle=st.sampled_from(model.LIFECYCLES),
       parent=st.none() | HEX, pred=names, source=st.none() | texts,
       sc=st.sampled_from(model.SOURCE_CLASSES),
       ts=st.integers(-(2**63), 2**63 - 1), value=json_values)
def test_hashed_assertion_equals_the_pure_twin(agent, path, conf, derived, epoch, lifecycle,
                                               parent, pred, source, sc, ts, value):
    vj = canonical_json_py(value)
    args = (agent, path, conf, derived, epoch, lifecycle, parent, pred, source, sc, ts, vj)
    assert C.hashed_assertion(*args) == model._hashed_bytes_py(*args)


@needs_twin
def test_hashed_assertion_declines_text_that_is_not_utf8():
    args = [None, "a/b", 0.5, None, None, "proposed", None, "p", "x\ud800", "anecdotal", 1, b"1"]
    assert C.hashed_assertion(*args) is None
    with pytest.raises(ValidationError) as exc:
        model._hashed_bytes_py(*args)
    assert exc.value.field == "source"
    args[-3] = None
    args[-2] = 2**64   # beyond 64 bits: the pure writer decides
    assert C.hashed_assertion(*args) is None


TWINS = ("_path_ok", "_source_ok", "_name_ok", "_hashed_compiled", "_unset_to_none",
         "_checked", "_signature_ok", "_blake3_c", "canonical_json")


@contextlib.contextmanager
def _model_with(**twins):
    saved = {name: getattr(model, name) for name in TWINS}
    for name, fn in twins.items():
        setattr(model, name, fn)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(model, name, fn)


def pure_model():
    """prepare_assertion with every compiled twin switched off."""
    return _model_with(_path_ok=None, _source_ok=None, _name_ok=None, _hashed_compiled=None,
                       _unset_to_none=None, _checked=None, _signature_ok=None,
                       _blake3_c=None, canonical_json=canonical_json_py)


def compiled_model():
    def canonical_json(v):
        out = C.value_json(v)
        return canonical_json_py(v) if out is None else out
    C.configure(model.SCHEME_CLASS, model.SOURCE_CLASS_RANK, model.LIFECYCLE_RANK)
    return _model_with(_path_ok=C.path_ok, _source_ok=C.source_ok, _name_ok=C.name_ok,
                       _hashed_compiled=C.hashed_assertion, _unset_to_none=C.unset_to_none,
                       _checked=C.checked_fields, _signature_ok=C.signature_ok,
                       _blake3_c=C.blake3_digest, canonical_json=canonical_json)


KEY = SigningKey(bytes(range(32)))
AGENT = KEY.verify_key.encode().hex()

segments = st.text(st.sampled_from(["a", "b", "é", " ", ".", '"', "\\", "\U0001F600", "-"]),
                   min_size=1, max_size=5)


def _or_bad(good, *bad):
    """``good`` nine times in ten, else one of the ``bad`` values (a field the
    model refuses), so that compiled and pure are compared on refusals too
    while most bodies still store."""
    return st.integers(0, 9).flatmap(lambda i: st.sampled_from(bad) if i == 0 else good)


good_segments = st.text(st.sampled_from(["a", "b", "é", ".", '"', "\\", "\U0001F600", "-"]),
                        min_size=1, max_size=5).filter(lambda seg: seg not in (".", ".."))


@st.composite
def assertions(draw):
    path = _or_bad(st.lists(good_segments, min_size=1, max_size=4).map("/".join),
                   "a//b", "/a", "a/", " a/b", "a/./b", "a/../b", "", "a\x00b", "a\x85", 5)
    b = {"concept_path": draw(st.one_of(path, path, path,
                                        st.lists(segments, min_size=1, max_size=4).map("/".join))),
         "predicate": draw(_or_bad(names, "p\n", "", "a b", "x" * 129, 5, None)),
         "value": draw(json_values),
         "confidence": draw(_or_bad(st.floats(0, 1) | st.sampled_from([0, 1]),
                                    1.0000001, -0.0001, 2, True, math.nan, "0.5", None))}
    opt = {
        "source": st.sampled_from(["fda://a", "forum:x", "source/x", "é:1", 'q"\\']) | texts,
        "source_class": _or_bad(st.sampled_from(model.SOURCE_CLASSES), "Regulatory", 1, ""),
        "lifecycle": _or_bad(st.sampled_from(model.LIFECYCLES), "Approved", 0),
        "parent_hash": _or_bad(HEX, "A" * 64, "a" * 63, "a" * 64 + "\n", 7),
        "derived_from": _or_bad(st.lists(HEX, min_size=1, max_size=3, unique=True),
                                [], ["a" * 64, "a" * 64], ["g" * 64], "a" * 64, [None],
                                ["a" * 64] * 257),
        "epoch": _or_bad(names, "e\n", "", "e e"),
        "timestamp": _or_bad(st.integers(-9 * 10**9, 9 * 10**9) | st.floats(-9e9, 9e9)
                             | st.sampled_from(["2024-03-01T12:00:00Z",
                                                "2024-03-01T13:00:00.5+01:00"]),
                             "yesterday", True, 1e20, math.inf),
    }
    for name, strat in opt.items():
        if draw(st.booleans()):
            b[name] = draw(strat)
    if draw(st.booleans()) and ("timestamp" in b or draw(st.integers(0, 9)) == 0):
        b["agent_id"] = draw(_or_bad(st.just(AGENT), AGENT.upper(), AGENT[:-1]))
    if draw(st.integers(0, 9)) == 0:
        b["signature"] = draw(st.sampled_from(["0" * 128, "0" * 127, "Z" * 128]))
    return b


def outcome(body, require_signatures=False):
    """The record, or the error as (class, message, field)."""
    try:
        rec = prepare_assertion(body, default_time_us=1_700_000_000_000_000,
                                require_signatures=require_signatures)
    except ValidationError as exc:
        return (type(exc).__name__, str(exc), exc.field)
    return rec


def _sign(b: dict) -> dict:
    if "agent_id" in b and "timestamp" in b and "signature" not in b:
        try:
            digest = bytes.fromhex(model.assertion_hash(b))
        except ValidationError:
            return b
        b = {**b, "signature": KEY.sign(digest).signature.hex()}
    return b


def oracle_hash(rec, value) -> bytes:
    """BLAKE3 of rfc8785's canonical form of the hashed object, from the record
    and the body's value (JSON-decoding ``value_json`` would turn 2.0**53 into
    an integer rfc8785 refuses)."""
    obj = {"concept_path": rec.concept_path, "predicate": rec.predicate,
           "value": value, "confidence": rec.confidence,
           "source_class": model.SOURCE_CLASSES[rec.source_class],
           "lifecycle": model.LIFECYCLES[rec.lifecycle], "timestamp": rec.timestamp}
    for name in ("source", "epoch"):
        if getattr(rec, name) is not None:
            obj[name] = getattr(rec, name)
    for name in ("parent_hash", "agent_id"):
        if getattr(rec, name) is not None:
            obj[name] = getattr(rec, name).hex()
    if rec.derived_from is not None:
        obj["derived_from"] = [h.hex() for h in rec.derived_from]
    return blake3.blake3(rfc8785.dumps(obj)).digest()


@needs_twin
@settings(max_examples=600, deadline=None)
@given(assertions(), st.booleans())
def test_prepare_assertion_compiled_equals_pure(b, required):
    b = _sign(b)
    with pure_model():
        pure = outcome(b, required)
    with compiled_model():
        comp = outcome(b, required)
    assert comp == pure, "compiled and pure prepare_assertion must agree, errors included"
    if isinstance(pure, model.AssertionRecord):
        assert pure.hash == oracle_hash(pure, b["value"]), "the hash is BLAKE3 of rfc8785's bytes"


ONE_BAD_FIELD = [
    ("concept_path", v) for v in ("a//b", "/a", "a/", " a/b", "a /b", "a/./b", "a/../b", "",
                                  "a\x00b", "a\x85", "a\ud800", "é" * 257, 5, None)
] + [
    ("predicate", v) for v in ("p\n", "", "a b", "x" * 129, "é", 5, None)
] + [
    ("confidence", v) for v in (1.0000001, -0.0001, 2, -1, True, math.nan, math.inf, "0.5",
                                None, 10**400)
] + [
    ("value", v) for v in (2**53, math.nan, "\ud800", nest(65), {1: 2}, {"a": b"x"},
                           "x" * (64 * 1024))
] + [
    ("source", v) for v in ("", "a\x00", "a\x7f", "a\x9f", "x" * 1025, "é" * 513, "a\ud800", 5)
] + [
    ("source_class", v) for v in ("Regulatory", "", 1, "x")
] + [
    ("lifecycle", v) for v in ("Approved", "", 0)
] + [
    ("parent_hash", v) for v in ("A" * 64, "a" * 63, "a" * 65, "a" * 64 + "\n", "g" * 64, 7)
] + [
    ("derived_from", v) for v in ([], ["a" * 64, "a" * 64], ["g" * 64], "a" * 64, [None],
                                  ["%064x" % i for i in range(257)], {"a" * 64})
] + [
    ("epoch", v) for v in ("e\n", "", "e e", 5)
] + [
    ("timestamp", v) for v in ("yesterday", True, 1e20, math.inf, 10**20)
] + [
    ("agent_id", v) for v in (AGENT, AGENT.upper(), AGENT[:-1])
] + [
    ("signature", v) for v in ("0" * 128, "0" * 127, "Z" * 128)
]


@needs_twin
@pytest.mark.parametrize("field,bad", ONE_BAD_FIELD, ids=range(len(ONE_BAD_FIELD)))
def test_one_bad_field_is_refused_alike_compiled_and_pure(field, bad):
    body = {"concept_path": "drugs/x", "predicate": "p", "value": {"k": [1, 2.5]},
            "confidence": 0.5, "timestamp": 1709294400, "source": "fda://x",
            "derived_from": ["b" * 64], field: bad}
    with pure_model():
        pure = outcome(body)
    with compiled_model():
        comp = outcome(body)
    assert not isinstance(pure, model.AssertionRecord)
    assert comp == pure, "the compiled pass must refuse what the pure checks refuse"


# ------------------------------------------------- the decoded Struct (HTTP)


@settings(max_examples=200, deadline=None)
@given(assertions())
def test_decoded_struct_gives_what_its_dict_gives(b):
    b = _sign(b)
    try:
        item = msgspec.json.decode(msgspec.json.encode(b), type=AssertionIn)
    except msgspec.ValidationError:
        return  # the HTTP layer refuses it before the model sees it
    assert outcome(item) == outcome(msgspec.to_builtins(item))


GOOD = {"concept_path": "drugs/x", "predicate": "p", "value": 1, "confidence": 0.5,
        "timestamp": 1709294400}
# Bodies the schema lets through and the model refuses.
SCHEMA_PASSES = [
    {"predicate": "p\n"},                 # msgspec's '$' matches before a final newline
    {"epoch": "e\n"},
    {"parent_hash": "a" * 64 + "\n"},
    {"derived_from": ["a" * 64, "a" * 64]},
    {"derived_from": ["b" * 64 + "\n"]},
    {"agent_id": "c" * 64 + "\n", "signature": "d" * 128},
    {"agent_id": AGENT},
    {"concept_path": "a//b"},
    {"concept_path": "a/ b"},
    {"concept_path": "é" * 300},          # 300 characters, 600 bytes
    {"source": "x\x85y"},
    {"source": "é" * 600},
    {"value": {"n": 2**60}},
    {"value": nest(70)},
    {"timestamp": "yesterday"},
]


@pytest.mark.parametrize("over", SCHEMA_PASSES, ids=range(len(SCHEMA_PASSES)))
def test_decoded_struct_is_refused_like_its_dict(over):
    body = {**GOOD, **over}
    item = msgspec.json.decode(msgspec.json.encode(body), type=AssertionIn)
    got = outcome(item)
    assert not isinstance(got, model.AssertionRecord), "the model must refuse it"
    assert got == outcome(msgspec.to_builtins(item)) == outcome(body)


def test_struct_built_in_python_is_still_checked():
    """A Struct made in Python skips msgspec's checks; the model's still run."""
    item = AssertionIn(concept_path="drugs/x", predicate="p", value=1, confidence=7.0)
    assert outcome(item)[2] == "confidence"
    item = AssertionIn(concept_path=5, predicate="p", value=1, confidence=0.5)
    assert outcome(item)[2] == "concept_path"
    item = AssertionIn(concept_path="a", predicate="p", value=msgspec.UNSET, confidence=0.5)
    assert outcome(item) == ("ValidationError", "value is required", "value")


# ---------------------------------------------------------------- selection


def test_pure_python_flag_selects_the_pure_twins():
    code = ("from stemedb import canonical, model; from stemedb.core import fast; "
            "print(canonical.COMPILED, fast.CANON_COMPILED, model._hashed_compiled is None, "
            "canonical.canonical_json is canonical.canonical_json_py)")
    env = {**os.environ, "STEMEDB_PURE_PYTHON": "1"}
    env.pop("STEMEDB_REQUIRE_FAST", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["False", "False", "True", "True"]


@needs_twin
def test_compiled_twin_is_chosen_when_built():
    assert canonical.COMPILED is (os.environ.get("STEMEDB_PURE_PYTHON", "0") in ("", "0"))


def test_require_fast_makes_a_missing_canon_build_fatal():
    code = ("import sys; sys.modules['stemedb.core._canon'] = None\n"
            "try:\n    import stemedb.canonical\nexcept ImportError as e:\n    print(e)")
    env = {**os.environ, "STEMEDB_REQUIRE_FAST": "1"}
    env.pop("STEMEDB_PURE_PYTHON", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "stemedb.core._canon is missing" in out
