"""Per-endpoint, per-client rate limits and a per-client write circuit breaker.

Rate limits come from ``STEMEDB_RATE_LIMITS``: ``;``-separated
``endpoint=N/second`` (or ``minute``, ``hour``); endpoints ``assert``,
``batch``, ``query``, ``retract``, ``vote`` and ``default`` (everything else
except health and metrics, which are never limited).  Endpoints not named keep
the defaults of :data:`stemedb.config.DEFAULT_RATE_LIMITS`; ``endpoint=off``
lifts a limit (benchmarks).  ``circuit=N/period`` (default ``5/minute``) sets
the circuit breaker below; ``circuit=off`` disables it.  ``auth=N/period``
(default ``30/minute``) limits wrong API keys per client address
(``auth=off`` lifts it).  Counting is a fixed window per client in memory,
through the ``limits`` library: one worker process owns the store, so an
in-process counter sees every request.

The circuit breaker protects the log from a client stuck in a loop of bad
writes: after ``threshold`` rejected writes (4xx other than 429) within
``window`` seconds, that client's writes get 429 for ``open_for`` seconds;
then one probe write is let through, which closes the circuit when it
succeeds and opens it again when it is rejected.
"""
from __future__ import annotations

import math
import re
import threading
import time
from collections import deque

import limits
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from ..config import DEFAULT_RATE_LIMITS
from ..errors import ConfigError

ENDPOINTS = ("assert", "batch", "query", "retract", "vote", "default")
# Not an endpoint: the circuit breaker's threshold, "N rejected writes per
# period" (default 5/minute); "circuit=off" disables it.
CIRCUIT = "circuit"
DEFAULT_CIRCUIT = "5/minute"
# Not an endpoint either: wrong API keys per client address (default 30/minute);
# past it, requests with a key from that address get 429 (middleware.Authenticate).
AUTH = "auth"
DEFAULT_AUTH = "30/minute"
_ITEM = {"second": limits.RateLimitItemPerSecond, "minute": limits.RateLimitItemPerMinute,
         "hour": limits.RateLimitItemPerHour}
_RULE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour)s?\s*$", re.I)


def parse_rate_limits(text: str | None) -> dict:
    """``"assert=2000/second;retract=10/minute"`` -> {endpoint: RateLimitItem or None}.

    Endpoints not named keep their defaults.  Raises ``ConfigError`` naming
    the bad part.
    """
    rules = _parse(DEFAULT_RATE_LIMITS + f";{CIRCUIT}={DEFAULT_CIRCUIT};{AUTH}={DEFAULT_AUTH}")
    if text:
        rules.update(_parse(text))
    return rules


def _parse(text: str) -> dict:
    out: dict[str, limits.RateLimitItem | None] = {}     # None: that endpoint is unlimited
    for part in text.split(";"):
        if not part.strip():
            continue
        name, sep, rule = part.partition("=")
        name = name.strip().lower()
        if not sep or (name not in ENDPOINTS and name not in (CIRCUIT, AUTH)):
            raise ConfigError(
                f"STEMEDB_RATE_LIMITS: {part.strip()!r} is not endpoint=N/period; endpoints are "
                f"{', '.join(ENDPOINTS)} (and {CIRCUIT} for the write circuit breaker, {AUTH} "
                f"for wrong API keys per address), "
                f"e.g. assert=2000/second;retract=10/minute",
                field="rate_limits")
        if rule.strip().lower() in ("off", "none", "unlimited"):
            out[name] = None
            continue
        m = _RULE.match(rule)
        if not m or int(m.group(1)) < 1:
            raise ConfigError(
                f"STEMEDB_RATE_LIMITS: {rule.strip()!r} for {name} is not N/second, N/minute "
                f"or N/hour with N >= 1", field="rate_limits")
        out[name] = _ITEM[m.group(2).lower()](int(m.group(1)))
    return out


