"""The gunicorn worker of ``stemedb serve``: ``gthread`` with fewer hand-offs
per request, error JSON below the application and slow clients off the pool.

**Error JSON below the application.** gunicorn answers a request it cannot
parse (a malformed request line, 414, 431, bad framing) itself, with an HTML
page written by ``Worker.handle_error``; it has no setting for the page
(benoitc/gunicorn#993).  :meth:`StemeWorker.handle_error` writes the
contract's ``{"error": {"code", "message", "field"?}}`` instead, with the
status gunicorn would have chosen (:func:`stemedb.http.errors.edge_problem`).

**Slow clients hold no thread.** The stock gthread worker gives a connection
to a pool thread as soon as one byte has arrived, and the thread then blocks
until the whole request head is in: ``threads`` clients trickling their
headers stall every other request, ``/v1/health`` included.  Here a request
head, and a body of at most :data:`GATHER_BODY_MAX` bytes with a
``Content-Length``, are read by the worker's event loop without blocking and
handed to a thread only once complete.  The head must be complete within
:data:`HEADER_TIMEOUT` seconds of its first byte being awaited (else 408 and
the connection is closed; an idle new connection is closed silently) and a
gathered body within :data:`BODY_TIMEOUT` after the head (else 408).
Chunked bodies are gathered too (their chunk sizes followed, not decoded).
A body announced with ``Expect: 100-continue``, and one that
would take the bytes held by all requests being read past
:data:`GATHER_BUDGET` are read by the thread instead, under the same
deadline (:class:`DeadlineSocket`): past it the read raises
:class:`~stemedb.http.errors.ClientTimeout`, answered 408.  TLS terminated by
gunicorn itself, and HTTP/2, take gunicorn's own path (nginx or envoy in
front is the documented set-up; see docs/http.md).

**No blocking-mode switch per request.** gthread sets a kept-alive socket
non-blocking for its poller (``finish_request``) and blocking again in the
thread that takes its next request (``handle``): two ``ioctl`` calls a
request, each with the GIL let go (a hand-off to another thread under
load).  Here a socket whose requests the event loop gathers stays blocking:
the loop reads it with ``MSG_DONTWAIT`` (never blocks, whatever the mode),
the poller does not care, and :class:`KeptSocket` skips a
``setblocking`` that would not change the mode.  A write from the loop
(``util.write_nonblock``: a 408, an error page) still switches the mode
itself, as before.

**A kept-alive connection goes back to the poller from its thread.**
gthread hands every finished request back to the event loop (a future's
callback, a queue, a byte written to a pipe, the loop woken to read it)
only for the loop to register the socket again.  For a gathered request
answered with keep-alive and nothing read ahead, the thread does it
itself: the keep-alive deadline, ``keepalived_conns`` and the poller, in
that order, so that the loop finds the connection where gthread would
have put it.  Everything else (a closing answer, a read-ahead, a stopping
worker) goes the gthread way.  The loop's own structures are safe to
share: ``deque.append`` and the selector's ``register`` are single steps
under the GIL, the deque is only walked at shutdown (``_cap_keepalive``,
under the lock this path takes, after which it is not taken) and
``nr_conns`` is not touched.

**One send per answer.** gunicorn sends an answer's head and its body in
two ``sendall`` calls (each a system call with the GIL let go); an answer
whose body comes in one piece of at most :data:`ONE_WRITE_MAX` bytes, with
its ``Content-Length``, goes out in one (:class:`OneWriteResponse`, the
head built by gunicorn's own ``send_headers``: the same bytes).

The worker relies on gthread's structure from gunicorn 24 on (connections
handed to the pool through ``enqueue_req`` on the event-loop thread, the
``method_queue`` and ``murder_pending`` of its loop); :func:`supported` says
whether the installed gunicorn has it, and ``gunicorn_options`` falls back to
plain ``gthread`` when it does not.
"""
from __future__ import annotations

import errno
import re
import selectors
import socket
import threading
import time
from collections import deque
from functools import partial

from gunicorn import http, util
from gunicorn.http import wsgi
from gunicorn.workers.gthread import TConn, ThreadWorker

from .errors import REQUEST_TIMEOUT_MESSAGE, ClientTimeout, edge_problem, error_body

