"""A Python client for the StemeDB HTTP API, with signing.

>>> from stemedb.client import Client, signing_key
>>> with Client("http://127.0.0.1:18180", api_key="stm_...") as c:
...     r = c.put({"concept_path": "drugs/semaglutide", "predicate": "risk",
...                "value": "rare", "confidence": 0.9})
...     r.hash, r.status, r.seq          # also r["hash"]: results are dicts too
...     c.query("drugs/semaglutide", lens="consensus").results[0].winner.value

Standard library only (``http.client``): a pool of keep-alive connections
shared by the threads that use the client.  :class:`AsyncClient` (in
:mod:`stemedb.aclient`, ``pip install 'stemedb[client]'``) is the ``async``
twin over ``httpx``, with the same methods, results and errors.

Results are typed (:class:`PutResult`, :class:`QueryResult`, ...): their
attributes carry the API's field names, and each is also the JSON answer as
a plain ``dict`` (``r["hash"]``, ``json.dumps(r)``, ``r.to_dict()``).

Errors are the exceptions of :mod:`stemedb.errors`, as the embedded store
raises them (a 400 is a :class:`~stemedb.errors.ValidationError`, a 404 a
:class:`~stemedb.errors.NotFound`, a 409 ``stale_vote`` a
:class:`~stemedb.errors.StaleVote`, ...), each also an :class:`APIError`
carrying the answer's ``status``, ``code``, ``message``, ``field`` and
``retry_after``.

429 and 503 answers that carry ``Retry-After`` (rate limited, circuit open,
server starting, store closed, cluster node not caught up: the server
refused the request without acting on it) are retried after the wait the
server asks for, at most ``max_attempts`` times in all and ``max_retry_wait``
seconds of waiting in all; then the last error is raised, saying so.
"""
from __future__ import annotations

import email.utils
import http.client
import json
import math
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

from nacl.signing import SigningKey

from . import __version__
from .errors import (Conflict, InvalidSignature, NotFound, SignatureRequired, StaleVote,
                     StemeError, StoreClosed, StoreFaulted, UnknownReference, ValidationError)
from .model import assertion_hash as _model_assertion_hash
from .model import vote_hash as _model_vote_hash
from .timeutil import format_time, now_us, parse_time

__all__ = [
    "Client", "APIError", "Unauthorized", "Forbidden", "RateLimited", "Unavailable",
    "assertion_hash", "vote_hash", "sign_assertion", "sign_vote", "signing_key", "agent_id_of",
    "SigningKey",
    "PutResult", "BatchResult", "StoredAssertion", "Resolution", "QueryResult", "Claim",
    "SkepticResult", "TraceResult", "RetractResult", "VoteResult", "EpochResult",
    "OutcomeResult", "AuditEntry", "Health",
]

T = TypeVar("T")
USER_AGENT = f"stemedb-client/{__version__}"


# ================================================================ results

