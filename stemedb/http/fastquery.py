"""``POST /v1/query`` without Falcon, for the plain successful request.

Under load the server's CPU per query grows with the time each request holds
the GIL: every microsecond of Python a query runs costs several more in the
loaded worker (context switches, caches; bench/results/http-2026-11-27-
session13.md).  Falcon's own work (its Request and Response, routing, the
middleware loop, the answer's headers) is about a third of the HTTP layer's
instructions for a query.  :class:`FastQuery` answers the common case with
the same parts Falcon would call and nothing else:

* the same checks, in an order that keeps the side effects where Falcon has
  them: the Host check is HostGuard's (it runs before this), the key is
  checked like :class:`~stemedb.http.middleware.Authenticate` (read-only
  calls), the rate limiter's ``check`` (the one call with a side effect) is
  made once, where ``Limit`` makes it, before the body is read; the body is
  decoded with the same decoder;
* the same answer: ``resources.query_body`` of ``store.query``, the same
  status and headers in Falcon's order (names lower-cased, as Falcon sends
  them), the same request id, metric, debug log line and access-log fields
  as :class:`~stemedb.http.middleware.Gate`.

Anything else goes to the Falcon app, which answers it as it always did
(every error, with its code and field, is Falcon's): a request that does not
have the plain shape goes there untouched (nothing has been counted); once
the limiter has been asked, the request goes there with a :class:`Handoff`
under :data:`FAST` in its environ, and with its body put back if it was read
(``wsgi.input`` a ``BytesIO`` of the same bytes, or a stream that raises the
read's own error again).  ``Limit`` takes the limiter's answer from the
handoff instead of counting the request twice, ``Authenticate`` takes the key
checked here from it instead of checking the key again (the request is
decided on the one view of the keys it was admitted and counted under: a
keys file reloaded in between does not turn it into a 401, nor count a wrong
key against its address), the query resource raises the engine's error from
it instead of running the query again, and ``Observe`` takes the request's
start time from it.  A client cannot set an environ key without an ``HTTP_``
prefix, so nothing outside the server can forge it.

``tests/unit/http/test_fastquery.py`` holds the answers, the metrics, the
limiter's counts and the log lines of this path to Falcon's, request by
request, including every refusal.
"""
from __future__ import annotations

import io
import logging
import time

from . import schemas as S
from .logs import ENV_CLIENT, ENV_KEY_ID, ENV_REQUEST_ID
from .middleware import (_RID_RE, AUTH_FAILURES, FAST_QUERY, client_address, key_of,
                         required_scope)
from .resources import QueryResource, is_json_type, query_body

FAST = FAST_QUERY   # the environ key of a Handoff
PATH = "/v1/query"
_decode = S.DECODERS[S.QueryIn].decode
log = logging.getLogger("stemedb.http")   # Observe's logger


class Handoff:
    """What the fast path already did, for the Falcon app that finishes the request."""

    __slots__ = ("t0", "key", "limit_wait", "error")

    def __init__(self, t0: float, key, limit_wait, error=None):
        self.t0 = t0
        self.key = key                   # the ApiKey checked, or None: none was needed
        self.limit_wait = limit_wait     # the limiter's answer: None, or seconds to wait
        self.error = error               # the engine's (or the answer's) exception


class _Raises:
    """``wsgi.input`` after a read that failed: the same error again."""

    def __init__(self, exc: BaseException):
        self.exc = exc

    def read(self, *args):
        raise self.exc

    readline = read


