"""Falcon middleware: request ids and metrics, authentication, limits.

Resources declare what the middleware needs as class attributes:

* ``scope``: the key scope a method needs (``{"GET": "read"}``), None for
  endpoints anyone may call (health, the OpenAPI document);
* ``limit_name``: the ``STEMEDB_RATE_LIMITS`` endpoint, None for exempt ones;
* ``writes``: the methods that write (they feed the circuit breaker).

Order matters: :class:`Observe` first (so even a refused request gets a
request id, a metric and a log line), then :class:`Authenticate` (the rate
limit key is the key id when there is one), then :class:`Limit`.
"""
from __future__ import annotations

import functools
import ipaddress
import itertools
import logging
import re
import os
import time

from .errors import error_body, forbidden, too_many, unauthorized
from .logs import ACCESS_FIELDS

log = logging.getLogger("stemedb.http")
# fastquery.FAST: the environ key of what the Falcon-less POST /v1/query did
# before it handed a request to the app (stated here: fastquery imports this)
FAST_QUERY = "stemedb.fast_query"
_RID_RE = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}\Z")


def parse_proxies(text: str | None) -> list:
    """``STEMEDB_TRUSTED_PROXIES`` -> networks (a bare address is a /32 or /128)."""
    nets = []
    for part in (text or "").split(","):
        part = part.strip()
        if part:
            nets.append(ipaddress.ip_network(part, strict=False))
    return nets


def client_address(remote: str | None, forwarded: str | None, proxies: list) -> str:
    """The client's address: ``X-Forwarded-For`` is believed only from a trusted proxy.

    The header is read right to left (each proxy appends the address it saw)
    and the first address that is not itself a trusted proxy is the client.
    """
    remote = remote or "unknown"
    if not proxies or not forwarded or not _trusted(remote, proxies):
        return remote
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return remote  # a garbled header: do not believe any of it
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else remote


def _trusted(addr: str, proxies: list) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


class RequestIds:
    """New request ids: 32 hex characters, a random prefix drawn once and a
    counter, so ids are unique across servers and restarts.

    Not ``os.urandom`` per request: it releases the GIL around the
    ``getrandom`` call, and with the worker's threads busy every release
    hands the interpreter to another thread and waits to get it back (46 us
    a request in a profile of a loaded query server).  An id names a request
    in the logs; it was never a secret (a client may send its own).
    """

    def __init__(self):
        self.prefix = os.urandom(8).hex()
        self._count = itertools.count()

    def __call__(self) -> str:
        # next() on itertools.count is atomic under the GIL
        return f"{self.prefix}{next(self._count) & 0xFFFFFFFFFFFFFFFF:016x}"


class Observe:
    """Request id (echoed in ``X-Request-Id``), metrics by route template, log lines."""

    def __init__(self, metrics, proxies: list, prefix: str = "",
                 ids: RequestIds | None = None):
        self.metrics = metrics
        self.proxies = proxies
        self.prefix = prefix
        self.new_id = ids or RequestIds()

    def process_request(self, req, resp):
        ctx = req.context
        env = req.env    # the headers straight from the environ (get_header's own lookup)
        handoff = env.get(FAST_QUERY)     # fastquery.Handoff: the request began there
        ctx.t0 = time.perf_counter() if handoff is None else handoff.t0
        rid = env.get("HTTP_X_REQUEST_ID")
        ctx.request_id = rid if rid and _RID_RE.match(rid) else self.new_id()
        if self.proxies:
            ctx.client = client_address(req.remote_addr, env.get("HTTP_X_FORWARDED_FOR"),
                                        self.proxies)
        else:   # what client_address answers without trusted proxies
            ctx.client = req.remote_addr or "unknown"
        ctx.key_id = None

    def process_response(self, req, resp, resource, req_succeeded):
        ctx = req.context
        rid = getattr(ctx, "request_id", None) or self.new_id()
        resp.set_header("X-Request-Id", rid)
        t0 = getattr(ctx, "t0", None)    # None: process_request did not run
        seconds = 0.0 if t0 is None else time.perf_counter() - t0
        status = resp.status_code
        route = self.prefix + (req.uri_template or "unmatched")
        if self.metrics is not None:
            self.metrics.observe_request(route, req.method, status, seconds)
        if status >= 500:
            # 503 is a state the server reports (starting, storage fault), not a bug.
            level = logging.WARNING if status == 503 else logging.ERROR
        elif status in (401, 403):
            level = logging.INFO  # an audit trail of refused keys
        else:
            level = logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, "request", extra={
                "request_id": rid, "method": req.method, "route": route, "status": status,
                "ms": round(seconds * 1000, 3), "client": getattr(ctx, "client", None),
                "key": getattr(ctx, "key_id", None),
                "code": getattr(resp.context, "error_code", None)})


def required_scope(resource, method: str) -> str | None:
    scope = getattr(resource, "scope", None)
    if isinstance(scope, dict):
        return scope.get(method, scope.get("*"))
    return scope


