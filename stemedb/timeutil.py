"""Times: RFC 3339 or Unix seconds in, integer microseconds inside, RFC 3339
UTC with microseconds out (``2026-02-11T10:00:00.000000Z``)."""
from __future__ import annotations

import time
from datetime import datetime, timezone

from .errors import ValidationError

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Year 1 .. 9999 (what RFC 3339 can write), and within +/-(2^53-1)
# microseconds (about the years 1684 to 2255), because the timestamp is
# hashed as a JSON integer and JCS cannot carry larger ones exactly.
MIN_US = max(-62135596800 * 1_000_000, -(2**53 - 1))
MAX_US = min(253402300799 * 1_000_000 + 999_999, 2**53 - 1)


def now_us() -> int:
    return time.time_ns() // 1000


def parse_time(value, field: str) -> int:
    """RFC 3339 string or Unix seconds (int or float) -> microseconds."""
    t = type(value)
    if t is bool or value is None:
        raise ValidationError(
            f"{field} must be an RFC 3339 time such as 2024-03-01T12:00:00Z "
            f"or Unix seconds, got {value!r}", field=field)
    if t is int or t is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise ValidationError(f"{field} must be a finite number of Unix seconds", field=field)
        if not -1e13 < value < 1e13:   # far outside any year we can write; avoids overflow
            raise ValidationError(f"{field} is outside the range StemeDB can hash exactly: "
                                  f"{format_time(MIN_US)} to {format_time(MAX_US)}", field=field)
        us = round(value * 1_000_000) if t is float else value * 1_000_000
    elif t is str:
        s = value.strip()
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            raise ValidationError(
                f"{field} is not an RFC 3339 time: {value!r}; write it like "
                f"2024-03-01T12:00:00Z", field=field) from None
        if dt.tzinfo is None or len(s) < 20:
            raise ValidationError(
                f"{field} needs a date, a time and a time zone (Z or +hh:mm), "
                f"got {value!r}", field=field)
        delta = dt - _EPOCH
        us = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    else:
        raise ValidationError(
            f"{field} must be an RFC 3339 string or Unix seconds, got {t.__name__}",
            field=field)
    if not MIN_US <= us <= MAX_US:
        raise ValidationError(
            f"{field} is outside the range StemeDB can hash exactly: "
            f"{format_time(MIN_US)} to {format_time(MAX_US)}", field=field)
    return us


def format_time(us: int) -> str:
    """Microseconds since the Unix epoch -> ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    secs, frac = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:06d}Z" \
        if secs >= 0 else _slow_format(us)


def _compiled_format():
    """The compiled twin of format_time when the extension is there."""
    try:
        from .core import fast
    except ImportError:
        return None
    return fast._fast.format_time if fast.COMPILED else None


def _slow_format(us: int) -> str:
    from datetime import timedelta
    dt = _EPOCH + timedelta(microseconds=us)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").rjust(27, "0")
