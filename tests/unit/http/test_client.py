"""stemedb.client over real HTTP: the app on a wsgiref server on loopback, and
for retries and keep-alive a small scripted HTTP/1.1 server on loopback."""
from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from nacl.signing import VerifyKey

from stemedb import errors
from stemedb.client import (APIError, BatchResult, Client, Forbidden, Health, PutResult,
                            QueryResult, RateLimited, StoredAssertion, Unauthorized, Unavailable,
                            assertion_hash, sign_assertion, sign_vote, signing_key, vote_hash)
from stemedb.config import Settings
from stemedb.http.app import create_app
from stemedb.model import prepare_assertion
from stemedb.model import vote_hash as model_vote_hash
from stemedb.timeutil import parse_time

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


# ------------------------------------------------------------ a scripted server

class Scripted:
    """An HTTP/1.1 keep-alive server on loopback answering from a script:
    each request takes the next (status, headers, body); the last one
    repeats.  Records the requests and counts the connections."""

    def __init__(self, script, drop=False):
        self.script = list(script)
        self.requests: list[tuple[str, str, bytes, float]] = []
        self.connections = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with outer.lock:
                    outer.connections += 1

            def _answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n) if n else b""
                with outer.lock:
                    outer.requests.append((self.command, self.path, data, time.monotonic()))
                    i = min(len(outer.requests), len(outer.script)) - 1
                    status, headers, payload = outer.script[i]
                raw = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
                if drop:       # close without saying so, as an idle timeout does
                    self.close_connection = True

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    made = []

    def make(*script, drop=False):
        s = Scripted(script, drop)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def problem(code, message="m", field=None):
    err = {"code": code, "message": message}
    if field:
        err["field"] = field
    return {"error": err}


CREATED = (201, {}, {"hash": "ab" * 32, "status": "created", "seq": 7})
LIMITED = (429, {"Retry-After": "1"}, problem("rate_limited", "slow down"))


# ------------------------------------------------------------ every endpoint, typed

def test_every_endpoint(server):
    key = signing_key(b"\x01" * 32)
    admin = Client(server, api_key=KEYS["admin"][0], signing_key=key)
    r = admin.put(body())
    assert isinstance(r, PutResult) and r.created and r.seq > 0
    assert r["status"] == "created" and r.hash == r["hash"] == assertion_hash(body())
    again = admin.put(body())
    assert (again.status, again.created, again.seq) == ("exists", False, r.seq)
    results = admin.put_batch(body(value=i) for i in range(3))
    assert isinstance(results, BatchResult)
    assert [x["status"] for x in results] == ["created"] * 3
    assert results.hashes == [assertion_hash(body(value=i)) for i in range(3)]
    assert results.to_dict() == {"results": [dict(x) for x in results]}
    signed = admin.put(body(value="signed"), sign=True)
    stored = admin.get(signed.hash)
    assert isinstance(stored, StoredAssertion)
    assert stored.agent_id == stored["agent_id"] == bytes(key.verify_key).hex()
    assert stored.value == "signed" and stored.source == "fda://label/2024-03"
    assert stored.parent_hash is None and stored.status == "active"
    assert admin.get("0" * 64) is None
    q = admin.query("drugs/semaglutide", lens="consensus")
    assert isinstance(q, QueryResult)
    assert q.lens == q["lens"] == "consensus" and q.assertions and q.next_cursor is None
    assert isinstance(q.results[0].winner, StoredAssertion)
    assert q.results[0].candidates_count == len(q.assertions)
    assert q.results[0].winner.hash in {a.hash for a in q.assertions}
    layered = admin.query("drugs/semaglutide", lens="layered")
    assert layered.results[0].layers[0].source_class == "regulatory"
    assert admin.query_get("drugs/semaglutide", include_descendants=True).assertions
    sk = admin.skeptic("drugs/semaglutide", "gastroparesis_risk")
    assert sk.claims and sk.claims[0].support >= 1 and sk.status in ("unanimous", "contested",
                                                                      "agreed")
    t = admin.trace(r.hash)
    assert t.assertion.hash == t["assertion"]["hash"] == r.hash and t.dependents_count == 0
    assert admin.vote(r.hash, 0.5).seq > 0
    assert admin.vote(r.hash, 0.5, sign=True).seq > 0
    ep = admin.create_epoch("e1", description="d")
    assert (ep.name, ep["name"]) == ("e1", "e1") and ep.seq > 0
    assert admin.record_outcome("ab" * 32, True).trust_rank > 0.5
    audits = admin.audit_queries(limit=5)
    assert audits and admin.audit_query(audits[0].id).id == audits[0]["id"]
    rt = admin.retract(hash=r.hash, reason="test")
    assert rt.retracted == 1 and rt.hashes == [r.hash]
    h = Client(server).health()
    assert isinstance(h, Health) and h.healthy and h["status"] == "healthy"
    assert h.assertion_count == 5 and h.implementation in ("compiled", "pure")
    assert "stemedb_assertions" in Client(server).metrics()
    assert Client(server).openapi()["openapi"].startswith("3.1")


