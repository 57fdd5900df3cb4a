"""Log lines on stderr: ``<time> <LEVEL> <logger> <message> key=value ...``.

The message comes first and verbatim, so the lines the contract names
(``Starting WAL recovery...``, ``Store is locked by PID <pid>``) can be
matched as they are; the request fields follow as ``key=value`` pairs
(values with spaces or quotes are JSON-quoted), which log shippers parse
without a custom grammar.
"""
from __future__ import annotations

import json
import logging
import sys
import time

_STD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"
        parts = [stamp, record.levelname, record.name, record.getMessage()]
        for key, value in record.__dict__.items():
            if key in _STD or key.startswith("_") or value is None:
                continue
            text = str(value)
            if not text or any(c in text for c in ' "=\n\t'):
                text = json.dumps(text)
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "info") -> None:
    """Send the ``stemedb`` loggers to stderr once (idempotent)."""
    logger = logging.getLogger("stemedb")
    if not any(getattr(h, "_stemedb", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(KeyValueFormatter())
        handler._stemedb = True
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(getattr(logging, str(level).upper(), logging.INFO))