class _Field(Generic[T]):
    """A typed, read-only attribute reading one JSON key of a result."""

    __slots__ = ("name", "required")

    def __init__(self, required: bool = True) -> None:
        self.name = ""
        self.required = required

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Field[T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        if not self.required:
            return obj.get(self.name)
        try:
            return obj[self.name]
        except KeyError:
            raise AttributeError(f"{type(obj).__name__} has no {self.name!r} "
                                 f"(the server's answer lacks it)") from None


class _Answer(dict[str, Any]):
    """A JSON object the server answered: a ``dict``, with typed attributes."""

    __slots__ = ()

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(data or {})
        self._convert()

    def _convert(self) -> None:
        """Turn nested objects into their typed classes (in place)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON answer as plain dicts and lists (a deep copy)."""
        out: dict[str, Any] = _plain(self)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _wrap_list(d: dict[str, Any], key: str, cls: Callable[[Any], Any]) -> None:
    if isinstance(d.get(key), list):
        d[key] = [cls(x) if isinstance(x, dict) else x for x in d[key]]


def _wrap_one(d: dict[str, Any], key: str, cls: Callable[[Any], Any]) -> None:
    if isinstance(d.get(key), dict):
        d[key] = cls(d[key])


class PutResult(_Answer):
    """``POST /v1/assert`` (and each item of a batch)."""

    __slots__ = ()
    hash = _Field[str]()
    status = _Field[str]()          # "created" or "exists"
    seq = _Field[int]()             # the stored seq when it existed

    @property
    def created(self) -> bool:
        return self.status == "created"


class BatchResult(list[PutResult]):
    """``POST /v1/assert/batch``: the results in request order (a list)."""

    @property
    def results(self) -> list[PutResult]:
        return list(self)

    @property
    def hashes(self) -> list[str]:
        return [r.hash for r in self]

    def to_dict(self) -> dict[str, Any]:
        return {"results": [r.to_dict() for r in self]}


class StoredAssertion(_Answer):
    """A stored assertion: every request field, resolved, plus what the
    server adds (``hash``, ``seq``, ``recorded_at``, ``status``,
    ``retraction``)."""

    __slots__ = ()
    hash = _Field[str]()
    seq = _Field[int]()
    concept_path = _Field[str]()
    predicate = _Field[str]()
    value = _Field[Any]()
    confidence = _Field[float]()
    source = _Field["str | None"](required=False)
    source_class = _Field[str]()
    lifecycle = _Field[str]()
    parent_hash = _Field["str | None"](required=False)
    derived_from = _Field["list[str] | None"](required=False)
    epoch = _Field["str | None"](required=False)
    timestamp = _Field[str]()
    agent_id = _Field["str | None"](required=False)
    signature = _Field["str | None"](required=False)
    recorded_at = _Field[str]()
    status = _Field[str]()          # "active" or "retracted"
    retraction = _Field["dict[str, Any] | None"](required=False)


class Claim(_Answer):
    """One distinct value in a skeptic answer."""

    __slots__ = ()
    value = _Field[Any]()
    weight = _Field[float]()
    share = _Field[float]()
    support = _Field[int]()
    hashes = _Field["list[str]"]()


class Resolution(_Answer):
    """One (concept_path, predicate) of a query's ``results``, as the lens
    resolved it.  The ``layered`` lens adds ``layers`` (each a Resolution of
    one source class); the ``skeptic`` lens adds ``status`` and ``claims``."""

    __slots__ = ()
    concept_path = _Field["str | None"](required=False)   # absent on a layer
    predicate = _Field["str | None"](required=False)
    source_class = _Field["str | None"](required=False)   # on a layer
    winner = _Field["StoredAssertion | None"](required=False)
    confidence = _Field[float]()
    conflict_score = _Field[float]()
    candidates_count = _Field[int]()
    layers = _Field["list[Resolution] | None"](required=False)
    status = _Field["str | None"](required=False)
    claims = _Field["list[Claim] | None"](required=False)

    def _convert(self) -> None:
        _wrap_one(self, "winner", StoredAssertion)
        _wrap_list(self, "layers", Resolution)
        _wrap_list(self, "claims", Claim)


class QueryResult(_Answer):
    """``POST``/``GET /v1/query``."""

    __slots__ = ()
    concept_path = _Field[str]()
    lens = _Field[str]()
    results = _Field["list[Resolution]"]()
    assertions = _Field["list[StoredAssertion]"]()
    next_cursor = _Field["str | None"](required=False)

    def _convert(self) -> None:
        _wrap_list(self, "results", Resolution)
        _wrap_list(self, "assertions", StoredAssertion)


class SkepticResult(_Answer):
    """``GET /v1/skeptic``: claims heaviest first."""

    __slots__ = ()
    status = _Field[str]()          # unanimous, agreed, contested, no_claims
    conflict_score = _Field[float]()
    claims = _Field["list[Claim]"]()

    def _convert(self) -> None:
        _wrap_list(self, "claims", Claim)


class TraceResult(_Answer):
    """``GET /v1/trace/{hash}``."""

    __slots__ = ()
    assertion = _Field[StoredAssertion]()
    parents = _Field["list[StoredAssertion]"]()
    derived_from = _Field["list[StoredAssertion]"]()
    dependents = _Field["list[StoredAssertion]"]()
    dependents_count = _Field[int]()
    source = _Field["dict[str, Any] | None"](required=False)
    retraction = _Field["dict[str, Any] | None"](required=False)

    def _convert(self) -> None:
        _wrap_one(self, "assertion", StoredAssertion)
        for key in ("parents", "derived_from", "dependents"):
            _wrap_list(self, key, StoredAssertion)


class RetractResult(_Answer):
    """``POST /v1/retract``."""

    __slots__ = ()
    retracted = _Field[int]()       # newly retracted (already-retracted ones not counted)
    hashes = _Field["list[str]"]()
    seq = _Field[int]()


class VoteResult(_Answer):
    """``POST /v1/vote``."""

    __slots__ = ()
    seq = _Field[int]()


class EpochResult(_Answer):
    """``POST /v1/epoch``."""

    __slots__ = ()
    name = _Field[str]()
    seq = _Field[int]()


class OutcomeResult(_Answer):
    """``POST /v1/agents/{agent_id}/outcome``."""

    __slots__ = ()
    agent_id = _Field[str]()
    trust_rank = _Field[float]()


class AuditEntry(_Answer):
    """One answered query of the audit trail."""

    __slots__ = ()
    id = _Field[str]()
    at = _Field[str]()
    agent = _Field["str | None"](required=False)
    params = _Field["dict[str, Any]"]()
    result_hashes = _Field["list[str]"]()
    contributing = _Field["list[dict[str, Any]]"]()


class Health(_Answer):
    """``GET /v1/health``; a 503 answer (``starting``, ``degraded``) is a
    Health too, with ``reason``."""

    __slots__ = ()
    status = _Field[str]()          # healthy, starting, degraded
    version = _Field[str]()
    uptime_seconds = _Field[float]()
    assertion_count = _Field["int | None"](required=False)
    last_seq = _Field["int | None"](required=False)
    wal_segments = _Field["int | None"](required=False)
    implementation = _Field["str | None"](required=False)   # compiled or pure
    reason = _Field["str | None"](required=False)
    cluster = _Field["dict[str, Any] | None"](required=False)

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"


# ================================================================ errors

class APIError(StemeError):
    """A non-2xx answer.  Each one is also the :mod:`stemedb.errors` class
    the embedded store would raise (``ValidationError`` for a 400, ...).

    ``attempts`` is how many times the request was sent; ``waited`` the
    seconds spent waiting on ``Retry-After`` before it.
    """

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 retry_after: int | None = None, body: Any = None) -> None:
        StemeError.__init__(self, message, field=field)
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.body = body
        self.attempts = 1
        self.waited = 0.0
        self.gave_up: str | None = None

    def __str__(self) -> str:
        s = f"{self.status} {self.code}: {self.message}"
        if self.field:
            s += f" (field {self.field})"
        if self.gave_up:
            s += f" [{self.gave_up}]"
        return s


