"""Rate limits (per endpoint, per client) and the write circuit breaker."""
from __future__ import annotations

import pytest

from stemedb.errors import ConfigError
from stemedb.http.middleware import client_address, parse_proxies
from stemedb.http.ratelimit import CircuitBreaker, parse_rate_limits

from .conftest import auth, body


def test_parse_rate_limits_merges_with_defaults():
    rules = parse_rate_limits("assert=5/second;retract=10/minute")
    assert rules["assert"].amount == 5 and rules["assert"].GRANULARITY.name == "second"
    assert rules["retract"].amount == 10 and rules["retract"].GRANULARITY.name == "minute"
    assert rules["batch"].amount == 100, "unnamed endpoints keep the defaults"
    assert parse_rate_limits("query=off")["query"] is None
    assert parse_rate_limits("vote=3/hour")["vote"].GRANULARITY.name == "hour"


def test_circuit_setting():
    from stemedb.http.ratelimit import CircuitBreaker
    b = CircuitBreaker.from_rules(parse_rate_limits(None))
    assert (b.threshold, b.window, b.open_for) == (5, 60.0, 30.0), "5 in 60 s, open 30 s"
    b = CircuitBreaker.from_rules(parse_rate_limits("circuit=20/hour"))
    assert (b.threshold, b.window) == (20, 3600.0)
    assert CircuitBreaker.from_rules(parse_rate_limits("circuit=off")) is None


def test_circuit_off_through_the_app(make_client):
    c = make_client(rate_limits="circuit=off")
    for _ in range(8):
        assert c.simulate_post("/v1/assert", json=body(confidence=7)).status_code == 400
    assert c.simulate_post("/v1/assert", json=body()).status_code == 201


@pytest.mark.parametrize("text", ["assert", "nope=1/second", "assert=0/second",
                                  "assert=ten/second", "assert=1/fortnight"])
def test_bad_rate_limits_are_refused(text):
    with pytest.raises(ConfigError):
        parse_rate_limits(text)


def test_limits_are_per_endpoint_and_per_client(make_client, keys_file):
    c = make_client(api_keys_file=keys_file, rate_limits="assert=1/minute;query=off")
    assert c.simulate_post("/v1/assert", json=body(value=1), headers=auth("writer")).status_code == 201
    assert c.simulate_post("/v1/assert", json=body(value=2), headers=auth("writer")).status_code == 429
    assert c.simulate_post("/v1/assert", json=body(value=3), headers=auth("admin")).status_code == 201, \
        "another key is another client"
    for _ in range(3):
        r = c.simulate_post("/v1/query", json={"concept_path": "a"}, headers=auth("writer"))
        assert r.status_code == 200, "the query limit is separate"
    metrics = c.simulate_get("/metrics").text
    assert 'stemedb_ratelimited_requests_total{endpoint="assert",reason="rate_limit"} 1.0' in metrics


def test_anonymous_clients_by_address(make_client):
    c = make_client(rate_limits="query=1/minute")
    q = {"concept_path": "a"}
    assert c.simulate_post("/v1/query", json=q, remote_addr="10.0.0.1").status_code == 200
    assert c.simulate_post("/v1/query", json=q, remote_addr="10.0.0.1").status_code == 429
    assert c.simulate_post("/v1/query", json=q, remote_addr="10.0.0.2").status_code == 200
    # X-Forwarded-For from an untrusted peer is ignored.
    r = c.simulate_post("/v1/query", json=q, remote_addr="10.0.0.1",
                        headers={"X-Forwarded-For": "10.9.9.9"})
    assert r.status_code == 429


def test_forwarded_for_only_from_trusted_proxies(make_client):
    c = make_client(rate_limits="query=1/minute", trusted_proxies="10.0.0.100")
    q = {"concept_path": "a"}
    hdr = lambda ip: {"X-Forwarded-For": ip}  # noqa: E731
    assert c.simulate_post("/v1/query", json=q, remote_addr="10.0.0.100",
                           headers=hdr("10.1.1.1")).status_code == 200
    assert c.simulate_post("/v1/query", json=q, remote_addr="10.0.0.100",
                           headers=hdr("10.1.1.1")).status_code == 429
    assert c.simulate_post("/v1/query", json=q, remote_addr="10.0.0.100",
                           headers=hdr("10.1.1.2")).status_code == 200


