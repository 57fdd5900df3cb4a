"""The assertion model: every field rule of the contract's table (each error
names its field), the content hash, canonical JSON and signatures."""
from __future__ import annotations

import blake3
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from stemedb.canonical import canonical_json
from stemedb.errors import InvalidSignature, SignatureRequired, ValidationError
from stemedb.model import (
    LIFECYCLES, SCHEME_CLASS, SOURCE_CLASSES, infer_source_class, prepare_assertion)

H = "ab" * 32
H2 = "cd" * 32


def base(**over):
    b = {"concept_path": "drugs/semaglutide", "predicate": "gastroparesis_risk",
         "value": "rare", "confidence": 0.9, "timestamp": 1709294400}
    b.update(over)
    return {k: v for k, v in b.items() if v is not None}


def rejects(field, **over):
    """Assert the body with ``over`` is refused with ``field`` at fault."""
    b = base()
    for k, v in over.items():
        if v is _DROP:
            b.pop(k, None)
        else:
            b[k] = v
    with pytest.raises(ValidationError) as exc:
        prepare_assertion(b)
    assert exc.value.field == field, (
        f"the error must name the field at fault ({field}), got {exc.value.field}: {exc.value}")
    return exc.value


_DROP = object()


# ------------------------------------------------------------------ required fields

@pytest.mark.parametrize("name", ["concept_path", "predicate", "value", "confidence"])
def test_required_fields_are_named_when_missing(name):
    err = rejects(name, **{name: _DROP})
    assert "required" in str(err), "a missing field's message must say it is required"


def test_unknown_field_is_refused_and_named():
    rejects("colour", colour="red")


@pytest.mark.parametrize("not_a_dict", [[], "x", None, 3])
def test_body_must_be_an_object(not_a_dict):
    with pytest.raises(ValidationError):
        prepare_assertion(not_a_dict)


# ------------------------------------------------------------------ concept_path

@pytest.mark.parametrize("path", [
    "", "/drugs", "drugs/", "drugs//x", "drugs/./x", "drugs/../x", ".", "..",
    " drugs/x", "drugs /x", "drugs/x ", "drugs/\u00a0x", "drugs/x\t",
    "drugs/a\x00b", "drugs/a\x1fb", "drugs/a\x7fb", "drugs/a\x85b", "drugs/a\x9fb",
    "a" * 513, "é" * 257, 5, None, ["drugs"],
])
def test_concept_path_rules(path):
    rejects("concept_path", concept_path=path if path is not None else _DROP)


@pytest.mark.parametrize("path", [
    "a", "a" * 512, "é" * 256, "drugs/semaglutide", "a/b c/d", "Drugs/Semaglutide",
    "x/..a/a..", "source/bad_source", "日本/薬",
])
def test_concept_path_accepted(path):
    r = prepare_assertion(base(concept_path=path))
    assert r.concept_path == path


def test_concept_path_is_stored_byte_for_byte():
    nfc, nfd = "caf\u00e9/x", "cafe\u0301/x"
    a, b = prepare_assertion(base(concept_path=nfc)), prepare_assertion(base(concept_path=nfd))
    assert a.concept_path == nfc and b.concept_path == nfd, "no Unicode normalization"
    assert a.hash != b.hash, "NFC and NFD paths are different paths"
    up = prepare_assertion(base(concept_path="Drugs/X"))
    assert up.concept_path == "Drugs/X" and up.hash != prepare_assertion(
        base(concept_path="drugs/x")).hash, "no case folding"


# ------------------------------------------------------------------ predicate

@pytest.mark.parametrize("pred", ["", "a" * 129, "has space", "é", "a/b", "a\n", 7, None])
def test_predicate_rules(pred):
    rejects("predicate", predicate=pred if pred is not None else _DROP)


@pytest.mark.parametrize("pred", ["a", "a" * 128, "A-z_0.9:x", "-", "gastroparesis_risk"])
def test_predicate_accepted(pred):
    assert prepare_assertion(base(predicate=pred)).predicate == pred


# ------------------------------------------------------------------ value

@pytest.mark.parametrize("value", [2**53, -(2**53), 10**20, float("nan"), float("inf"),
                                   -float("inf"), {1: "x"}, {"a": {1, 2}}, b"x", [object()]])
def test_value_rules(value):
    rejects("value", value=value)


@pytest.mark.parametrize("value", [None, 0, 2**53 - 1, -(2**53 - 1), 1.5, "", [], {},
                                   {"a": [1, {"b": None}]}, True, 1e300])
def test_value_accepted(value):
    r = prepare_assertion({**base(), "value": value})
    assert r.value_json == rfc8785.dumps(value), "the stored value is its canonical JSON"


def test_value_size_limit_is_64_kib_of_canonical_json():
    # '"' + n chars + '"' is n + 2 bytes
    ok = prepare_assertion(base(value="x" * (65536 - 2)))
    assert len(ok.value_json) == 65536
    rejects("value", value="x" * (65536 - 1))


