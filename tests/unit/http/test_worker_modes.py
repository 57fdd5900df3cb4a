"""The worker's sockets keep their blocking mode between requests
(stemedb.http.worker: KeptSocket, StemeWorker.accept / finish_request /
_read_some), and the request-head scan (_head_end).

The invariant every test here holds: Python's record of a socket's mode
(``gettimeout()``: None blocking, 0.0 non-blocking) is the descriptor's
(``os.get_blocking``), whatever calls were skipped."""
from __future__ import annotations

import os
import random
import socket
from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from gunicorn.workers.gthread import TConn

from stemedb.http import worker as W

from .test_hardening import bare_worker


def _agrees(sock) -> bool:
    t = sock.gettimeout()
    return os.get_blocking(sock.fileno()) == (t is None)


class _Probe(socket.socket):
    """Counts the setblocking calls that reach the real socket (an ioctl each)."""

    __slots__ = ()
    calls: list = []

    def setblocking(self, flag):
        _Probe.calls.append(bool(flag))
        super().setblocking(flag)


class _Counted(W.KeptSocket, _Probe):
    __slots__ = ()


def _pair():
    a, b = socket.socketpair()
    k = _Counted(a.family, a.type, a.proto, fileno=a.detach())
    socket.socket.setblocking(k, True)
    _Probe.calls.clear()
    return k, b


def test_kept_socket_skips_only_calls_that_change_nothing():
    k, b = _pair()
    with k, b:
        k.setblocking(True)
        assert _Probe.calls == [] and _agrees(k), "blocking already: no system call"
        k.setblocking(False)
        assert _Probe.calls == [False] and k.gettimeout() == 0.0 and _agrees(k)
        k.setblocking(False)
        assert _Probe.calls == [False], "non-blocking already: no system call"
        k.setblocking(True)
        assert _Probe.calls == [False, True] and _agrees(k)
        k.settimeout(2.5)       # a timeout: non-blocking descriptor, blocking for Python
        k.setblocking(True)
        assert _Probe.calls[-1] is True and k.gettimeout() is None and _agrees(k), \
            "from a timeout, setblocking(True) is a real change"


def test_kept_socket_keeps_blocking_only_while_asked():
    k, b = _pair()
    with k, b:
        k.keep_blocking = True
        k.setblocking(False)
        assert _Probe.calls == [] and k.gettimeout() is None and _agrees(k)
        k.keep_blocking = False
        k.setblocking(False)
        assert _Probe.calls == [False] and _agrees(k)


def test_kept_socket_mode_always_agrees_with_the_descriptor():
    rnd = random.Random(7)
    k, b = _pair()
    with k, b:
        for _ in range(400):
            op = rnd.randrange(5)
            if op == 0:
                k.setblocking(True)
            elif op == 1:
                k.setblocking(False)
            elif op == 2:
                k.settimeout(rnd.choice([None, 0.0, 0.5]))
            elif op == 3:
                k.keep_blocking = not k.keep_blocking
            else:
                k.setblocking(rnd.random() < 0.5)
            assert _agrees(k)


# ------------------------------------------------------------- the worker

def _worker():
    return bare_worker()


def _done(result) -> Future:
    f: Future = Future()
    f.set_result(result)
    return f


def test_accept_gives_a_kept_socket_in_the_mode_python_records():
    w = _worker()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    client = socket.create_connection(listener.getsockname())
    try:
        client.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        w.accept(listener)
        (conn,) = w.tpool.taken
        assert type(conn.sock) is W.KeptSocket and _agrees(conn.sock)
        assert w.nr_conns == 1
        assert conn.parser.unreader.buf.getvalue().startswith(b"GET /v1/health")
        conn.sock.close()
    finally:
        client.close()
        listener.close()


