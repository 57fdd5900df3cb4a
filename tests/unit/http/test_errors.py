"""Every row of the contract's error table, and the error body's shape."""
from __future__ import annotations

import errno
import json

import falcon.testing
import pytest

from stemedb.config import Settings
from stemedb.core.fileio import File, FileSystem
from stemedb.core.store import open_store
from stemedb.http.app import create_app
from stemedb.http.handle import StoreHandle

from .conftest import NO_LIMITS, auth, body


def is_error(r, status, code=None, field=None):
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json["error"]
    assert set(err) <= {"code", "message", "field"} and err["code"] and err["message"]
    if code is not None:
        assert err["code"] == code, err
    if field is not None:
        assert err.get("field") == field, err
    assert r.headers["content-type"].startswith("application/json")
    return err


def test_400_malformed_json(client):
    r = client.simulate_post("/v1/assert", body='{"concept_path": ',
                             headers={"Content-Type": "application/json"})
    is_error(r, 400, "malformed_json")
    r = client.simulate_post("/v1/assert", body=b"\xff\xfe{}",
                             headers={"Content-Type": "application/json"})
    is_error(r, 400)
    r = client.simulate_post("/v1/assert", body="[" * 50_000 + "]" * 50_000,
                             headers={"Content-Type": "application/json"})
    is_error(r, 400)


@pytest.mark.parametrize("mutation,field", [
    ({"confidence": None}, "confidence"),          # missing
    ({"color": "red"}, "color"),                   # unknown
    ({"confidence": 1.01}, "confidence"),          # out of range
    ({"confidence": "high"}, "confidence"),        # wrong type
    ({"predicate": "has space"}, "predicate"),
    ({"concept_path": "/leading"}, "concept_path"),
    ({"concept_path": "a/../b"}, "concept_path"),
    ({"value": 2 ** 60}, "value"),
    ({"timestamp": "yesterday"}, "timestamp"),
    ({"timestamp": 1.7976931348623157e308}, "timestamp"),   # overflowed to inf once
    ({"timestamp": -10 ** 30}, "timestamp"),
    ({"parent_hash": "ABC"}, "parent_hash"),
    ({"derived_from": []}, "derived_from"),
    ({"lifecycle": "final"}, "lifecycle"),
])
def test_400_names_the_field(client, mutation, field):
    b = body()
    for k, v in mutation.items():
        if v is None:
            b.pop(k)
        else:
            b[k] = v
    is_error(client.simulate_post("/v1/assert", json=b), 400, field=field)


def test_400_huge_times_in_queries(client):
    for name in ("as_of", "known_at", "since"):
        r = client.simulate_post("/v1/query", json={"concept_path": "a", name: 1.7e308})
        is_error(r, 400, field=name)
        r = client.simulate_get("/v1/query", params={"concept_path": "a", name: "1e300"})
        is_error(r, 400, field=name)


def test_400_signature_errors(client):
    is_error(client.simulate_post("/v1/assert", json=body(signature="ab" * 64)), 400,
             "invalid_signature")
    is_error(client.simulate_post("/v1/assert", json=body(signature="zz")), 400,
             "invalid_signature", "signature")
    is_error(client.simulate_post("/v1/assert", json=body(agent_id="ab" * 32,
                                                          signature="cd" * 64)),
             400, "invalid_signature")


def test_400_unknown_reference(client):
    is_error(client.simulate_post("/v1/assert", json=body(parent_hash="a" * 64)), 400,
             "unknown_reference", "parent_hash")


def test_401_403(make_client, keys_file):
    c = make_client(api_keys_file=keys_file)
    is_error(c.simulate_post("/v1/assert", json=body()), 401, "unauthorized")
    r = c.simulate_post("/v1/assert", json=body(), headers={"Authorization": "Bearer wrong"})
    is_error(r, 401)
    assert r.headers.get("www-authenticate", "").startswith("Bearer")
    is_error(c.simulate_post("/v1/assert", json=body(), headers=auth("reader")), 403,
             "forbidden")
    assert c.simulate_post("/v1/assert", json=body(), headers=auth("writer")).status_code == 201
    assert c.simulate_post("/v1/assert", json=body(value=2),
                           headers={"X-API-Key": "key-admin"}).status_code == 201


def test_404_unknown_path_and_hash(client):
    is_error(client.simulate_get("/v2/nothing"), 404, "not_found")
    is_error(client.simulate_get("/v1/assertions/" + "f" * 64), 404, "not_found")


def test_405_wrong_method(client):
    r = client.simulate_get("/v1/assert")
    is_error(r, 405, "method_not_allowed")
    assert "POST" in r.headers.get("allow", "")
    is_error(client.simulate_delete("/v1/health"), 405)
    is_error(client.simulate_put("/v1/query", json={}), 405)


def test_409_duplicate_epoch(client):
    assert client.simulate_post("/v1/epoch", json={"name": "e1"}).status_code == 201
    is_error(client.simulate_post("/v1/epoch", json={"name": "e1"}), 409, "conflict")


