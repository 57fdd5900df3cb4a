"""metrics.RequestMetrics against prometheus_client's own Counter and
Histogram: the same observations give the same exposition, line for line."""
from __future__ import annotations

import random
import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from stemedb.http.metrics import HTTP_BUCKETS, METHODS, Metrics, RequestMetrics


class Reference:
    """What Metrics did before RequestMetrics: prometheus_client's Counter and
    Histogram children, labelled the same way."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "stemedb_http_requests_total", "HTTP requests by route template, method and status",
            ["route", "method", "status"], registry=self.registry)
        self.duration = Histogram(
            "stemedb_http_request_duration_seconds", "HTTP request duration in seconds",
            ["route", "method", "status"], buckets=HTTP_BUCKETS, registry=self.registry)

    def observe(self, route, method, status, seconds):
        labels = (route, method if method in METHODS else "OTHER", str(status))
        self.requests.labels(*labels).inc()
        self.duration.labels(*labels).observe(seconds)


def ours():
    registry = CollectorRegistry(auto_describe=True)
    m = RequestMetrics(HTTP_BUCKETS)
    registry.register(m)
    return registry, m


def observations(seed: int, n: int) -> list:
    rnd = random.Random(seed)
    routes = ["/v1/query", "/v1/assert", "/v1/assertions/{hash}", "unmatched", "/api/summary"]
    methods = ["GET", "POST", "HEAD", "PROPFIND", "get", "DELETE"]
    statuses = [200, 201, 400, 404, 429, 500, 503]
    edges = [0.0, 1e-9, *HTTP_BUCKETS, *(b * (1 + 1e-12) for b in HTTP_BUCKETS), 11.0, 1e6]
    out = []
    for _ in range(n):
        seconds = rnd.choice(edges) if rnd.random() < 0.3 else rnd.expovariate(200.0)
        out.append((rnd.choice(routes), rnd.choice(methods), rnd.choice(statuses), seconds))
    return out


def test_nothing_observed_exposes_the_same():
    registry, _ = ours()
    assert generate_latest(registry) == generate_latest(Reference().registry)


def test_same_exposition_as_prometheus_client():
    for seed in range(5):
        ref = Reference()
        registry, m = ours()
        for obs in observations(seed, 2000):
            ref.observe(*obs)
            m.observe(*obs)
        text = generate_latest(registry)
        assert text == generate_latest(ref.registry)
        assert b'method="OTHER"' in text and b'le="+Inf"' in text


def test_exact_bucket_bounds_fall_in_their_own_bucket():
    ref = Reference()
    registry, m = ours()
    for b in HTTP_BUCKETS:
        ref.observe("/r", "GET", 200, b)
        m.observe("/r", "GET", 200, b)
    text = generate_latest(registry).decode()
    assert text == generate_latest(ref.registry).decode()
    tail = ',method="GET",route="/r",status="200"}'
    assert f'le="0.0005"{tail} 1.0' in text and f'le="0.5"{tail} 10.0' in text
    assert f'le="10.0"{tail} 14.0' in text and f'le="+Inf"{tail} 14.0' in text


def test_concurrent_observations_are_all_counted():
    registry, m = ours()
    threads = [threading.Thread(target=lambda: [m.observe("/v1/query", "POST", 200, 0.002)
                                                for _ in range(5000)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    text = generate_latest(registry).decode()
    assert ('stemedb_http_requests_total{method="POST",route="/v1/query",status="200"} 40000.0'
            in text)
    assert ('stemedb_http_request_duration_seconds_count{method="POST",route="/v1/query",'
            'status="200"} 40000.0' in text)


def test_metrics_registers_them_first():
    """Metrics exposes the two families where the Counter and Histogram were:
    first in its registry, before the rate-limit counter."""
    class NoStore:      # a handle whose store is not open yet
        def peek(self):
            return None

    m = Metrics(NoStore(), None)
    m.observe_request("/v1/health", "GET", 200, 0.001)
    names = [f.name for f in m.registry.collect()]
    assert names[:3] == ["stemedb_http_requests", "stemedb_http_request_duration_seconds",
                         "stemedb_ratelimited_requests"]
