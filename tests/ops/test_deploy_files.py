"""Deployment files, checked by the tools that will run them when they are here
(systemd-analyze, promtool, nginx -t), skipped with the reason otherwise."""
from __future__ import annotations

import configparser
import glob
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from .conftest import ROOT

OPS = os.path.join(ROOT, "ops")
UNITS = sorted(glob.glob(os.path.join(OPS, "systemd", "*.service")) +
               glob.glob(os.path.join(OPS, "systemd", "*.timer")))


def _unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read(os.path.join(OPS, "systemd", name))
    return cp


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_units_verify(tmp_path):
    # the units name the installed paths; point them at this checkout so that
    # systemd-analyze can also check that every ExecStart is executable
    for path in UNITS:
        text = open(path).read()
        text = text.replace("/opt/stemedb/venv/bin", os.path.join(ROOT, ".venv", "bin"))
        text = text.replace("/opt/stemedb/scripts", os.path.join(ROOT, "scripts"))
        (tmp_path / os.path.basename(path)).write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                        *sorted(str(p) for p in tmp_path.iterdir())],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert not re.search(r"Unknown (key|section)|Failed to parse|Invalid", out), out


def test_api_unit_stops_after_gunicorn_and_is_hardened():
    from stemedb.config import Settings
    svc = _unit("stemedb-api.service")["Service"]
    stop = int(svc["TimeoutStopSec"])
    assert stop > Settings().graceful_timeout + 5, "systemd must outwait gunicorn's graceful stop"
    assert stop <= 60
    assert svc["ExecStart"].endswith("stemedb serve")
    assert svc["ProtectSystem"] == "strict" and svc["NoNewPrivileges"] == "yes"
    assert "/var/lib/stemedb" in svc["ReadWritePaths"]
    assert svc["KillSignal"] == "SIGTERM"


def test_timers_point_at_services():
    for timer in ("stemedb-backup.timer", "stemedb-verify.timer"):
        assert os.path.exists(os.path.join(OPS, "systemd", timer.replace(".timer", ".service")))
        assert _unit(timer)["Timer"]["Persistent"] == "true"
    assert "stemedb.core.verify" in _unit("stemedb-verify.service")["Service"]["ExecStart"]
    assert "backup-stemedb.sh" in _unit("stemedb-backup.service")["Service"]["ExecStart"]
    assert "stemedb.ops.archive" in _unit("stemedb-wal-archive.service")["Service"]["ExecStart"]


def test_verify_unit_command_runs_on_the_latest_backup(dirs):
    """The shell line of stemedb-verify.service, un-escaped, on real backups."""
    from stemedb import open_store
    from .conftest import body, run
    with open_store(dirs["data"], durability="none") as s:
        s.put(body(1))
    run("./scripts/backup-stemedb.sh", dirs["env"], check=True)
    line = _unit("stemedb-verify.service")["Service"]["ExecStart"]
    cmd = re.match(r"/bin/sh -c '(.*)'$", line).group(1).replace("$$", "$")
    cmd = cmd.replace("/opt/stemedb/venv/bin/python", "python")
    r = run(cmd, dirs["env"])
    assert r.returncode == 0 and "consistent" in r.stdout, r.stdout + r.stderr


# ---------------------------------------------------------------- metric names
# The contract's metric names (API.md, "Metrics") with their histogram/counter
# series, plus the standard `up` and node_exporter's filesystem metrics.
CONTRACT_METRICS = {"stemedb_assertions", "stemedb_wal_segments", "stemedb_wal_fsync_latency_seconds",
                    "stemedb_wal_batch_size", "stemedb_http_requests_total",
                    "stemedb_http_request_duration_seconds", "stemedb_ratelimited_requests_total",
                    "stemedb_last_backup_timestamp_seconds", "stemedb_backup_failures_total",
                    # the archive's, added with the archive (docs/reference/http.md)
                    "stemedb_archive_lag_seconds",
                    "stemedb_archive_last_success_timestamp_seconds"}