class RateLimiter:
    """``check(endpoint, client)`` -> None when allowed, else seconds to wait (>= 1)."""

    def __init__(self, rules: dict, clock=time.time):
        self.rules = rules
        self._limiter = FixedWindowRateLimiter(MemoryStorage())
        self._clock = clock

    def check(self, endpoint: str, client: str) -> int | None:
        item = self.rules.get(endpoint, self.rules.get("default"))
        if item is None:
            return None
        if self._limiter.hit(item, endpoint, client):
            return None
        return self._wait(item, endpoint, client)

    def exhausted(self, endpoint: str, client: str) -> int | None:
        """Like :meth:`check` without counting: seconds to wait when the
        client has used up ``endpoint``'s limit, else None."""
        item = self.rules.get(endpoint, self.rules.get("default"))
        if item is None or self._limiter.test(item, endpoint, client):
            return None
        return self._wait(item, endpoint, client)

    def _wait(self, item, endpoint: str, client: str) -> int:
        reset = self._limiter.get_window_stats(item, endpoint, client).reset_time
        return max(1, math.ceil(reset - self._clock()))


class CircuitBreaker:
    """Per-client state: recent rejection times, open-until, probe in flight."""

    MAX_CLIENTS = 100_000  # bound on tracked clients; idle ones are dropped first

    @classmethod
    def from_rules(cls, rules: dict, clock=time.monotonic) -> "CircuitBreaker | None":
        """The breaker ``circuit=N/period`` asks for (None when ``off``)."""
        item = rules.get(CIRCUIT)
        if item is None:
            return None
        return cls(threshold=item.amount, window=float(item.get_expiry()), clock=clock)

    def __init__(self, threshold: int = 5, window: float = 60.0, open_for: float = 30.0,
                 clock=time.monotonic):
        self.threshold = threshold
        self.window = window
        self.open_for = open_for
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: dict[str, _Circuit] = {}

    def allow(self, client: str) -> int | None:
        """None to let a write through, else seconds until the next try."""
        now = self._clock()
        with self._lock:
            c = self._clients.get(client)
            if c is None or c.open_until is None:
                return None
            if now < c.open_until:
                return max(1, math.ceil(c.open_until - now))
            if c.probing:
                return 1
            c.probing = True  # half-open: this one write is the probe
            return None

    def record(self, client: str, status: int) -> None:
        """Tell the outcome of a write that :meth:`allow` let through."""
        now = self._clock()
        with self._lock:
            c = self._clients.get(client)
            if status == 429:  # not the client's data at fault: a probe may go again
                if c is not None:
                    c.probing = False
                return
            rejected = 400 <= status < 500
            if c is None:
                if not rejected:
                    return
                if len(self._clients) >= self.MAX_CLIENTS:
                    self._evict(now)
                c = self._clients[client] = _Circuit()
            if c.probing:
                c.probing = False
                if rejected:
                    c.open_until = now + self.open_for
                else:
                    del self._clients[client]
                return
            if not rejected:
                return
            c.rejections.append(now)
            while c.rejections and c.rejections[0] <= now - self.window:
                c.rejections.popleft()
            if c.open_until is None and len(c.rejections) >= self.threshold:
                c.open_until = now + self.open_for
                c.rejections.clear()

    def state(self, client: str) -> str:
        with self._lock:
            c = self._clients.get(client)
            if c is None or c.open_until is None:
                return "closed"
            return "open" if self._clock() < c.open_until else "half_open"

    def _evict(self, now: float) -> None:
        for key in [k for k, c in self._clients.items()
                    if c.open_until is None and (not c.rejections
                                                 or c.rejections[-1] <= now - self.window)]:
            del self._clients[key]
        if len(self._clients) >= self.MAX_CLIENTS:  # still full: forget the oldest half
            for key in list(self._clients)[: self.MAX_CLIENTS // 2]:
                del self._clients[key]


class _Circuit:
    __slots__ = ("rejections", "open_until", "probing")

    def __init__(self):
        self.rejections: deque = deque()
        self.open_until: float | None = None
        self.probing = False
