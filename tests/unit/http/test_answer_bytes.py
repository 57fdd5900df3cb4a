"""POST /v1/query answers with exactly the bytes ``QueryResult.to_dict()``
encodes to, now that the answer is built as ``AssertionJSON`` Structs
(stemedb/http/answer.py): active, retracted, revised, derived, signed and
epoch assertions, values of every JSON kind, every lens (layered nests its
winners under ``layers``), pages with a cursor."""
from __future__ import annotations

import pytest
from nacl.signing import SigningKey

from stemedb.core.lens import LENSES
from stemedb.http.answer import AssertionJSON, assertion_json, query_bytes, query_doc
from stemedb.http.resources import _encoder
from stemedb.model import assertion_hash

from .conftest import body

KEY = SigningKey(bytes([7]) * 32)
AGENT = KEY.verify_key.encode().hex()
VALUES = ["rare", "", "é\u2028\U0001F600\"\\\n\x01", 0, -5, 2**53 - 1, 1.5, 1e-7, 1e21, -0.25,
          True, False, None, [], {}, [1, "a", None, {"b": [2.5]}], {"z": 1, "a": {"é": [0.1]}}]


def _signed(b):
    b = dict(b, agent_id=AGENT)
    b["signature"] = KEY.sign(bytes.fromhex(assertion_hash(b))).signature.hex()
    return b


@pytest.fixture
def filled(store):
    roots = [store.put({**body(timestamp=1_700_000_000 + i,
                               confidence=round(0.05 + i / 40, 3)), "value": v}).hash
             for i, v in enumerate(VALUES)]
    store.put(body(predicate="other", value="x", parent_hash=roots[0],
                   source="pubmed://1", timestamp=1_700_000_100))
    store.put(_signed(body(value="signed", derived_from=roots[:3], timestamp=1_700_000_200,
                           lifecycle="approved")))
    store.put(body(value="no source", source=None, timestamp=1_700_000_300))
    store.create_epoch("e1")
    store.put(body(value="in an epoch", epoch="e1", timestamp=1_700_000_400))
    store.retract(hash=roots[1], reason="wrong", by="tester")
    store.retract(hash=roots[2], reason="also wrong")
    return store


def _same(result):
    want = _encoder.encode(result.to_dict())
    assert _encoder.encode(query_doc(result)) == want
    assert query_bytes(result) == want     # the whole document (compiled: one call)


@pytest.mark.parametrize("lens", sorted(LENSES))
def test_every_lens_answer_is_byte_for_byte_the_dict_form(filled, lens):
    for pred in (None, "gastroparesis_risk", "other"):
        for extra in ({}, {"include_retracted": True}, {"lifecycle": "any"},
                      {"limit": 3}, {"include_descendants": True}):
            r = filled.query("drugs/semaglutide", predicate=pred, lens=lens, **extra)
            _same(r)
            if r.next_cursor:
                _same(filled.query("drugs/semaglutide", predicate=pred, lens=lens,
                                   cursor=r.next_cursor, **extra))


def test_retracted_and_signed_assertions_carry_every_field(filled):
    r = filled.query("drugs/semaglutide", lens="recency", include_retracted=True,
                     lifecycle="any", limit=1000)
    kinds = {(a.status, a.agent_id is not None, a.derived_from is not None,
              a.parent_hash is not None, a.source is None) for a in r.assertions}
    assert ("retracted", False, False, False, False) in kinds
    assert ("active", True, True, False, False) in kinds
    assert ("active", False, False, True, False) in kinds
    assert ("active", False, False, False, True) in kinds
    for a in r.assertions:
        assert _encoder.encode(assertion_json(a)) == _encoder.encode(a.to_dict())
    _same(r)


def test_a_value_read_already_is_used_as_it_is(filled):
    a = filled.query("drugs/semaglutide", predicate="gastroparesis_risk").assertions[0]
    a.value  # noqa: B018 - decoded and kept on the assertion
    assert assertion_json(a).value is a._value


def test_the_http_answer_is_the_dict_form(client, filled):
    for lens in ("consensus", "layered", "recency"):
        r = client.simulate_post("/v1/query", json={
            "concept_path": "drugs/semaglutide", "lens": lens, "include_retracted": True,
            "lifecycle": "any"})
        assert r.status_code == 200
        want = filled.query("drugs/semaglutide", lens=lens, include_retracted=True,
                            lifecycle="any")
        assert r.content == _encoder.encode(want.to_dict())


def test_other_results_go_through_their_own_to_dict():
    class Other:
        def to_dict(self):
            return {"x": 1}
    assert query_doc(Other()) == {"x": 1}
    assert "retraction" not in _encoder.encode(AssertionJSON(
        "h", 1, "p", "q", None, 0.5, None, "x", "y", None, None, None, "t", None, None, "t",
        "active")).decode()