def test_a_kept_alive_gathered_connection_stays_blocking_and_is_read_without_waiting():
    w = _worker()
    a, client = socket.socketpair()
    sock = W.KeptSocket(a.family, a.type, a.proto, fileno=a.detach())
    socket.socket.setblocking(sock, True)
    conn = TConn(w.cfg, sock, ("127.0.0.1", 5000), ("127.0.0.1", 18180))
    w.nr_conns = 1
    client.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    w.enqueue_req(conn)
    assert w.tpool.taken == [conn]
    sock.setblocking(True)          # what gthread's handle() does in the thread
    conn.parser.unreader.buf = type(conn.parser.unreader.buf)()   # the request parsed
    w.finish_request(conn, _done(True))
    assert conn in w.keepalived_conns and sock in {k.fileobj for k in w.poller.get_map().values()}
    assert sock.gettimeout() is None and _agrees(sock), \
        "kept blocking in the poller (gthread would have made it non-blocking)"
    # the poller says readable; nothing there yet is never a wait on a blocking socket
    w.poller.unregister(sock)
    w.keepalived_conns.remove(conn)
    conn.steme_ready = False
    w.tpool.taken.clear()
    w.enqueue_req(conn)
    assert w.tpool.taken == [] and conn in w.gathering, "no data: still gathering, no block"
    client.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    (key, _), = w.poller.select(1)
    key.data(key.fileobj)
    assert w.tpool.taken == [conn] and not w.gathering
    assert sock.gettimeout() is None and _agrees(sock)
    # a closing answer: gthread's graceful close, from a blocking socket
    w.finish_request(conn, _done(False))
    assert w.nr_conns == 0 and sock.fileno() == -1
    client.close()


def test_a_connection_not_gathered_gets_gthreads_switch():
    """No deadline socket (TLS, HTTP/2, or gunicorn's own path): finish_request
    is gthread's, the socket made non-blocking for the poller."""
    w = _worker()
    a, client = socket.socketpair()
    sock = W.KeptSocket(a.family, a.type, a.proto, fileno=a.detach())
    socket.socket.setblocking(sock, True)
    conn = TConn(w.cfg, sock, ("127.0.0.1", 5000), ("127.0.0.1", 18180))
    sock.setblocking(True)
    conn.initialized = True
    conn.parser = SimpleNamespace(unreader=SimpleNamespace(buf=SimpleNamespace(getvalue=bytes)))
    w.nr_conns = 1
    w.finish_request(conn, _done(True))
    assert sock.gettimeout() == 0.0 and _agrees(sock)
    w.poller.unregister(sock)
    sock.close()
    client.close()


# ------------------------------------------------------------ _head_end

def _head_end_reference(buf: bytes, start: int) -> int:
    """The scan before the bounded "\\n\\n" search: both ends searched to the
    buffer's end, the nearer one taken."""
    i = buf.find(b"\r\n\r\n", start)
    j = buf.find(b"\n\n", start)
    ends = [k + (4 if k == i else 2) for k in (i, j) if k >= 0]
    return min(ends) if ends else -1


@pytest.mark.parametrize("seed", range(20))
def test_head_end_is_the_nearer_blank_line(seed):
    rnd = random.Random(seed)
    alphabet = [b"\r", b"\n", b"a", b":", b" ", b"\r\n", b"\n\n", b"\r\n\r\n"]
    for _ in range(300):
        buf = bytearray(b"".join(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 40))))
        start = rnd.randrange(0, len(buf) + 1)
        assert W._head_end(buf, start) == _head_end_reference(bytes(buf), start), (buf, start)


def test_head_end_on_a_head_followed_by_a_large_body():
    head = b"POST /v1/assert/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n"
    for body in (b"x" * 65536, b"x\n\ny" * 1000, b""):
        buf = bytearray(head + body)
        assert W._head_end(buf, 0) == len(head) == _head_end_reference(bytes(buf), 0)
    bare = bytearray(b"GET / HTTP/1.0\nHost: x\n\n" + b"z\r\n\r\n")
    assert W._head_end(bare, 0) == 24 == _head_end_reference(bytes(bare), 0)


# ------------------------------------------- kept alive from the request's thread

def _kept_conn(w):
    a, client = socket.socketpair()
    sock = W.KeptSocket(a.family, a.type, a.proto, fileno=a.detach())
    socket.socket.setblocking(sock, True)
    conn = TConn(w.cfg, sock, ("127.0.0.1", 5000), ("127.0.0.1", 18180))
    w.nr_conns += 1
    return conn, client


class _Queue:
    def __init__(self):
        self.deferred = []

    def defer(self, fn, *args):
        self.deferred.append((fn, args))


def test_a_kept_alive_request_goes_back_to_the_poller_from_its_thread():
    w = _worker()
    w.method_queue = _Queue()
    conn, client = _kept_conn(w)
    client.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    w.enqueue_req(conn)                 # gathered: the thread's path
    assert w.tpool.taken == [conn]
    conn.parser.unreader.buf = type(conn.parser.unreader.buf)()
    w.handle = lambda c: True           # gthread's handle: answered, keep-alive
    assert w._handle_kept(conn) is W.KEPT
    assert list(w.keepalived_conns) == [conn] and conn.timeout is not None
    assert conn.sock in {k.fileobj for k in w.poller.get_map().values()}
    w._handled(conn, _done(W.KEPT))
    assert w.method_queue.deferred == [], "no round trip through the event loop"
    # the loop then sees the next request as gthread would have it
    client.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    (key, _), = w.poller.select(1)
    key.data(key.fileobj)
    assert not w.keepalived_conns and w.tpool.taken == [conn, conn]
    conn.sock.close()
    client.close()


