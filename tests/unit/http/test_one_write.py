"""worker.OneWriteResponse: an answer whose body comes in one piece goes out
with its head in one send, byte for byte what gunicorn's Response sends in
two; everything else is gunicorn's own path."""
from __future__ import annotations

import io

import pytest
from gunicorn import util
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

from stemedb.http import worker as W

# gunicorn's own Response (the worker process swaps wsgi.Response for the
# subclass; take the base, whatever a test did to the module before)
ORIGINAL = W.OneWriteResponse.__bases__[0]
assert ORIGINAL.__module__ == wsgi.__name__ and ORIGINAL.__name__ == "Response"


class Sock:
    """Records every sendall."""

    def __init__(self):
        self.calls: list[bytes] = []

    def sendall(self, data):
        self.calls.append(bytes(data))


class _Source:
    """A socket to read a request from (gunicorn's parser only calls recv)."""

    def __init__(self, data: bytes):
        self.buf = io.BytesIO(data)

    def recv(self, n):
        return self.buf.read(n)


def request(method: str = "POST", version: str = "1.1", extra: str = ""):
    raw = (f"{method} /v1/query HTTP/{version}\r\nHost: 127.0.0.1\r\n{extra}"
           f"Content-Length: 2\r\n\r\n{{}}").encode()
    cfg = Config()
    return next(iter(RequestParser(cfg, _Source(raw), ("127.0.0.1", 1)))), cfg


def answer(cls, *, method="POST", version="1.1", extra="", status="200 OK", headers=None,
           pieces=(b'{"a":1}',), monkeypatch=None):
    req, cfg = request(method, version, extra)
    sock = Sock()
    resp = cls(req, sock, cfg)
    if headers is None:
        headers = [("Content-Type", "application/json"), ("X-Request-Id", "r1"),
                   ("Content-Length", str(sum(len(p) for p in pieces)))]
    resp.start_response(status, headers)
    for p in pieces:
        resp.write(p)
    resp.close()
    return sock.calls, resp


@pytest.fixture(autouse=True)
def fixed_date(monkeypatch):
    # the Date header moves with the clock: both answers of a pair get one date
    monkeypatch.setattr(util, "http_date", lambda *a: "Fri, 27 Nov 2026 05:00:00 GMT")


def test_supported_here():
    assert W.one_write_supported()


def test_one_piece_body_goes_with_its_head():
    for body in (b"{}", b'{"a":1}', b"x" * 11_756, b"y" * W.ONE_WRITE_MAX):
        old, r_old = answer(ORIGINAL, pieces=(body,))
        new, r_new = answer(W.OneWriteResponse, pieces=(body,))
        assert len(old) == 2 and len(new) == 1, "head and body in one send"
        assert new[0] == b"".join(old), "the same bytes on the wire"
        assert new[0].endswith(b"\r\n\r\n" + body)
        assert r_new.sent == r_old.sent == len(body) and r_new.headers_sent


def test_everything_else_is_gunicorns_path():
    length2 = [("Content-Type", "application/json"), ("Content-Length", "2")]
    cases = [   # (joined: the one-send path applies, the case)
        (False, dict(pieces=(b"z" * (W.ONE_WRITE_MAX + 1),))),          # too big to copy
        (False, dict(pieces=(b'{"a":', b"1}"))),                         # two pieces
        (False, dict(pieces=(b"{}",), headers=[("Content-Type", "application/json")])),
        (False, dict(pieces=(b"{}",), method="HEAD", headers=length2)),  # no body sent
        (False, dict(pieces=(b"",), status="204 No Content", headers=[])),
        (False, dict(pieces=(b"{}{}",), headers=length2)),               # longer than announced
        (False, dict(pieces=(b"{",), headers=length2)),                  # shorter
        (False, dict(pieces=(), headers=[("Content-Length", "0")])),     # no write at all
        (True, dict(pieces=(b"{}",), version="1.0", headers=length2)),
        (True, dict(pieces=(b"{}",), extra="Connection: close\r\n")),
    ]
    for joined, case in cases:
        old, _ = answer(ORIGINAL, **case)
        new, _ = answer(W.OneWriteResponse, **case)
        assert b"".join(new) == b"".join(old), case
        if joined:
            assert len(old) == 2 and len(new) == 1, case
        else:
            assert new == old, case


def test_not_bytes_is_refused_as_gunicorn_does():
    with pytest.raises(TypeError):
        answer(W.OneWriteResponse, pieces=("text",))