def test_results_are_json_dicts_with_read_only_attributes(server):
    c = Client(server, api_key=KEYS["admin"][0])
    r = c.put(body())
    q = c.query("drugs/semaglutide")
    plain = q.to_dict()
    assert type(plain) is dict and type(plain["results"][0]["winner"]) is dict
    assert json.loads(json.dumps(q)) == plain == q
    assert repr(r).startswith("PutResult({")
    with pytest.raises(AttributeError):
        r.hash = "x"
    with pytest.raises(AttributeError, match="lacks it"):
        PutResult({"status": "created"}).hash


def test_errors_are_the_stemedb_errors_with_the_contract_fields(server):
    writer = Client(server, api_key=KEYS["writer"][0])
    with pytest.raises(errors.ValidationError) as e:
        writer.put(body(confidence=3))
    assert isinstance(e.value, APIError) and isinstance(e.value, ValueError)
    assert (e.value.status, e.value.code, e.value.field) == (400, "invalid_field", "confidence")
    assert e.value.to_dict()["field"] == "confidence" and "confidence" in str(e.value)
    with pytest.raises(errors.UnknownReference) as e:
        writer.put(body(parent_hash="cd" * 32))
    assert e.value.field == "parent_hash"
    with pytest.raises(Forbidden) as e:
        writer.create_epoch("x")
    assert e.value.status == 403 and isinstance(e.value, PermissionError)
    with pytest.raises(Unauthorized):
        Client(server).put(body())
    with pytest.raises(errors.NotFound) as e:
        writer.trace("0" * 64)
    assert e.value.status == 404
    h = writer.put(body()).hash
    writer.vote(h, 0.5, sign=False, timestamp="2024-03-01T12:00:00Z")
    key = signing_key(b"\x02" * 32)
    signer = Client(server, api_key=KEYS["writer"][0], signing_key=key)
    signer.vote(h, 0.5, sign=True, timestamp="2024-03-02T00:00:00Z")
    with pytest.raises(errors.StaleVote) as e:
        signer.vote(h, 0.9, sign=True, timestamp="2024-03-01T00:00:00Z")
    assert (e.value.status, e.value.code) == (409, "stale_vote")
    assert isinstance(e.value, errors.Conflict)
    with pytest.raises(ValueError, match="signing key"):
        writer.vote(h, 0.5, sign=True)


# ------------------------------------------------------------ keep-alive pool

def test_keepalive_connections_are_pooled_and_reused(scripted):
    s = scripted(CREATED)
    c = Client(s.url)
    for _ in range(5):
        assert c.put(body()).seq == 7
    assert len(s.requests) == 5 and s.connections == 1, "one kept-alive connection"
    assert c._pool.idle() == 1
    c.close()
    assert c._pool.idle() == 0
    c.put(body())
    assert s.connections == 2, "usable after close, on a new connection"


def test_threads_share_the_pool(scripted):
    s = scripted(CREATED)
    c = Client(s.url, pool_size=4)
    barrier = threading.Barrier(4)

    def work():
        barrier.wait(timeout=10)
        for _ in range(10):
            c.put(body())
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(s.requests) == 40
    assert s.connections <= 4 + 4 and c._pool.idle() <= 4


def test_a_kept_alive_connection_the_server_closed_is_replaced(scripted):
    s = scripted(CREATED, drop=True)
    c = Client(s.url)
    assert c.put(body()).created
    time.sleep(0.2)                    # the server has closed its side
    assert c._pool.idle() == 1, "the client could not know"
    assert c.put(body()).created, "sent again on a fresh connection"
    assert len(s.requests) == 2 and s.connections == 2


# ------------------------------------------------------------ Retry-After

def test_429_is_retried_after_retry_after(scripted):
    s = scripted(LIMITED, CREATED)
    c = Client(s.url)
    t0 = time.monotonic()
    r = c.put(body())
    assert r.created and len(s.requests) == 2
    assert s.requests[1][3] - s.requests[0][3] >= 0.95, "waited the Retry-After second"
    assert s.requests[0][2] == s.requests[1][2], "the same body again"
    assert time.monotonic() - t0 < 25


def test_503_with_retry_after_is_retried_for_reads(scripted):
    s = scripted((503, {"Retry-After": "1"}, problem("starting")),
                 (200, {}, {"concept_path": "a", "lens": "recency", "results": [],
                            "assertions": [], "next_cursor": None}))
    q = Client(s.url).query("a")
    assert q.results == [] and len(s.requests) == 2


def test_gives_up_after_max_attempts_with_a_clear_error(scripted):
    s = scripted(LIMITED)
    c = Client(s.url, max_attempts=2)
    with pytest.raises(RateLimited) as e:
        c.put(body())
    assert len(s.requests) == 2, "bounded by max_attempts"
    assert (e.value.attempts, e.value.retry_after, e.value.code) == (2, 1, "rate_limited")
    assert e.value.waited == 1
    assert "gave up after 2 attempts" in str(e.value)


def test_a_retry_after_past_the_budget_is_not_waited(scripted):
    s = scripted((429, {"Retry-After": "60"}, problem("rate_limited")), CREATED)
    c = Client(s.url, max_retry_wait=5)
    t0 = time.monotonic()
    with pytest.raises(RateLimited) as e:
        c.put(body())
    assert time.monotonic() - t0 < 5, "did not sleep 60 s"
    assert len(s.requests) == 1 and "retry budget" in str(e.value)


