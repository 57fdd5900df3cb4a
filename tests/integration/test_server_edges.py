"""The HTTP server's edges, over raw sockets against a real `stemedb serve`
(gunicorn with the project's worker) on free 127.0.0.1 ports: errors raised
before the application are the contract's error JSON, invalid chunked bodies
are 400, slow clients do not stall the API, a keyless server refuses foreign
Host names, failed keys are throttled, and the dashboard's CSP holds in a
real browser.  Every loop here is bounded in count and time."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from stemedb.client import Client

from .test_server import servers  # noqa: F401 - the fixture
from .test_server_dashboard import browser  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow


def exchange(port: int, raw: bytes, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """Send ``raw`` on a new connection; (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        return read_answer(s)


def read_answer(s: socket.socket) -> tuple[int, dict, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before an answer: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def assert_error_json(answer, status: int, code: str | None = None) -> dict:
    got, headers, body = answer
    assert got == status, answer
    assert headers.get("content-type", "").startswith("application/json"), answer
    assert headers.get("x-content-type-options") == "nosniff", answer
    err = json.loads(body)["error"]
    assert set(err) <= {"code", "message", "field"} and err["message"], err
    if code is not None:
        assert err["code"] == code, err
    return err


HOST = b"Host: 127.0.0.1\r\n"


EDGE_CASES = [
    # a malformed request line
    (b"GARBAGE\r\n\r\n", 400, "bad_request"),
    (b"GET /v1/health HTTP/1.1 extra\r\n" + HOST + b"\r\n", 400, "bad_request"),
    (b"GET /v1/health HTTP/7.0\r\n" + HOST + b"\r\n", 400, "bad_request"),
    (b"G(T /v1/health HTTP/1.1\r\n" + HOST + b"\r\n", 400, "bad_request"),
    # 414: the request line is over gunicorn's limit (8190)
    (b"GET /v1/query?concept_path=" + b"a" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
     414, "uri_too_long"),
    # 431: one header too large, or too many headers
    (b"GET /v1/health HTTP/1.1\r\n" + HOST + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n",
     431, "headers_too_large"),
    (b"GET /v1/health HTTP/1.1\r\n" + HOST
     + b"".join(b"X-H%d: v\r\n" % i for i in range(120)) + b"\r\n", 431, "headers_too_large"),
    # bad headers and framing
    (b"GET /v1/health HTTP/1.1\r\n" + HOST + b"Bad Header: v\r\n\r\n", 400, "invalid_header"),
    (b"POST /v1/assert HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
     b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "invalid_header"),
    (b"POST /v1/assert HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
     b"Content-Length: x2\r\n\r\n{}", 400, "invalid_header"),
    (b"POST /v1/assert HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
     b"Transfer-Encoding: gzip\r\n\r\n{}", 400, "invalid_header"),
    (b"POST /v1/assert HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
     b"Transfer-Encoding: br, chunked\r\n\r\n0\r\n\r\n", 501, "unsupported_transfer_coding"),
]


def test_errors_before_the_app_are_error_json(servers):  # noqa: F811
    s = servers().start()
    for raw, status, code in EDGE_CASES:
        assert_error_json(exchange(s.port, raw), status, code)
    assert Client(s.url).health()["status"] == "healthy"


CHUNKED = [
    b"zz\r\n{}\r\n0\r\n\r\n",            # the reproduction: a chunk size that is no hex
    b"2\r\n{}XX0\r\n\r\n",               # a chunk without its CRLF
    b"2;\x01\r\n{}\r\n0\r\n\r\n",        # a bad chunk extension
]


def test_invalid_chunked_body_is_400(servers):  # noqa: F811
    s = servers().start()
    for chunks in CHUNKED:
        raw = (b"POST /v1/assert HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks)
        assert_error_json(exchange(s.port, raw), 400, "bad_framing")
    assert "Traceback" not in s.log(), s.log()[-4000:]
    assert Client(s.url).health()["assertion_count"] == 0


def probe_health(port: int, timeout: float) -> float:
    """Seconds until /v1/health answers 200 on a new connection (raises past ``timeout``)."""
    t0 = time.monotonic()
    status, _, body = exchange(port, b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     b"Connection: close\r\n\r\n", timeout=timeout)
    assert status == 200, body
    return time.monotonic() - t0


def test_slow_clients_do_not_stall_health(servers):  # noqa: F811
    """100 clients trickling their headers, 20 trickling a body with a
    Content-Length and 20 a chunked body, for about 4 s: /v1/health answers
    within 2 s all along, with 8 threads."""
    s = servers().start()
    stop = threading.Event()
    socks: list[socket.socket] = []
    post = (b"POST /v1/query HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n")
    for i in range(140):
        c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        if i < 100:
            c.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        elif i < 120:
            c.sendall(post + b"Content-Length: 200000\r\n\r\n{")
        else:
            c.sendall(post + b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n")
        socks.append(c)
    more = [b"X-Slow: 1\r\n"] * 100 + [b" "] * 20 + [b"1\r\n \r\n"] * 20

    def trickle():
        deadline = time.monotonic() + 4.0
        while not stop.is_set() and time.monotonic() < deadline:
            for c, data in zip(socks, more):
                try:
                    c.sendall(data)
                except OSError:
                    pass
            stop.wait(0.3)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        time.sleep(0.5)  # every slow connection has been accepted and has sent bytes
        waits = []
        for _ in range(6):
            waits.append(probe_health(s.port, timeout=2.0))
            time.sleep(0.4)
        assert max(waits) < 2.0, waits
    finally:
        stop.set()
        t.join(5)
        for c in socks:
            c.close()


def test_an_unfinished_request_head_gets_408(servers):  # noqa: F811
    """A head not complete within the header timeout (10 s) is answered 408
    and the connection closed, however the bytes trickle in."""
    s = servers().start()
    with socket.create_connection(("127.0.0.1", s.port), timeout=20) as c:
        c.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        t0 = time.monotonic()
        c.settimeout(0.5)
        answer = None
        while time.monotonic() - t0 < 16:
            try:
                c.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
            try:
                if c.recv(1, socket.MSG_PEEK):
                    c.settimeout(5)
                    answer = read_answer(c)
                    break
            except socket.timeout:
                continue
            except OSError:
                break
        assert answer is not None, "no answer within 16 s"
        assert 9 <= time.monotonic() - t0 <= 13
        assert_error_json(answer, 408, "request_timeout")


def test_keyless_server_refuses_foreign_host_names(servers):  # noqa: F811
    s = servers().start()
    body = json.dumps({"concept_path": "g", "predicate": "r", "value": 1,
                       "confidence": 0.5, "timestamp": "2024-01-01T00:00:00Z"}).encode()

    def post(host: bytes):
        return exchange(s.port, b"POST /v1/assert HTTP/1.1\r\nHost: " + host
                        + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                        b"Connection: close\r\n\r\n" % len(body) + body)

    err = assert_error_json(post(b"evil.example"), 400, "invalid_host")
    assert err["field"] == "Host"
    assert Client(s.url).health()["assertion_count"] == 0, "nothing written"
    assert_error_json(exchange(s.dport, b"GET /api/summary HTTP/1.1\r\nHost: evil.example\r\n"
                                        b"Connection: close\r\n\r\n"), 400, "invalid_host")
    assert post(b"127.0.0.1:%d" % s.port)[0] == 201
    assert post(b"localhost")[0] == 200  # the same assertion: exists


def test_failed_keys_are_throttled(servers, tmp_path):  # noqa: F811
    import subprocess
    import sys
    keys = str(tmp_path / "keys.json")
    key = subprocess.run([sys.executable, "-m", "stemedb.cli", "keys", "add", "--id", "k",
                          "--scopes", "read", "--file", keys],
                         capture_output=True, text=True, check=True).stdout.strip()
    s = servers(STEMEDB_API_KEYS_FILE=keys).start()
    statuses = []
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        for i in range(60):
            c.sendall(b"GET /v1/assertions/%s HTTP/1.1\r\nHost: evil.example\r\n"
                      b"X-API-Key: wrong-%d\r\n\r\n" % (b"ab" * 32, i))
            status, headers, _ = read_answer(c)
            statuses.append(status)
            if status == 429:
                assert int(headers["retry-after"]) >= 1
    assert statuses.count(401) == 30 and statuses[30:] == [429] * 30, statuses
    # the right key from the throttled client waits too (no oracle for guesses) ...
    answer = exchange(s.port, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer[0] == 200, "health is never limited"
    answer = exchange(s.port, b"GET /v1/assertions/%s HTTP/1.1\r\nHost: x\r\n"
                      b"Authorization: Bearer %s\r\nConnection: close\r\n\r\n"
                      % (b"ab" * 32, key.encode()))
    assert_error_json(answer, 429, "rate_limited")


def test_dashboard_csp_is_enforced_and_the_page_works_under_it(servers, browser):  # noqa: F811
    """Chromium applies the dashboard's policy: the page runs (its own script
    fills it in, no console errors), an injected inline script is refused,
    and the refusal is a console error the dashboard test would catch."""
    from .test_server_dashboard import console_errors, open_page, wait_value
    s = servers().start()
    cdp = open_page(browser)
    try:
        cdp.call("Page.navigate", url=s.dashboard_url + "/")
        assert wait_value(cdp, "document.getElementById('health').dataset.status",
                          "healthy") == "healthy", "the page's own script runs"
        assert console_errors(cdp.events) == [], console_errors(cdp.events)
        cdp.evaluate("window.__v = [];"
                     "document.addEventListener('securitypolicyviolation',"
                     "  e => window.__v.push(e.effectiveDirective));"
                     "const s = document.createElement('script');"
                     "s.textContent = 'window.__inline = 1'; document.body.appendChild(s);")
        assert wait_value(cdp, "window.__v.join()", "script-src-elem") == "script-src-elem"
        assert cdp.evaluate("window.__inline === undefined") is True
        cdp.evaluate("1")
        assert any("Content Security Policy" in e for e in console_errors(cdp.events)), cdp.events
    finally:
        cdp.close()