HEADER_TIMEOUT = 10.0  # seconds for a request head, from when it is awaited
BODY_TIMEOUT = 60.0  # seconds for the body, after the head
# Bodies up to this size (the batch limit) are read before a thread is taken;
# a bigger one is refused by the app from its Content-Length without reading.
GATHER_BODY_MAX = 16 * 1024 * 1024
# Bytes held by all requests being read; past it a request's body is left to
# its thread (read under BODY_TIMEOUT) rather than held in memory.
GATHER_BUDGET = 256 * 1024 * 1024
HEAD_MAX = 1024 * 1024  # a head still incomplete at this size goes to gunicorn's parser (431)
READ_CHUNK = 64 * 1024
# A gathered body of at least this size is handed to the thread beside the
# head (DeadlineSocket.hold_body), not behind it in the parser's buffer.
SPLIT_BODY = 16 * 1024

_CONTENT_LENGTH = re.compile(rb"^content-length[ \t]*:[ \t]*(\d{1,12})[ \t]*\r?$", re.I | re.M)
_TRANSFER_ENCODING = re.compile(rb"^transfer-encoding[ \t]*:([^\r\n]*)", re.I | re.M)
_EXPECT = re.compile(rb"^expect[ \t]*:", re.I | re.M)


def supported() -> bool:
    """Whether the installed gunicorn's gthread worker has what this one builds on."""
    return all(hasattr(ThreadWorker, name) for name in
               ("enqueue_req", "murder_pending", "finish_request", "handle_error", "accept"))


# An answer whose whole body comes in one piece of at most this many bytes
# goes out with its head in one send (OneWriteResponse); a bigger one is
# written as gunicorn writes it (head, then body), not copied.
ONE_WRITE_MAX = 64 * 1024


class _HeadBytes:
    """Stands in for the socket while gunicorn's ``send_headers`` runs: keeps
    the head's bytes instead of sending them."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = b""

    def sendall(self, data: bytes) -> None:
        self.data += data


class OneWriteResponse(wsgi.Response):
    """gunicorn's HTTP/1 response, the head and a one-piece body sent together.

    gunicorn writes an answer's head (``send_headers``) and its body in two
    ``sendall`` calls: two system calls, each letting the GIL go, which
    under load hands the interpreter to another thread and waits to get it
    back.  When the first ``write`` is the whole body (its length the
    answer's ``Content-Length``, not chunked, not a HEAD or a 204/304,
    nothing sent yet, at most :data:`ONE_WRITE_MAX` bytes) the head is
    built by gunicorn's own ``send_headers`` into :class:`_HeadBytes` and
    sent with the body in one call: the same bytes on the wire.  Anything
    else is gunicorn's ``write``."""

    def write(self, arg):
        if (self.headers_sent or type(arg) is not bytes or self.chunked or self._omits_body
                or self.sent or self.response_length != len(arg)
                or len(arg) > ONE_WRITE_MAX):
            return super().write(arg)
        sock, head = self.sock, _HeadBytes()
        self.sock = head
        try:
            self.send_headers()
        finally:
            self.sock = sock
        self.sent = len(arg)
        util.write(sock, head.data + arg)


def one_write_supported() -> bool:
    """Whether gunicorn's Response keeps the state :class:`OneWriteResponse`
    reads (a Response's ``__init__`` only sets attributes: one is made and
    looked at)."""
    try:
        r = wsgi.Response(None, None, None)
    except Exception:  # noqa: BLE001 - another gunicorn: leave its Response alone
        return False
    return all(hasattr(r, name) for name in (
        "headers_sent", "chunked", "_omits_body", "sent", "response_length", "sock")) and all(
        callable(getattr(r, name, None)) for name in ("send_headers", "write"))


