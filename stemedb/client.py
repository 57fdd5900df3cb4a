"""A small Python client for the StemeDB HTTP API, with signing.

>>> from stemedb.client import Client, SigningKey
>>> c = Client("http://127.0.0.1:18180", api_key="stm_...")
>>> c.put({"concept_path": "drugs/semaglutide", "predicate": "risk",
...        "value": "rare", "confidence": 0.9})
{'hash': '…', 'status': 'created', 'seq': 1}
>>> key = SigningKey.generate()
>>> c.put(sign_assertion({...}, key))      # signed writes are one call

Standard library only (``http.client``), one keep-alive connection per
thread.  Every non-2xx answer raises :class:`APIError` carrying the
contract's ``status``, ``code``, ``message``, ``field`` and, for 429,
``retry_after``.  :func:`assertion_hash` computes the hash the server will
give a body, with the model the server itself uses.
"""
from __future__ import annotations

import http.client
import json
import re
import threading
import time
import urllib.parse
from typing import Any

from nacl.signing import SigningKey

from .errors import ValidationError
from .model import assertion_hash as _model_assertion_hash
from .model import vote_hash
from .timeutil import format_time, now_us, parse_time

__all__ = ["Client", "APIError", "assertion_hash", "sign_assertion", "sign_vote",
           "SigningKey", "signing_key"]


class APIError(Exception):
    """A non-2xx answer."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 retry_after: int | None = None, body: Any = None):
        super().__init__(f"{status} {code}: {message}" + (f" (field {field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after
        self.body = body


# ---------------------------------------------------------------- hashing

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def assertion_hash(body: dict) -> str:
    """The hex hash the server gives ``body`` (BLAKE3 of the JCS hashed object).

    ``body`` needs a ``timestamp``: without one the server uses its receive
    time, which cannot be known in advance (:func:`sign_assertion` sets it).
    Validation is the server's own (:func:`stemedb.model.assertion_hash`), so
    a body this accepts is one the server accepts, up to references.
    """
    try:
        return _model_assertion_hash(body)
    except ValidationError as exc:
        raise ValueError(str(exc)) from None


def _without(body: dict, *names: str) -> dict:
    return {k: v for k, v in body.items() if k not in names}


# ---------------------------------------------------------------- signing

def signing_key(seed: bytes | str | None = None):
    """An Ed25519 key: new, or from a 32-byte seed (bytes or 64 hex)."""
    if seed is None:
        return SigningKey.generate()
    if isinstance(seed, str):
        seed = bytes.fromhex(seed)
    return SigningKey(seed)


def agent_id_of(key) -> str:
    return bytes(key.verify_key).hex()


def sign_assertion(body: dict, key) -> dict:
    """A copy of ``body`` with ``timestamp`` (now, if absent), ``agent_id`` and
    ``signature``: Ed25519 by ``key`` over the 32 bytes of the assertion hash."""
    out = dict(body)
    if out.get("timestamp") is None:
        out["timestamp"] = time.time()
    out.pop("signature", None)
    out["agent_id"] = agent_id_of(key)
    digest = bytes.fromhex(assertion_hash(out))
    out["signature"] = key.sign(digest).signature.hex()
    return out


def sign_vote(assertion_hash_hex: str, weight: float, key, timestamp=None) -> dict:
    """A vote body with ``timestamp`` (now, if absent), ``agent_id`` and
    ``signature``: Ed25519 by ``key`` over the vote hash, which covers the
    weight and the time, so the vote can be neither reused with another
    weight nor replayed to undo this agent's newer vote (the server refuses
    a vote not newer than the agent's stored one with 409 ``stale_vote``)."""
    if timestamp is None:
        timestamp = format_time(now_us())   # exact microseconds, whatever the JSON encoder
    try:
        ts_us = parse_time(timestamp, "timestamp")
    except ValidationError as exc:
        raise ValueError(str(exc)) from None
    agent = agent_id_of(key)
    digest = vote_hash(assertion_hash_hex, weight, agent, ts_us)
    return {"assertion_hash": assertion_hash_hex, "weight": weight, "timestamp": timestamp,
            "agent_id": agent, "signature": key.sign(digest).signature.hex()}


# ---------------------------------------------------------------- the client