def test_client_address_reads_right_to_left():
    proxies = parse_proxies("10.0.0.0/24, 192.168.1.1")
    assert client_address("10.0.0.5", "1.2.3.4, 192.168.1.1", proxies) == "1.2.3.4"
    assert client_address("10.0.0.5", "6.6.6.6, 1.2.3.4", proxies) == "1.2.3.4", \
        "a client cannot spoof by prepending"
    assert client_address("8.8.8.8", "1.2.3.4", proxies) == "8.8.8.8"
    assert client_address("10.0.0.5", "garbage", proxies) == "10.0.0.5"
    assert client_address("10.0.0.5", None, proxies) == "10.0.0.5"


def test_health_and_metrics_never_limited(make_client):
    c = make_client(rate_limits="default=1/hour")
    for _ in range(5):
        assert c.simulate_get("/v1/health").status_code == 200
        assert c.simulate_get("/metrics").status_code == 200
    assert c.simulate_get("/v1/assertions/" + "a" * 64).status_code == 404
    assert c.simulate_get("/v1/assertions/" + "a" * 64).status_code == 429


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_breaker_opens_after_five_rejections_then_probes():
    clock = Clock()
    b = CircuitBreaker(clock=clock)
    for _ in range(4):
        assert b.allow("c") is None
        b.record("c", 400)
    assert b.allow("c") is None
    b.record("c", 400)
    wait = b.allow("c")
    assert wait == 30, "open for 30 s after the fifth rejection"
    assert b.allow("other") is None, "per client"
    clock.t += 29.5
    assert b.allow("c") == 1
    clock.t += 1
    assert b.allow("c") is None, "one probe after 30 s"
    assert b.allow("c") == 1, "only one probe at a time"
    b.record("c", 400)
    assert b.allow("c") == 30, "a rejected probe opens the circuit again"
    clock.t += 31
    assert b.allow("c") is None
    b.record("c", 201)
    assert b.state("c") == "closed"
    assert b.allow("c") is None and b.allow("c") is None


def test_breaker_window_is_sixty_seconds():
    clock = Clock()
    b = CircuitBreaker(clock=clock)
    for _ in range(4):
        b.record("c", 400)
    clock.t += 61
    b.record("c", 400)
    assert b.allow("c") is None, "old rejections fall out of the window"


REMOTE = "203.0.113.7"  # a documentation address: a remote client


def test_breaker_through_the_app(make_client):
    from stemedb.http.ratelimit import CircuitBreaker as CB
    clock = Clock()
    c = make_client()
    # Swap in a breaker with a controllable clock through the public factory.
    from stemedb.config import Settings
    from stemedb.http.app import create_app
    import falcon.testing
    app = create_app(c.app_.state.handle, Settings(rate_limits="assert=off"),
                     breaker=CB(clock=clock))
    t = falcon.testing.TestClient(app)
    for _ in range(5):
        assert t.simulate_post("/v1/assert", json=body(confidence=7), remote_addr=REMOTE).status_code == 400
    r = t.simulate_post("/v1/assert", json=body(), remote_addr=REMOTE)
    assert r.status_code == 429 and r.json["error"]["code"] == "circuit_open"
    assert int(r.headers["retry-after"]) == 30
    assert t.simulate_post("/v1/query", json={"concept_path": "a"}, remote_addr=REMOTE).status_code == 200, \
        "reads are not affected"
    clock.t += 30
    assert t.simulate_post("/v1/assert", json=body(), remote_addr=REMOTE).status_code == 201, "the probe"
    assert t.simulate_post("/v1/assert", json=body(value=9), remote_addr=REMOTE).status_code == 201, "closed again"
    assert 'reason="circuit_open"' in t.simulate_get("/metrics").text


def test_breaker_skips_keyless_loopback_clients(make_client):
    """Every local tool shares 127.0.0.1: a person trying error messages with
    curl must keep getting 400s that name the field, not a 429."""
    from stemedb.config import Settings
    from stemedb.http.app import create_app
    from stemedb.http.ratelimit import CircuitBreaker as CB
    import falcon.testing
    c = make_client()
    app = create_app(c.app_.state.handle, Settings(rate_limits="assert=off"), breaker=CB())
    t = falcon.testing.TestClient(app)
    for _ in range(12):
        r = t.simulate_post("/v1/assert", json=body(confidence=7), remote_addr="127.0.0.1")
        assert r.status_code == 400 and r.json["error"]["field"] == "confidence"
    assert t.simulate_post("/v1/assert", json=body(), remote_addr="::1").status_code == 201
