"""Times: RFC 3339 or Unix seconds in, integer microseconds inside, RFC 3339
UTC with microseconds out (``2026-02-11T10:00:00.000000Z``)."""
from __future__ import annotations

import time
from datetime import datetime, timezone

from .errors import ValidationError

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Every instant RFC 3339 can write in UTC: 0001-01-01T00:00:00Z to
# 9999-12-31T23:59:59.999999Z.  Time filters (as_of, known_at, since, the
# audit's from/to) take all of it: they are only compared, never hashed.
FIRST_US = -62135596800 * 1_000_000
LAST_US = 253402300799 * 1_000_000 + 999_999
# A stored timestamp is hashed as a JSON integer of microseconds, and JCS
# carries integers exactly only within +/-(2^53-1): about the years 1684 to 2255.
MIN_US = max(FIRST_US, -(2**53 - 1))
MAX_US = min(LAST_US, 2**53 - 1)


def now_us() -> int:
    return time.time_ns() // 1000


def parse_time(value, field: str) -> int:
    """A time to store and hash (an assertion's ``timestamp``): RFC 3339
    string or Unix seconds (int or float) -> microseconds, within the range
    the hash carries exactly (MIN_US..MAX_US).  O(1)."""
    us = _to_us(value, field)
    if us is None or not MIN_US <= us <= MAX_US:
        raise ValidationError(
            f"{field} must be from {format_time(MIN_US)} to {format_time(MAX_US)}: it is "
            f"hashed as an integer count of microseconds, which canonical JSON (RFC 8785) "
            f"carries exactly only within +/-(2^53-1); got {value!r}", field=field)
    return us


def parse_filter_time(value, field: str) -> int:
    """A time to compare against (``as_of``, ``known_at``, ``since``, the
    audit's ``from``/``to``): any RFC 3339 time of the years 0001-9999, or
    Unix seconds inside those years -> microseconds.  O(1)."""
    us = _to_us(value, field)
    # A string parsed, so its years are 0001-9999 as written (an offset may
    # move the instant up to a day past them, which compares just as well).
    if us is None or (type(value) is not str and not FIRST_US <= us <= LAST_US):
        raise ValidationError(
            f"{field} in Unix seconds must fall in the years 0001 to 9999: from "
            f"{FIRST_US // 1_000_000} to {LAST_US // 1_000_000}.999999; got {value!r}",
            field=field)
    return us


def _to_us(value, field: str) -> int | None:
    """RFC 3339 string or Unix seconds -> microseconds; None for a number
    so large it would be costly to multiply out (far outside any year)."""
    t = type(value)
    if t is bool or value is None:
        raise ValidationError(
            f"{field} must be an RFC 3339 time such as 2024-03-01T12:00:00Z "
            f"or Unix seconds, got {value!r}", field=field)
    if t is int or t is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise ValidationError(f"{field} must be a finite number of Unix seconds", field=field)
        if not -1e13 < value < 1e13:
            return None
        return round(value * 1_000_000) if t is float else value * 1_000_000
    if t is not str:
        raise ValidationError(
            f"{field} must be an RFC 3339 string or Unix seconds, got {t.__name__}",
            field=field)
    s = value.strip()
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValidationError(
            f"{field} is not an RFC 3339 time of the years 0001-9999: {value!r}; write it "
            f"like 2024-03-01T12:00:00Z", field=field) from None
    if dt.tzinfo is None or len(s) < 20:
        raise ValidationError(
            f"{field} needs a date, a time and a time zone (Z or +hh:mm), "
            f"got {value!r}", field=field)
    delta = dt - _EPOCH    # exact for any offset; no out-of-range datetime is built
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def format_time(us: int) -> str:
    """Microseconds since the Unix epoch -> ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.

    The compiled twin does the work once the engine has loaded it
    (:func:`use_compiled_formatter`, called by ``stemedb.core.fast``); this
    module imports nothing of the engine, so there is no import cycle.
    """
    return _format(us)


def _format_py(us: int) -> str:
    """The pure-Python formatter (the reference the compiled twin matches)."""
    secs, frac = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:06d}Z" \
        if secs >= 0 else _slow_format(us)


def use_compiled_formatter(fn) -> None:
    """Let ``fn`` (the compiled twin, same output) format times from now on."""
    global _format
    _format = fn


_format = _format_py


def _slow_format(us: int) -> str:
    from datetime import timedelta
    dt = _EPOCH + timedelta(microseconds=us)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").rjust(27, "0")
