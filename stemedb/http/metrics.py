"""Prometheus metrics, one registry per app (no globals: tests build many apps).

=========================================  =========  =====================================
name                                       type       labels / meaning
=========================================  =========  =====================================
stemedb_http_requests_total                counter    route (template, never the raw path),
                                                      method, status
stemedb_http_request_duration_seconds      histogram  route, method, status
stemedb_ratelimited_requests_total         counter    endpoint, reason (rate_limit,
                                                      circuit_open)
stemedb_wal_fsync_latency_seconds          histogram  seconds per group-commit fsync
stemedb_wal_batch_size                     histogram  records per group commit
stemedb_assertions                         gauge      stored assertions (retracted included)
stemedb_last_seq                           gauge      the log's last sequence number
stemedb_wal_segments                       gauge      WAL segment files
stemedb_storage_fault                      gauge      1 once a storage fault stopped writes
stemedb_uptime_seconds                     gauge      since this worker started
stemedb_build_info                         gauge      version, implementation (compiled|pure)
stemedb_last_backup_timestamp_seconds      gauge      Unix time of the latest successful
                                                      backup; 0 when none is recorded
stemedb_backup_failures_total              counter    failed backups
stemedb_audit_bytes                        gauge      bytes of the query audit trail on disk
stemedb_audit_dropped_entries_total        counter    audit entries dropped (disk full or
                                                      another write error, or the writer
                                                      too far behind) since the worker
                                                      started
stemedb_read_cache_hits_total              counter    kind (record, answer): read cache hits
stemedb_read_cache_misses_total            counter    kind: lookups that read and decoded a
                                                      record or computed an answer
stemedb_read_cache_bytes                   gauge      estimated heap bytes the read cache
                                                      holds (STEMEDB_READ_CACHE_BYTES bounds)
stemedb_archive_last_success_timestamp_seconds
                                           gauge      Unix time of the last successful
                                                      ``stemedb archive push`` pass; 0 when
                                                      none is recorded
stemedb_archive_lag_seconds                gauge      age of the oldest sealed WAL segment
                                                      not yet archived; 0 when none waits
                                                      or archival is not configured
stemedb_archive_lag_segments               gauge      sealed segments not yet archived
process_*                                  various    the worker process (CPU, memory, open
                                                      files; prometheus_client's
                                                      ProcessCollector)
python_info, python_gc_*                   various    the interpreter (PlatformCollector,
                                                      GCCollector)
=========================================  =========  =====================================

The store-derived values are read at scrape time.  The two backup metrics
come from ``<data_dir>/backup-state.json``, which the backup tool writes:
``{"last_success_ts": <float Unix seconds>, "failures": <int>}``; when the
file is missing both are 0.  The archive metrics come from
``<data_dir>/archive-state.json`` (written by ``stemedb archive push``) and
the WAL directory's listing, as :func:`stemedb.ops.archivestate.current_lag`
defines them; they are exported when ``STEMEDB_ARCHIVE_S3`` is set or the
state file exists, and as 0 otherwise (so a store without archival never
alerts).
"""
from __future__ import annotations

import json
import math
import os
import threading
import time
from bisect import bisect_left
from typing import Any

from prometheus_client import (CollectorRegistry, Counter, GCCollector, Histogram,
                               PlatformCollector, ProcessCollector, disable_created_metrics)
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)
from prometheus_client.utils import floatToGoString

from .. import __version__

# Group-commit fsyncs on NVMe take tens of microseconds; on cloud disks a few
# milliseconds; a failing disk, seconds.  The buckets cover all three.
FSYNC_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01,
                 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0)
# The *_created series double the exposition for nothing a dashboard uses.
disable_created_metrics()

METHODS = frozenset(("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"))