def presented_key(req) -> str | None:
    return key_of(req.get_header("Authorization"), req.get_header("X-API-Key"))


def key_of(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>``, else
    ``X-API-Key`` (also fastquery's, from the environ)."""
    if authorization:
        kind, _, token = authorization.strip().partition(" ")
        if kind.lower() == "bearer" and token.strip():
            return token.strip()
    return api_key.strip() if api_key else None


class Authenticate:
    """401 without a valid key (when keys are configured), 403 without the scope.

    Wrong keys are counted per client address (``STEMEDB_RATE_LIMITS``
    ``auth=N/period``, default 30/minute): past the limit every request from
    that address that presents a key gets 429 until the window ends, the
    right key included, so that the answers say nothing about guesses.
    Requests without a key are not counted (they guess nothing).  A request
    that ``fastquery`` hands over (a ``Handoff`` under ``FAST_QUERY``) keeps
    the key it checked there: one view of the keys a request.
    """

    def __init__(self, keyring, limiter=None, metrics=None):
        self.keyring = keyring
        self.limiter = limiter
        self.metrics = metrics

    def process_resource(self, req, resp, resource, params):
        scope = required_scope(resource, req.method)
        if scope is None:
            return
        handoff = req.env.get(FAST_QUERY)
        if handoff is not None:
            # fastquery checked the key (and the limiter counted the request
            # under it) before handing the request over: it is answered on
            # that one view of the keys, not refused by a reload since
            if handoff.key is not None:
                req.context.key_id = handoff.key.id
            return
        if not self.keyring.configured:
            return
        presented = presented_key(req)
        if presented is None:
            raise unauthorized("an API key is required: send Authorization: Bearer <key> "
                               "or X-API-Key: <key>")
        client = req.context.client
        if self.limiter is not None:
            wait = self.limiter.exhausted(AUTH_FAILURES, client)
            if wait is not None:
                raise self._throttled(wait)
        key = self.keyring.authenticate(presented)
        if key is None:
            wait = self.limiter.check(AUTH_FAILURES, client) if self.limiter is not None else None
            if wait is not None:
                raise self._throttled(wait)
            raise unauthorized("the API key is not valid")
        req.context.key_id = key.id
        if not key.allows(scope):
            raise forbidden(f"the key {key.id!r} lacks the {scope!r} scope this endpoint needs "
                            f"(it has {', '.join(sorted(key.scopes))})")

    def _throttled(self, wait: int):
        if self.metrics is not None:
            self.metrics.ratelimited.labels(AUTH_FAILURES, "auth_failures").inc()
        return too_many(f"too many wrong API keys from this address; retry in {wait} s "
                        f"with a valid key", wait)


AUTH_FAILURES = "auth"  # the STEMEDB_RATE_LIMITS name of the wrong-key limit


class SecurityHeaders:
    """Fixed response headers on every answer (``X-Content-Type-Options``,
    the dashboard's ``Content-Security-Policy`` and ``X-Frame-Options``)."""

    def __init__(self, headers: dict):
        self.headers = list(headers.items())

    def process_response(self, req, resp, resource, req_succeeded):
        for name, value in self.headers:
            resp.set_header(name, value)


NOSNIFF = {"X-Content-Type-Options": "nosniff"}


def loopback_host(host: str) -> bool:
    """Whether a ``Host`` header names this machine's loopback: ``localhost``,
    ``127.x.x.x`` or ``[::1]``, each with or without a port."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        name, rest = host[1:end], host[end + 1:]
        if end < 0 or (rest and not _PORT_RE.match(rest)):
            return False
        try:
            return ipaddress.IPv6Address(name).is_loopback
        except ValueError:
            return False
    name, sep, port = host.partition(":")
    if sep and not _PORT_RE.match(sep + port):
        return False
    if name == "localhost":
        return True
    try:
        return ipaddress.IPv4Address(name).is_loopback
    except ValueError:
        return False


_PORT_RE = re.compile(r":[0-9]{1,5}\Z")
# Every request of a keyless server asks about its Host (a handful of
# distinct values): parsing it as an address each time cost ~5 us a request.
# Bounded, so odd Host headers cannot grow it.
_loopback_host = functools.lru_cache(maxsize=1024)(loopback_host)


class HostGuard:
    """DNS rebinding protection for a server without keys (WSGI, around both apps).

    A web page can make a browser send requests to ``127.0.0.1`` under its
    own host name (DNS rebinding); without keys nothing else stops it.  So
    while no keys are configured (and ``STEMEDB_ALLOW_ANONYMOUS`` is off) a
    request whose ``Host`` is not loopback (:func:`loopback_host`) is
    refused with 400 ``invalid_host``.  A request without ``Host`` (HTTP/1.0)
    is let through: browsers always send one.
    """

    def __init__(self, app, keyring, allow_anonymous: bool = False,
                 ids: RequestIds | None = None):
        self.app = app
        self.keyring = keyring
        self.allow_anonymous = allow_anonymous
        self.state = getattr(app, "state", None)
        self.new_id = ids or RequestIds()

    def __call__(self, environ, start_response):
        host = environ.get("HTTP_HOST")
        if (host is None or self.allow_anonymous or self.keyring.configured
                or _loopback_host(host)):
            return self.app(environ, start_response)
        body = error_body(
            "invalid_host",
            f"Host {host[:100]!r} is not accepted: this server has no API keys, so it answers "
            f"only requests addressed to localhost, 127.0.0.1 or [::1] (protection against "
            f"DNS rebinding); configure keys (STEMEDB_API_KEYS_FILE) to serve other names",
            "Host")
        rid = self.new_id()
        log.info("request", extra={"request_id": rid, "method": environ.get("REQUEST_METHOD"),
                                   "route": "host_guard", "status": 400, "code": "invalid_host",
                                   "client": environ.get("REMOTE_ADDR")})
        start_response("400 Bad Request", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            ("X-Request-Id", rid), *NOSNIFF.items()])
        return [body]


class Gate:
    """The API's middleware as one Falcon component: :class:`Observe`,
    :class:`Authenticate`, :class:`Limit`, :class:`SecurityHeaders` and
    ``logs.AccessContext``, in that order, each doing what it does alone.

    Falcon calls a component's methods one by one per request, so five
    components cost seven calls (one ``process_request``, two
    ``process_resource``, four ``process_response``) and their attribute
    loads; one costs three.  The order is theirs: ``process_resource``
    authenticates then limits (a refused key is not counted against the
    limit), ``process_response`` runs in reverse of the list the five were
    given in (the headers, the breaker's record, the metric and log line,
    then the access log's fields).
    """

    def __init__(self, observe: Observe, authenticate: Authenticate, limit: Limit | None,
                 headers: dict, access_context: bool = True):
        self.observe = observe
        self.authenticate = authenticate.process_resource
        self.limit = limit
        self.headers = list(headers.items())
        self.access_context = access_context
        # Falcon takes the methods from the instance: Observe's own, no wrapper
        self.process_request = observe.process_request

    def process_resource(self, req, resp, resource, params):
        self.authenticate(req, resp, resource, params)
        if self.limit is not None:
            self.limit.process_resource(req, resp, resource, params)

    def process_response(self, req, resp, resource, req_succeeded):
        for name, value in self.headers:          # SecurityHeaders
            resp.set_header(name, value)
        ctx = req.context
        limit = self.limit
        if limit is not None:                     # Limit: the breaker's record of a write
            client = getattr(ctx, "breaker_client", None)
            if client is not None:
                limit.breaker.record(client, resp.status_code)
        self.observe.process_response(req, resp, resource, req_succeeded)
        if self.access_context:                   # logs.AccessContext
            env = req.env
            for name, attr in ACCESS_FIELDS:
                value = getattr(ctx, attr, None)
                if value is not None:
                    env[name] = value


@functools.lru_cache(maxsize=4096)
def _is_loopback(address: str) -> bool:
    """Loopback clients without a key share one identity (127.0.0.1): the
    breaker would let one bad local script, or a user trying the error
    messages, pause every local writer, so it skips them (docs/http.md)."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


class Limit:
    """Per-endpoint, per-client rate limits, and the per-client write circuit."""

    def __init__(self, limiter, breaker, metrics):
        self.limiter = limiter
        self.breaker = breaker
        self.metrics = metrics

    def process_resource(self, req, resp, resource, params):
        endpoint = getattr(resource, "limit_name", None)
        if endpoint is None:
            return
        ctx = req.context
        client = ctx.key_id or ctx.client
        if (self.breaker is not None and req.method in getattr(resource, "writes", ())
                and (ctx.key_id is not None or not _is_loopback(ctx.client))):
            wait = self.breaker.allow(client)
            if wait is not None:
                self._count(endpoint, "circuit_open")
                raise too_many(f"too many rejected writes from this client; writes are paused "
                               f"for {wait} s (fix the requests that got 4xx answers)",
                               wait, code="circuit_open")
            ctx.breaker_client = client
        if self.limiter is not None:
            handoff = req.env.get(FAST_QUERY)   # fastquery.Handoff: asked there, once
            wait = self.limiter.check(endpoint, client) if handoff is None else handoff.limit_wait
            if wait is not None:
                self._count(endpoint, "rate_limit")
                raise too_many(f"rate limit for {endpoint} exceeded; retry in {wait} s", wait)

    def process_response(self, req, resp, resource, req_succeeded):
        client = getattr(req.context, "breaker_client", None)
        if client is not None:
            self.breaker.record(client, resp.status_code)

    def _count(self, endpoint: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.ratelimited.labels(endpoint, reason).inc()
