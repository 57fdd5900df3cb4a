"""The HTTP edges, in process: error JSON for what gunicorn refuses, framing
errors and read timeouts while the app reads a body, the worker's request-head
gathering and read deadline, the Host check of a keyless server, the wrong-key
throttle and the security headers.  (The same edges against a real server:
tests/integration/test_server_edges.py.)"""
from __future__ import annotations

import json
import socket
import time

import falcon.testing
import pytest
from gunicorn.http import errors as gerr

from stemedb.config import Settings
from stemedb.http.app import build_wsgi, create_app
from stemedb.http.dashboard import CSP, create_dashboard_app
from stemedb.http.errors import ClientTimeout, edge_problem
from stemedb.http.handle import StoreHandle
from stemedb.http.middleware import loopback_host
from stemedb.http.ratelimit import parse_rate_limits
from stemedb.http.server import gunicorn_options
from stemedb.http import worker as W

from .conftest import NO_LIMITS, auth, body


# ------------------------------------------------------------ error JSON

@pytest.mark.parametrize("exc, status, code", [
    (gerr.InvalidRequestLine("GARBAGE"), 400, "bad_request"),
    (gerr.InvalidRequestMethod("G(T"), 400, "bad_request"),
    (gerr.InvalidHTTPVersion("HTTP/7.0"), 400, "bad_request"),
    (gerr.InvalidHeader("CONTENT-LENGTH"), 400, "invalid_header"),
    (gerr.InvalidHeaderName("Bad Header"), 400, "invalid_header"),
    (gerr.InvalidChunkSize(b"zz"), 400, "bad_framing"),
    (gerr.ChunkMissingTerminator(b"XX"), 400, "bad_framing"),
    (gerr.LimitRequestLine(9000, 8190), 414, "uri_too_long"),
    (gerr.LimitRequestHeaders("limit request headers fields"), 431, "headers_too_large"),
    (gerr.UnsupportedTransferCoding("br"), 501, "unsupported_transfer_coding"),
    (gerr.InvalidResponseHeader("X-Bad\n"), 500, "internal_error"),
    (ClientTimeout("late"), 408, "request_timeout"),
    (RuntimeError("bug"), 500, "internal_error"),
])
def test_edge_problem_maps_gunicorn_errors(exc, status, code):
    p = edge_problem(exc)
    assert (p.status, p.code) == (status, code)
    assert p.message
    if code == "invalid_header" and isinstance(exc, gerr.InvalidHeader):
        assert p.field == "Content-Length"


def test_edge_problem_quotes_at_most_200_characters():
    p = edge_problem(gerr.InvalidRequestLine("x" * 9000))
    assert len(p.message) < 400


def test_worker_handle_error_writes_error_json():
    class Log:
        def __init__(self):
            self.lines = []

        def warning(self, *a):
            self.lines.append(a)

        exception = debug = warning

    fake = type("W", (), {"log": Log()})()
    a, b = socket.socketpair()
    with a, b:
        W.StemeWorker.handle_error(fake, None, a, ("10.0.0.1", 5), gerr.LimitRequestLine(9000, 8190))
        b.settimeout(2)
        raw = b.recv(65536)
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 414 ")
    assert b"Content-Type: application/json" in head and b"X-Content-Type-Options: nosniff" in head
    assert json.loads(payload)["error"]["code"] == "uri_too_long"
    assert fake.log.lines, "the refusal is logged"


class _RaisingStream:
    def __init__(self, exc):
        self.exc = exc

    def read(self, *a):
        raise self.exc


