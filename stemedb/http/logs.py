"""Log lines on stderr, StemeDB's and gunicorn's in one format.

``STEMEDB_LOG_FORMAT=text`` (the default)::

    <time> <LEVEL> <logger> <message> key=value ...

The message comes first and verbatim, so the lines the contract names
(``Starting WAL recovery...``, ``Store is locked by PID <pid>``) can be
matched as they are; the fields follow as ``key=value`` pairs (values with
spaces, quotes or ``=`` are JSON-quoted).

``STEMEDB_LOG_FORMAT=json``: one JSON object per line, ``{"ts", "level",
"logger", "msg", <fields>...}`` (``exc`` holds a traceback), for log shippers.

gunicorn's own lines (``gunicorn.error``: workers starting, signals, bad
requests) go through :class:`GunicornLogger`, gunicorn's ``logger_class``,
which gives its handler the same formatter.  The access log is the same
class's ``access``: one line per request on the logger ``stemedb.access`` at
``info`` -- ``method``, ``path`` (no query string), ``status``,
``duration_ms``, ``bytes``, ``client``, ``key_id`` (the API key's id when the
request presented a valid one; never the key) and ``request_id``.
``STEMEDB_ACCESS_LOG=off`` turns it off.  The app hands the client address
(after ``STEMEDB_TRUSTED_PROXIES``), the key id and the request id to it in
the WSGI environ (:class:`AccessContext`).
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import time

try:
    from gunicorn.glogging import Logger as _GLogger
except ImportError:  # gunicorn is only needed to serve
    _GLogger = object

_STD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
FORMATS = ("text", "json")
ACCESS_LOGGER = "stemedb.access"
ENV_KEY_ID, ENV_CLIENT, ENV_REQUEST_ID = "stemedb.key_id", "stemedb.client", "stemedb.request_id"
# (environ key, request context attribute): what AccessContext (and
# middleware.Gate, which does its job in the API) hands the access log
ACCESS_FIELDS = ((ENV_KEY_ID, "key_id"), (ENV_CLIENT, "client"), (ENV_REQUEST_ID, "request_id"))


def _stamp(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> list:
    # a list comprehension, not a generator: every access line formats ~27
    # attributes, and this runs once per request at the default log level
    return [(key, value) for key, value in record.__dict__.items()
            if key not in _STD and value is not None and not key.startswith("_")]


_QUOTE = re.compile(r'[ "=\n\t]')   # a value holding one of these is JSON-quoted


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [_stamp(record), record.levelname, record.name, record.getMessage()]
        for key, value in _fields(record):
            text = str(value)
            if not text or _QUOTE.search(text):
                text = json.dumps(text)
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; fields keep their JSON types (numbers stay numbers)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {"ts": _stamp(record), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        for key, value in _fields(record):
            if key in doc:
                key = "field_" + key
            doc[key] = value if isinstance(value, (int, float, bool, str)) else str(value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def log_format(fmt: str | None = None) -> str:
    """``fmt``, else ``STEMEDB_LOG_FORMAT``, else ``text`` (the settings have
    already refused any other value where they were read)."""
    fmt = fmt or os.environ.get("STEMEDB_LOG_FORMAT") or "text"
    return fmt if fmt in FORMATS else "text"


def formatter(fmt: str | None = None) -> logging.Formatter:
    return JsonFormatter() if log_format(fmt) == "json" else KeyValueFormatter()


def configure_logging(level: str = "info", fmt: str | None = None) -> None:
    """Send the ``stemedb`` loggers to stderr in ``fmt`` (``text`` or ``json``;
    default ``STEMEDB_LOG_FORMAT``).  Idempotent: a second call only updates
    the level and the format."""
    logger = logging.getLogger("stemedb")
    handler = next((h for h in logger.handlers if getattr(h, "_stemedb", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        setattr(handler, "_stemedb", True)
        logger.addHandler(handler)
        logger.propagate = False
    handler.setFormatter(formatter(fmt))
    logger.setLevel(getattr(logging, str(level).upper(), logging.INFO))


def access_log_on(value: str | None = None) -> bool:
    value = value or os.environ.get("STEMEDB_ACCESS_LOG") or "on"
    return value != "off"


class AccessContext:
    """Falcon middleware: what the access log needs from the app, put in the
    WSGI environ (gunicorn's logger sees only the environ and the response)."""

    def process_response(self, req, resp, resource, req_succeeded):
        ctx = req.context
        env = req.env
        for name, attr in ACCESS_FIELDS:
            value = getattr(ctx, attr, None)
            if value is not None:
                env[name] = value


def access_fields(resp, req, environ: dict, request_time) -> dict:
    """The fields of one access line (gunicorn's ``access`` arguments)."""
    path = environ.get("PATH_INFO") or getattr(req, "path", None) or "-"
    seconds = request_time.total_seconds() if hasattr(request_time, "total_seconds") \
        else float(request_time or 0)
    status = getattr(resp, "status_code", None)
    if status is None:
        status_text = str(getattr(resp, "status", "") or "")
        status = int(status_text.split()[0]) if status_text[:3].isdigit() else 0
    rid = environ.get(ENV_REQUEST_ID)
    if rid is None:
        for name, value in getattr(resp, "headers", None) or ():
            if name.lower() == "x-request-id":
                rid = value
    return {"method": environ.get("REQUEST_METHOD") or getattr(req, "method", "-"),
            "path": path[:1024], "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "bytes": int(getattr(resp, "sent", 0) or 0),
            "client": environ.get(ENV_CLIENT) or environ.get("REMOTE_ADDR") or "-",
            "key_id": environ.get(ENV_KEY_ID), "request_id": rid}


class GunicornLogger(_GLogger):
    """gunicorn's ``logger_class`` for ``stemedb serve``: gunicorn's error log
    in StemeDB's format, and the access log as ``stemedb.access`` lines."""

    def setup(self, cfg):
        super().setup(cfg)
        fmt = formatter()
        for handler in self.error_log.handlers:
            if getattr(handler, "_gunicorn", False):
                handler.setFormatter(fmt)
        self._stemedb_access = access_log_on()
        self._access = logging.getLogger(ACCESS_LOGGER)

    @property
    def access_log_enabled(self):
        return getattr(self, "_stemedb_access", False)

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled or not self._access.isEnabledFor(logging.INFO):
            return
        try:
            f = access_fields(resp, req, environ, request_time)
            # Logger.info less its findCaller (a stack walk per request): the
            # formats print no caller, and handle() applies the same filters
            logger = self._access
            logger.handle(logger.makeRecord(
                logger.name, logging.INFO, "(unknown file)", 0,
                f"{f['method']} {f['path']} {f['status']}", (), None, extra=f))
        except Exception:  # noqa: BLE001 - a log line never fails a request
            self.error_log.exception("writing the access log line failed")