class FastQuery:
    """The WSGI callable for ``POST /v1/query`` (``PortRouter`` sends it only
    those); ``api`` is the Falcon app of ``app.create_app``."""

    def __init__(self, api):
        self.api = api
        state = api.state
        gate = api.gate
        self.handle = state.handle
        self.settings = state.settings
        self.keyring = state.keyring
        self.limiter = state.limiter
        self.observe = gate.observe
        self.limit_name = QueryResource.limit_name
        self.scope = required_scope(QueryResource, "POST")
        # the Gate's fixed headers, then the request id, as Falcon writes them
        self.headers = [(name.lower(), value) for name, value in gate.headers]

    def __call__(self, environ, start_response):
        t0 = time.perf_counter()
        # -------- the plain shape, or Falcon (nothing done yet)
        store = self.handle.peek()
        length = environ.get("CONTENT_LENGTH")
        if (store is None or environ.get("QUERY_STRING") or self.limit_name is None
                or not length or len(length) > 12 or not length.isdigit() or not length.isascii()
                or not is_json_type(environ.get("CONTENT_TYPE"))):
            return self.api(environ, start_response)
        length = int(length)
        if not 0 < length <= self.settings.max_body_bytes:
            return self.api(environ, start_response)
        observe = self.observe
        remote = environ.get("REMOTE_ADDR", "127.0.0.1") or "unknown"
        client = (client_address(remote, environ.get("HTTP_X_FORWARDED_FOR"), observe.proxies)
                  if observe.proxies else remote)
        key = key_id = None
        keyring = self.keyring
        if self.scope is not None and keyring.configured:
            key = self._key(environ, client)
            if key is None or not key.allows(self.scope):
                return self.api(environ, start_response)
            key_id = key.id
        # -------- the limiter: asked once, where Limit asks it (before the body)
        limiter = self.limiter
        wait = limiter.check(self.limit_name, key_id or client) if limiter is not None else None
        if wait is not None:
            environ[FAST] = Handoff(t0, key, wait)
            return self.api(environ, start_response)
        # -------- the body (read once; put back for Falcon if it refuses)
        try:
            data = environ["wsgi.input"].read(length)
        except Exception as exc:  # noqa: BLE001 - Falcon's read raises it again
            environ["wsgi.input"] = _Raises(exc)
            environ[FAST] = Handoff(t0, key, None)
            return self.api(environ, start_response)
        try:
            kwargs = S.query_kwargs(_decode(data)) if data else None
        except Exception:  # noqa: BLE001 - Falcon decodes again and answers the error
            kwargs = None
        if kwargs is None or "min_seq" in kwargs:
            environ["wsgi.input"] = io.BytesIO(data)
            environ[FAST] = Handoff(t0, key, None)
            return self.api(environ, start_response)
        # -------- the engine, the answer
        try:
            path = kwargs.pop("concept_path")
            body = query_body(store.query(path, agent=key_id, **kwargs))
        except Exception as exc:  # noqa: BLE001 - Falcon's error handlers answer it
            environ["wsgi.input"] = io.BytesIO(data)
            environ[FAST] = Handoff(t0, key, None, exc)
            return self.api(environ, start_response)
        # -------- Gate.process_response's work for a 200
        rid = environ.get("HTTP_X_REQUEST_ID")
        if not (rid and _RID_RE.match(rid)):
            rid = observe.new_id()
        route = observe.prefix + PATH
        seconds = time.perf_counter() - t0
        if observe.metrics is not None:
            observe.metrics.observe_request(route, "POST", 200, seconds)
        if log.isEnabledFor(logging.DEBUG):
            log.log(logging.DEBUG, "request", extra={
                "request_id": rid, "method": "POST", "route": route, "status": 200,
                "ms": round(seconds * 1000, 3), "client": client, "key": key_id, "code": None})
        if key_id is not None:
            environ[ENV_KEY_ID] = key_id
        environ[ENV_CLIENT] = client
        environ[ENV_REQUEST_ID] = rid
        start_response("200 OK", [("content-type", "application/json"), *self.headers,
                                  ("x-request-id", rid), ("content-length", str(len(body)))])
        return [body]

    def _key(self, environ, client):
        """The presented key when it is valid and its client not throttled
        (``Authenticate``'s read-only steps), else None (Falcon answers)."""
        presented = key_of(environ.get("HTTP_AUTHORIZATION"), environ.get("HTTP_X_API_KEY"))
        if presented is None:
            return None
        if self.limiter is not None and self.limiter.exhausted(AUTH_FAILURES, client) is not None:
            return None
        return self.keyring.authenticate(presented)