@pytest.mark.parametrize("exc, status, code", [
    (gerr.InvalidChunkSize(b"zz"), 400, "bad_framing"),
    (gerr.ChunkMissingTerminator(b"XX"), 400, "bad_framing"),
    (ClientTimeout("the request was not received within 60 s"), 408, "request_timeout"),
])
def test_errors_while_reading_a_chunked_body(client, store, exc, status, code):
    env = falcon.testing.create_environ(
        path="/v1/assert", method="POST",
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    env["wsgi.input"] = _RaisingStream(exc)
    got = {}

    def start_response(status_line, headers, exc_info=None):
        got["status"], got["headers"] = status_line, dict(headers)

    payload = b"".join(client.app_(env, start_response))
    assert got["status"].startswith(str(status)), (got, payload)
    assert json.loads(payload)["error"]["code"] == code


# ------------------------------------------------ the worker's read path

def test_body_to_gather():
    head = b"POST /v1/assert HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n"
    assert W._body_to_gather(head) == 12
    assert W._body_to_gather(head.replace(b"12", b"16777216")) == 16777216, "a batch's limit"
    assert W._body_to_gather(head.replace(b"12", b"999999999")) == 0, "over any limit: the app's 413"
    assert W._body_to_gather(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") == W.CHUNKED
    assert W._body_to_gather(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n") == 0
    assert W._body_to_gather(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                             b"Content-Length: 3\r\n\r\n") == 0, "both: the parser refuses"
    assert W._body_to_gather(head.replace(b"Host: x", b"Expect: 100-continue")) == 0
    assert W._body_to_gather(head.replace(b"Host: x", b"Content-Length: 12")) == 0, \
        "two lengths: gunicorn's parser refuses"
    assert W._body_to_gather(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == 0


def test_gather_completes_on_head_and_small_body_across_reads():
    g = W._Gather(b"")
    raw = b"POST /v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n{\"a\"}"[:-1]
    done_at = None
    for i in range(len(raw)):  # one byte at a time: the blank line split across reads
        g.buf += raw[i:i + 1]
        if g.complete():
            done_at = i
            break
    assert done_at == len(raw) - 1, "complete only with the whole 4-byte body"
    g2 = W._Gather(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\nGET /next")
    assert g2.complete(), "read-ahead with a whole head is complete at once"
    g3 = W._Gather(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
    assert not g3.complete()
    g3.buf += b"X" * (W.HEAD_MAX + 1)
    assert g3.complete(), "an oversized head goes to gunicorn's parser, which refuses it"


def _feed(raw: bytes) -> int | None:
    """The index of the byte with which a byte-by-byte feed of ``raw`` completes."""
    g = W._Gather(b"")
    for i in range(len(raw)):
        g.buf += raw[i:i + 1]
        if g.complete():
            return i
    return None


class _Pool:
    """The thread pool as the worker's enqueue sees it: records what it is given."""

    def __init__(self):
        self.taken = []

    def submit(self, fn, conn):
        self.taken.append(conn)

        class Future:
            def add_done_callback(self, cb):
                pass
        return Future()


def bare_worker():
    """A StemeWorker's event-loop state (no arbiter, no threads, no connection)."""
    import selectors
    import threading
    from collections import deque
    from types import SimpleNamespace

    from gunicorn.config import Config

    w = object.__new__(W.StemeWorker)
    w.cfg = Config()
    w.poller = selectors.DefaultSelector()
    w.tpool = _Pool()
    w.method_queue = SimpleNamespace(defer=lambda *a: None)
    w.gathering, w.gathered, w.nr_conns = deque(), 0, 0
    w.keepalived_conns, w.alive = deque(), True
    w._keep_lock, w._keep_open = threading.Lock(), True
    w.log = SimpleNamespace(exception=lambda *a, **k: None, debug=lambda *a, **k: None)
    return w


def _worker_and_conn():
    """A StemeWorker's gathering state (no arbiter, no threads) and one
    connection on a socket pair: (worker, connection, the client's socket)."""
    from gunicorn.workers.gthread import TConn

    w = bare_worker()
    w.nr_conns = 1
    server, client = socket.socketpair()
    conn = TConn(w.cfg, server, ("127.0.0.1", 5000), ("127.0.0.1", 18180))
    return w, conn, client


def test_a_request_already_in_the_socket_goes_to_a_thread_without_the_poller():
    w, conn, client = _worker_and_conn()
    client.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    w.enqueue_req(conn)
    assert w.tpool.taken == [conn], "a whole request is handed to a thread at once"
    assert not w.poller.get_map() and not w.gathering and w.gathered == 0, \
        "and never registered with the poller"
    assert conn.parser.unreader.buf.getvalue().startswith(b"GET /v1/health"), \
        "the bytes read wait in the parser's buffer"
    client.close()


def test_a_partial_request_waits_in_the_poller_until_it_is_complete():
    w, conn, client = _worker_and_conn()
    client.sendall(b"POST /v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n{")
    w.enqueue_req(conn)
    assert w.tpool.taken == [] and conn in w.gathering
    assert conn.sock in {k.fileobj for k in w.poller.get_map().values()}, \
        "an incomplete request is read by the event loop, holding no thread"
    client.sendall(b'"a"}')
    (key, _), = w.poller.select(1)
    key.data(key.fileobj)
    assert w.tpool.taken == [conn] and not w.gathering and not w.poller.get_map()
    client.close()


def test_read_ahead_of_a_partial_request_is_counted_while_it_is_held():
    w, conn, client = _worker_and_conn()
    client.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    w.enqueue_req(conn)                     # the first request, handed on
    unreader = conn.parser.unreader
    unreader.buf = type(unreader.buf)()     # as if a thread had parsed it...
    unreader.unread(b"POST /v1/query HTTP/1.1\r\nHost: x\r\n")   # ...and read ahead half the next
    conn.steme_ready = False
    w.tpool.taken.clear()
    w.enqueue_req(conn)
    assert w.gathered == len(b"POST /v1/query HTTP/1.1\r\nHost: x\r\n"), \
        "bytes held count against GATHER_BUDGET, the read-ahead included"
    client.sendall(b"Content-Length: 0\r\n\r\n")
    (key, _), = w.poller.select(1)
    key.data(key.fileobj)
    assert w.tpool.taken == [conn] and w.gathered == 0, "and come off it when handed on"
    client.close()


def test_a_client_gone_before_its_request_is_closed_without_a_thread():
    w, conn, client = _worker_and_conn()
    client.close()
    w.enqueue_req(conn)
    assert w.tpool.taken == [] and w.nr_conns == 0 and not w.gathering
    assert not w.poller.get_map()


CHUNKED_HEAD = b"POST /v1/query HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("chunks", [
    b"0\r\n\r\n",
    b"4\r\n{\"a\"\r\n3;ext=1\r\n:1}\r\n0\r\n\r\n",
    b"a\r\n" + b"\r\n" * 5 + b"\r\n0\r\n\r\n",        # chunk data that looks like framing
    b"2\r\n{}\r\n0\r\nX-Trailer: 1\r\n\r\n",
])
def test_gather_follows_chunk_sizes_to_the_last_chunk(chunks):
    raw = CHUNKED_HEAD + chunks
    assert _feed(raw) == len(raw) - 1


@pytest.mark.parametrize("chunks", [b"zz\r\n", b"2\r\n{}XX", b"x" * 1100])
def test_gather_hands_malformed_chunks_to_the_parser_at_once(chunks):
    """The parser, reading the same bytes, answers 400 bad_framing."""
    assert W._Gather(CHUNKED_HEAD + chunks).complete()


def test_deadline_socket_bounds_every_read():
    a, b = socket.socketpair()
    with a, b:
        d = W.DeadlineSocket(a)
        b.sendall(b"abc")
        assert d.recv(10) == b"abc", "no deadline: a plain read"
        d.start(0.2)
        b.sendall(b"de")
        assert d.recv(10) == b"de"
        assert a.gettimeout() is None, "the socket's own timeout is restored"
        with pytest.raises(ClientTimeout):
            d.recv(10)
        with pytest.raises(ClientTimeout):
            d.recv(10)  # already past: at once
        d.start(30)
        a.settimeout(0.1)  # a caller's shorter timeout (gunicorn's body drain) stays its own
        with pytest.raises(socket.timeout) as info:
            d.recv(10)
        assert not isinstance(info.value, ClientTimeout)
        assert a.gettimeout() == 0.1


class _CountingSocket:
    """A socket whose settimeout calls are counted (each is an ioctl with the GIL released)."""

    def __init__(self, sock):
        self.sock, self.sets = sock, []

    def settimeout(self, value):
        self.sets.append(value)
        self.sock.settimeout(value)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def test_deadline_socket_skips_a_timeout_set_and_set_back_without_a_read():
    # gunicorn's keep-alive drain after a body read to its end
    a, b = socket.socketpair()
    with a, b:
        c = _CountingSocket(a)
        d = W.DeadlineSocket(c)
        d.start(30)
        prior = d.gettimeout()
        d.settimeout(4.5)
        assert d.gettimeout() == 4.5, "the proxy answers what it was told"
        d.settimeout(prior)
        assert c.sets == [] and a.gettimeout() is None


def test_deadline_socket_applies_a_held_timeout_before_a_read():
    a, b = socket.socketpair()
    with a, b:
        c = _CountingSocket(a)
        d = W.DeadlineSocket(c)
        d.start(30)
        d.settimeout(0.1)       # the drain's read timeout, then a read: it bounds the read
        with pytest.raises(socket.timeout) as info:
            d.recv(10)
        assert not isinstance(info.value, ClientTimeout)
        assert a.gettimeout() == 0.1
        d.settimeout(None)      # set back after the read: applied at once
        assert a.gettimeout() is None
        d.settimeout(0.1)
        b.sendall(b"xy")
        assert d.recv(10) == b"xy" and a.gettimeout() == 0.1
        d.settimeout(None)
        d.settimeout(2.0)
        assert d.fileno() == a.fileno() and a.gettimeout() == 2.0, "any other use applies it"
        d.settimeout(None)
        assert a.gettimeout() is None
        with pytest.raises(ValueError):
            d.settimeout(-1)    # the socket's own error, at once
        d.settimeout(5.0)
        d.settimeout(1.0)       # another value before any read: the first is applied, then this
        assert a.gettimeout() == 1.0


def test_gunicorns_drain_through_the_deadline_socket():
    """Parser.finish_body reads through the proxy: a body left unread is
    drained (the held timeout applied), a body read to its end costs no
    settimeout on the socket."""
    from gunicorn.config import Config
    from gunicorn.http.parser import RequestParser
    for unread in (False, True):
        a, b = socket.socketpair()
        with a, b:
            c = _CountingSocket(a)
            d = W.DeadlineSocket(c)
            b.sendall(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody")
            parser = RequestParser(Config(), d, ("127.0.0.1", 1))
            req = next(parser)
            if not unread:
                assert req.body.read() == b"body"
            assert parser.finish_body(deadline=time.monotonic() + 5) is True
            assert (c.sets != []) is unread, c.sets     # the drain's read was bounded
            assert a.gettimeout() is None, "the prior timeout is back"


def test_gunicorns_drain_of_a_body_still_coming_is_bounded():
    from gunicorn.config import Config
    from gunicorn.http.parser import RequestParser
    a, b = socket.socketpair()
    with a, b:
        d = W.DeadlineSocket(a)
        b.sendall(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nbody")
        parser = RequestParser(Config(), d, ("127.0.0.1", 1))
        next(parser)
        t0 = time.monotonic()
        assert parser.finish_body(deadline=time.monotonic() + 0.3) is False
        assert time.monotonic() - t0 < 3, "the held timeout bounded the drain's read"
        assert a.gettimeout() is None


def test_serve_uses_the_project_worker():
    assert W.supported(), "the installed gunicorn has the gthread structure the worker needs"
    assert gunicorn_options(Settings())["worker_class"] == "stemedb.http.worker.StemeWorker"


# ------------------------------------------------------------ Host check

@pytest.mark.parametrize("host, ok", [
    ("localhost", True), ("LOCALHOST:18180", True), ("127.0.0.1", True),
    ("127.0.0.1:18180", True), ("127.5.6.7:1", True), ("[::1]", True), ("[::1]:18180", True),
    ("evil.example", False), ("evil.example:18180", False), ("localhost.evil.example", False),
    ("127.0.0.1.evil.example", False), ("10.0.0.1", False), ("[::2]:80", False),
    ("localhost:x", False), ("[::1]x", False), ("[::1", False), ("", False),
    ("0.0.0.0", False), ("127.0.0.1:99999999", False),
])
def test_loopback_host(host, ok):
    assert loopback_host(host) is ok


def _served(store, tmp_path, **over):
    over.setdefault("rate_limits", NO_LIMITS)
    over.setdefault("data_dir", str(tmp_path / "data"))
    return falcon.testing.TestClient(build_wsgi(StoreHandle(store), Settings(**over)))


def test_keyless_server_answers_only_loopback_host_names(store, tmp_path):
    c = _served(store, tmp_path)
    r = c.simulate_post("/v1/assert", json=body(), headers={"Host": "evil.example"})
    assert r.status_code == 400, r.text
    err = r.json["error"]
    assert (err["code"], err["field"]) == ("invalid_host", "Host") and "DNS rebinding" in err["message"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert store.query("drugs/semaglutide").assertions == [], "nothing written"
    for host in ("localhost:18180", "127.0.0.1:18180", "[::1]:18180"):
        r = c.simulate_post("/v1/assert", json=body(), headers={"Host": host})
        assert r.status_code in (200, 201), (host, r.text)
    r = c.simulate_get("/v1/health", headers={"Host": "evil.example"})
    assert r.status_code == 400, "every endpoint: a rebound page reads nothing either"
    dash = c.simulate_get("/api/summary", headers={"Host": "evil.example"},
                          extras={"SERVER_PORT": "18188"})
    assert dash.status_code == 400 and dash.json["error"]["code"] == "invalid_host"


def test_host_check_is_off_with_keys_or_allow_anonymous(store, tmp_path, keys_file):
    c = _served(store, tmp_path, api_keys_file=keys_file)
    r = c.simulate_post("/v1/assert", json=body(), headers={"Host": "db.example.com",
                                                            **auth("writer")})
    assert r.status_code == 201, r.text
    c = _served(store, tmp_path, allow_anonymous=True)
    assert c.simulate_get("/v1/health", headers={"Host": "db.example.com"}).status_code == 200


# -------------------------------------------------------- wrong-key throttle

def test_wrong_keys_are_throttled_per_address(make_client, keys_file):
    c = make_client(api_keys_file=keys_file)
    path = "/v1/assertions/" + "ab" * 32
    bad = {"X-API-Key": "wrong"}
    got = [c.simulate_get(path, headers=bad, remote_addr="10.0.0.5").status_code
           for _ in range(31)]
    assert got == [401] * 30 + [429], got
    r = c.simulate_get(path, headers=auth("reader"), remote_addr="10.0.0.5")
    assert r.status_code == 429, "the right key waits too: no oracle for guesses"
    assert int(r.headers["Retry-After"]) >= 1 and r.json["error"]["code"] == "rate_limited"
    assert c.simulate_get(path, remote_addr="10.0.0.5").status_code == 401, \
        "no key at all: still 401 (nothing guessed)"
    assert c.simulate_get(path, headers=auth("reader"), remote_addr="10.0.0.6").status_code == 404
    assert c.simulate_get(path, headers=bad, remote_addr="10.0.0.6").status_code == 401
    assert c.simulate_get("/v1/health", remote_addr="10.0.0.5").status_code == 200
    metrics = c.simulate_get("/metrics").text
    assert 'endpoint="auth"' in metrics


def test_missing_keys_are_not_counted(make_client, keys_file):
    c = make_client(api_keys_file=keys_file)
    got = {c.simulate_get("/v1/assertions/" + "ab" * 32, remote_addr="10.0.0.7").status_code
           for _ in range(40)}
    assert got == {401}


def test_wrong_key_throttle_follows_trusted_proxies(make_client, keys_file):
    c = make_client(api_keys_file=keys_file, trusted_proxies="10.9.9.9",
                    rate_limits=NO_LIMITS + ";auth=3/minute")
    path = "/v1/assertions/" + "ab" * 32
    bad = {"X-API-Key": "wrong"}

    def from_(client_ip):
        return c.simulate_get(path, headers={**bad, "X-Forwarded-For": client_ip},
                              remote_addr="10.9.9.9").status_code

    assert [from_("203.0.113.1") for _ in range(4)] == [401, 401, 401, 429]
    assert from_("203.0.113.2") == 401, "another client behind the same proxy"


def test_wrong_keys_on_the_dashboard_count_too(store, keys_file, tmp_path):
    api = create_app(store, Settings(api_keys_file=keys_file, rate_limits="auth=2/minute",
                                     data_dir=str(tmp_path / "data")))
    dash = falcon.testing.TestClient(create_dashboard_app(api.state))
    got = [dash.simulate_get("/api/summary", headers={"X-API-Key": "no"}).status_code
           for _ in range(3)]
    assert got == [401, 401, 429]


def test_auth_limit_setting():
    rules = parse_rate_limits(None)
    assert (rules["auth"].amount, rules["auth"].get_expiry()) == (30, 60)
    assert parse_rate_limits("auth=off")["auth"] is None
    assert parse_rate_limits("auth=5/second")["auth"].amount == 5


def test_auth_off_never_throttles(make_client, keys_file):
    c = make_client(api_keys_file=keys_file, rate_limits=NO_LIMITS + ";auth=off")
    got = {c.simulate_get("/v1/assertions/" + "ab" * 32, headers={"X-API-Key": "x"}).status_code
           for _ in range(40)}
    assert got == {401}


# ------------------------------------------------------------ security headers

def test_api_answers_carry_nosniff(client):
    for r in (client.simulate_get("/v1/health"), client.simulate_get("/nope"),
              client.simulate_post("/v1/assert", body="{", content_type="application/json"),
              client.simulate_get("/openapi.json")):
        assert r.headers.get("X-Content-Type-Options") == "nosniff", (r.status, r.headers)


def test_dashboard_sends_csp_frame_and_nosniff(store, tmp_path):
    api = create_app(store, Settings(rate_limits=NO_LIMITS, data_dir=str(tmp_path / "data")))
    dash = falcon.testing.TestClient(create_dashboard_app(api.state))
    for path in ("/", "/static/dashboard.js", "/api/summary", "/missing"):
        r = dash.simulate_get(path)
        assert r.headers.get("Content-Security-Policy") == CSP, path
        assert r.headers.get("X-Frame-Options") == "DENY", path
        assert r.headers.get("X-Content-Type-Options") == "nosniff", path
    assert "script-src 'self'" in CSP and "'unsafe-inline'" not in CSP
    assert "frame-ancestors 'none'" in CSP