class Client:
    """One StemeDB server.  Thread-safe (a connection per thread)."""

    def __init__(self, base_url: str = "http://127.0.0.1:18180", api_key: str | None = None,
                 timeout: float = 30.0, signing_key=None):
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("http", "https"):
            raise ValueError("base_url must be http:// or https://")
        self.scheme, self.host = u.scheme, u.hostname or "127.0.0.1"
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.prefix = u.path.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.signing_key = signing_key
        self._local = threading.local()

    # ----------------------------------------------------------- transport
    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = self._local.conn = cls(self.host, self.port, timeout=self.timeout)
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(self, method: str, path: str, body: Any = None, params: dict | None = None,
                raw: bool = False, headers: dict | None = None):
        """Send one request; the decoded JSON answer (or bytes with ``raw``)."""
        url = self.prefix + path
        if params:
            q = {k: _param(v) for k, v in params.items() if v is not None}
            url += "?" + urllib.parse.urlencode(q)
        hdrs = {"Accept": "application/json"}
        if self.api_key:
            hdrs["Authorization"] = f"Bearer {self.api_key}"
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        while True:
            reused = getattr(self._local, "conn", None) is not None
            conn = self._conn()
            try:
                conn.request(method, url, body=data, headers=hdrs)
                resp = conn.getresponse()
                payload = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest):
                self.close()
                # A kept-alive connection the server had closed while idle fails at
                # once, before the server saw anything: retry that once on a fresh
                # connection.  A fresh connection that fails is a real error.
                if not reused:
                    raise
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        if resp.status >= 400:
            raise _error(resp, payload)
        if raw:
            return payload
        return json.loads(payload) if payload else None

    # ----------------------------------------------------------- endpoints
    def put(self, assertion: dict, *, sign: bool = False) -> dict:
        """``POST /v1/assert``: ``{"hash", "status", "seq"}`` (status created|exists)."""
        if sign:
            assertion = sign_assertion(assertion, self._key())
        return self.request("POST", "/v1/assert", assertion)

    assert_ = put

    def put_batch(self, assertions: list[dict], *, sign: bool = False) -> list[dict]:
        """``POST /v1/assert/batch`` (atomic): the results in request order."""
        if sign:
            key = self._key()
            assertions = [sign_assertion(a, key) for a in assertions]
        return self.request("POST", "/v1/assert/batch", {"assertions": assertions})["results"]

    def query(self, concept_path: str, **params) -> dict:
        """``POST /v1/query`` with the contract's parameters as keywords."""
        return self.request("POST", "/v1/query", {"concept_path": concept_path, **params})

    def query_get(self, concept_path: str, **params) -> dict:
        return self.request("GET", "/v1/query", params={"concept_path": concept_path, **params})

    def get(self, hash: str) -> dict | None:
        """The stored assertion, or None when unknown."""
        try:
            return self.request("GET", f"/v1/assertions/{hash}")
        except APIError as exc:
            if exc.status == 404:
                return None
            raise

    def retract(self, *, hash: str | None = None, concept_path: str | None = None,
                source: str | None = None, reason: str, cascade: bool = False) -> dict:
        body = {k: v for k, v in (("hash", hash), ("concept_path", concept_path),
                                  ("source", source)) if v is not None}
        body.update(reason=reason, cascade=cascade)
        return self.request("POST", "/v1/retract", body)

    def skeptic(self, concept_path: str, predicate: str, **filters) -> dict:
        return self.request("GET", "/v1/skeptic",
                            params={"concept_path": concept_path, "predicate": predicate,
                                    **filters})

    def trace(self, hash: str) -> dict:
        return self.request("GET", f"/v1/trace/{hash}")

    def vote(self, assertion_hash_hex: str, weight: float, *, sign: bool = False,
             timestamp=None) -> dict:
        """POST /v1/vote; ``timestamp`` defaults to now when signing, else to
        the server's receive time."""
        if sign:
            body = sign_vote(assertion_hash_hex, weight, self._key(), timestamp)
        else:
            body = {"assertion_hash": assertion_hash_hex, "weight": weight}
            if timestamp is not None:
                body["timestamp"] = timestamp
        return self.request("POST", "/v1/vote", body)

    def create_epoch(self, name: str, *, supersedes: list[str] | None = None,
                     description: str | None = None) -> dict:
        body = {"name": name}
        if supersedes is not None:
            body["supersedes"] = supersedes
        if description is not None:
            body["description"] = description
        return self.request("POST", "/v1/epoch", body)

    def record_outcome(self, agent_id: str, accurate: bool) -> dict:
        return self.request("POST", f"/v1/agents/{agent_id}/outcome", {"accurate": accurate})

    def audit_queries(self, *, limit: int = 100, agent: str | None = None, from_=None,
                      to=None) -> list[dict]:
        return self.request("GET", "/v1/audit/queries",
                            params={"limit": limit, "agent": agent, "from": from_,
                                    "to": to})["queries"]

    def audit_query(self, id: str) -> dict:
        return self.request("GET", f"/v1/audit/queries/{urllib.parse.quote(id, safe='')}")

    def health(self) -> dict:
        """``GET /v1/health``; a 503 (degraded, starting) is returned, not raised."""
        try:
            return self.request("GET", "/v1/health")
        except APIError as exc:
            if exc.status == 503 and isinstance(exc.body, dict) and "status" in exc.body:
                return exc.body
            raise

    def metrics(self) -> str:
        return self.request("GET", "/metrics", raw=True).decode()

    def openapi(self) -> dict:
        return self.request("GET", "/openapi.json")

    def _key(self):
        if self.signing_key is None:
            raise ValueError("sign=True needs Client(..., signing_key=stemedb.client.signing_key())")
        return self.signing_key


def _param(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _error(resp, payload: bytes) -> APIError:
    try:
        body = json.loads(payload)
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    retry = resp.getheader("Retry-After")
    retry_after = int(retry) if retry and retry.isdigit() else None
    if isinstance(err, dict):
        return APIError(resp.status, err.get("code", "error"), err.get("message", ""),
                        err.get("field"), retry_after, body)
    return APIError(resp.status, "http_error", payload[:200].decode("utf-8", "replace"),
                    None, retry_after, body)
