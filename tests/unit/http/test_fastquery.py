"""``POST /v1/query`` without Falcon (stemedb.http.fastquery) answers as
Falcon does: the same status, headers, body, access-log fields, metrics,
limiter counts and log lines, request by request, for the plain query and
for every refusal (which it hands to Falcon)."""
from __future__ import annotations

import io
import json
import logging

import pytest

from stemedb.config import Settings
from stemedb.errors import ValidationError
from stemedb.http.app import build_wsgi
from stemedb.http.errors import ClientTimeout
from stemedb.http.fastquery import FastQuery
from stemedb.http.handle import StoreHandle
from stemedb.http.logs import ENV_CLIENT, ENV_KEY_ID, ENV_REQUEST_ID

from .conftest import KEYS, NO_LIMITS, auth, body

PATH = "/v1/query"
API, DASH = "127.0.0.1:18180", "127.0.0.1:18188"
RID_HEADER = "x-request-id"


def environ(data: bytes | None, *, path: str = PATH, method: str = "POST",
            ctype: str | None = "application/json", length: str | None = None,
            query: str = "", headers: dict | None = None, port: str = "18180") -> dict:
    """What gunicorn hands the app."""
    env = {"REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path,
           "QUERY_STRING": query, "RAW_URI": path + ("?" + query if query else ""),
           "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": port,
           "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "5555", "HTTP_HOST": "127.0.0.1",
           "wsgi.input": io.BytesIO(data or b""), "wsgi.url_scheme": "http",
           "wsgi.errors": io.StringIO(), "wsgi.version": (1, 0), "wsgi.multithread": True,
           "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.input_terminated": True}
    if ctype is not None:
        env["CONTENT_TYPE"] = ctype
    if length is not None:
        env["CONTENT_LENGTH"] = length
    elif data is not None:
        env["CONTENT_LENGTH"] = str(len(data))
    for name, value in (headers or {}).items():
        env["HTTP_" + name.upper().replace("-", "_")] = value
    return env


class Stack:
    """``build_wsgi``'s whole app, with the fast path on or off, counting the
    requests that reach Falcon's API app."""

    def __init__(self, store, fast: bool, **over):
        over.setdefault("rate_limits", NO_LIMITS)
        settings = Settings(bind=API, dashboard_bind=DASH, **over)
        self.app = build_wsgi(StoreHandle(store), settings)
        self.router = self.app.app
        self.state = self.router.state
        if not fast:
            self.router.fast = None
        else:
            assert isinstance(self.router.fast, FastQuery)
        api = self.router.api
        self.to_falcon = 0

        def counted(env, start_response):
            self.to_falcon += 1
            return api(env, start_response)
        self.router.api = counted
        if fast:
            self.router.fast.api = counted

    def call(self, env: dict) -> dict:
        got = []
        out = b"".join(self.app(env, lambda s, h, e=None: got.append((s, h))))
        (status, headers), = got
        rid = dict(headers).get(RID_HEADER)
        logged = env.get(ENV_REQUEST_ID)
        assert logged in (None, rid), "the access log names the answer's request id"
        given = env.get("HTTP_X_REQUEST_ID") == rid
        if rid and not given:
            # a generated request id differs between two servers (a random prefix)
            headers = [(n, "<id>" if n == RID_HEADER else v) for n, v in headers]
            out = out.replace(rid.encode(), b"<id>")
        if b'"next_cursor":"' in out:   # a cursor carries the time it was made
            doc = json.loads(out)
            doc["next_cursor"] = "<cursor>"
            out = json.dumps(doc).encode()
        return {"status": status, "headers": headers, "body": out,
                "access": (env.get(ENV_KEY_ID), env.get(ENV_CLIENT), logged is not None, given)}

    def counts(self) -> dict:
        return {labels: e[0] for labels, e in self.state.metrics.http._entries.items()}

    def ratelimited(self, endpoint: str, reason: str):
        return self.state.metrics.registry.get_sample_value(
            "stemedb_ratelimited_requests_total", {"endpoint": endpoint, "reason": reason})


def q(**over) -> bytes:
    doc = {"concept_path": "drugs/semaglutide", "predicate": "gastroparesis_risk"}
    doc.update(over)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


@pytest.fixture
def filled(store):
    for i, source in enumerate(("fda://label/2024-03", "pubmed://1", "pubmed://2")):
        from stemedb.http.schemas import AssertionIn
        import msgspec
        store.put(msgspec.convert(body(source=source, confidence=0.5 + i / 10,
                                       value=f"v{i}"), AssertionIn))
    store.put(msgspec.convert(body(concept_path="drugs/semaglutide/oral", value="x"),
                              AssertionIn))
    return store


PLAIN = [
    q(), q(lens="consensus"), q(lens="recency", limit=1), q(predicate=None),
    q(concept_path="drugs", include_descendants=True), q(concept_path="nothing/here"),
    q(lens="consensus", limit=2, include_descendants=False), q(concept_path="Bad Path!"),
]

