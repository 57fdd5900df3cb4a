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
    if status >= 500 and exc.code not in ("storage_fault", "store_closed", "store_locked"):
        _log_bug(req, exc)
        _answer(resp, 500, "internal_error", _bug_message(req))
        return
    headers = {"Retry-After": "1"} if exc.code == "store_closed" else None
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


def register(app: falcon.App) -> None:
    """Register every handler on ``app``; Falcon picks the most specific by MRO."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_falcon)
    app.add_error_handler(StemeError, handle_steme)
    app.add_error_handler(HTTPProblem, handle_problem)
    app.add_error_handler(msgspec.ValidationError, handle_msgspec)
    app.add_error_handler(msgspec.DecodeError, handle_msgspec)
