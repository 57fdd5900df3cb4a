"""POST /v1/assert/batch decodes its items once, leniently (schemas.AssertionLax),
and leaves the value checks to the record builder: every answer must be the
one the schema-first path gives (BatchIn, then the builder): the same status,
code, field and message for every kind of bad item, and the same records for
good ones."""
from __future__ import annotations

import json

import msgspec
import pytest
from nacl.signing import SigningKey

from stemedb import model
from stemedb.core.store import open_store
from stemedb.http import resources
from stemedb.http import schemas as S
from stemedb.model import assertion_hash

from .conftest import body

H = "0" * 64


def _schema_first(data: bytes) -> list:
    """The path before the lax decode: BatchIn decides first."""
    return resources.decode(data, S.BatchIn).assertions


@pytest.fixture(params=[False, True], ids=["unsigned-ok", "signatures-required"])
def pair(make_client, tmp_path, monkeypatch, request):
    """Two apps on two stores: the lax path (as shipped) and the schema-first
    one, with and without STEMEDB_REQUIRE_SIGNATURES."""
    lax = make_client(require_signatures=request.param)
    other = open_store(str(tmp_path / "other"), durability="none")
    strict = make_client(store_=other, data_dir=str(tmp_path / "other"),
                         require_signatures=request.param)
    strict_app = strict.app_

    def post(items, raw=None):
        data = raw if raw is not None else json.dumps({"assertions": items}).encode()
        a = lax.simulate_post("/v1/assert/batch", body=data,
                              headers={"Content-Type": "application/json"})
        with monkeypatch.context() as m:
            m.setattr(resources, "decode_batch", _schema_first)
            b = strict.simulate_post("/v1/assert/batch", body=data,
                                     headers={"Content-Type": "application/json"})
        return a, b
    yield post
    del strict_app
    other.close()


BAD = [
    ("concept_path", ""), ("concept_path", "a" * 600), ("concept_path", "\u00e9" * 300),
    ("concept_path", "a//b"), ("concept_path", " a/b"), ("concept_path", "a/./b"),
    ("concept_path", "a\x01"), ("concept_path", 5), ("concept_path", None),
    ("predicate", ""), ("predicate", "bad name"), ("predicate", "x" * 129),
    ("predicate", "p\n"), ("predicate", 3),
    ("confidence", 1.5), ("confidence", -0.1), ("confidence", "0.5"), ("confidence", True),
    ("confidence", None), ("confidence", 1e400),
    ("source", ""), ("source", "x" * 1025), ("source", "\u00e9" * 600), ("source", "a\x01b"),
    ("source", 3),
    ("source_class", "nope"), ("source_class", 1), ("lifecycle", "nope"), ("lifecycle", ""),
    ("parent_hash", "abc"), ("parent_hash", "A" * 64), ("parent_hash", H + "\n"),
    ("parent_hash", H),                                        # unknown reference
    ("derived_from", []), ("derived_from", [H, H]), ("derived_from", ["zz"]),
    ("derived_from", "x"), ("derived_from", [H] * 257), ("derived_from", [H]),
    ("epoch", "bad epoch"), ("epoch", "no_such_epoch"), ("epoch", ""),
    ("timestamp", "not a time"), ("timestamp", 1e20), ("timestamp", -1e12),
    ("timestamp", 253402300800), ("timestamp", 10_000_000_000), ("timestamp", True),
    ("timestamp", "2024-02-30T00:00:00Z"), ("timestamp", [1]),
    ("agent_id", "a" * 64), ("signature", "b" * 128), ("agent_id", "xyz"),
    ("value", "x" * 70_000), ("value", 2 ** 60), ("value", {"a": [1, {"b": 2 ** 54}]}),
]


@pytest.mark.parametrize("field,value", BAD, ids=[f"{f}={str(v)[:20]!r}" for f, v in BAD])
@pytest.mark.parametrize("position", [0, 2])
def test_a_bad_item_gets_the_schema_first_answer(pair, field, value, position):
    items = [body(value=i) for i in range(3)]
    items[position] = {**items[position], field: value}
    a, b = pair(items)
    assert (a.status_code, a.json) == (b.status_code, b.json), \
        f"{field}={value!r}: the lax path answered otherwise than BatchIn first"
    assert a.status_code == 400, f"{field}={value!r} must be refused"


KEY = SigningKey(bytes([9]) * 32)
AGENT = KEY.verify_key.encode().hex()