def test_413_checked_before_parsing(client, store):
    # Not JSON at all, and over the limit: the size answer comes first,
    # so the body was never parsed.
    big = b"x" * (1024 * 1024 + 1)
    r = client.simulate_post("/v1/assert", body=big, headers={"Content-Type": "application/json"})
    is_error(r, 413, "payload_too_large")
    ok_for_batch = b"{" + b" " * (2 * 1024 * 1024) + b'"assertions": []}'
    r = client.simulate_post("/v1/assert/batch", body=ok_for_batch,
                             headers={"Content-Type": "application/json"})
    is_error(r, 400, field="assertions")  # 2 MiB is within the batch limit
    r = client.simulate_post("/v1/assert/batch", body=b"x" * (16 * 1024 * 1024 + 1),
                             headers={"Content-Type": "application/json"})
    is_error(r, 413)
    r = client.simulate_post("/v1/query", body=big, headers={"Content-Type": "application/json"})
    is_error(r, 413)
    assert store.count == 0


def test_413_by_declared_length_without_reading(make_client):
    c = make_client()
    # A Content-Length over the limit is refused from the header alone.
    env_body = b"{}"
    r = c.simulate_request("POST", "/v1/assert", body=env_body,
                           headers={"Content-Type": "application/json",
                                    "Content-Length": str(50 * 1024 * 1024)})
    is_error(r, 413)


def test_415_missing_or_wrong_content_type(client):
    data = json.dumps(body())
    is_error(client.simulate_post("/v1/assert", body=data), 415, "unsupported_media_type")
    is_error(client.simulate_post("/v1/assert", body=data,
                                  headers={"Content-Type": "text/plain"}), 415)
    is_error(client.simulate_post("/v1/assert", body=data,
                                  headers={"Content-Type": "application/json; charset=latin-1"}),
             415)
    r = client.simulate_post("/v1/assert", body=data,
                             headers={"Content-Type": "application/json; charset=UTF-8"})
    assert r.status_code == 201


def test_400_empty_body(client):
    is_error(client.simulate_post("/v1/assert"), 400, "missing_body")


def test_429_rate_limited_with_retry_after(make_client):
    c = make_client(rate_limits="assert=2/minute")
    assert c.simulate_post("/v1/assert", json=body(value=1)).status_code == 201
    assert c.simulate_post("/v1/assert", json=body(value=2)).status_code == 201
    r = c.simulate_post("/v1/assert", json=body(value=3))
    is_error(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1
    assert c.simulate_get("/v1/health").status_code == 200, "health is never limited"


class FailingFS(FileSystem):
    """Fails every fsync once ``fail`` is set: an injected EIO."""

    def __init__(self):
        self.fail = False
        fs = self

        class F(File):
            def sync(self):
                if fs.fail:
                    raise OSError(errno.EIO, "injected EIO")
                super().sync()
        self.file_class = F


def test_503_after_storage_fault(tmp_path):
    fs = FailingFS()
    store = open_store(str(tmp_path / "d"), fs=fs)
    try:
        c = falcon.testing.TestClient(create_app(store, Settings(rate_limits=NO_LIMITS)))
        assert c.simulate_post("/v1/assert", json=body(value=1)).status_code == 201
        fs.fail = True
        r = c.simulate_post("/v1/assert", json=body(value=2))
        assert r.status_code == 503, "the failed group is not acknowledged"
        fs.fail = False
        is_error(c.simulate_post("/v1/assert", json=body(value=3)), 503, "storage_fault")
        h = c.simulate_get("/v1/health")
        assert h.status_code == 503
        assert h.json["status"] == "degraded" and h.json["reason"]
        q = c.simulate_post("/v1/query", json={"concept_path": "drugs/semaglutide"})
        assert q.status_code == 200 and len(q.json["assertions"]) == 1, "reads go on"
    finally:
        store.close()


def test_503_while_starting():
    handle = StoreHandle()  # never opens
    c = falcon.testing.TestClient(create_app(handle, Settings()))
    r = c.simulate_post("/v1/assert", json=body())
    is_error(r, 503, "starting")
    assert r.headers["retry-after"] == "1"
    h = c.simulate_get("/v1/health")
    assert h.status_code == 503 and h.json["status"] == "starting"
    assert c.simulate_get("/openapi.json").status_code == 200
    assert c.simulate_get("/metrics").status_code == 200


def test_500_never_leaks_a_traceback(make_client, store, monkeypatch):
    c = make_client()

    def boom(*a, **k):
        raise RuntimeError("secret internals")
    monkeypatch.setattr(store, "get", boom)
    r = c.simulate_get("/v1/assertions/" + "a" * 64)
    err = is_error(r, 500, "internal_error")
    assert "secret" not in err["message"] and r.headers["x-request-id"] in err["message"]


def test_request_id_echoed_or_generated(client):
    r = client.simulate_get("/v1/health", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = client.simulate_get("/v1/health", headers={"X-Request-Id": "bad id\u00e9"})
    assert r.headers["x-request-id"] != "bad id\u00e9" and len(r.headers["x-request-id"]) == 32
    assert client.simulate_get("/nope").headers["x-request-id"]


def test_generated_request_ids_are_unique_hex_and_differ_between_servers(client):
    """Request ids name requests in the logs: 32 hex characters, never repeated
    by one server, and two servers (or a restart) do not share them."""
    import re

    from stemedb.http.middleware import RequestIds
    ids = [client.simulate_get("/v1/health").headers["x-request-id"] for _ in range(50)]
    assert len(set(ids)) == 50 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    a, b = RequestIds(), RequestIds()
    assert a.prefix != b.prefix and a() != b()
