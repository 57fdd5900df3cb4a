"""The ``async`` twin of :class:`stemedb.client.Client`, over ``httpx``.

>>> from stemedb.aclient import AsyncClient
>>> async with AsyncClient("http://127.0.0.1:18180", api_key="stm_...") as c:
...     r = await c.put({"concept_path": "drugs/semaglutide", "predicate": "risk",
...                      "value": "rare", "confidence": 0.9})

Same methods, results, errors, signing and retry policy as the
:class:`~stemedb.client.Client` (both send the same calls, built once in
:mod:`stemedb.client`); waits on ``Retry-After`` with ``asyncio.sleep``.
Needs ``httpx``: ``pip install 'stemedb[client]'``.
"""
from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Iterable
from typing import Any, TypeVar

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("stemedb.aclient needs httpx: pip install 'stemedb[client]' "
                      "(the synchronous stemedb.client.Client needs nothing more)") from exc

from nacl.signing import SigningKey

from .client import (USER_AGENT, AuditEntry, BatchResult, EpochResult, Health, OutcomeResult,
                     PutResult, QueryResult, RetractResult, RetryState, SkepticResult,
                     StoredAssertion, TraceResult, VoteResult, _Call, _check_retry_args,
                     _encode, _Endpoints, _param, _same, make_error)

__all__ = ["AsyncClient"]

T = TypeVar("T")


class AsyncClient(_Endpoints):
    """One StemeDB server, over HTTP, for ``asyncio``.

    The arguments are those of :class:`stemedb.client.Client`; ``pool_size``
    bounds the open connections (``httpx.Limits``), and ``transport`` passes
    an ``httpx`` transport through (a proxy, a mock).  Use it as an ``async``
    context manager, or ``await`` :meth:`aclose`.
    """

    def __init__(self, base_url: str = "http://127.0.0.1:18180", api_key: str | None = None,
                 timeout: float = 30.0, signing_key: SigningKey | None = None, *,
                 max_attempts: int = 3, max_retry_wait: float = 30.0, pool_size: int = 10,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("http", "https"):
            raise ValueError(f"base_url must start with http:// or https://; got {base_url!r}")
        _check_retry_args(max_attempts, max_retry_wait)
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.signing_key = signing_key
        self.max_attempts = max_attempts
        self.max_retry_wait = float(max_retry_wait)
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport,
            limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    # ----------------------------------------------------------- transport
    async def _run(self, call: _Call[T], headers: dict[str, str] | None = None) -> T:
        data = _encode(call.body) if call.body is not None else None
        hdrs = dict(headers or {})
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        params = None
        if call.params:
            params = {k: _param(v) for k, v in call.params.items() if v is not None}
        state = RetryState(self.max_attempts, self.max_retry_wait)
        while True:
            state.attempts += 1
            resp = await self._http.request(call.method, call.path, content=data,
                                            params=params, headers=hdrs)
            payload = resp.content
            if resp.status_code < 400:
                if call.raw:
                    return call.parse(payload)
                return call.parse(json.loads(payload) if payload else None)
            exc = make_error(resp.status_code, resp.headers.get("Retry-After"), payload)
            wait = state.wait_for(call, exc)
            if wait is None:
                if call.recover is not None:
                    return call.recover(exc)
                raise exc
            await asyncio.sleep(wait)

    async def request(self, method: str, path: str, body: Any = None,
                      params: dict[str, Any] | None = None, raw: bool = False,
                      headers: dict[str, str] | None = None, *,
                      retry: bool | None = None) -> Any:
        """Send one request; the decoded JSON answer (or bytes with ``raw``)."""
        call: _Call[Any] = _Call(method, path, _same, body=body, params=params, raw=raw,
                                 retry=(method in ("GET", "HEAD")) if retry is None else retry)
        return await self._run(call, headers)

    # ----------------------------------------------------------- endpoints
    async def put(self, assertion: dict[str, Any], *, sign: bool = False) -> PutResult:
        """``POST /v1/assert``: ``hash``, ``status`` (created|exists), ``seq``."""
        return await self._run(self._put(assertion, sign))

    assert_ = put

    async def put_batch(self, assertions: Iterable[dict[str, Any]], *,
                        sign: bool = False) -> BatchResult:
        """``POST /v1/assert/batch`` (atomic): the results in request order."""
        return await self._run(self._put_batch(assertions, sign))

    async def query(self, concept_path: str, **params: Any) -> QueryResult:
        """``POST /v1/query`` with the contract's parameters as keywords."""
        return await self._run(self._query(concept_path, params))

    async def query_get(self, concept_path: str, **params: Any) -> QueryResult:
        """``GET /v1/query``."""
        return await self._run(self._query_get(concept_path, params))

    async def get(self, hash: str) -> StoredAssertion | None:
        """The stored assertion, or None when unknown."""
        return await self._run(self._get(hash))

    async def retract(self, *, hash: str | None = None, concept_path: str | None = None,
                      source: str | None = None, reason: str,
                      cascade: bool = False) -> RetractResult:
        """``POST /v1/retract``: one of ``hash``, ``concept_path``, ``source``."""
        return await self._run(self._retract(hash, concept_path, source, reason, cascade))

    async def skeptic(self, concept_path: str, predicate: str, **filters: Any) -> SkepticResult:
        """``GET /v1/skeptic``."""
        return await self._run(self._skeptic(concept_path, predicate, filters))

    async def trace(self, hash: str) -> TraceResult:
        """``GET /v1/trace/{hash}``."""
        return await self._run(self._trace(hash))

    async def vote(self, assertion_hash_hex: str, weight: float, *, sign: bool = False,
                   timestamp: Any = None) -> VoteResult:
        """``POST /v1/vote``."""
        return await self._run(self._vote(assertion_hash_hex, weight, sign, timestamp))

    async def create_epoch(self, name: str, *, supersedes: list[str] | None = None,
                           description: str | None = None) -> EpochResult:
        """``POST /v1/epoch`` (scope admin)."""
        return await self._run(self._create_epoch(name, supersedes, description))

    async def record_outcome(self, agent_id: str, accurate: bool) -> OutcomeResult:
        """``POST /v1/agents/{agent_id}/outcome`` (scope admin); never retried."""
        return await self._run(self._record_outcome(agent_id, accurate))

    async def audit_queries(self, *, limit: int = 100, agent: str | None = None,
                            from_: Any = None, to: Any = None) -> list[AuditEntry]:
        """``GET /v1/audit/queries`` (scope admin), newest first."""
        return await self._run(self._audit_queries(limit, agent, from_, to))

    async def audit_query(self, id: str) -> AuditEntry:
        """``GET /v1/audit/queries/{id}``."""
        return await self._run(self._audit_query(id))

    async def health(self) -> Health:
        """``GET /v1/health``; a 503 (degraded, starting) is returned, not raised."""
        return await self._run(self._health())

    async def metrics(self) -> str:
        """``GET /metrics``: the Prometheus text."""
        return await self._run(self._metrics())

    async def openapi(self) -> dict[str, Any]:
        """``GET /openapi.json``."""
        return await self._run(self._openapi())