class Metrics:
    """Every metric of one app, in its own :class:`CollectorRegistry`."""

    def __init__(self, handle, data_dir: str | None, started_at: float | None = None,
                 archive: bool = False):
        self.registry = CollectorRegistry(auto_describe=True)
        self.handle = handle
        self.data_dir = data_dir
        self.archive = archive   # STEMEDB_ARCHIVE_S3 is set
        self.started_at = time.monotonic() if started_at is None else started_at
        r = self.registry
        # stemedb_http_requests_total and stemedb_http_request_duration_seconds
        # (registered first, as the Counter and the Histogram they replace)
        self.http = RequestMetrics(HTTP_BUCKETS)
        r.register(self.http)
        self.observe_request = self.http.observe
        self.ratelimited = Counter(
            "stemedb_ratelimited_requests_total",
            "Requests answered 429 by the rate limiter or an open circuit",
            ["endpoint", "reason"], registry=r)
        self.fsync = Histogram(
            "stemedb_wal_fsync_latency_seconds", "Seconds per WAL group-commit fsync",
            buckets=FSYNC_BUCKETS, registry=r)
        self.batch = Histogram(
            "stemedb_wal_batch_size", "Records per WAL group commit",
            buckets=BATCH_BUCKETS, registry=r)
        r.register(_StoreCollector(self))
        _runtime_collectors(r)

    def commit_observer(self, records: int, fsync_seconds: float) -> None:
        """Passed to ``store.set_commit_observer``; called after each durable group."""
        self.fsync.observe(fsync_seconds)
        self.batch.observe(records)

    def backup_state(self) -> dict:
        """``backup-state.json`` of the data directory, or zeros."""
        if not self.data_dir:
            return {"last_success_ts": 0.0, "failures": 0}
        try:
            with open(os.path.join(self.data_dir, "backup-state.json"), "rb") as f:
                doc = json.loads(f.read())
            return {"last_success_ts": float(doc.get("last_success_ts") or 0.0),
                    "failures": int(doc.get("failures") or 0)}
        except (OSError, ValueError, TypeError, AttributeError):
            return {"last_success_ts": 0.0, "failures": 0}

    def archive_state(self) -> dict:
        """The archive metrics' values (zeros when archival is not in use)."""
        zero = {"last_success_ts": 0.0, "lag_seconds": 0.0, "lag_segments": 0}
        if not self.data_dir:
            return zero
        from ..ops.archivestate import current_lag
        try:
            cur = current_lag(self.data_dir)
        except Exception:  # noqa: BLE001 - a metric never fails the scrape
            return zero
        if not (self.archive or cur["state_exists"]):
            return zero
        return cur

    def histogram_summary(self, hist: Histogram) -> dict:
        """Cumulative count, sum and buckets of an unlabelled histogram (dashboard)."""
        out: dict[str, Any] = {"count": 0, "sum": 0.0, "buckets": []}
        for metric in hist.collect():
            for s in metric.samples:
                if s.name.endswith("_count"):
                    out["count"] = int(s.value)
                elif s.name.endswith("_sum"):
                    out["sum"] = s.value
                elif s.name.endswith("_bucket"):
                    out["buckets"].append([s.labels["le"], int(s.value)])
        return out


class RequestMetrics:
    """``stemedb_http_requests_total`` (counter) and
    ``stemedb_http_request_duration_seconds`` (histogram), labelled route,
    method, status: one collector, one lock per request.

    Every request updates both (``observe``, from ``middleware.Observe``).
    prometheus_client's ``Counter`` and ``Histogram`` children took three
    locks and a Python loop over the buckets for that, ~2.6 us a request;
    here it is one lock, a ``bisect`` and three additions (~0.8 us).  The
    exposition is theirs, line for line (same names, help, labels, label
    sets in the order first seen, cumulative ``le`` buckets written by
    ``floatToGoString``, then ``_count`` and ``_sum``):
    tests/unit/http/test_request_metrics.py compares the two."""

    LABELS = ("route", "method", "status")

    def __init__(self, buckets):
        # an observation goes to the first bucket whose bound it does not
        # exceed (prometheus_client's ``amount <= bound``): bisect_left
        self._bounds = tuple(float(b) for b in buckets) + (math.inf,)
        self._les = tuple(floatToGoString(b) for b in self._bounds)
        self._lock = threading.Lock()
        # (route, method, status) as observed -> the entry of its labels
        # (a method outside METHODS is "OTHER"; the status a string);
        # bounded: routes are templates, methods a fixed set, statuses a few dozen
        self._by_key: dict = {}
        self._entries: dict = {}    # labels -> [count, sum, per-bucket counts]

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        entry = self._by_key.get((route, method, status))
        if entry is None:
            entry = self._entry(route, method, status)
        i = bisect_left(self._bounds, seconds)
        with self._lock:
            entry[0] += 1
            entry[1] += seconds
            entry[2][i] += 1

    def _entry(self, route: str, method: str, status: int) -> list:
        labels = (route, method if method in METHODS else "OTHER", str(status))
        with self._lock:
            entry = self._entries.get(labels)
            if entry is None:
                entry = self._entries[labels] = [0, 0.0, [0] * len(self._bounds)]
            self._by_key[(route, method, status)] = entry
        return entry

    def _families(self):
        return (CounterMetricFamily("stemedb_http_requests_total",
                                    "HTTP requests by route template, method and status",
                                    labels=self.LABELS),
                HistogramMetricFamily("stemedb_http_request_duration_seconds",
                                      "HTTP request duration in seconds", labels=self.LABELS))

    def describe(self):
        return list(self._families())

    def collect(self):
        with self._lock:
            rows = [(labels, e[0], e[1], list(e[2])) for labels, e in self._entries.items()]
        requests, duration = self._families()
        for labels, count, total, counts in rows:
            requests.add_metric(labels, float(count))
            buckets, acc = [], 0
            for le, n in zip(self._les, counts):
                acc += n
                buckets.append((le, float(acc)))
            duration.add_metric(labels, buckets, total)
        yield requests
        yield duration


