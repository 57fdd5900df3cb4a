"""The one place that turns exceptions into the contract's error answers.

Every error body is ``{"error": {"code", "message", "field"?}}``.  The store's
exceptions (:mod:`stemedb.errors`) already carry ``code``, ``status`` and
``field``; msgspec's decode errors are rewritten to name the field the way
the contract does (``assertions[3].confidence``); Falcon's own errors (404
unknown path, 405 wrong method) get the same shape.  Anything else is a bug:
a 500 with a request id to find the logged traceback, never the traceback
itself.
"""
from __future__ import annotations

import logging
import re

import falcon
import msgspec

from ..errors import StemeError

log = logging.getLogger("stemedb.http")

JSON = "application/json"


class HTTPProblem(Exception):
    """An answer the HTTP layer itself decides (auth, limits, media type, size)."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}


def bad_request(message: str, field: str | None = None, code: str = "invalid_field"):
    return HTTPProblem(400, code, message, field=field)


def unauthorized(message: str):
    return HTTPProblem(401, "unauthorized", message,
                       headers={"WWW-Authenticate": 'Bearer realm="stemedb"'})


def forbidden(message: str):
    return HTTPProblem(403, "forbidden", message)


def too_many(message: str, retry_after: int, code: str = "rate_limited"):
    return HTTPProblem(429, code, message, headers={"Retry-After": str(max(1, int(retry_after)))})


def starting():
    return HTTPProblem(503, "starting",
                       "the server is starting (recovering the store); retry shortly",
                       headers={"Retry-After": "1"})


# Falcon raises these for routing and protocol problems.
_FALCON_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 411: "length_required",
    413: "payload_too_large", 414: "uri_too_long", 415: "unsupported_media_type",
    429: "rate_limited", 431: "headers_too_large", 501: "not_implemented",
    503: "unavailable",
}
_FALCON_MESSAGES = {
    404: "no such endpoint; see /openapi.json for the API",
    405: "this endpoint does not take that method; the Allow header lists those it takes",
}

# "Expected `float` <= 1.0 - at `$.assertions[3].confidence`"
_AT_RE = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_FIELD_IN_MSG = re.compile(r"(?:unknown|required) field `(?P<name>[^`]+)`")


def field_path(path: str | None) -> str | None:
    """msgspec's ``$.assertions[3].x`` -> the contract's ``assertions[3].x``."""
    if not path:
        return None
    return path[1:] if path.startswith(".") else path


def from_msgspec(exc: Exception) -> HTTPProblem:
    """A 400 for a body msgspec refused, with the field at fault named."""
    text = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        m = _AT_RE.match(text)
        assert m is not None    # the pattern matches every string (its path part is optional)
        msg, field = m.group("msg"), field_path(m.group("path"))
        named = _FIELD_IN_MSG.search(msg)
        if named:  # the field is inside the object at `path`
            field = f"{field}.{named.group('name')}" if field else named.group("name")
        code = "invalid_field"
        leaf = (field or "").rsplit(".", 1)[-1]
        if leaf == "signature" and "unknown field" not in msg:
            code = "invalid_signature"
        if "unknown field" in msg:
            msg += "; remove it (see /openapi.json for the fields this endpoint takes)"
        elif msg.startswith("Invalid enum value"):
            msg += "; " + _enum_hint(leaf)
        return bad_request(f"{field}: {msg}" if field else msg, field, code)
    if isinstance(exc, RecursionError):
        return bad_request("the JSON body is nested too deeply", None, "malformed_json")
    if isinstance(exc, UnicodeDecodeError):
        return bad_request("the body is not valid UTF-8; send UTF-8 JSON", None, "malformed_json")
    return bad_request(f"the body is not valid JSON: {text}; send one UTF-8 JSON object",
                       None, "malformed_json")


def _enum_hint(leaf: str) -> str:
    from ..model import LIFECYCLES, SOURCE_CLASSES
    from .schemas import LENS_NAMES
    choices = {"source_class": SOURCE_CLASSES, "lifecycle": LIFECYCLES + ("any",),
               "lens": LENS_NAMES}.get(leaf)
    return f"valid values: {', '.join(choices)}" if choices else "see /openapi.json"


def error_body(code: str, message: str, field: str | None = None) -> bytes:
    err = {"code": code, "message": message}
    if field is not None:
        err["field"] = field
    return msgspec.json.encode({"error": err})


def _answer(resp: falcon.Response, status: int, code: str, message: str,
            field: str | None = None, headers: dict | None = None) -> None:
    resp.status = status
    resp.content_type = JSON
    resp.data = error_body(code, message, field)
    resp.context.error_code = code
    for k, v in (headers or {}).items():
        resp.set_header(k, v)


def handle_problem(req, resp, exc: HTTPProblem, params):
    _answer(resp, exc.status, exc.code, exc.message, exc.field, exc.headers)


def handle_steme(req, resp, exc: StemeError, params):
    status = getattr(exc, "status", 500) or 500
    if status >= 500 and exc.code not in ("storage_fault", "store_closed", "store_locked",
                                          "degraded", "not_caught_up", "cluster_mismatch"):
        _log_bug(req, exc)
        _answer(resp, 500, "internal_error", _bug_message(req))
        return
    headers = ({"Retry-After": "1"} if exc.code in ("store_closed", "degraded", "not_caught_up")
               else None)
    _answer(resp, status, exc.code, exc.message, exc.field, headers)


def handle_msgspec(req, resp, exc: Exception, params):
    handle_problem(req, resp, from_msgspec(exc), params)


def handle_falcon(req, resp, exc: falcon.HTTPError, params):
    status = exc.status_code
    code = _FALCON_CODES.get(status, "http_error")
    message = _FALCON_MESSAGES.get(status) or exc.description or exc.title or code
    headers = dict(exc.headers or {})
    _answer(resp, status, code, message, None, headers)


def handle_unexpected(req, resp, exc: Exception, params):
    if isinstance(exc, falcon.HTTPError):  # Falcon subclasses resolve here on some versions
        return handle_falcon(req, resp, exc, params)
    _log_bug(req, exc)
    _answer(resp, 500, "internal_error", _bug_message(req))


def _bug_message(req) -> str:
    rid = getattr(req.context, "request_id", None)
    return ("an internal error occurred; it has been logged"
            + (f" with request id {rid}" if rid else ""))


def _log_bug(req, exc: BaseException) -> None:
    log.error("unhandled error", exc_info=exc, extra={
        "request_id": getattr(req.context, "request_id", None),
        "method": req.method, "path": req.path})


# ------------------------------------------------ errors below the application

class ClientTimeout(TimeoutError):
    """The client did not send its request (head or body) within the time allowed."""


REQUEST_TIMEOUT_MESSAGE = ("the request was not received within {seconds:g} s; send the "
                           "request line, the headers and the body without pausing")

# gunicorn's parse errors by class name (names, not classes: the set differs
# between gunicorn versions): status, code, message prefix.
_LINE = (400, "bad_request", "the request line is not valid HTTP/1.1 (METHOD /path HTTP/1.1)")
_HEADER = (400, "invalid_header", "a request header is not valid")
_FRAMING = (400, "bad_framing", "the chunked request body is malformed; send valid chunked "
                                "encoding or a Content-Length")
_EDGE = {
    "InvalidRequestLine": _LINE, "InvalidRequestMethod": _LINE, "InvalidHTTPVersion": _LINE,
    "InvalidH2CPreface": _LINE, "InvalidProxyLine": _LINE, "InvalidProxyHeader": _LINE,
    "InvalidHeader": _HEADER, "InvalidHeaderName": _HEADER, "ObsoleteFolding": _HEADER,
    "InvalidSchemeHeaders": _HEADER,
    "InvalidChunkSize": _FRAMING, "ChunkMissingTerminator": _FRAMING,
    "InvalidChunkExtension": _FRAMING,
    "LimitRequestLine": (414, "uri_too_long", "the request line is too long; send long "
                                              "queries as POST /v1/query with a JSON body"),
    "LimitRequestHeaders": (431, "headers_too_large", "the request headers are too large or "
                                                      "too many"),
    "UnsupportedTransferCoding": (501, "unsupported_transfer_coding",
                                  "the only Transfer-Encoding accepted is chunked"),
    "ExpectationFailed": (417, "expectation_failed", "the only Expect accepted is 100-continue"),
    "ForbiddenProxyRequest": (403, "forbidden", "PROXY protocol is not accepted from this address"),
}
# The application's own faults that gunicorn reports (a bad response header).
_APP_FAULTS = ("InvalidResponseHeader", "InvalidResponseHeaderName", "ConfigurationProblem")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}\Z")


def edge_problem(exc: BaseException) -> HTTPProblem:
    """The error answer for an exception raised below the application: a
    gunicorn parse error (request line, headers, framing), a read timeout,
    anything else (500)."""
    if isinstance(exc, ClientTimeout):
        return HTTPProblem(408, "request_timeout", str(exc))
    names = [k.__name__ for k in type(exc).__mro__]
    if not any(n in _APP_FAULTS for n in names):
        for name in names:
            if name in _EDGE:
                status, code, message = _EDGE[name]
                detail = str(exc).strip()
                if len(detail) > 200:  # it may quote a whole request line
                    detail = detail[:200] + "..."
                field = None
                if code == "invalid_header":
                    hdr = getattr(exc, "hdr", None)
                    field = hdr.title() if isinstance(hdr, str) and _TOKEN.match(hdr) else None
                return HTTPProblem(status, code, f"{message}: {detail}" if detail else message,
                                   field=field)
    return HTTPProblem(500, "internal_error", "an internal error occurred; it has been logged")


def handle_edge(req, resp, exc: Exception, params):
    """A parse error or a timeout while the application reads the body."""
    problem = edge_problem(exc)
    if problem.status >= 500:
        return handle_unexpected(req, resp, exc, params)
    if problem.status != 408:
        log.info("refused request: %s", exc)
    handle_problem(req, resp, problem, params)


def register(app: falcon.App) -> None:
    """Register every handler on ``app``; Falcon picks the most specific by MRO."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(ClientTimeout, handle_edge)
    try:
        from gunicorn.http.errors import ParseException
    except ImportError:  # pragma: no cover - gunicorn is a dependency; embedded use may lack it
        pass
    else:
        app.add_error_handler(ParseException, handle_edge)
    app.add_error_handler(falcon.HTTPError, handle_falcon)
    app.add_error_handler(StemeError, handle_steme)
    app.add_error_handler(HTTPProblem, handle_problem)
    app.add_error_handler(msgspec.ValidationError, handle_msgspec)
    app.add_error_handler(msgspec.DecodeError, handle_msgspec)
