"""API keys, scopes, the keys file, and the loopback-only rule."""
from __future__ import annotations

import json
import os
import time

import pytest

from stemedb.errors import ConfigError
from stemedb.http.auth import (
    KeyRing, add_key, check_anonymous_bind, hash_key, is_loopback, load_keys_file, parse_keys,
)

from .conftest import auth, body


def test_scopes_are_ranked(make_client, keys_file):
    c = make_client(api_keys_file=keys_file)
    q = {"concept_path": "drugs/semaglutide"}
    assert c.simulate_post("/v1/query", json=q).status_code == 401
    for who in ("reader", "writer", "admin"):
        assert c.simulate_post("/v1/query", json=q, headers=auth(who)).status_code == 200, who
    assert c.simulate_post("/v1/assert", json=body(), headers=auth("writer")).status_code == 201
    assert c.simulate_post("/v1/assert", json=body(), headers=auth("admin")).status_code == 200
    epoch = {"name": "e1"}
    assert c.simulate_post("/v1/epoch", json=epoch, headers=auth("writer")).status_code == 403
    assert c.simulate_post("/v1/epoch", json=epoch, headers=auth("admin")).status_code == 201
    agent = "cd" * 32
    assert c.simulate_post(f"/v1/agents/{agent}/outcome", json={"accurate": True},
                           headers=auth("writer")).status_code == 403
    assert c.simulate_get("/v1/audit/queries", headers=auth("reader")).status_code == 403
    assert c.simulate_get("/v1/audit/queries", headers=auth("admin")).status_code == 200


def test_open_endpoints_need_no_key(make_client, keys_file):
    c = make_client(api_keys_file=keys_file)
    assert c.simulate_get("/v1/health").status_code == 200
    assert c.simulate_get("/openapi.json").status_code == 200
    assert c.simulate_get("/metrics").status_code == 200, "metrics open unless configured"
    c2 = make_client(api_keys_file=keys_file, metrics_require_key=True)
    assert c2.simulate_get("/metrics").status_code == 401
    assert c2.simulate_get("/metrics", headers=auth("reader")).status_code == 200


def test_no_keys_means_open(client):
    assert client.simulate_post("/v1/epoch", json={"name": "x"}).status_code == 201


def test_constant_time_lookup_checks_every_key(monkeypatch):
    import hmac
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    keys = parse_keys({"keys": [{"id": f"k{i}", "sha256": hash_key(f"s{i}"), "scopes": ["read"]}
                                for i in range(5)]})
    ring = KeyRing(keys=keys)
    assert ring.authenticate("s0").id == "k0"
    assert len(calls) == 5, "no early exit on a match"
    assert ring.authenticate("nope") is None
    assert ring.authenticate("") is None


@pytest.mark.parametrize("doc", [
    {}, {"keys": "x"}, {"keys": [{"id": "a", "sha256": "zz", "scopes": ["read"]}]},
    {"keys": [{"id": "a", "sha256": "a" * 64, "scopes": ["root"]}]},
    {"keys": [{"id": "a", "sha256": "a" * 64, "scopes": []}]},
    {"keys": [{"id": "a", "sha256": "a" * 64, "scopes": ["read"]},
              {"id": "a", "sha256": "b" * 64, "scopes": ["read"]}]},
])
def test_bad_keys_file_is_refused(doc):
    with pytest.raises(ConfigError):
        parse_keys(doc)


def test_missing_keys_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_keys_file(str(tmp_path / "nope.json"))


def test_add_key_stores_only_the_hash(tmp_path):
    path = str(tmp_path / "sub" / "keys.json")
    key = add_key(path, "ingest", ["read", "write"])
    doc = json.loads(open(path).read())
    assert doc["keys"] == [{"id": "ingest", "sha256": hash_key(key), "scopes": ["read", "write"]}]
    assert key not in open(path).read()
    assert os.stat(path).st_mode & 0o077 == 0, "keys file readable by its owner only"
    with pytest.raises(ConfigError, match="already exists"):
        add_key(path, "ingest", ["read"])
    key2 = add_key(path, "ingest", ["admin"], force=True)
    assert KeyRing(path).authenticate(key2).scopes == frozenset({"admin"})
    assert KeyRing(path).authenticate(key) is None


def test_keyring_reloads_a_changed_file(tmp_path):
    path = str(tmp_path / "keys.json")
    add_key(path, "a", ["read"])
    now = [0.0]
    ring = KeyRing(path, clock=lambda: now[0])
    key = add_key(path, "b", ["write"])
    assert ring.authenticate(key) is None, "not re-read within a second"
    now[0] += 2
    assert ring.authenticate(key).id == "b"
    with open(path, "w") as f:
        f.write("{broken")
    time.sleep(0.01)
    now[0] += 2
    assert ring.authenticate(key).id == "b", "a broken edit keeps the previous keys"


@pytest.mark.parametrize("bind,loop", [
    ("127.0.0.1:18180", True), ("127.5.0.1:1", True), ("localhost:18180", True),
    ("[::1]:18180", True), ("unix:/tmp/s.sock", True), ("0.0.0.0:18180", False),
    ("[::]:18180", False), ("10.0.0.5:18180", False), ("example.com:80", False),
    (":18180", False),
])
def test_is_loopback(bind, loop):
    assert is_loopback(bind) is loop


def test_anonymous_bind_rule():
    assert check_anonymous_bind(["127.0.0.1:1", "127.0.0.1:2"], False, False) is None
    msg = check_anonymous_bind(["0.0.0.0:18180", "127.0.0.1:2"], False, False)
    assert msg and "0.0.0.0:18180" in msg and "STEMEDB_ALLOW_ANONYMOUS" in msg
    assert check_anonymous_bind(["0.0.0.0:1"], True, False) is None
    assert check_anonymous_bind(["0.0.0.0:1"], False, True) is None