def test_max_attempts_one_never_retries(scripted):
    s = scripted(LIMITED, CREATED)
    with pytest.raises(RateLimited):
        Client(s.url, max_attempts=1).put(body())
    assert len(s.requests) == 1


def test_an_outcome_is_never_sent_twice(scripted):
    s = scripted(LIMITED, (201, {}, {"agent_id": "ab" * 32, "trust_rank": 0.55}))
    with pytest.raises(RateLimited):
        Client(s.url).record_outcome("ab" * 32, True)
    assert len(s.requests) == 1


def test_503_without_retry_after_is_not_retried(scripted):
    s = scripted((503, {}, problem("storage_fault", "writes stopped")), CREATED)
    with pytest.raises(errors.StoreFaulted) as e:
        Client(s.url).put(body())
    assert isinstance(e.value, Unavailable) and len(s.requests) == 1


def test_health_503_is_an_answer_not_retried(scripted):
    s = scripted((503, {"Retry-After": "1"}, {"status": "starting", "reason": "opening",
                                              "version": "0", "uptime_seconds": 0.1}))
    h = Client(s.url).health()
    assert (h.status, h.reason, h.healthy) == ("starting", "opening", False)
    assert len(s.requests) == 1


def test_an_error_without_the_json_body_is_still_an_apierror(scripted):
    s = scripted((502, {}, None))
    with pytest.raises(APIError) as e:
        Client(s.url).query("a")
    assert (e.value.status, e.value.code) == (502, "http_error")


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"max_retry_wait": -1},
                                    {"max_retry_wait": float("inf")}])
def test_bad_retry_arguments_are_refused(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        Client("http://127.0.0.1:1", **kwargs)


# ------------------------------------------------------------ hashing and signing

def test_assertion_hash_needs_a_timestamp():
    with pytest.raises(errors.ValidationError, match="timestamp") as e:
        assertion_hash({"concept_path": "a", "predicate": "p", "value": 1, "confidence": 1})
    assert e.value.field == "timestamp"


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


def test_sign_assertion_without_a_timestamp_stamps_an_exact_one():
    key = signing_key(b"\x03" * 32)
    signed = sign_assertion({"concept_path": "a", "predicate": "p", "value": 1,
                             "confidence": 1}, key)
    assert signed["timestamp"].endswith("Z")
    assert prepare_assertion(json.loads(json.dumps(signed))).hash.hex() == assertion_hash(signed)


@pytest.mark.parametrize("ts", ["2024-03-01T12:00:00.000001Z", 1709294400, 1709294400.5,
                                "2024-03-01T14:00:00+02:00"])
def test_sign_vote_signs_the_v11_vote_hash(ts):
    key = signing_key(b"\x04" * 32)
    v = sign_vote("ab" * 32, 0.25, key, ts)
    agent = bytes(key.verify_key).hex()
    assert v["agent_id"] == agent and v["timestamp"] == ts
    digest = model_vote_hash("ab" * 32, 0.25, agent, parse_time(ts, "timestamp"))
    assert vote_hash("ab" * 32, 0.25, agent, ts) == digest.hex()
    VerifyKey(bytes.fromhex(agent)).verify(digest, bytes.fromhex(v["signature"]))
    # The time is covered: the same signature does not verify another time.
    other = model_vote_hash("ab" * 32, 0.25, agent, parse_time(ts, "timestamp") + 1)
    with pytest.raises(Exception):
        VerifyKey(bytes.fromhex(agent)).verify(other, bytes.fromhex(v["signature"]))


def test_sign_vote_refuses_a_bad_time():
    with pytest.raises(errors.ValidationError, match="timestamp"):
        sign_vote("ab" * 32, 0.5, signing_key(b"\x05" * 32), "yesterday")


def _mypy(*args: str):
    """Run mypy from the repository root; its result."""
    pytest.importorskip("mypy", reason="mypy comes with the test extra")
    import pathlib
    import subprocess
    import sys
    root = pathlib.Path(__file__).resolve().parents[3]
    return root, subprocess.run([sys.executable, "-m", "mypy", *args], cwd=root,
                                capture_output=True, text=True, timeout=300)


def test_the_client_modules_are_mypy_clean():
    # pyproject.toml [tool.mypy] names the files and the strictness.
    root, r = _mypy()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert (root / "stemedb" / "py.typed").exists()


def test_the_whole_package_is_mypy_clean_in_default_mode():
    # Every module of stemedb/, in mypy's default (non-strict) mode: no config
    # file, so the strict [tool.mypy] section above does not apply; modules
    # without stubs (numpy's, the optional extras') are taken as Any.  A cache
    # of its own, so the two checks do not invalidate each other's.
    import os
    _root, r = _mypy("stemedb", "--ignore-missing-imports", "--config-file", os.devnull,
                     "--python-version", "3.11", "--cache-dir", ".mypy_cache/default")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "Success: no issues found" in r.stdout, r.stdout[-3000:]