class _StoreCollector:
    """Gauges read from the store at scrape time."""

    def __init__(self, metrics: Metrics):
        self.m = metrics

    def describe(self):
        return []

    def collect(self):
        m = self.m
        store = m.handle.peek()
        up = GaugeMetricFamily("stemedb_uptime_seconds", "Seconds since this worker started")
        up.add_metric([], time.monotonic() - m.started_at)
        yield up
        if store is not None:
            for name, doc, attr in (
                    ("stemedb_assertions", "Stored assertions, retracted included", "count"),
                    ("stemedb_last_seq", "Last sequence number in the log", "last_seq"),
                    ("stemedb_wal_segments", "WAL segment files", "wal_segments")):
                try:
                    value = float(getattr(store, attr))
                except Exception:  # noqa: BLE001 - a closed or broken store: skip the gauge
                    continue
                g = GaugeMetricFamily(name, doc)
                g.add_metric([], value)
                yield g
            fault = GaugeMetricFamily("stemedb_storage_fault",
                                      "1 when a storage fault has stopped writes")
            fault.add_metric([], 1.0 if getattr(store, "fault", None) else 0.0)
            yield fault
            yield from _audit_metrics(store)
            yield from _read_cache_metrics(store)
            info = GaugeMetricFamily("stemedb_build_info", "Version and implementation",
                                     labels=["version", "implementation"])
            info.add_metric([__version__, str(getattr(store, "implementation", "unknown"))], 1.0)
            yield info
        state = m.backup_state()
        last = GaugeMetricFamily("stemedb_last_backup_timestamp_seconds",
                                 "Unix time of the latest successful backup (0: none recorded)")
        last.add_metric([], state["last_success_ts"])
        yield last
        fails = CounterMetricFamily("stemedb_backup_failures",
                                    "Failed backups of this data directory")
        fails.add_metric([], state["failures"])
        yield fails
        arch = m.archive_state()
        for name, doc, key in (
                ("stemedb_archive_last_success_timestamp_seconds",
                 "Unix time of the last successful WAL archive pass (0: none recorded)",
                 "last_success_ts"),
                ("stemedb_archive_lag_seconds",
                 "Seconds the oldest sealed WAL segment not yet archived has waited "
                 "(0: none waits, or archival is not configured)", "lag_seconds"),
                ("stemedb_archive_lag_segments", "Sealed WAL segments not yet archived",
                 "lag_segments")):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], float(arch[key]))
            yield g


def _runtime_collectors(registry) -> None:
    """``process_*`` (Linux: /proc) and ``python_*`` series on this registry.
    Each collector reads the process at scrape time; several apps in one
    process (tests) each get their own."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


def _read_cache_metrics(store):
    """The read cache's hits, misses and size (stemedb.core.readcache.ReadCache);
    zeros when it is off (STEMEDB_READ_CACHE_BYTES=0)."""
    cache = getattr(getattr(store, "reader", None), "cache", None)
    st = cache.stats() if cache is not None else {
        "record_hits": 0, "record_misses": 0, "answer_hits": 0, "answer_misses": 0, "bytes": 0}
    for name, doc, what in (
            ("stemedb_read_cache_hits", "Read cache lookups answered from the cache, by kind "
             "(record: a decoded record; answer: a materialized query answer)", "hits"),
            ("stemedb_read_cache_misses", "Read cache lookups that had to read and decode "
             "(record) or compute (answer), by kind", "misses")):
        c = CounterMetricFamily(name, doc, labels=["kind"])
        c.add_metric(["record"], float(st[f"record_{what}"]))
        c.add_metric(["answer"], float(st[f"answer_{what}"]))
        yield c
    size = GaugeMetricFamily("stemedb_read_cache_bytes",
                             "Estimated heap bytes the read cache holds (bounded by "
                             "STEMEDB_READ_CACHE_BYTES)")
    size.add_metric([], float(st["bytes"]))
    yield size


def _audit_metrics(store):
    """The audit trail's size and dropped entries (see stemedb.core.audit)."""
    try:
        stats = store.audit_stats()
    except Exception:  # noqa: BLE001 - a closed or broken store: skip the audit metrics
        return
    size = GaugeMetricFamily("stemedb_audit_bytes",
                             "Bytes of the query audit trail on disk (capped by "
                             "STEMEDB_AUDIT_MAX_BYTES)")
    size.add_metric([], float(stats["bytes"]))
    yield size
    dropped = CounterMetricFamily("stemedb_audit_dropped_entries",
                                  "Query audit entries dropped (write error such as a full "
                                  "disk, or the writer too far behind)")
    dropped.add_metric([], float(stats["dropped"]))
    yield dropped
