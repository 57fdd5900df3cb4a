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
"""
from __future__ import annotations

import math

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
        out, fast = [], True
        for i, item in enumerate(v):
            n, f = normalize(item, f"{path}[{i}]", depth + 1)
            out.append(n)
            fast = fast and f
        return out, fast
    if t is dict:
        out, fast = {}, True
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


def canonical_json(v) -> bytes:
    """RFC 8785 canonical JSON of any JSON value."""
    n, fast = normalize(v)
    return dumps_normalized(n, fast)
