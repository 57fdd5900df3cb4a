"""Prometheus metrics: the contract's names, route templates, per-app registries."""
from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from .conftest import body

CONTRACT = ("stemedb_assertions", "stemedb_wal_segments", "stemedb_wal_fsync_latency_seconds",
            "stemedb_wal_batch_size", "stemedb_http_requests", "stemedb_http_request_duration_seconds",
            "stemedb_ratelimited_requests", "stemedb_last_backup_timestamp_seconds",
            "stemedb_backup_failures")


def families(client):
    r = client.simulate_get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def sample(fams, name, suffix="", **labels):
    for s in fams[name].samples:
        if s.name == name + suffix and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def test_contract_names_are_exposed(client):
    client.simulate_post("/v1/assert", json=body())
    fams = families(client)
    for name in CONTRACT:
        assert name in fams, f"{name} is in the contract"
    assert fams["stemedb_assertions"].type == "gauge"
    assert fams["stemedb_wal_fsync_latency_seconds"].type == "histogram"
    assert sample(fams, "stemedb_assertions") == 1.0


def test_fsync_histogram_has_sub_millisecond_buckets(client):
    client.simulate_post("/v1/assert", json=body())
    fams = families(client)
    les = {float(s.labels["le"]) for s in fams["stemedb_wal_fsync_latency_seconds"].samples
           if s.name.endswith("_bucket")}
    assert len([le for le in les if le < 0.001]) >= 4
    assert sample(fams, "stemedb_wal_batch_size", "_count") >= 1, "the commit observer feeds it"


def test_requests_labelled_by_route_template_not_path(client):
    for i in range(3):
        client.simulate_get("/v1/assertions/" + f"{i:064x}")
    client.simulate_get("/no/such/path")
    fams = families(client)
    routes = {s.labels["route"] for s in fams["stemedb_http_requests"].samples}
    assert "/v1/assertions/{hash}" in routes
    assert not any("0000" in r for r in routes), "never the raw path"
    assert "unmatched" in routes
    assert sample(fams, "stemedb_http_requests", "_total", route="/v1/assertions/{hash}",
                  method="GET", status="404") == 3.0


def test_each_app_has_its_own_registry(make_client):
    a, b = make_client(), make_client()
    a.simulate_get("/v1/health")
    fa, fb = families(a), families(b)
    assert sample(fa, "stemedb_http_requests", "_total", route="/v1/health") == 1.0
    assert sample(fb, "stemedb_http_requests", "_total", route="/v1/health") is None


def test_backup_state_file(client, tmp_path):
    fams = families(client)
    assert sample(fams, "stemedb_last_backup_timestamp_seconds") == 0.0
    (tmp_path / "data" / "backup-state.json").write_text(
        json.dumps({"last_success_ts": 1760000000.5, "failures": 2}))
    fams = families(client)
    assert sample(fams, "stemedb_last_backup_timestamp_seconds") == 1760000000.5
    assert sample(fams, "stemedb_backup_failures", "_total") == 2.0
    (tmp_path / "data" / "backup-state.json").write_text("{garbage")
    assert client.simulate_get("/metrics").status_code == 200, "a broken file is not a 500"


def test_process_and_python_metrics_on_the_app_registry(client):
    fams = families(client)
    for name in ("process_cpu_seconds", "process_resident_memory_bytes",
                 "process_open_fds", "process_start_time_seconds", "python_info"):
        assert name in fams, f"{name} is missing from /metrics"
    assert any(n.startswith("python_gc_") for n in fams)
    assert sample(fams, "process_resident_memory_bytes") > 0


def _segments(data_dir, n):
    import os
    wal = os.path.join(data_dir, "wal")
    return sorted(os.path.join(wal, f) for f in os.listdir(wal) if f.startswith("segment-"))[:n]


def test_archive_metrics_zero_without_archival(client):
    fams = families(client)
    assert sample(fams, "stemedb_archive_lag_seconds") == 0.0
    assert sample(fams, "stemedb_archive_last_success_timestamp_seconds") == 0.0


def test_archive_lag_is_the_age_of_the_oldest_unarchived_sealed_segment(tmp_path, make_client):
    import os
    import time

    from stemedb.core.store import open_store
    data = str(tmp_path / "arch")
    store = open_store(data, durability="none", segment_size=4096)
    try:
        for i in range(60):
            store.put(body(value=f"v{i}-" + "x" * 200))
        segs = _segments(data, 10 ** 6)
        assert len(segs) >= 4, "the test needs several sealed segments"
        now = time.time()
        for k, path in enumerate(segs):            # segment k sealed 1000*(len-k) s ago
            os.utime(path, (now - 1000 * (len(segs) - k), now - 1000 * (len(segs) - k)))
        # archival configured, nothing archived yet: the oldest sealed segment waits
        c = make_client(store, data_dir=data, archive_s3="bucket/prefix")
        fams = families(c)
        lag = sample(fams, "stemedb_archive_lag_seconds")
        assert 1000 * len(segs) - 60 <= lag <= 1000 * len(segs) + 60
        assert sample(fams, "stemedb_archive_lag_segments") == len(segs) - 1
        # the archiver recorded segments 1 and 2: segment 3 is the oldest waiting
        state = {"timeline": "", "last_archived_segment": 2, "last_success_ts": 1760000000.0}
        with open(os.path.join(data, "archive-state.json"), "w") as f:
            json.dump(state, f)
        fams = families(c)
        lag = sample(fams, "stemedb_archive_lag_seconds")
        assert 1000 * (len(segs) - 2) - 60 <= lag <= 1000 * (len(segs) - 2) + 60
        assert sample(fams, "stemedb_archive_last_success_timestamp_seconds") == 1760000000.0
        # everything sealed archived: no lag, however old the records are
        state["last_archived_segment"] = len(segs) - 1
        with open(os.path.join(data, "archive-state.json"), "w") as f:
            json.dump(state, f)
        assert sample(families(c), "stemedb_archive_lag_seconds") == 0.0
        # a restore started another timeline: the old progress does not count
        with open(os.path.join(data, "timeline.json"), "w") as f:
            json.dump({"timeline": "20260101000000abcd1234"}, f)
        assert sample(families(c), "stemedb_archive_lag_segments") == len(segs) - 1
        # without STEMEDB_ARCHIVE_S3 the state file alone turns the metrics on
        assert sample(families(make_client(store, data_dir=data)),
                      "stemedb_archive_lag_segments") == len(segs) - 1
    finally:
        store.close()