REFUSED = [
    (b'{"concept_path": 5}', {}), (b"{", {}), (b"[]", {}), (b'{"nope": 1}', {}),
    (q(lens="no_such_lens"), {}), (q(limit=0), {}), (q(limit=10**9), {}),
    (q(concept_path=""), {}),
    (b"", {}), (b"", {"length": "0"}), (q(), {"ctype": None}), (q(), {"ctype": "text/plain"}),
    (q(), {"ctype": "application/json; charset=latin-1"}),
    (q(), {"length": str(2 * 1024 * 1024)}), (q(), {"query": "min_seq=0"}),
    (q(min_seq=0), {}), (q(min_seq=10**6), {}), (q(cursor="zz"), {}),
    (q(), {"length": "-1"}), (q(), {"length": "1e3"}), (q(), {"length": "\u0663"}),
    (q(), {"length": "0" * 13 + "9"}),
    (q(), {"path": "/v1/query/"}), (q(), {"method": "PUT"}), (q(), {"port": "18188"}),
]


def both(store, **over):
    return Stack(store, True, **over), Stack(store, False, **over)


def test_plain_queries_answer_as_falcon_does_without_falcon(filled):
    fast, slow = both(filled)
    for data in PLAIN:
        for headers in ({}, {"X-Request-Id": "client-id-1"}, {"X-Request-Id": "bad id!"}):
            a, b = fast.call(environ(data, headers=headers)), slow.call(environ(data, headers=headers))
            assert a == b, data
            assert a["status"] == "200 OK"
    assert fast.to_falcon == 0, "every plain query was answered without Falcon"
    assert slow.to_falcon == 3 * len(PLAIN)
    assert fast.counts() == slow.counts() == {(PATH, "POST", "200"): 3 * len(PLAIN)}


def test_refusals_are_falcons_answers(filled):
    fast, slow = both(filled)
    for data, kw in REFUSED:
        a, b = fast.call(environ(data, **kw)), slow.call(environ(data, **kw))
        assert a == b, (data, kw)
    assert fast.counts() == slow.counts()
    assert fast.to_falcon == sum(1 for _, kw in REFUSED if kw.get("port") != "18188")


def test_refused_fields_are_named(filled):
    fast, _ = both(filled)
    a = fast.call(environ(b'{"concept_path": 5}'))
    assert a["status"].startswith("400")
    assert json.loads(a["body"])["error"]["field"] == "concept_path"