STANDARD = {"up", "node_filesystem_avail_bytes", "node_filesystem_size_bytes"}
PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "and", "or", "time",
                "predict_linear", "deriv", "label_values", "instance", "le", "route", "status",
                "endpoint", "job", "mountpoint", "without", "unless", "on", "ignoring"}


def _metric_names(expr: str) -> set[str]:
    expr = re.sub(r'\{[^}]*\}', "", expr)          # label matchers
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)          # ranges
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"e\d*", n)}


def _allowed(name: str) -> bool:
    if name in STANDARD or name in CONTRACT_METRICS:
        return True
    base = re.sub(r"_(bucket|count|sum)$", "", name)
    return base in CONTRACT_METRICS


def _rule_exprs() -> list[str]:
    import yaml
    with open(os.path.join(OPS, "prometheus", "stemedb-alerts.yml")) as f:
        doc = yaml.safe_load(f)
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def _dashboard_exprs() -> list[str]:
    with open(os.path.join(OPS, "grafana", "stemedb-dashboard.json")) as f:
        dash = json.load(f)
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dash["templating"]["list"] if v.get("type") == "query"]
    return exprs


def test_alert_rules_and_dashboard_use_only_contract_metrics():
    for expr in _rule_exprs() + _dashboard_exprs():
        bad = [n for n in _metric_names(expr) if not _allowed(n)]
        assert not bad, f"{bad} in {expr!r} are not metrics the server or node_exporter exports"


