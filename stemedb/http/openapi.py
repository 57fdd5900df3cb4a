"""``/openapi.json``: OpenAPI 3.1 built from the Structs the server decodes with.

Component schemas come from :func:`msgspec.json.schema_components` over
:mod:`stemedb.http.schemas`; query-string parameters of ``GET`` endpoints are
the properties of the same Structs the handlers convert them with.  The
operation table below only says which Struct goes where, so a field added to
a schema appears in the document without touching this file.
"""
from __future__ import annotations

import copy

import msgspec

from .. import __version__
from . import schemas as S

REF = "#/components/schemas/{name}"
_SCOPED_SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"apiKeyAuth": []}]

# path, method, operationId, summary, scope, body, query params, success (status, schema)
OPERATIONS = (
    ("/v1/assert", "post", "assert", "Store one assertion", "write",
     S.AssertionIn, None, [(201, S.PutOut, "stored and durable"),
                           (200, S.PutOut, "already stored (the stored seq)")]),
    ("/v1/assert/batch", "post", "assertBatch", "Store up to 10,000 assertions atomically",
     "write", S.BatchIn, None, [(201, S.BatchOut, "all stored and durable")]),
    ("/v1/query", "post", "query", "Resolve the assertions at a concept path through a lens",
     "read", S.QueryIn, None, [(200, S.QueryOut, "the answer, also when nothing matches")]),
    ("/v1/query", "get", "queryGet", "Query with parameters in the query string", "read",
     None, S.QueryIn, [(200, S.QueryOut, "the answer, also when nothing matches")]),
    ("/v1/assertions/{hash}", "get", "getAssertion", "One stored assertion", "read",
     None, None, [(200, S.AssertionOut, "the stored assertion")]),
    ("/v1/retract", "post", "retract", "Retract by hash, concept path or source", "write",
     S.RetractIn, None, [(200, S.RetractOut, "what was retracted")]),
    ("/v1/skeptic", "get", "skeptic", "Conflict analysis of one (concept_path, predicate)",
     "read", None, S.SkepticIn, [(200, S.SkepticOut, "claims, heaviest first")]),
    ("/v1/trace/{hash}", "get", "trace", "Provenance of an assertion", "read",
     None, None, [(200, S.TraceOut, "parents, sources, dependents")]),
    ("/v1/vote", "post", "vote", "Vote on an assertion", "write",
     S.VoteIn, None, [(201, S.VoteOut, "recorded")]),
    ("/v1/epoch", "post", "createEpoch", "Create an epoch", "admin",
     S.EpochIn, None, [(201, S.EpochOut, "created")]),
    ("/v1/agents/{agent_id}/outcome", "post", "recordOutcome",
     "Record whether an agent's claim proved accurate", "admin",
     S.OutcomeIn, None, [(201, S.OutcomeOut, "the agent's trust rank now")]),
    ("/v1/audit/queries", "get", "auditQueries", "Audited queries, newest first", "admin",
     None, S.AuditIn, [(200, S.AuditListOut, "the queries")]),
    ("/v1/audit/queries/{id}", "get", "auditQuery", "One audited query", "admin",
     None, None, [(200, S.AuditEntryOut, "the query")]),
    ("/v1/health", "get", "health", "Liveness, counts and WAL state", None,
     None, None, [(200, S.HealthOut, "healthy")]),
)

_PATH_PARAMS = {
    "hash": {"type": "string", "pattern": S.HASH_PATTERN},
    "agent_id": {"type": "string", "pattern": S.HASH_PATTERN},
    "id": {"type": "string", "minLength": 1, "maxLength": 256},
}

_ERRORS = {
    400: "malformed JSON, a missing, unknown or out-of-range field, a bad hash or signature, "
         "an unknown reference",
    401: "keys are configured and the request has none, or a wrong one",
    403: "the key lacks the scope",
    404: "unknown path or hash",
    409: "duplicate epoch name (conflict), or a vote whose agent already has one as new or "
         "newer on that assertion (stale_vote)",
    413: "body over the limit (16 MiB for batches, 1 MiB otherwise)",
    415: "Content-Type missing or not JSON on a request with a body",
    429: "rate limited or circuit open; Retry-After says when to retry",
    503: "writes stopped after a storage fault, or the server is starting",
}


