"""stemedb.aclient.AsyncClient over real HTTP, driven with asyncio.run: the
same servers as test_client.py (the app on wsgiref, the scripted one)."""
from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("httpx", reason="the async client needs the client extra (httpx)")

from stemedb import errors  # noqa: E402
from stemedb.aclient import AsyncClient  # noqa: E402
from stemedb.client import (Client, Health, PutResult, QueryResult, RateLimited,  # noqa: E402
                            StoredAssertion, Unauthorized, assertion_hash, signing_key)

from .conftest import KEYS, body  # noqa: E402
from .test_client import CREATED, LIMITED, problem, scripted, server  # noqa: E402,F401


def run(coro):
    return asyncio.run(coro)


def test_every_endpoint(server):
    key = signing_key(b"\x01" * 32)

    async def go():
        async with AsyncClient(server, api_key=KEYS["admin"][0], signing_key=key) as c:
            r = await c.put(body())
            assert isinstance(r, PutResult) and r.created and r.hash == assertion_hash(body())
            assert (await c.put(body())).status == "exists"
            batch = await c.put_batch([body(value=i) for i in range(3)])
            assert [x.status for x in batch] == ["created"] * 3
            signed = await c.put(body(value="signed"), sign=True)
            got = await c.get(signed.hash)
            assert isinstance(got, StoredAssertion)
            assert got.agent_id == bytes(key.verify_key).hex()
            assert await c.get("0" * 64) is None
            q = await c.query("drugs/semaglutide", lens="consensus")
            assert isinstance(q, QueryResult) and q.results[0].winner is not None
            # The twin answers what the synchronous client answers.
            assert Client(server, api_key=KEYS["admin"][0]).query(
                "drugs/semaglutide", lens="consensus") == q
            assert (await c.query_get("drugs/semaglutide", include_descendants=True)).assertions
            assert (await c.skeptic("drugs/semaglutide", "gastroparesis_risk")).claims
            assert (await c.trace(r.hash)).assertion.hash == r.hash
            assert (await c.vote(r.hash, 0.5)).seq > 0
            assert (await c.vote(r.hash, 0.5, sign=True)).seq > 0
            assert (await c.create_epoch("e1", description="d")).name == "e1"
            assert (await c.record_outcome("ab" * 32, True)).trust_rank > 0.5
            audits = await c.audit_queries(limit=5)
            assert audits and (await c.audit_query(audits[0].id)).id == audits[0].id
            assert (await c.retract(hash=r.hash, reason="test")).retracted == 1
            h = await c.health()
            assert isinstance(h, Health) and h.healthy
            assert "stemedb_assertions" in await c.metrics()
            assert (await c.openapi())["openapi"].startswith("3.1")
    run(go())


def test_errors_are_the_same_as_the_sync_client(server):
    async def go():
        async with AsyncClient(server, api_key=KEYS["writer"][0]) as c:
            with pytest.raises(errors.ValidationError) as e:
                await c.put(body(confidence=3))
            assert (e.value.status, e.value.code, e.value.field) == (400, "invalid_field",
                                                                      "confidence")
            with pytest.raises(errors.NotFound):
                await c.trace("0" * 64)
        async with AsyncClient(server) as anon:
            with pytest.raises(Unauthorized):
                await anon.put(body())
    run(go())


def test_keepalive_one_connection(scripted):
    s = scripted(CREATED)

    async def go():
        async with AsyncClient(s.url) as c:
            for _ in range(5):
                await c.put(body())
    run(go())
    assert len(s.requests) == 5 and s.connections == 1


def test_429_is_retried_after_retry_after(scripted):
    s = scripted(LIMITED, CREATED)

    async def go():
        async with AsyncClient(s.url) as c:
            return await c.put(body())
    r = run(go())
    assert r.created and len(s.requests) == 2
    assert s.requests[1][3] - s.requests[0][3] >= 0.95, "waited the Retry-After second"


def test_gives_up_after_max_attempts(scripted):
    s = scripted(LIMITED)

    async def go():
        async with AsyncClient(s.url, max_attempts=3, max_retry_wait=10) as c:
            await c.put(body())
    with pytest.raises(RateLimited) as e:
        run(go())
    assert len(s.requests) == 3 and e.value.attempts == 3
    assert "gave up after 3 attempts" in str(e.value)


def test_a_retry_after_past_the_budget_is_not_waited(scripted):
    s = scripted((429, {"Retry-After": "60"}, problem("rate_limited")), CREATED)

    async def go():
        async with AsyncClient(s.url, max_retry_wait=5) as c:
            await c.put(body())
    t0 = time.monotonic()
    with pytest.raises(RateLimited, match="retry budget"):
        run(go())
    assert time.monotonic() - t0 < 5 and len(s.requests) == 1


def test_an_outcome_is_never_sent_twice(scripted):
    s = scripted(LIMITED, (201, {}, {"agent_id": "ab" * 32, "trust_rank": 0.55}))

    async def go():
        async with AsyncClient(s.url) as c:
            await c.record_outcome("ab" * 32, True)
    with pytest.raises(RateLimited):
        run(go())
    assert len(s.requests) == 1


def test_health_503_is_an_answer(scripted):
    s = scripted((503, {}, {"status": "degraded", "reason": "disk full", "version": "0",
                            "uptime_seconds": 1.0}))

    async def go():
        async with AsyncClient(s.url) as c:
            return await c.health()
    h = run(go())
    assert (h.status, h.reason) == ("degraded", "disk full")


def test_a_base_url_with_a_path_prefix_is_kept(scripted):
    s = scripted(CREATED)

    async def go():
        async with AsyncClient(s.url + "/db/") as c:
            await c.put(body())
    run(go())
    assert s.requests[0][1] == "/db/v1/assert"
    Client(s.url + "/db").put(body())
    assert s.requests[1][1] == "/db/v1/assert"