def test_null_value_is_a_value_not_a_missing_field():
    assert prepare_assertion({**base(), "value": None}).value_json == b"null"


# ------------------------------------------------------------------ confidence

@pytest.mark.parametrize("c", [-0.0001, 1.0001, 2, -1, float("nan"), float("inf"), "0.5",
                               True, None, [0.5]])
def test_confidence_rules(c):
    rejects("confidence", confidence=c if c is not None else _DROP)


@pytest.mark.parametrize("c", [0, 1, 0.0, 1.0, 0.5, 5e-324])
def test_confidence_accepted_inclusive(c):
    assert prepare_assertion(base(confidence=c)).confidence == float(c)


# ------------------------------------------------------------------ source and source_class

@pytest.mark.parametrize("src", ["", "x" * 1025, "fda://a\x00", "a\x7f", "a\x9f", 5])
def test_source_rules(src):
    rejects("source", source=src)


def test_source_at_the_byte_limit_is_accepted():
    assert prepare_assertion(base(source="é" * 512)).source == "é" * 512


@pytest.mark.parametrize("scheme,cls", sorted(SCHEME_CLASS.items()))
def test_source_class_inferred_from_every_scheme(scheme, cls):
    for s in (scheme, scheme.upper()):
        r = prepare_assertion(base(source=f"{s}://x/1"))
        assert SOURCE_CLASSES[r.source_class] == cls, f"{s}: is {cls} (case-insensitive)"


@pytest.mark.parametrize("src", ["source/bad_source", "https://example.org", "nope", "1fda://x"])
def test_unknown_or_missing_scheme_is_anecdotal(src):
    assert SOURCE_CLASSES[prepare_assertion(base(source=src)).source_class] == "anecdotal"
    assert SOURCE_CLASSES[prepare_assertion(base()).source_class] == "anecdotal", \
        "no source at all is anecdotal"


def test_the_contract_table_of_schemes():
    table = {"regulatory": "fda ema pmda mhra who rfc ietf",
             "clinical": "nct clinicaltrials pubmed doi peer",
             "observational": "medrxiv biorxiv cohort ehr", "expert": "expert guideline wiki code",
             "community": "faers vaers forum community"}
    for cls, schemes in table.items():
        for s in schemes.split():
            assert infer_source_class(f"{s}:x") == cls, f"{s} must infer {cls}"


def test_explicit_source_class_wins_over_inference():
    r = prepare_assertion(base(source="fda://x", source_class="community"))
    assert SOURCE_CLASSES[r.source_class] == "community"


@pytest.mark.parametrize("v", ["Regulatory", "official", "", 0])
def test_source_class_rules(v):
    rejects("source_class", source_class=v)


# ------------------------------------------------------------------ lifecycle

def test_lifecycle_default_and_values():
    assert LIFECYCLES[prepare_assertion(base()).lifecycle] == "proposed"
    for lc in ("proposed", "under_review", "approved", "deprecated", "rejected"):
        assert LIFECYCLES[prepare_assertion(base(lifecycle=lc)).lifecycle] == lc


@pytest.mark.parametrize("v", ["Approved", "done", "", 1])
def test_lifecycle_rules(v):
    rejects("lifecycle", lifecycle=v)


# ------------------------------------------------------------------ hashes and references

@pytest.mark.parametrize("v", ["AB" * 32, "ab" * 31, "ab" * 33, "zz" * 32, 5])
def test_parent_hash_rules(v):
    rejects("parent_hash", parent_hash=v)


def test_derived_from_rules():
    rejects("derived_from", derived_from=[])
    rejects("derived_from", derived_from=H)
    rejects("derived_from", derived_from=[H, H])
    rejects("derived_from", derived_from=[f"{i:064x}" for i in range(257)])
    rejects("derived_from[1]", derived_from=[H, "nothex"])
    ok = prepare_assertion(base(derived_from=[f"{i:064x}" for i in range(256)]))
    assert len(ok.derived_from) == 256, "256 references are allowed"


@pytest.mark.parametrize("v", ["", "a b", "e/1", "x" * 129, 3])
def test_epoch_name_rules(v):
    rejects("epoch", epoch=v)


# ------------------------------------------------------------------ timestamp

@pytest.mark.parametrize("v", ["yesterday", "2024-03-01", "2024-03-01T12:00:00", True,
                               float("nan"), [], "10000-01-01T00:00:00Z", 1e15])
def test_timestamp_rules(v):
    rejects("timestamp", timestamp=v)


def test_absent_timestamp_is_the_receive_time():
    r = prepare_assertion(base(timestamp=None), default_time_us=123_000_000)
    assert r.timestamp == 123_000_000


# ------------------------------------------------------------------ agent and signature

def test_agent_id_and_signature_rules():
    rejects("agent_id", agent_id="AB" * 32, signature="00" * 64)
    rejects("signature", agent_id=H, signature="0" * 127)
    e = rejects("signature", agent_id=H)
    assert isinstance(e, InvalidSignature) and e.code == "invalid_signature"
    e = rejects("agent_id", signature="00" * 64)
    assert isinstance(e, InvalidSignature), "a signature without agent_id is invalid_signature"