@pytest.mark.parametrize("case", ["closing", "read_ahead", "stopping", "capped", "raised"])
def test_anything_but_a_plain_keep_alive_goes_the_event_loops_way(case):
    w = _worker()
    w.method_queue = _Queue()
    conn, client = _kept_conn(w)
    client.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    w.enqueue_req(conn)
    conn.parser.unreader.buf = type(conn.parser.unreader.buf)()
    w.handle = lambda c: case != "closing"
    if case == "read_ahead":
        conn.parser.unreader.unread(b"GET /next")
    elif case == "stopping":
        w.alive = False
    elif case == "capped":
        w._cap_keepalive = W.StemeWorker._cap_keepalive.__get__(w)
        w._cap_keepalive(0.0)
        assert w._keep_open is False
    if case == "raised":
        fs: Future = Future()
        fs.set_exception(RuntimeError("x"))
    else:
        result = w._handle_kept(conn)
        assert result is not W.KEPT
        fs = _done(result)
    assert not w.keepalived_conns and not w.poller.get_map(), "nothing done in the thread"
    w._handled(conn, fs)
    assert [(fn.__name__, args[0]) for fn, args in w.method_queue.deferred] == \
        [("finish_request", conn)], "the event loop finishes it, as in gthread"
    conn.sock.close()
    client.close()


# ------------------------------------------- a large gathered body beside its head

def test_deadline_socket_reads_a_held_body_before_the_socket():
    a, b = socket.socketpair()
    with a, b:
        d = W.DeadlineSocket(a)
        body = bytes(range(256)) * 100
        d.hold_body(body)
        assert d.recv(len(body) + 10) is body, "a read that wants it all gets the object itself"
        d.hold_body(body)
        pieces = [d.recv(7000) for _ in range(4)]
        assert b"".join(pieces) == body[:25600] and len(pieces[-1]) == 25600 - 21000
        b.sendall(b"next")
        assert d.recv(10) == b"next", "then the socket, as before"
        d.hold_body(body)
        d.recv(100)
        assert d.take_body() == body[100:] and d.take_body() == b""


def _big_request(body: bytes, tail: bytes = b"") -> bytes:
    return (b"POST /v1/assert/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body + tail


@pytest.mark.parametrize("read_by_app", [True, False])
def test_a_large_body_is_held_beside_its_head_and_reads_back_whole(read_by_app):
    w = _worker()
    conn, client = _kept_conn(w)
    body = b'{"assertions":[' + b"7" * (3 * W.SPLIT_BODY) + b"]}"
    raw = _big_request(body)
    client.setblocking(False)
    client.sendall(raw)                 # the socket pair holds it all
    w.enqueue_req(conn)
    while not w.tpool.taken:            # the rest, as the poller would call it
        (key, _), = w.poller.select(1)
        key.data(key.fileobj)
    assert conn.parser.unreader.buf.getvalue() == raw[:len(raw) - len(body)], "the head alone"
    assert conn.deadline_sock._body == body
    req = next(conn.parser)
    if read_by_app:
        assert req.body.read(len(body)) == body
    assert conn.parser.finish_body() is True, "the keep-alive drain reads what the app left"
    assert conn.deadline_sock._body is None and conn.parser.unreader.buf.getvalue() == b""
    conn.sock.close()
    client.close()


@pytest.mark.parametrize("case", ["pipelined", "small", "chunked"])
def test_other_requests_stay_whole_in_the_parsers_buffer(case):
    w = _worker()
    conn, client = _kept_conn(w)
    body = b"8" * (3 * W.SPLIT_BODY)
    if case == "pipelined":
        raw = _big_request(body, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    elif case == "small":
        raw = _big_request(b"9" * 100)
    else:
        raw = (b"POST /v1/assert/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    client.setblocking(False)
    client.sendall(raw)
    w.enqueue_req(conn)
    while not w.tpool.taken:
        (key, _), = w.poller.select(1)
        key.data(key.fileobj)
    assert conn.parser.unreader.buf.getvalue() == raw and conn.deadline_sock._body is None
    conn.sock.close()
    client.close()
