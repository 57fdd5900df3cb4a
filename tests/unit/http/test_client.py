"""stemedb.client over real HTTP (a wsgiref server on loopback, in a thread)."""
from __future__ import annotations

import random
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from stemedb.client import APIError, Client, assertion_hash, sign_assertion, signing_key
from stemedb.config import Settings
from stemedb.http.app import create_app
from stemedb.model import prepare_assertion

from .conftest import KEYS, NO_LIMITS, body


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(store, keys_file, tmp_path):
    app = create_app(store, Settings(rate_limits=NO_LIMITS, api_keys_file=keys_file,
                                     data_dir=str(tmp_path / "data")))
    httpd = make_server("127.0.0.1", 0, app, server_class=_Server, handler_class=_Quiet)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def test_every_endpoint(server):
    admin = Client(server, api_key=KEYS["admin"][0], signing_key=signing_key(b"\x01" * 32))
    r = admin.put(body())
    assert r["status"] == "created" and r["hash"] == assertion_hash(body())
    assert admin.put(body())["status"] == "exists"
    results = admin.put_batch([body(value=i) for i in range(3)])
    assert [x["status"] for x in results] == ["created"] * 3
    signed = admin.put(body(value="signed"), sign=True)
    assert admin.get(signed["hash"])["agent_id"] == bytes(
        signing_key(b"\x01" * 32).verify_key).hex()
    assert admin.get("0" * 64) is None
    q = admin.query("drugs/semaglutide", lens="consensus")
    assert q["lens"] == "consensus" and q["assertions"]
    assert admin.query_get("drugs/semaglutide", include_descendants=True)["assertions"]
    assert admin.skeptic("drugs/semaglutide", "gastroparesis_risk")["claims"]
    assert admin.trace(r["hash"])["assertion"]["hash"] == r["hash"]
    assert admin.vote(r["hash"], 0.5)["seq"] > 0
    assert admin.vote(r["hash"], 0.5, sign=True)["seq"] > 0
    assert admin.create_epoch("e1", description="d")["name"] == "e1"
    assert admin.record_outcome("ab" * 32, True)["trust_rank"] > 0.5
    audits = admin.audit_queries(limit=5)
    assert audits and admin.audit_query(audits[0]["id"])["id"] == audits[0]["id"]
    assert admin.retract(hash=r["hash"], reason="test")["retracted"] == 1
    assert Client(server).health()["status"] == "healthy"
    assert "stemedb_assertions" in Client(server).metrics()
    assert Client(server).openapi()["openapi"].startswith("3.1")


def test_errors_carry_the_contract_fields(server):
    writer = Client(server, api_key=KEYS["writer"][0])
    with pytest.raises(APIError) as e:
        writer.put(body(confidence=3))
    assert (e.value.status, e.value.code, e.value.field) == (400, "invalid_field", "confidence")
    with pytest.raises(APIError) as e:
        writer.create_epoch("x")
    assert e.value.status == 403
    with pytest.raises(APIError) as e:
        Client(server).put(body())
    assert e.value.status == 401


def test_keepalive_connection_is_reused_across_calls(server):
    c = Client(server, api_key=KEYS["reader"][0])
    c.health()
    conn = c._local.conn
    c.query("a/b")
    assert c._local.conn is conn


def test_assertion_hash_needs_a_timestamp():
    with pytest.raises(ValueError, match="timestamp"):
        assertion_hash({"concept_path": "a", "predicate": "p", "value": 1, "confidence": 1})


def _random_body(rng):
    b = {"concept_path": rng.choice(["a/b", "drugs/é/x", "x"]),
         "predicate": rng.choice(["p", "risk.level"]),
         "value": rng.choice([None, 1, 1.5, 1.0, "s", [1, {"b": 2, "a": 1.25}], {"é": [True]}]),
         "confidence": rng.choice([0, 1, 0.5, 0.333333333333]),
         "timestamp": rng.choice([1709294400, 1709294400.25, "2024-03-01T12:00:00.5+02:00"])}
    if rng.random() < 0.5:
        b["source"] = rng.choice(["fda://x", "pubmed://1", "forum://z", "source/bad"])
    if rng.random() < 0.3:
        b["source_class"] = "expert"
    if rng.random() < 0.3:
        b["lifecycle"] = "approved"
    if rng.random() < 0.3:
        b["parent_hash"] = "ab" * 32
    if rng.random() < 0.3:
        b["derived_from"] = ["cd" * 32, "ef" * 32]
    if rng.random() < 0.3:
        b["epoch"] = "v1"
    return b


def test_assertion_hash_matches_the_server_model():
    rng = random.Random(7)
    for i in range(300):
        b = _random_body(rng)
        assert assertion_hash(b) == prepare_assertion(b).hash.hex()
        key = signing_key(bytes([i % 256]) * 32)
        signed = sign_assertion(b, key)
        # The model verifies the signature over its own hash: passing proves equality.
        assert prepare_assertion(signed).hash.hex() == assertion_hash(signed)