def _hashed_object(b: dict) -> dict:
    """The contract's hashed object, built independently of the model."""
    from stemedb.timeutil import parse_time
    obj = {k: b[k] for k in ("concept_path", "predicate", "value", "confidence")}
    src = b.get("source")
    obj["source_class"] = b.get("source_class") or infer_source_class(src)
    obj["lifecycle"] = b.get("lifecycle", "proposed")
    obj["timestamp"] = parse_time(b["timestamp"], "timestamp")
    for k in ("source", "parent_hash", "derived_from", "epoch", "agent_id"):
        if k in b:
            obj[k] = b[k]
    return obj


def reference_hash(b: dict) -> bytes:
    return blake3.blake3(rfc8785.dumps(_hashed_object(b))).digest()


def test_signed_assertion_verifies_and_signature_is_not_hashed():
    key = SigningKey(bytes(range(32)))
    agent = key.verify_key.encode().hex()
    b = base(agent_id=agent, source="pubmed://1")
    digest = reference_hash(b)
    sig = key.sign(digest).signature.hex()
    r = prepare_assertion({**b, "signature": sig})
    assert r.hash == digest, "the hash covers agent_id but not the signature"
    assert r.signature.hex() == sig and r.agent_id.hex() == agent
    other = SigningKey(bytes(range(1, 33))).sign(digest).signature.hex()
    e = rejects("signature", agent_id=agent, source="pubmed://1", signature=other)
    assert e.code == "invalid_signature", "a signature by another key does not verify"


def test_require_signatures_refuses_unsigned():
    with pytest.raises(SignatureRequired) as exc:
        prepare_assertion(base(), require_signatures=True)
    assert exc.value.field == "signature" and exc.value.code == "signature_required"


# ------------------------------------------------------------------ the hash

@pytest.mark.parametrize("extra", [
    {}, {"source": "fda://label/2024-03"}, {"source": "x", "source_class": "expert"},
    {"lifecycle": "approved"}, {"parent_hash": H}, {"derived_from": [H, H2]},
    {"epoch": "e1"}, {"value": {"b": [1, 2.5, None], "a": "é\u2028"}}, {"value": None},
    {"confidence": 1e-7}, {"concept_path": "日本/\U0001F600"},
])
def test_hash_is_blake3_of_jcs_of_the_hashed_object(extra):
    b = {**base(), **extra}
    assert prepare_assertion(b).hash == reference_hash(b), (
        "hash = BLAKE3-256 of RFC 8785 JSON of the resolved fields, absent ones left out")


@pytest.mark.parametrize("t", [1709294400, 1709294400.0, "2024-03-01T12:00:00Z",
                               "2024-03-01T12:00:00.000000Z", "2024-03-01T13:00:00+01:00",
                               "2024-03-01T12:00:00+00:00"])
def test_equal_instants_hash_the_same(t):
    assert prepare_assertion(base(timestamp=t)).hash == \
        prepare_assertion(base(timestamp="2024-03-01T12:00:00Z")).hash, \
        "1709294400 and 2024-03-01T12:00:00Z are the same instant and hash the same"


def test_fractional_seconds_are_microseconds():
    assert prepare_assertion(base(timestamp=1709294400.25)).timestamp == 1709294400_250000


def test_resolved_defaults_hash_like_explicit_ones():
    a = prepare_assertion(base(source="fda://x"))
    b = prepare_assertion(base(source="fda://x", source_class="regulatory", lifecycle="proposed"))
    assert a.hash == b.hash, "source_class and lifecycle are hashed resolved"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53 - 1), 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=6), kids, max_size=5),
    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_canonical_json_equals_rfc8785(v):
    assert canonical_json(v) == rfc8785.dumps(v), "canonical_json must be RFC 8785 exactly"


@settings(max_examples=150, deadline=None)
@given(value=json_values,
       conf=st.floats(0, 1),
       source=st.none() | st.sampled_from(["fda://a", "forum:x", "source/x", "é:1"]),
       lifecycle=st.none() | st.sampled_from(LIFECYCLES),
       # within +/-(2^53-1) microseconds (years 1685..2255), where JCS carries the
       # integer exactly; see the report on timestamps beyond that
       ts=st.integers(-9 * 10**9, 9 * 10**9) | st.floats(-9e9, 9e9),
       parent=st.none() | st.just(H), derived=st.none() | st.lists(
           st.sampled_from([H, H2, "ef" * 32]), min_size=1, max_size=3, unique=True),
       epoch=st.none() | st.just("e.1"))
def test_hash_matches_reference_for_any_body(value, conf, source, lifecycle, ts, parent, derived,
                                            epoch):
    b = base(value=value, confidence=conf, source=source, lifecycle=lifecycle, timestamp=ts,
             parent_hash=parent, derived_from=derived, epoch=epoch)
    b["value"] = value  # base() drops None; a null value is a value
    assert prepare_assertion(b).hash == reference_hash(b)