def _error(status: int) -> dict:
    out = {"description": _ERRORS[status],
           "content": {"application/json": {"schema": {"$ref": REF.format(name="ErrorOut")}}}}
    if status == 429:
        out["headers"] = {"Retry-After": {"description": "whole seconds, at least 1",
                                          "schema": {"type": "integer", "minimum": 1}}}
    return out


def _query_params(struct, components: dict) -> list:
    schema = components[struct.__name__]
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        prop = copy.deepcopy(prop)
        # A query string cannot say null: drop that branch of Optional[...] fields.
        if "anyOf" in prop:
            branches = [b for b in prop["anyOf"] if b.get("type") != "null"]
            if len(branches) == 1:
                rest = {k: v for k, v in prop.items() if k != "anyOf"}
                prop = {**branches[0], **rest}
            else:
                prop["anyOf"] = branches
        if prop.get("default", 0) is None:
            del prop["default"]
        params.append({"name": name, "in": "query", "required": name in required,
                       "schema": prop})
    return params


def build_openapi() -> dict:
    _, components = msgspec.json.schema_components(S.REQUEST_TYPES + S.RESPONSE_TYPES,
                                                   ref_template=REF)
    paths: dict = {}
    for path, method, op_id, summary, scope, body, query, successes in OPERATIONS:
        op: dict = {"operationId": op_id, "summary": summary, "responses": {}}
        params = [{"name": p, "in": "path", "required": True, "schema": _PATH_PARAMS[p]}
                  for p in _path_names(path)]
        if query is not None:
            params += _query_params(query, components)
        if params:
            op["parameters"] = params
        if body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": REF.format(name=body.__name__)}}}}
        for status, schema, desc in successes:
            op["responses"][str(status)] = {"description": desc, "content": {
                "application/json": {"schema": {"$ref": REF.format(name=schema.__name__)}}}}
            if op_id == "assert":  # what a client does next with the hash it got
                op["responses"][str(status)]["links"] = {
                    name: {"operationId": target, "parameters": {"hash": "$response.body#/hash"}}
                    for name, target in (("GetAssertion", "getAssertion"), ("Trace", "trace"))}
        errors = [503]
        if scope is not None:
            errors += [401, 403, 429]
            op["security"] = _SCOPED_SECURITY
            op["x-scope"] = scope
        else:
            op["security"] = []
        if body is not None or query is not None or params:
            errors.append(400)
        if body is not None:
            errors += [413, 415]
        if "{" in path or op_id in ("retract", "vote"):
            errors.append(404)
        if op_id in ("createEpoch", "vote"):
            errors.append(409)
        for status in sorted(set(errors)):
            op["responses"][str(status)] = _error(status)
        if query is not None:
            # gunicorn refuses a request line over limit_request_line itself,
            # before the app, with an HTML body.
            op["responses"]["414"] = {
                "description": "request line over 8190 bytes, refused by gunicorn (HTML body); "
                               "send long queries as POST /v1/query",
                "content": {"text/html": {"schema": {"type": "string"}}}}
        if op_id == "health":
            op["responses"]["503"] = {"description": "degraded (storage fault) or starting",
                                      "content": {"application/json": {"schema": {
                                          "$ref": REF.format(name="HealthOut")}}}}
        paths.setdefault(path, {})[method] = op
    paths["/metrics"] = {"get": {
        "operationId": "metrics", "summary": "Prometheus metrics (stemedb_*)",
        "security": [], "responses": {
            "200": {"description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            "401": _error(401), "403": _error(403)}}}
    paths["/openapi.json"] = {"get": {
        "operationId": "openapi", "summary": "This document", "security": [],
        "responses": {"200": {"description": "OpenAPI 3.1",
                              "content": {"application/json": {"schema": {"type": "object"}}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "StemeDB", "version": __version__,
                 "description": "Immutable assertions that may disagree, resolved at read "
                                "time by lenses. Errors are {\"error\": {\"code\", "
                                "\"message\", \"field\"}}."},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "Authorization: Bearer <key>"},
                "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
    }


def _path_names(path: str) -> list[str]:
    return [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]


def openapi_bytes() -> bytes:
    return msgspec.json.encode(build_openapi())
