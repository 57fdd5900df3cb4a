"""Fixtures for the HTTP layer's unit tests: the real store in a temp dir,
driven through falcon.testing.TestClient."""
from __future__ import annotations

import json

import falcon.testing
import pytest

from stemedb.config import Settings
from stemedb.core.store import open_store
from stemedb.http.app import create_app
from stemedb.http.auth import hash_key

NO_LIMITS = "assert=off;batch=off;query=off;retract=off;vote=off;default=off"

KEYS = {"reader": ("key-read", ["read"]), "writer": ("key-write", ["write"]),
        "admin": ("key-admin", ["admin"])}


def body(**over):
    """A valid assertion body."""
    b = {"concept_path": "drugs/semaglutide", "predicate": "gastroparesis_risk",
         "value": "rare", "confidence": 0.8, "source": "fda://label/2024-03",
         "timestamp": "2024-03-01T12:00:00Z"}
    b.update(over)
    return {k: v for k, v in b.items() if v is not None}


@pytest.fixture
def store(tmp_path):
    s = open_store(str(tmp_path / "data"), durability="none")
    yield s
    s.close()


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [
        {"id": kid, "sha256": hash_key(secret), "scopes": scopes}
        for kid, (secret, scopes) in KEYS.items()]}))
    return str(path)


@pytest.fixture
def make_client(store, tmp_path):
    """make_client(**settings) -> TestClient over the real store."""
    def make(store_=None, breaker=None, **over):
        over.setdefault("rate_limits", NO_LIMITS)
        over.setdefault("data_dir", str(tmp_path / "data"))
        app = create_app(store_ or store, Settings(**over), breaker=breaker)
        client = falcon.testing.TestClient(app)
        client.app_ = app
        return client
    return make


@pytest.fixture
def client(make_client):
    return make_client()


def auth(name: str) -> dict:
    return {"Authorization": f"Bearer {KEYS[name][0]}"}
