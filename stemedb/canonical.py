"""RFC 8785 (JCS) canonical JSON, fast.

``rfc8785`` (Trail of Bits) is the reference implementation and the oracle of
the property test; it costs ~47 us for a typical assertion, which would make
hashing the bottleneck of a bulk load.  orjson with sorted keys produces the
same bytes (measured: strings for every code point below U+3000, and
non-integral floats with 1e-5 <= |x| < 2**52, in 600,000 random cases) except
for three things, which :func:`normalize` detects:

* integral floats (orjson ``1.0``, JCS ``1``): turned into ints below 2**53;
* floats outside the measured range: handed to ``rfc8785``;
* object keys with code points above U+D7FF (JCS sorts by UTF-16 code units,
  orjson by code points): handed to ``rfc8785``.

That pure path is the reference.  Its compiled twin, ``stemedb/core/_canon.pyx``,
writes the same bytes in one pass (no normalized copy, no second library); it
is chosen the way ``stemedb.core.fast`` chooses ``_fast``: compiled when built,
``STEMEDB_PURE_PYTHON=1`` forces the pure path, ``STEMEDB_REQUIRE_FAST=1``
makes a missing build fatal.  The twin answers only "these are the bytes" or
"ask the reference" (``None``): every refusal, and so every error message,
comes from :func:`normalize`.  tests/unit/test_canon.py checks it against
``rfc8785`` and against the pure path.
"""
from __future__ import annotations

import math
import os
from typing import Any

import orjson
import rfc8785

MAX_SAFE_INT = 2**53 - 1
_SORT = orjson.OPT_SORT_KEYS


class NotJSON(ValueError):
    """The value cannot be carried by canonical JSON; ``path`` says where."""

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


def normalize(v, path: str = "value", depth: int = 0):
    """Check that ``v`` is a JSON value JCS can carry exactly.

    Returns ``(normalized, fast)`` where ``normalized`` has integral floats
    as ints and ``fast`` says whether orjson's sorted output equals JCS.
    Raises :class:`NotJSON` naming the offending path.
    """
    if depth > 64:
        raise NotJSON("is nested more than 64 levels deep", path)
    t = type(v)
    if v is None or t is str or t is bool:
        return v, True
    if t is int:
        if -MAX_SAFE_INT <= v <= MAX_SAFE_INT:
            return v, True
        raise NotJSON(f"holds the integer {v}, beyond +/-(2^53-1); send it as a string", path)
    if t is float:
        if not math.isfinite(v):
            raise NotJSON("holds a NaN or infinite number, which JSON cannot carry", path)
        if v.is_integer():
            if abs(v) <= MAX_SAFE_INT:
                return int(v), True
            return v, False
        return v, abs(v) >= 1e-5
    if t is list or t is tuple:
        items: list[Any] = []
        fast = True
        for i, item in enumerate(v):
            n, f = normalize(item, f"{path}[{i}]", depth + 1)
            items.append(n)
            fast = fast and f
        return items, fast
    if t is dict:
        out: dict[str, Any] = {}
        fast = True
        for k, item in v.items():
            if type(k) is not str:
                raise NotJSON(f"has a non-string object key {k!r}", path)
            n, f = normalize(item, f"{path}.{k}", depth + 1)
            out[k] = n
            fast = fast and f and (k.isascii() or max(k) <= "\ud7ff")
        return out, fast
    raise NotJSON(f"holds a {t.__name__}, which is not a JSON value", path)


def dumps_normalized(v, fast: bool) -> bytes:
    """Canonical bytes of a value already passed through :func:`normalize`."""
    if fast:
        try:
            return orjson.dumps(v, option=_SORT)
        except TypeError as exc:  # lone surrogates in a str
            raise NotJSON(f"is not valid UTF-8 text: {exc}", "value") from None
    try:
        return rfc8785.dumps(v)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError) as exc:
        raise NotJSON(f"cannot be canonicalized: {exc}", "value") from None


def canonical_json_py(v) -> bytes:
    """RFC 8785 canonical JSON of any JSON value (the pure reference)."""
    n, fast = normalize(v)
    return dumps_normalized(n, fast)


def _flag(name: str) -> bool:
    """A 0|1 setting read as ``stemedb.core.fast`` reads it."""
    return os.environ.get(name, "0").strip().lower() not in ("", "0", "false", "no", "off")


def _load_compiled():
    """The compiled twin, or None (not built, or STEMEDB_PURE_PYTHON=1)."""
    if _flag("STEMEDB_PURE_PYTHON"):
        return None
    try:
        from .core import _canon
    except ImportError as exc:
        if _flag("STEMEDB_REQUIRE_FAST"):
            raise ImportError(
                "STEMEDB_REQUIRE_FAST=1 but the compiled extension stemedb.core._canon is "
                "missing; build it with `pip install -e .` (needs Cython and a C compiler)"
            ) from exc
        return None
    return _canon


_canon = _load_compiled()
COMPILED = _canon is not None

if COMPILED:
    _value_json = _canon.value_json

    def canonical_json(v) -> bytes:
        """RFC 8785 canonical JSON of any JSON value (compiled; the reference
        decides, and raises, wherever the twin declines)."""
        out = _value_json(v)
        return canonical_json_py(v) if out is None else out
else:
    canonical_json = canonical_json_py
