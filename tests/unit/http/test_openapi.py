"""/openapi.json: OpenAPI 3.1, every endpoint, built from the validating schemas."""
from __future__ import annotations

import re

from stemedb.http.resources import ROUTES


def doc(client):
    r = client.simulate_get("/openapi.json")
    assert r.status_code == 200
    return r.json


def test_is_openapi_31_with_every_endpoint(client):
    d = doc(client)
    assert d["openapi"].startswith("3.1")
    for path, _ in ROUTES:
        assert path in d["paths"], path
    assert set(d["paths"]["/v1/query"]) == {"get", "post"}
    assert "/openapi.json" in d["paths"]


def test_every_ref_resolves(client):
    d = doc(client)
    text = str(d)
    for name in set(re.findall(r"#/components/schemas/(\w+)", text)):
        assert name in d["components"]["schemas"], name


def test_request_schemas_forbid_unknown_fields(client):
    schemas = doc(client)["components"]["schemas"]
    for name in ("AssertionIn", "BatchIn", "QueryIn", "RetractIn", "VoteIn", "EpochIn",
                 "OutcomeIn"):
        assert schemas[name]["additionalProperties"] is False, name
    a = schemas["AssertionIn"]
    assert set(a["required"]) == {"concept_path", "predicate", "value", "confidence"}
    assert a["properties"]["confidence"]["maximum"] == 1.0


def test_get_query_parameters_come_from_the_same_schema(client):
    from stemedb.http.schemas import QueryIn
    params = doc(client)["paths"]["/v1/query"]["get"]["parameters"]
    assert {p["name"] for p in params} == set(QueryIn.__struct_fields__)
    assert next(p for p in params if p["name"] == "concept_path")["required"] is True


def test_validates_as_openapi():
    from stemedb.http.openapi import build_openapi
    try:
        from openapi_spec_validator import validate
    except ImportError:  # schemathesis brings it in most installs
        import pytest
        pytest.skip("openapi-spec-validator is not installed")
    validate(build_openapi())