class Unauthorized(APIError, PermissionError):
    """401: a key is needed, or the one given is wrong."""


class Forbidden(APIError, PermissionError):
    """403: the key lacks the scope."""


class RateLimited(APIError):
    """429: rate limited or circuit open; ``retry_after`` says when to retry."""


class Unavailable(APIError):
    """503: the server is starting, its writes stopped after a storage fault,
    or (cluster) the node has not caught up."""


_BY_STATUS: dict[int, type[APIError]] = {401: Unauthorized, 403: Forbidden, 429: RateLimited,
                                         503: Unavailable}
_STEME_BY_CODE: dict[str, type[StemeError]] = {
    "invalid_signature": InvalidSignature, "signature_required": SignatureRequired,
    "unknown_reference": UnknownReference, "stale_vote": StaleVote,
    "storage_fault": StoreFaulted, "store_closed": StoreClosed}
_STEME_BY_STATUS: dict[int, type[StemeError]] = {400: ValidationError, 404: NotFound,
                                                 409: Conflict}
_CLASSES: dict[tuple[type[APIError], type[StemeError]], type[APIError]] = {}
_CLASSES_LOCK = threading.Lock()


def error_class(status: int, code: str) -> type[APIError]:
    """The exception class for an answer: an :class:`APIError` that is also
    the matching :mod:`stemedb.errors` class, if there is one."""
    own = _BY_STATUS.get(status, APIError)
    steme = _STEME_BY_CODE.get(code) or _STEME_BY_STATUS.get(status)
    if steme is None:
        return own
    with _CLASSES_LOCK:
        cls = _CLASSES.get((own, steme))
        if cls is None:
            cls = type(steme.__name__, (own, steme),
                       {"__module__": __name__, "__doc__": steme.__doc__})
            _CLASSES[(own, steme)] = cls
    return cls