def test_keys(filled, keys_file):
    fast, slow = both(filled, api_keys_file=keys_file, rate_limits="auth=3/minute;query=off")
    cases = [{}, auth("reader"), auth("writer"), auth("admin"), {"X-API-Key": KEYS["reader"][0]},
             {"X-API-Key": "  "}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"},
             {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, auth("reader"),
             {"X-API-Key": "wrong"}, auth("reader")]
    for headers in cases:
        a, b = fast.call(environ(q(), headers=headers)), slow.call(environ(q(), headers=headers))
        assert a == b, headers
    a, b = (s.call(environ(q(), headers=auth("reader"))) for s in (fast, slow))
    assert a == b and a["status"][:3] == "429", "wrong keys throttle the address, the right key too"
    assert fast.counts() == slow.counts()
    assert fast.ratelimited("auth", "auth_failures") == slow.ratelimited("auth", "auth_failures")


def test_a_keys_id_reaches_the_engine_and_the_access_log(filled, keys_file, monkeypatch):
    fast = Stack(filled, True, api_keys_file=keys_file)
    seen = []
    real = filled.query
    monkeypatch.setattr(filled, "query", lambda *a, **kw: seen.append(kw["agent"]) or real(*a, **kw))
    got = fast.call(environ(q(), headers=auth("reader")))
    assert got["status"] == "200 OK" and got["access"][0] == "reader" and seen == ["reader"]
    assert fast.to_falcon == 0


def test_rate_limit_counts_each_request_once(filled):
    fast, slow = both(filled, rate_limits="query=3/minute")
    seq = [q(), b"{", q(), q(), q(), b"{", q()]
    out = []
    for data in seq:
        a, b = fast.call(environ(data)), slow.call(environ(data))
        assert a == b, data
        out.append(a["status"][:3])
    assert out == ["200", "400", "200", "429", "429", "429", "429"]
    assert dict(fast.call(environ(q()))["headers"]).get("retry-after")
    slow.call(environ(q()))
    assert fast.ratelimited("query", "rate_limit") == slow.ratelimited("query", "rate_limit") == 5
    assert fast.counts() == slow.counts()


def test_a_failed_body_read_is_falcons_408(filled):
    fast, slow = both(filled)

    class Slow:
        def read(self, *a):
            raise ClientTimeout("the body did not arrive in time")
    envs = []
    for s in (fast, slow):
        env = environ(q())
        env["wsgi.input"] = Slow()
        envs.append(s.call(env))
    assert envs[0] == envs[1] and envs[0]["status"].startswith("408")


@pytest.mark.parametrize("exc", [ValidationError("concept_path is odd", field="concept_path"),
                                 RuntimeError("boom"), KeyError("x")])
def test_engine_errors_are_answered_by_falcon_and_the_query_runs_once(filled, monkeypatch, exc):
    calls = []

    def failing(*a, **kw):
        calls.append(a)
        raise exc
    monkeypatch.setattr(filled, "query", failing)
    fast, slow = both(filled)
    a = fast.call(environ(q()))
    assert len(calls) == 1, "the fast path's query is not run a second time by Falcon"
    b = slow.call(environ(q()))
    assert a == b
    assert a["status"][:3] == ("400" if isinstance(exc, ValidationError) else "500")
    assert fast.counts() == slow.counts()


@pytest.mark.parametrize("attr,value", [("_store", None), ("_closed", True)])
def test_a_store_opening_or_closed_is_falcons_503(filled, attr, value):
    fast = Stack(filled, True)
    slow = Stack(filled, False)
    for s in (fast, slow):
        setattr(s.state.handle, attr, value)
    a, b = fast.call(environ(q())), slow.call(environ(q()))
    assert a == b and a["status"].startswith("503")


def test_the_debug_log_line_is_observes(filled, caplog):
    fast, slow = both(filled)
    records = []
    for s in (fast, slow):
        with caplog.at_level(logging.DEBUG, logger="stemedb.http"):
            caplog.clear()
            s.call(environ(q(), headers={"X-Request-Id": "rid-1"}))
            recs = [r for r in caplog.records if r.getMessage() == "request"]
        assert len(recs) == 1
        r = recs[0]
        records.append({k: getattr(r, k, None) for k in
                        ("request_id", "method", "route", "status", "client", "key", "code",
                         "levelno")})
    assert records[0] == records[1]
    assert records[0]["request_id"] == "rid-1"


def test_metrics_latency_is_observed(filled):
    fast = Stack(filled, True)
    fast.call(environ(q()))
    (entry,) = fast.state.metrics.http._entries.values()
    assert entry[0] == 1 and entry[1] > 0


def test_trusted_proxies_name_the_client(filled):
    fast, slow = both(filled, trusted_proxies="127.0.0.1")
    h = {"X-Forwarded-For": "203.0.113.7, 127.0.0.1"}
    a, b = fast.call(environ(q(), headers=h)), slow.call(environ(q(), headers=h))
    assert a == b and a["access"][1] == "203.0.113.7"


def _drop_key_after_query_check(stack, path: str, monkeypatch, drop: str = "reader"):
    """The keys file loses ``drop`` right after the limiter's ``query`` check
    of each request, and the keyring rereads it at its next look (a reload
    between the fast path's limiter call and Falcon's key check)."""
    import os

    from stemedb.http.auth import hash_key
    limiter, keyring = stack.state.limiter, stack.state.keyring
    real = limiter.check

    def check(endpoint, client):
        wait = real(endpoint, client)
        if endpoint == "query":
            tmp = path + ".new"
            with open(tmp, "w") as f:
                json.dump({"keys": [{"id": k, "sha256": hash_key(s), "scopes": sc}
                                    for k, (s, sc) in KEYS.items() if k != drop]}, f)
            os.replace(tmp, path)
            keyring._checked = float("-inf")    # its next look stats the file
        return wait
    monkeypatch.setattr(limiter, "check", check)


@pytest.mark.parametrize("data,limits,status", [
    (q(), "query=1/minute", "429"),     # handed over with the limiter's answer
    (b"{", "query=off", "400"),         # handed over with the body it refused
])
def test_a_keys_reload_after_the_limiter_does_not_change_the_answer(
        filled, keys_file, tmp_path, monkeypatch, data, limits, status):
    """A request is decided on one view of the keys: the one it was admitted
    (and counted) under.  A reload between the fast path's limiter call and
    the Falcon app's key check must not turn the answer into a 401 (nor count
    a wrong key against the address): the answer is the one Falcon gives
    when the same reload comes right after its own limiter call."""
    import shutil
    stacks = []
    for name, fast in (("fast", True), ("slow", False)):
        path = str(tmp_path / f"keys-{name}.json")
        shutil.copy(keys_file, path)
        s = Stack(filled, fast, api_keys_file=path, rate_limits=f"auth=30/minute;{limits}")
        if status == "429":     # the reader's one query a minute, used
            assert s.call(environ(q(), headers=auth("reader")))["status"] == "200 OK"
        _drop_key_after_query_check(s, path, monkeypatch)
        stacks.append(s)
    fast, slow = stacks
    before = fast.to_falcon
    a = fast.call(environ(data, headers=auth("reader")))
    b = slow.call(environ(data, headers=auth("reader")))
    assert fast.to_falcon == before + 1, "handed to Falcon after the limiter was asked"
    assert a["status"][:3] == status, a
    assert a == b
    assert fast.counts() == slow.counts()
    assert fast.ratelimited("auth", "auth_failures") is None
    assert slow.ratelimited("auth", "auth_failures") is None
    assert fast.ratelimited("query", "rate_limit") == slow.ratelimited("query", "rate_limit")
    # the reload has happened: the next request with the dropped key is refused, by both
    a = fast.call(environ(q(), headers=auth("reader")))
    b = slow.call(environ(q(), headers=auth("reader")))
    assert a == b and a["status"][:3] == "401"