def _signed(b, good=True):
    b = dict(b, agent_id=AGENT)
    sig = KEY.sign(bytes.fromhex(assertion_hash(b))).signature.hex()
    b["signature"] = sig if good else sig[:-2] + ("00" if sig[-2:] != "00" else "11")
    return b


@pytest.mark.parametrize("case", ["all signed", "one bad signature", "one unsigned",
                                  "bad signature and schema error"])
def test_signed_batches_get_the_schema_first_answer(pair, case):
    items = [_signed(body(value=i)) for i in range(3)]
    if case == "one bad signature":
        items[1] = _signed(body(value=1), good=False)
    elif case == "one unsigned":
        items[2] = body(value=2)
    elif case == "bad signature and schema error":
        items[0] = _signed(body(value=0), good=False)
        items[2] = {**items[2], "signature": "X" * 128}
    a, b = pair(items)
    assert (a.status_code, a.json) == (b.status_code, b.json), case
    if case == "all signed":
        assert a.status_code == 201
        assert [r["hash"] for r in a.json["results"]] == [r["hash"] for r in b.json["results"]]


def test_a_builder_error_before_a_schema_error_answers_the_schema_error(pair):
    # item 0 breaks only the builder's check (bytes, not characters), item 1
    # the schema's range: BatchIn decided first, so its error is the answer
    items = [body(concept_path="\u00e9" * 300), body(confidence=2.0)]
    a, b = pair(items)
    assert (a.status_code, a.json) == (b.status_code, b.json)
    assert a.json["error"]["field"] == "assertions[1].confidence"


@pytest.mark.parametrize("raw", [
    b'{"assertions": []}', b'{"assertions": {}}', b'{"assertions": [1]}', b'[]', b'{}',
    b'{"assertions": [{}]}', b'{"assertions": [], "x": 1}', b'{"assertions": [{"concept_path"',
    b'{"assertions": [{"concept_path": "a", "predicate": "p", "value": 1, "confidence": 0.5, '
    b'"extra": 1}]}',
    b'{"assertions": [{"concept_path": "a", "predicate": "p", "value": 1}]}',
    b'{"assertions": [{"concept_path": "a", "predicate": "p", "value": 1, "confidence": 0.5, '
    b'"source": null, "timestamp": null}]}',
    b'\xff\xfe',
])
def test_raw_bodies_get_the_schema_first_answer(pair, raw):
    a, b = pair(None, raw=raw)
    assert (a.status_code, a.json if a.status_code >= 400 else None) == \
        (b.status_code, b.json if b.status_code >= 400 else None)


def test_good_batches_store_the_same_records(pair):
    items = [body(value=0), body(value=1, timestamp=1_700_000_000),
             body(value=2, timestamp=1_700_000_000.25), body(value=3, source=None),
             body(value={"k": [1, 2.5, None]}, lifecycle="approved", source_class="expert"),
             body(value=5, epoch=None)]
    a, b = pair(items)
    if a.status_code == 400:    # the signatures-required server: unsigned items are refused
        assert (b.status_code, b.json) == (400, a.json)
        assert a.json["error"]["code"] == "signature_required"
        return
    assert a.status_code == b.status_code == 201
    assert [r["hash"] for r in a.json["results"]] == [r["hash"] for r in b.json["results"]]


def test_the_lax_item_has_the_schema_items_fields_in_the_builders_order():
    assert S.AssertionLax.__struct_fields__ == S.AssertionIn.__struct_fields__
    assert S.AssertionLax.__struct_fields__ == model._FIELD_ORDER
    # the compiled builder reads such a struct in one call (its fast path)
    assert model._struct_fields(S.AssertionLax) == model._FIELD_ORDER


def test_the_lax_decode_refuses_only_what_the_schema_refuses():
    """Every body BatchIn takes, BatchLax takes with the same values."""
    items = [body(value=i, timestamp=t) for i, t in
             enumerate(["2024-03-01T12:00:00Z", 1_700_000_000, 1.5, None])]
    data = json.dumps({"assertions": items}).encode()
    strict = resources.decode(data, S.BatchIn).assertions
    lax = resources.decode_batch(data)
    assert all(type(x) is S.AssertionLax for x in lax)
    assert [msgspec.structs.astuple(x) for x in lax] == \
        [msgspec.structs.astuple(x) for x in strict]