def _retry_after(value: str | None) -> int | None:
    """Whole seconds from a ``Retry-After`` (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0, math.ceil(when.timestamp() - time.time()))


def make_error(status: int, retry_after_header: str | None, payload: bytes) -> APIError:
    """The exception for a non-2xx answer (status, ``Retry-After``, body)."""
    try:
        body = json.loads(payload) if payload else None
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    retry_after = _retry_after(retry_after_header)
    if isinstance(err, dict):
        code = str(err.get("code") or "error")
        return error_class(status, code)(status, code, str(err.get("message", "")),
                                         err.get("field"), retry_after, body)
    text = payload[:200].decode("utf-8", "replace") or http.client.responses.get(status, "")
    return error_class(status, "http_error")(status, "http_error", text, None, retry_after, body)


# ================================================================ hashing and signing

def assertion_hash(body: dict[str, Any]) -> str:
    """The hex hash the server gives ``body`` (BLAKE3 of the JCS hashed object).

    ``body`` needs a ``timestamp``: without one the server uses its receive
    time, which cannot be known in advance (:func:`sign_assertion` sets it).
    Validation is the server's own (:func:`stemedb.model.assertion_hash`), so
    a body this accepts is one the server accepts, up to references; a body
    it refuses raises :class:`~stemedb.errors.ValidationError` (a
    ``ValueError``) naming the field.
    """
    return _model_assertion_hash(body)


def vote_hash(assertion_hash: str, weight: float, agent_id: str | None,
              timestamp: Any) -> str:
    """The hex vote hash of contract v1.1, which a vote's signature covers:
    BLAKE3-256 of the JCS form of ``{"assertion_hash", "weight", "agent_id",
    "timestamp"}``, the time (RFC 3339 or Unix seconds) as integer
    microseconds."""
    return _model_vote_hash(assertion_hash, weight, agent_id,
                            parse_time(timestamp, "timestamp")).hex()


def signing_key(seed: bytes | str | None = None) -> SigningKey:
    """An Ed25519 key: new, or from a 32-byte seed (bytes or 64 hex)."""
    if seed is None:
        return SigningKey.generate()
    if isinstance(seed, str):
        seed = bytes.fromhex(seed)
    return SigningKey(seed)


def agent_id_of(key: SigningKey) -> str:
    """The ``agent_id`` of a key: its public key, 64 hex characters."""
    return bytes(key.verify_key).hex()


def sign_assertion(body: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    """A copy of ``body`` with ``timestamp`` (now, if absent), ``agent_id`` and
    ``signature``: Ed25519 by ``key`` over the 32 bytes of the assertion hash.

    Setting the timestamp also makes a retried write exactly idempotent: the
    same body has the same hash, and the server answers ``exists``."""
    out = dict(body)
    if out.get("timestamp") is None:
        out["timestamp"] = format_time(now_us())   # exact microseconds
    out.pop("signature", None)
    out["agent_id"] = agent_id_of(key)
    digest = bytes.fromhex(assertion_hash(out))
    out["signature"] = key.sign(digest).signature.hex()
    return out


def sign_vote(assertion_hash_hex: str, weight: float, key: SigningKey,
              timestamp: Any = None) -> dict[str, Any]:
    """A vote body with ``timestamp`` (now, if absent), ``agent_id`` and
    ``signature``: Ed25519 by ``key`` over the vote hash (:func:`vote_hash`),
    which covers the weight and the time, so the vote can be neither reused
    with another weight nor replayed to undo this agent's newer vote (the
    server refuses a vote not newer than the agent's stored one with 409
    ``stale_vote``)."""
    if timestamp is None:
        timestamp = format_time(now_us())   # exact microseconds, whatever the JSON encoder
    agent = agent_id_of(key)
    digest = bytes.fromhex(vote_hash(assertion_hash_hex, weight, agent, timestamp))
    return {"assertion_hash": assertion_hash_hex, "weight": weight, "timestamp": timestamp,
            "agent_id": agent, "signature": key.sign(digest).signature.hex()}


# ================================================================ calls (shared by both clients)

@dataclass(frozen=True)
class _Call(Generic[T]):
    """One API call, independent of the transport."""

    method: str
    path: str
    parse: Callable[[Any], T]
    body: Any = None
    params: dict[str, Any] | None = None
    retry: bool = True                       # safe to send again after a 429/503
    recover: Callable[[APIError], T] | None = None   # an error that is an answer
    raw: bool = False


def _param(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _none_on_404(exc: APIError) -> None:
    if exc.status == 404:
        return None
    raise exc


def _health_on_503(exc: APIError) -> Health:
    if exc.status == 503 and isinstance(exc.body, dict) and "status" in exc.body:
        return Health(exc.body)
    raise exc


def _batch(d: Any) -> BatchResult:
    return BatchResult(PutResult(r) for r in d["results"])


def _audits(d: Any) -> list[AuditEntry]:
    return [AuditEntry(x) for x in d["queries"]]


def _same(d: Any) -> Any:
    return d


def _text(d: Any) -> str:
    return bytes(d).decode()


@dataclass
class RetryState:
    """Where a call is in its retries (the policy both clients share)."""

    max_attempts: int
    max_wait: float
    attempts: int = 0
    waited: float = 0.0
    _deadline: float = field(default=0.0, repr=False)

    def wait_for(self, call: _Call[Any], exc: APIError) -> float | None:
        """Seconds to wait before sending ``call`` again, or None to give up
        (and then ``exc`` says why)."""
        exc.attempts, exc.waited = self.attempts, self.waited
        if not call.retry or exc.status not in (429, 503) or exc.retry_after is None:
            return None
        if self.attempts >= self.max_attempts:
            exc.gave_up = (f"gave up after {self.attempts} attempts "
                           f"({self.waited:g} s waited on Retry-After)")
            return None
        if self.waited + exc.retry_after > self.max_wait:
            exc.gave_up = (f"Retry-After {exc.retry_after} s is past the retry budget "
                           f"({self.max_wait - self.waited:g} s of max_retry_wait="
                           f"{self.max_wait:g} left) after {self.attempts} attempts")
            return None
        self.waited += exc.retry_after
        return float(exc.retry_after)


def _check_retry_args(max_attempts: int, max_retry_wait: float) -> None:
    if not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts must be an integer >= 1 (1: never retry); "
                         f"got {max_attempts!r}")
    if not (isinstance(max_retry_wait, (int, float)) and 0 <= max_retry_wait < math.inf):
        raise ValueError(f"max_retry_wait must be a finite number of seconds >= 0; "
                         f"got {max_retry_wait!r}")


class _Endpoints:
    """The endpoints as :class:`_Call`\\ s: both clients send these."""

    signing_key: SigningKey | None

    def _key(self) -> SigningKey:
        if self.signing_key is None:
            raise ValueError("sign=True needs a signing key: "
                             "Client(..., signing_key=stemedb.client.signing_key())")
        return self.signing_key

    # Writes.  An assertion is safe to send again: the same body has the same
    # hash, and a second arrival answers "exists" (give it a timestamp, as
    # sign_assertion does, or the server stamps each arrival anew).
    def _put(self, assertion: dict[str, Any], sign: bool) -> _Call[PutResult]:
        if sign:
            assertion = sign_assertion(assertion, self._key())
        return _Call("POST", "/v1/assert", PutResult, body=assertion)

    def _put_batch(self, assertions: Iterable[dict[str, Any]], sign: bool) -> _Call[BatchResult]:
        items = list(assertions)
        if sign:
            key = self._key()
            items = [sign_assertion(a, key) for a in items]
        return _Call("POST", "/v1/assert/batch", _batch, body={"assertions": items})

    def _retract(self, hash: str | None, concept_path: str | None, source: str | None,
                 reason: str, cascade: bool) -> _Call[RetractResult]:
        body: dict[str, Any] = {k: v for k, v in (("hash", hash), ("concept_path", concept_path),
                                                  ("source", source)) if v is not None}
        body.update(reason=reason, cascade=cascade)
        # A second retraction of the same target retracts nothing new.
        return _Call("POST", "/v1/retract", RetractResult, body=body)

    def _vote(self, assertion_hash_hex: str, weight: float, sign: bool,
              timestamp: Any) -> _Call[VoteResult]:
        if sign:
            body = sign_vote(assertion_hash_hex, weight, self._key(), timestamp)
        else:
            body = {"assertion_hash": assertion_hash_hex, "weight": weight}
            if timestamp is not None:
                body["timestamp"] = timestamp
        # Sent again, a vote with a timestamp that did arrive is 409 stale_vote.
        return _Call("POST", "/v1/vote", VoteResult, body=body)

    def _create_epoch(self, name: str, supersedes: list[str] | None,
                      description: str | None) -> _Call[EpochResult]:
        body: dict[str, Any] = {"name": name}
        if supersedes is not None:
            body["supersedes"] = supersedes
        if description is not None:
            body["description"] = description
        # Sent again after it arrived: 409 (the name exists).
        return _Call("POST", "/v1/epoch", EpochResult, body=body)

    def _record_outcome(self, agent_id: str, accurate: bool) -> _Call[OutcomeResult]:
        # Not idempotent (each outcome moves the trust rank): never sent twice.
        return _Call("POST", f"/v1/agents/{urllib.parse.quote(agent_id, safe='')}/outcome",
                     OutcomeResult, body={"accurate": accurate}, retry=False)

    # Reads.
    def _query(self, concept_path: str, params: dict[str, Any]) -> _Call[QueryResult]:
        return _Call("POST", "/v1/query", QueryResult,
                     body={"concept_path": concept_path, **params})

    def _query_get(self, concept_path: str, params: dict[str, Any]) -> _Call[QueryResult]:
        return _Call("GET", "/v1/query", QueryResult,
                     params={"concept_path": concept_path, **params})

    def _get(self, hash: str) -> _Call[StoredAssertion | None]:
        return _Call("GET", f"/v1/assertions/{urllib.parse.quote(hash, safe='')}",
                     StoredAssertion, recover=_none_on_404)

    def _skeptic(self, concept_path: str, predicate: str,
                 filters: dict[str, Any]) -> _Call[SkepticResult]:
        return _Call("GET", "/v1/skeptic", SkepticResult,
                     params={"concept_path": concept_path, "predicate": predicate, **filters})

    def _trace(self, hash: str) -> _Call[TraceResult]:
        return _Call("GET", f"/v1/trace/{urllib.parse.quote(hash, safe='')}", TraceResult)

    def _audit_queries(self, limit: int, agent: str | None, from_: Any,
                       to: Any) -> _Call[list[AuditEntry]]:
        return _Call("GET", "/v1/audit/queries", _audits,
                     params={"limit": limit, "agent": agent, "from": from_, "to": to})

    def _audit_query(self, id: str) -> _Call[AuditEntry]:
        return _Call("GET", f"/v1/audit/queries/{urllib.parse.quote(id, safe='')}", AuditEntry)

    def _health(self) -> _Call[Health]:
        # A 503 is an answer here (starting, degraded), returned at once.
        return _Call("GET", "/v1/health", Health, recover=_health_on_503, retry=False)

    def _metrics(self) -> _Call[str]:
        return _Call("GET", "/metrics", _text, raw=True)

    def _openapi(self) -> _Call[dict[str, Any]]:
        return _Call("GET", "/openapi.json", _same)


def _encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def _query_string(params: dict[str, Any] | None) -> str:
    if not params:
        return ""
    q = {k: _param(v) for k, v in params.items() if v is not None}
    return "?" + urllib.parse.urlencode(q) if q else ""


# ================================================================ the connection pool

_Conn = http.client.HTTPConnection


class _Pool:
    """Idle keep-alive connections, shared by threads: a call takes one (or
    opens one), and gives it back when the answer left it open."""

    def __init__(self, factory: Callable[[], _Conn], size: int) -> None:
        self._factory = factory
        self._size = size
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()
        self.opened = 0                      # connections opened so far

    def get(self) -> tuple[_Conn, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self.new(), False

    def new(self) -> _Conn:
        with self._lock:
            self.opened += 1
        return self._factory()

    def put(self, conn: _Conn) -> None:
        with self._lock:
            if len(self._idle) < self._size:
                self._idle.append(conn)
                return
        conn.close()

    def idle(self) -> int:
        with self._lock:
            return len(self._idle)

    def clear(self) -> None:
        with self._lock:
            conns, self._idle = self._idle, []
        for c in conns:
            c.close()


# A kept-alive connection the server closed while it idled fails at once,
# before the server saw the request.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
          http.client.CannotSendRequest)


# ================================================================ the client

class Client(_Endpoints):
    """One StemeDB server, over HTTP.  Thread-safe.

    ``max_attempts`` (default 3) and ``max_retry_wait`` (seconds, default 30)
    bound the retries of a call the server refused with 429 or 503 and a
    ``Retry-After``; ``max_attempts=1`` never retries.  ``pool_size`` is the
    most idle keep-alive connections kept.  Use it as a context manager, or
    call :meth:`close`.
    """

    def __init__(self, base_url: str = "http://127.0.0.1:18180", api_key: str | None = None,
                 timeout: float = 30.0, signing_key: SigningKey | None = None, *,
                 max_attempts: int = 3, max_retry_wait: float = 30.0,
                 pool_size: int = 10) -> None:
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("http", "https"):
            raise ValueError(f"base_url must start with http:// or https://; got {base_url!r}")
        _check_retry_args(max_attempts, max_retry_wait)
        self.base_url = base_url.rstrip("/")
        self.scheme, self.host = u.scheme, u.hostname or "127.0.0.1"
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.prefix = u.path.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.signing_key = signing_key
        self.max_attempts = max_attempts
        self.max_retry_wait = float(max_retry_wait)
        self._pool = _Pool(self._connect, pool_size)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the idle connections (the client stays usable)."""
        self._pool.clear()

    # ----------------------------------------------------------- transport
    def _connect(self) -> _Conn:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _headers(self, has_body: bool, extra: dict[str, str] | None) -> dict[str, str]:
        hdrs = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if self.api_key:
            hdrs["Authorization"] = f"Bearer {self.api_key}"
        if has_body:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(extra or {})
        return hdrs

    def _send(self, method: str, url: str, data: bytes | None,
              headers: dict[str, str]) -> tuple[int, str | None, bytes]:
        conn, reused = self._pool.get()
        for _ in range(2):
            try:
                conn.request(method, url, body=data, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
            except _STALE:
                conn.close()
                if not reused:
                    raise           # a fresh connection that fails is a real error
                # The other idle ones waited as long: drop them, go fresh.
                self._pool.clear()
                conn, reused = self._pool.new(), False
                continue
            except BaseException:
                conn.close()
                raise
            if resp.will_close:
                conn.close()
            else:
                self._pool.put(conn)
            return resp.status, resp.getheader("Retry-After"), payload
        raise AssertionError("unreachable")  # pragma: no cover

    def _run(self, call: _Call[T], headers: dict[str, str] | None = None) -> T:
        url = self.prefix + call.path + _query_string(call.params)
        data = _encode(call.body) if call.body is not None else None
        hdrs = self._headers(data is not None, headers)
        state = RetryState(self.max_attempts, self.max_retry_wait)
        while True:
            state.attempts += 1
            status, retry_after, payload = self._send(call.method, url, data, hdrs)
            if status < 400:
                if call.raw:
                    return call.parse(payload)
                return call.parse(json.loads(payload) if payload else None)
            exc = make_error(status, retry_after, payload)
            wait = state.wait_for(call, exc)
            if wait is None:
                if call.recover is not None:
                    return call.recover(exc)
                raise exc
            time.sleep(wait)

    def request(self, method: str, path: str, body: Any = None,
                params: dict[str, Any] | None = None, raw: bool = False,
                headers: dict[str, str] | None = None, *, retry: bool | None = None) -> Any:
        """Send one request; the decoded JSON answer (or bytes with ``raw``).

        ``retry`` (default: only for GET) allows resending after a 429/503
        with ``Retry-After``."""
        call: _Call[Any] = _Call(method, path, _same, body=body, params=params, raw=raw,
                                 retry=(method in ("GET", "HEAD")) if retry is None else retry)
        return self._run(call, headers)

    # ----------------------------------------------------------- endpoints
    def put(self, assertion: dict[str, Any], *, sign: bool = False) -> PutResult:
        """``POST /v1/assert``: ``hash``, ``status`` (created|exists), ``seq``."""
        return self._run(self._put(assertion, sign))

    assert_ = put

    def put_batch(self, assertions: Iterable[dict[str, Any]], *,
                  sign: bool = False) -> BatchResult:
        """``POST /v1/assert/batch`` (atomic): the results in request order."""
        return self._run(self._put_batch(assertions, sign))

    def query(self, concept_path: str, **params: Any) -> QueryResult:
        """``POST /v1/query`` with the contract's parameters as keywords."""
        return self._run(self._query(concept_path, params))

    def query_get(self, concept_path: str, **params: Any) -> QueryResult:
        """``GET /v1/query``: the same answer as :meth:`query`."""
        return self._run(self._query_get(concept_path, params))

    def get(self, hash: str) -> StoredAssertion | None:
        """The stored assertion, or None when unknown."""
        return self._run(self._get(hash))

    def retract(self, *, hash: str | None = None, concept_path: str | None = None,
                source: str | None = None, reason: str, cascade: bool = False) -> RetractResult:
        """``POST /v1/retract``: one of ``hash``, ``concept_path``, ``source``."""
        return self._run(self._retract(hash, concept_path, source, reason, cascade))

    def skeptic(self, concept_path: str, predicate: str, **filters: Any) -> SkepticResult:
        """``GET /v1/skeptic``."""
        return self._run(self._skeptic(concept_path, predicate, filters))

    def trace(self, hash: str) -> TraceResult:
        """``GET /v1/trace/{hash}``."""
        return self._run(self._trace(hash))

    def vote(self, assertion_hash_hex: str, weight: float, *, sign: bool = False,
             timestamp: Any = None) -> VoteResult:
        """``POST /v1/vote``; ``timestamp`` defaults to now when signing, else
        to the server's receive time."""
        return self._run(self._vote(assertion_hash_hex, weight, sign, timestamp))

    def create_epoch(self, name: str, *, supersedes: list[str] | None = None,
                     description: str | None = None) -> EpochResult:
        """``POST /v1/epoch`` (scope admin)."""
        return self._run(self._create_epoch(name, supersedes, description))

    def record_outcome(self, agent_id: str, accurate: bool) -> OutcomeResult:
        """``POST /v1/agents/{agent_id}/outcome`` (scope admin); never retried."""
        return self._run(self._record_outcome(agent_id, accurate))

    def audit_queries(self, *, limit: int = 100, agent: str | None = None, from_: Any = None,
                      to: Any = None) -> list[AuditEntry]:
        """``GET /v1/audit/queries`` (scope admin), newest first."""
        return self._run(self._audit_queries(limit, agent, from_, to))

    def audit_query(self, id: str) -> AuditEntry:
        """``GET /v1/audit/queries/{id}``."""
        return self._run(self._audit_query(id))

    def health(self) -> Health:
        """``GET /v1/health``; a 503 (degraded, starting) is returned, not raised."""
        return self._run(self._health())

    def metrics(self) -> str:
        """``GET /metrics``: the Prometheus text."""
        return self._run(self._metrics())

    def openapi(self) -> dict[str, Any]:
        """``GET /openapi.json``."""
        return self._run(self._openapi())