class KeptSocket(socket.socket):
    """A client socket whose ``setblocking`` makes no system call when the
    socket is in that mode already (``gettimeout()``: Python's own record of
    the mode, which every mode change made through the socket keeps), and
    which ignores ``setblocking(False)`` while ``keep_blocking`` is set
    (only around gthread's ``finish_request``: see :class:`StemeWorker`)."""

    __slots__ = ("keep_blocking",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.keep_blocking = False

    def setblocking(self, flag) -> None:
        timeout = self.gettimeout()
        if flag:
            if timeout is None:
                return          # blocking already
        elif timeout == 0.0 or (self.keep_blocking and timeout is None):
            return              # non-blocking already, or kept blocking on purpose
        super().setblocking(flag)


class DeadlineSocket:
    """The socket as gunicorn's parser reads it: every ``recv`` ends by
    ``deadline`` (``time.monotonic()``), else :class:`ClientTimeout`.

    Writes go to the real socket (``TConn.sock``), so only reads are bounded.
    """

    def __init__(self, sock):
        self.sock = sock
        self.deadline: float | None = None
        self.seconds = BODY_TIMEOUT
        self._held = _NOT_HELD   # a timeout set on this proxy, not yet on the socket
        self._base = None        # the socket's timeout when it was held back
        self._away = False       # the socket's timeout was changed through this proxy...
        self._rest = None        # ...from this one: until set back, every set goes at once
        self._body: bytes | None = None   # a gathered body, read before the socket
        self._body_at = 0

    # A large gathered body is not put behind the head in the parser's
    # buffer: gunicorn's parser copies everything it holds several times
    # while it looks for the end of the head (bytes(buf), slices, unread),
    # ~1-2 ms for a 200 KB batch.  The head goes there alone and the body is
    # read here, as if it were still in the socket: one bytes object, handed
    # over whole to a read that wants at least as much.

    def hold_body(self, data: bytes) -> None:
        self._body, self._body_at = data, 0

    def take_body(self) -> bytes:
        """What is left of a held body (and no more held)."""
        data, at = self._body, self._body_at
        self._body = None
        return b"" if data is None else data[at:]

    def start(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    # gunicorn's keep-alive drain (``Parser.finish_body``) sets a read timeout
    # on the socket it reads, reads what is left of the body, and sets the
    # prior timeout back.  When the app read the body to its end nothing is
    # read, and each ``settimeout`` is an ``ioctl`` with the GIL released (a
    # hand-off to another thread under load): so a timeout set here is held
    # back until something reads or asks the socket, and set back before
    # that, neither call happens.  The socket's state after the pair is the
    # same either way.

    def gettimeout(self):
        if self._held is not _NOT_HELD:
            return self._held
        return self.sock.gettimeout()

    def settimeout(self, value) -> None:
        if not (value is None or (type(value) in (int, float) and value >= 0)):
            self._release()
            self.sock.settimeout(value)     # an odd value: the socket's own error
            return
        if self._held is not _NOT_HELD:
            if value == self._base:         # set back before any read: nothing changed
                self._held = _NOT_HELD
                return
            self._release()
        elif not self._away:                # at rest: hold it back
            base = self.sock.gettimeout()
            if value != base:
                self._held, self._base = value, base
            return
        # the socket was changed through this proxy: follow at once, at rest
        # again once set back to what it had before
        self.sock.settimeout(value)
        if value == self._rest:
            self._away = False

    def _release(self) -> None:
        if self._held is not _NOT_HELD:
            value, self._held = self._held, _NOT_HELD
            self.sock.settimeout(value)
            self._away, self._rest = True, self._base

    def recv(self, size: int, *flags) -> bytes:
        data = self._body
        if data is not None and size > 0:
            at = self._body_at
            left = len(data) - at
            if size >= left:
                self._body = None
                return data if at == 0 else data[at:]
            self._body_at = at + size
            return data[at:at + size]
        self._release()
        if self.deadline is None:
            return self.sock.recv(size, *flags)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise ClientTimeout(REQUEST_TIMEOUT_MESSAGE.format(seconds=self.seconds))
        prior = self.sock.gettimeout()
        self.sock.settimeout(remaining if prior is None else min(prior, remaining))
        try:
            return self.sock.recv(size, *flags)
        except socket.timeout:
            if prior is not None and prior < remaining:
                raise  # the caller's own, shorter timeout (gunicorn's body drain)
            raise ClientTimeout(REQUEST_TIMEOUT_MESSAGE.format(seconds=self.seconds)) from None
        finally:
            try:
                self.sock.settimeout(prior)
            except OSError:
                pass

    def __getattr__(self, name):
        self._release()     # anything else sees the socket as it was told to be
        return getattr(self.sock, name)


_NOT_HELD = object()
KEPT = object()   # StemeWorker._handle_kept: the thread put the connection back in the poller
CHUNKED = -1  # _body_to_gather: a chunked body, gathered chunk by chunk


def _body_to_gather(head: bytes) -> int:
    """Bytes of body to read before a thread is taken: the ``Content-Length``
    when it is the only framing and within :data:`GATHER_BODY_MAX`,
    :data:`CHUNKED` for ``Transfer-Encoding: chunked`` alone, else 0 (the
    thread reads whatever body there is; gunicorn's parser judges odd
    framing)."""
    if _EXPECT.search(head):
        return 0
    codings = _TRANSFER_ENCODING.findall(head)
    lengths = _CONTENT_LENGTH.findall(head)
    if codings:
        ok = len(codings) == 1 and codings[0].strip().lower() == b"chunked" and not lengths
        return CHUNKED if ok else 0
    if len(lengths) != 1:
        return 0  # none, or several
    n = int(lengths[0])
    return n if n <= GATHER_BODY_MAX else 0


def _head_end(buf: bytearray, start: int) -> int:
    """The index just past the blank line that ends the head, or -1."""
    i = buf.find(b"\r\n\r\n", start)
    # a bare "\n\n" counts only before the CRLF one: with the CRLF end
    # found, the body after it (a batch's 64 KiB read) is not searched
    j = buf.find(b"\n\n", start) if i < 0 else buf.find(b"\n\n", start, i + 2)
    if j >= 0 and (i < 0 or j + 2 <= i + 4):
        return j + 2
    return i + 4 if i >= 0 else -1


class _Gather:
    """The bytes of one request read so far, and whether they are complete.

    "Complete" only decides when a thread takes over: a wrong guess (odd
    framing) costs a thread reading under the deadline, never a wrong parse,
    since gunicorn's parser reads the same bytes again."""

    __slots__ = ("buf", "scanned", "head_end", "need", "chunk_at", "deadline", "seconds")

    def __init__(self, buf: bytes):
        self.buf = bytearray(buf)
        self.scanned = 0
        self.head_end = -1
        self.need = 0
        self.chunk_at = -1  # chunked: where the next chunk-size line starts
        self.seconds = HEADER_TIMEOUT
        self.deadline = time.monotonic() + HEADER_TIMEOUT

    def complete(self) -> bool:
        if self.head_end < 0:
            end = _head_end(self.buf, max(0, self.scanned - 3))
            self.scanned = len(self.buf)
            if end < 0:
                return len(self.buf) > HEAD_MAX
            self.head_end = end
            body = _body_to_gather(bytes(self.buf[:end]))
            if body == CHUNKED:
                self.chunk_at = end
            self.need = end + max(body, 0)
            if body:
                self.seconds = BODY_TIMEOUT
                self.deadline = time.monotonic() + BODY_TIMEOUT
        if self.chunk_at >= 0:
            return self._chunks_complete()
        return len(self.buf) >= self.need

    def _chunks_complete(self) -> bool:
        buf = self.buf
        while True:
            pos = self.chunk_at
            eol = buf.find(b"\r\n", pos, pos + 1024)
            if eol < 0:
                return len(buf) - pos >= 1024  # no size line in 1 KiB: let the parser refuse it
            try:
                size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip(), 16)
            except ValueError:
                return True  # malformed: the parser answers 400 bad_framing
            if size == 0:  # the last chunk, then trailers up to a blank line
                if len(buf) < eol + 4:
                    return False
                return buf[eol + 2:eol + 4] == b"\r\n" or buf.find(b"\r\n\r\n", eol) >= 0
            nxt = eol + 2 + size + 2
            if size < 0 or nxt - self.head_end > GATHER_BODY_MAX:
                return True  # over the limit: the app refuses it while reading
            if len(buf) < nxt:
                return False
            if buf[nxt - 2:nxt] != b"\r\n":
                return True  # no CRLF after the data: the parser answers 400 bad_framing
            self.chunk_at = nxt


class StemeWorker(ThreadWorker):
    """gthread with error JSON and request heads read off the thread pool."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gathering: deque = deque()  # connections whose request is being read
        self.gathered = 0  # bytes they hold (GATHER_BUDGET)
        # a thread puts its kept-alive connection back in the poller itself
        # (_keep_here) until the worker stops (_cap_keepalive)
        self._keep_lock = threading.Lock()
        self._keep_open = hasattr(ThreadWorker, "_cap_keepalive")

    def init_process(self):
        # In the worker process (after the fork): gunicorn's create() builds
        # the HTTP/1 responses from wsgi.Response (HTTP/2 passes its own)
        if one_write_supported():
            wsgi.Response = OneWriteResponse
        super().init_process()

    # -- sockets that keep their blocking mode --------------------------------

    def accept(self, listener):
        """gthread's ``accept``, the client socket a :class:`KeptSocket`."""
        try:
            plain, client_addr = listener.accept()
            client_sock = KeptSocket(plain.family, plain.type, plain.proto,
                                     fileno=plain.detach())
            self.nr_conns += 1
            # the same call gthread makes, made for real: Python's record of
            # the mode and the descriptor's agree from here on
            socket.socket.setblocking(client_sock, True)
            conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())
            self.enqueue_req(conn)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise

    def finish_request(self, conn, fs):
        # A connection whose requests are gathered goes back to the poller
        # still blocking: the event loop reads it with MSG_DONTWAIT
        # (_read_some), so gthread's setblocking(False) here, and its
        # thread's setblocking(True) before the next request, are both
        # skipped (KeptSocket).
        sock = conn.sock
        if type(sock) is not KeptSocket or getattr(conn, "deadline_sock", None) is None:
            return super().finish_request(conn, fs)
        sock.keep_blocking = True
        try:
            return super().finish_request(conn, fs)
        finally:
            sock.keep_blocking = False

    # -- kept-alive connections back to the poller from their thread ----------

    def _handle_kept(self, conn):
        """gthread's ``handle`` for a gathered request; :data:`KEPT` when the
        connection was put back in the poller here (:meth:`_keep_here`)."""
        result = self.handle(conn)
        if result is True and self._keep_here(conn):
            return KEPT
        return result

    def _keep_here(self, conn) -> bool:
        """What gthread's ``finish_request`` does with a kept-alive
        connection, done in the request's thread: False (nothing done) when
        it is for the event loop (bytes read ahead, a stopping worker)."""
        if conn.parser.unreader.buf.getvalue():
            return False        # a read-ahead: the loop gathers the next request
        with self._keep_lock:
            if not (self._keep_open and self.alive):
                return False
            conn.set_timeout()
            self.keepalived_conns.append(conn)
        # after the append: the loop's on_client_socket_readable removes it
        try:
            self.poller.register(conn.sock, selectors.EVENT_READ,
                                 partial(self.on_client_socket_readable, conn))
        except Exception:  # noqa: BLE001 - the poller closed (shutdown): the loop's way
            try:
                self.keepalived_conns.remove(conn)
            except ValueError:
                pass
            return False
        return True

    def _handled(self, conn, fs) -> None:
        # the future's callback, in the thread: the connection is the loop's
        # again unless the thread kept it (gthread's enqueue_req callback)
        if not fs.cancelled() and fs.exception() is None and fs.result() is KEPT:
            return
        self.method_queue.defer(self.finish_request, conn, fs)

    def _cap_keepalive(self, deadline):
        with self._keep_lock:       # no thread appends from here on
            self._keep_open = False
            super()._cap_keepalive(deadline)

    # -- error JSON ----------------------------------------------------------

    def handle_error(self, req, client, addr, exc):
        problem = edge_problem(exc)
        ip = (addr or ("",))[0]
        if problem.status >= 500:
            self.log.exception("Error handling request from ip=%s", ip)
        else:
            self.log.warning("Invalid request from ip=%s: %s", ip, exc)
        try:
            util.write_nonblock(client, _raw_answer(problem.status, problem.code,
                                                    problem.message, problem.field))
        except Exception:  # noqa: BLE001 - the client is gone; nothing left to tell it
            self.log.debug("Failed to send error message.")

    # -- gathering request heads in the event loop ----------------------------

    def _can_gather(self, conn) -> bool:
        if self.cfg.is_ssl or getattr(conn, "is_http2", False):
            return False
        try:
            from gunicorn.http2 import negotiation
            return not negotiation.prior_knowledge_allowed(self.cfg, conn.client)
        except (ImportError, AttributeError):
            return True

    def enqueue_req(self, conn):
        if getattr(conn, "steme_ready", False):
            conn.steme_ready = False
            if type(conn.sock) is not KeptSocket:
                return super().enqueue_req(conn)
            fs = self.tpool.submit(self._handle_kept, conn)
            fs.add_done_callback(partial(self._handled, conn))
            return None
        if not self._can_gather(conn):
            return super().enqueue_req(conn)
        # This runs on the event-loop thread: an error here must cost one
        # connection, never the worker.
        try:
            self._gather(conn)
        except Exception:  # noqa: BLE001
            self.log.exception("reading a request head failed")
            self._stop_gathering(conn)
            self.nr_conns -= 1
            conn.close()

    def _gather(self, conn):
        ahead = b""
        if conn.parser is not None:  # read-ahead left by the previous request
            ahead = conn.parser.unreader.buf.getvalue()
            conn.parser.unreader.buf = type(conn.parser.unreader.buf)()
            proxy = getattr(conn, "deadline_sock", None)
            if proxy is not None and proxy._body is not None:
                # never left once a request is answered with keep-alive (the
                # drain reads it); kept in order if it ever were
                ahead = proxy.take_body() + ahead
        g = conn.steme_gather = _Gather(ahead)
        if g.complete():
            return self._dispatch(conn)
        # no setblocking(False): _read_some reads with MSG_DONTWAIT, in any mode
        self.gathering.append(conn)
        self.gathered += len(g.buf)  # the read-ahead: _stop_gathering takes all of buf off
        # A kept-alive connection comes here because the poller saw it
        # readable, and a new one usually has its request in already: read
        # what is there now, and register with the poller only when more is
        # needed.  A request that arrived whole (most of them) then costs no
        # register/unregister pair and no extra turn of the loop.
        if self._read_some(conn):
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))
            conn.steme_polled = True

    def _readable(self, conn, _fileobj):
        try:
            self._read_some(conn)
        except Exception:  # noqa: BLE001 - see enqueue_req
            self.log.exception("reading a request head failed")
            self._stop_gathering(conn)
            self.nr_conns -= 1
            conn.close()

    def _read_some(self, conn) -> bool:
        """Read what the socket holds; True while the request is still being
        gathered (nothing to read yet, or incomplete), False once it was
        handed to a thread or the connection closed."""
        try:
            data = conn.sock.recv(READ_CHUNK, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        if not data:  # the client went away
            self._stop_gathering(conn)
            self.nr_conns -= 1
            conn.close()
            return False
        g = conn.steme_gather
        g.buf += data
        self.gathered += len(data)
        if g.complete() or (g.head_end >= 0 and self.gathered > GATHER_BUDGET):
            self._stop_gathering(conn)
            self._dispatch(conn)
            return False
        return True

    def _stop_gathering(self, conn) -> None:
        if getattr(conn, "steme_polled", False):
            # only when registered: the KeyError of an unregistered socket
            # formats its repr, two syscalls (getsockname, getpeername)
            conn.steme_polled = False
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
        try:
            self.gathering.remove(conn)
        except ValueError:
            return
        self.gathered -= len(conn.steme_gather.buf)

    def _dispatch(self, conn) -> None:
        g, conn.steme_gather = conn.steme_gather, None
        if conn.parser is None:
            conn.deadline_sock = DeadlineSocket(conn.sock)
            conn.parser = http.get_parser(self.cfg, conn.deadline_sock, conn.client)
        proxy = getattr(conn, "deadline_sock", None)
        if proxy is not None:
            proxy.start(BODY_TIMEOUT)
        buf, end = g.buf, g.head_end
        if (proxy is not None and g.chunk_at < 0 and end >= 0
                and len(buf) == g.need and g.need - end >= SPLIT_BODY):
            # exactly a head and its Content-Length body: the body beside it
            view = memoryview(buf)
            conn.parser.unreader.unread(bytes(view[:end]))
            proxy.hold_body(bytes(view[end:]))
            view.release()
        else:
            conn.parser.unreader.unread(bytes(buf))
        conn.data_ready = True  # the bytes are buffered: no wait for the socket
        conn.steme_ready = True
        # no setblocking(True) here: gthread's handle() does it in the thread
        # before it reads, and each call is a syscall
        self.enqueue_req(conn)

    def murder_pending(self):
        super().murder_pending()
        if not self.gathering:
            return
        now = time.monotonic()
        # At most worker_connections entries, once a second: a scan is cheap,
        # and a body's longer deadline keeps the deque from being sorted.
        for conn in [c for c in self.gathering
                     if c.steme_gather.deadline <= now or not self.alive]:
            g = conn.steme_gather
            self._stop_gathering(conn)
            self.nr_conns -= 1
            if g.buf.strip():  # a request was begun: say why it ends
                try:
                    util.write_nonblock(conn.sock, _raw_answer(
                        408, "request_timeout",
                        REQUEST_TIMEOUT_MESSAGE.format(seconds=g.seconds)))
                except OSError:
                    pass
            conn.close()


_REASONS = {400: "Bad Request", 403: "Forbidden", 408: "Request Timeout",
            414: "URI Too Long", 417: "Expectation Failed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            501: "Not Implemented"}


def _raw_answer(status: int, code: str, message: str, field: str | None = None) -> bytes:
    body = error_body(code, message, field)
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Connection: close\r\n"
            f"Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"X-Content-Type-Options: nosniff\r\n\r\n")
    return head.encode("latin-1") + body