def test_alerts_cover_the_failure_modes():
    import yaml
    with open(os.path.join(OPS, "prometheus", "stemedb-alerts.yml")) as f:
        names = {r["alert"] for g in yaml.safe_load(f)["groups"] for r in g["rules"]}
    for needed in ("StemeDBBackupMissing", "StemeDBBackupFailed", "StemeDBFsyncSlow",
                   "StemeDBDiskFillingUp", "StemeDBWritesStopped", "StemeDBErrorRate",
                   "StemeDBRateLimitSpike", "StemeDBDown", "StemeDBArchiveLagging",
                   "StemeDBArchiveStalled"):
        assert needed in names


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed (Debian: prometheus)")
def test_promtool_check_and_unit_test_rules():
    d = os.path.join(OPS, "prometheus")
    r = subprocess.run(["promtool", "check", "rules", "stemedb-alerts.yml"], cwd=d,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["promtool", "test", "rules", "stemedb-alerts.test.yml"], cwd=d,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "SUCCESS" in r.stdout + r.stderr, r.stdout + r.stderr


def test_dashboard_metrics_exist_on_a_running_server(server):
    from .conftest import http_get
    http_get(server.url + "/v1/assert", data=json.dumps(
        {"concept_path": "a/b", "predicate": "p", "value": 1, "confidence": 0.5}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    status, text = http_get(server.url + "/metrics")
    assert status == 200
    exported = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", text.decode(), re.M))
    used = set()
    for expr in _dashboard_exprs() + _rule_exprs():
        used |= {n for n in _metric_names(expr) if n.startswith("stemedb_")}
    # counters with labels appear only once incremented
    lazy = {"stemedb_ratelimited_requests_total"}
    missing = {n for n in used - lazy
               if n not in exported and not any(e.startswith(n + "_") for e in exported)}
    assert not missing, f"the dashboard or rules use metrics the server does not export: {missing}"


# ---------------------------------------------------------------- reverse proxies
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def _nginx_setup(tmp_path, upstream_port: int, https_port: int, http_port: int) -> str:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"), "-days", "2",
                    "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=60)
    conf = open(os.path.join(OPS, "nginx", "stemedb.conf")).read()
    conf = (conf.replace("/etc/stemedb/tls/fullchain.pem", str(tmp_path / "cert.pem"))
                .replace("/etc/stemedb/tls/privkey.pem", str(tmp_path / "key.pem"))
                .replace("127.0.0.1:18180", f"127.0.0.1:{upstream_port}")
                .replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
                .replace("listen [::]:443 ssl http2;", "")
                .replace("listen 80;", f"listen 127.0.0.1:{http_port};")
                .replace("listen [::]:80;", ""))
    (tmp_path / "stemedb.conf").write_text(conf)
    user = "user root;\n" if os.getuid() == 0 else ""
    (tmp_path / "nginx.conf").write_text(
        f"{user}worker_processes 1;\ndaemon off;\nerror_log {tmp_path}/error.log;\n"
        f"pid {tmp_path}/nginx.pid;\nevents {{}}\n"
        f"http {{ access_log {tmp_path}/access.log; client_body_temp_path {tmp_path}/body; "
        f"proxy_temp_path {tmp_path}/proxy; include {tmp_path}/stemedb.conf; }}\n")
    return str(tmp_path / "nginx.conf")


@pytest.mark.skipif(not NGINX or not shutil.which("openssl"), reason="nginx or openssl not installed")
def test_nginx_config_is_valid(tmp_path):
    conf = _nginx_setup(tmp_path, 18180, 8443, 8080)
    r = subprocess.run([NGINX, "-t", "-c", conf, "-p", str(tmp_path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    text = open(os.path.join(OPS, "nginx", "stemedb.conf")).read()
    assert "client_max_body_size 16m;" in text and "limit_req zone=" in text
    assert "location = /v1/health" in text and "127.0.0.1:18180" in text


@pytest.mark.skipif(not NGINX or not shutil.which("openssl"), reason="nginx or openssl not installed")
def test_requests_through_nginx_reach_the_server(tmp_path, server):
    from .conftest import free_port, http_get
    https_port, http_port = free_port(), free_port()
    conf = _nginx_setup(tmp_path, server.port, https_port, http_port)
    ng = subprocess.Popen([NGINX, "-c", conf, "-p", str(tmp_path)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    base = f"https://127.0.0.1:{https_port}"
    try:
        for _ in range(100):
            try:
                status, data = http_get(base + "/v1/health", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("nginx did not answer")
        assert status == 200 and json.loads(data)["status"] == "healthy"
        status, data = http_get(base + "/v1/assert", method="POST", data=json.dumps(
            {"concept_path": "proxy/test", "predicate": "p", "value": 1, "confidence": 0.5}).encode(),
            headers={"Content-Type": "application/json"})
        assert status == 201, data
        assert json.loads(http_get(base + "/v1/health")[1])["assertion_count"] == 1
        status, _ = http_get(base + "/v1/assert/batch", method="POST", data=b"x" * (17 * 1024 * 1024),
                             headers={"Content-Type": "application/json"}, timeout=30)
        assert status == 413, "nginx refuses bodies over 16 MiB"
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
        c.request("GET", "/v1/health")
        resp = c.getresponse()
        assert resp.status == 308 and resp.getheader("Location").startswith("https://"), \
            "plain HTTP is redirected to HTTPS"
        c.close()
        status, _ = http_get(base + "/metrics")
        assert status == 200, "metrics answer loopback through the proxy (others get 403)"
        assert re.search(r"location = /metrics \{[^}]*deny all;", open(conf.replace(
            "nginx.conf", "stemedb.conf")).read()), "metrics are denied to everyone else"
    finally:
        ng.terminate()
        ng.wait(timeout=10)


def test_envoy_config_shape():
    import yaml
    with open(os.path.join(OPS, "envoy", "envoy.yaml")) as f:
        cfg = yaml.safe_load(f)
    cluster = cfg["static_resources"]["clusters"][0]
    addr = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert addr["socket_address"] == {"address": "127.0.0.1", "port_value": 18180}
    assert cluster["health_checks"][0]["http_health_check"]["path"] == "/v1/health"
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    filters = {f["name"]: f.get("typed_config", {}) for f in hcm["http_filters"]}
    assert filters["envoy.filters.http.buffer"]["max_request_bytes"] == 16 * 1024 * 1024
    assert "envoy.filters.http.local_ratelimit" in filters
    assert list(filters)[-1] == "envoy.filters.http.router", "the router filter must be last"
    tls = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]
    assert tls["name"] == "envoy.transport_sockets.tls"


@pytest.mark.skipif(not shutil.which("envoy"), reason="envoy not installed")
def test_envoy_validate(tmp_path):
    r = subprocess.run(["envoy", "--mode", "validate", "-c", os.path.join(OPS, "envoy", "envoy.yaml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
