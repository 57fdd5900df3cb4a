"""Every documented setting, changed from its default, does what it says under
the real server (issue 8, items 9-11).

`stemedb serve` runs under gunicorn in a subprocess on free 127.0.0.1 ports.
Two starts on one data directory cover the table of `.env.example`:

* **first start** ("A"): every setting changed except `STEMEDB_AUDIT` (the
  audit cap needs the trail on), part of them from a `.env` in the server's
  working directory (the environment wins over it), a misspelt variable in
  the environment, and `data/LOCK` held by this test while the server starts;
* **restart** ("B"): `STEMEDB_AUDIT=off`, another `STEMEDB_SEGMENT_SIZE`
  (warned about against `metadata.json`), `STEMEDB_REQUIRE_FAST`, and the
  SIGTERM with a request in flight that `STEMEDB_GRACEFUL_TIMEOUT` bounds.

Settings whose effect a test here cannot observe, and why:

* `STEMEDB_ALLOW_ANONYMOUS`: its only effect is to allow a non-loopback bind
  without keys, and servers in tests listen on 127.0.0.1 only (the refusal
  without it is tested through `preflight` in the unit tests of the server).
  It is set here anyway, to show it does not disturb anything else.
* `STEMEDB_ARCHIVE_S3`, `STEMEDB_S3_ENDPOINT_URL`: read by `stemedb archive`
  and `stemedb restore --from-s3`, not by the server; observing them needs an
  S3 service, which `tests/ops/test_archive.py` starts (SeaweedFS) when its
  binary is installed.
* `STEMEDB_REQUIRE_FAST`: its effect (refusing to start without the compiled
  extension) shows only on a build without it; here the restart shows the
  server reads it (the compiled engine runs when the extension is built).
"""
from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from stemedb.client import APIError, Client, sign_assertion, signing_key
from stemedb.http.auth import add_key
from tests.conftest import free_port

pytestmark = pytest.mark.slow

BATCH_DELAY_S = 0.3
SNAPSHOT_INTERVAL = 40
SEGMENT_SIZE = 16384
AUDIT_CAP = 65536
RATE_LIMITS = "assert=off;batch=off;query=off;vote=off;default=off;retract=2/minute;circuit=off"


class Server:
    """One `stemedb serve` process group on 127.0.0.1, run in ``cwd``."""

    def __init__(self, cwd, env: dict):
        self.cwd = str(cwd)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STEMEDB_")}
        self.env.update(env)
        self.port = int(env["STEMEDB_BIND"].rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.cwd, f"serve-{self.port}.log")
        self.proc = None

    def start(self) -> "Server":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "stemedb.cli", "serve"],
                                     cwd=self.cwd, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def health(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.url + "/v1/health", timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def wait_healthy(self, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log()}")
            try:
                status, doc = self.health()
                if status == 200:
                    return doc
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not healthy within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def wait_for(pred, timeout: float = 20.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    return pred()


def metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    assert m, f"{name}{labels} not in /metrics"
    return float(m.group(1))


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _ignore_errors(fn, *args):
    try:
        fn(*args)
    except (OSError, APIError, ValueError):
        pass  # the server stopped under it: that is the point


def claim(i: int, size: int = 0) -> dict:
    return {"concept_path": f"drugs/d{i % 5}", "predicate": "risk",
            "value": {"i": i, "pad": "x" * size}, "confidence": 0.5,
            "source": f"pubmed://{i}", "timestamp": 1_700_000_000 + i}


# ---------------------------------------------------------------- the first start

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("settings")
    data = base / "data dir"          # a space: the path is passed as it is
    keys = str(base / "keys.json")
    key = add_key(keys, "tester", ["read", "write", "admin"])
    env = {
        "STEMEDB_DATA_DIR": str(data),
        "STEMEDB_BIND": f"127.0.0.1:{free_port()}",
        "STEMEDB_DASHBOARD_BIND": f"127.0.0.1:{free_port()}",
        "STEMEDB_DURABILITY": "batch",
        "STEMEDB_SEGMENT_SIZE": str(SEGMENT_SIZE),
        "STEMEDB_BATCH_DELAY_MS": str(int(BATCH_DELAY_S * 1000)),
        "STEMEDB_LOCK_TIMEOUT": "60",
        "STEMEDB_API_KEYS_FILE": keys,
        "STEMEDB_ALLOW_ANONYMOUS": "1",
        "STEMEDB_REQUIRE_SIGNATURES": "1",
        "STEMEDB_RATE_LIMITS": RATE_LIMITS,
        "STEMEDB_TRUSTED_PROXIES": "127.0.0.1",
        "STEMEDB_METRICS_REQUIRE_KEY": "1",
        "STEMEDB_BACKUP_DIR": str(base / "backups"),
        "STEMEDB_ARCHIVE_S3": "stemedb-test/archive",
        "STEMEDB_S3_ENDPOINT_URL": "http://127.0.0.1:9",
        "STEMEDB_THREADS": "2",
        "STEMEDB_GRACEFUL_TIMEOUT": "4",
        "STEMEDB_MAX_BODY_BYTES": "4096",
        "STEMEDB_MAX_BATCH_BODY_BYTES": "65536",
        "STEMEDB_LOG_LEVEL": "debug",
        "STEMEDB_PURE_PYTHON": "1",
        "STEMEDB_AUDIT_MAX_BYTES": str(AUDIT_CAP),
        # misspelt: must be named in a start-up warning, not silently ignored
        "STEMEDB_SNAPSHOT_INTERVALL": "7",
    }
    # From .env only: STEMEDB_SNAPSHOT_INTERVAL.  In both: STEMEDB_LOG_LEVEL and
    # STEMEDB_DURABILITY, where the environment wins.
    (base / ".env").write_text(
        "# settings for the first start\n"
        f"STEMEDB_SNAPSHOT_INTERVAL={SNAPSHOT_INTERVAL}\n"
        "STEMEDB_LOG_LEVEL='warning'   # the environment says debug, and wins\n"
        'export STEMEDB_DURABILITY="none"\n')
    os.makedirs(data)
    # Hold LOCK while the server starts: STEMEDB_LOCK_TIMEOUT makes it wait.
    lock_fd = os.open(data / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    srv = Server(base, env).start()
    w = {"base": base, "data": data, "env": env, "key": key, "server": srv,
         "client": Client(srv.url, api_key=key, signing_key=signing_key(b"\x01" * 32))}
    try:
        deadline = time.monotonic() + 3.0
        w["while_locked"] = []
        while time.monotonic() < deadline:
            assert srv.proc.poll() is None, \
                f"the server gave up on the held LOCK (STEMEDB_LOCK_TIMEOUT ignored):\n{srv.log()}"
            try:
                w["while_locked"].append(srv.health())
            except OSError:
                pass
            time.sleep(0.2)
    finally:
        os.close(lock_fd)
    w["health"] = srv.wait_healthy()
    yield w
    srv.stop()


def test_lock_timeout_waits_for_the_lock(world):
    answers = [doc.get("status") for status, doc in world["while_locked"] if status == 503]
    assert answers and set(answers) == {"starting"}, \
        "while LOCK was held the server waited (503 starting), then opened the store"
    assert world["health"]["status"] == "healthy"


def test_data_dir_and_binds(world):
    data = world["data"]
    assert (data / "LOCK").exists() and (data / "wal").is_dir(), "STEMEDB_DATA_DIR"
    dash = "http://" + world["env"]["STEMEDB_DASHBOARD_BIND"]
    status, headers, page = http("GET", dash + "/")
    assert status == 200 and b"StemeDB" in page, "the dashboard on STEMEDB_DASHBOARD_BIND"
    assert world["health"]["status"] == "healthy", "the API on STEMEDB_BIND"


def test_env_file_is_read_and_the_environment_wins(world):
    log = world["server"].log()
    # three variables in .env, two of them also in the environment
    assert re.search(r"Read 1 variables from .*\.env \(the environment wins", log), log[-3000:]
    # STEMEDB_LOG_LEVEL=debug (environment) beat 'warning' (.env): debug lines appear
    assert " DEBUG stemedb" in log, "STEMEDB_LOG_LEVEL=debug from the environment"
    assert world["health"]["wal"]["durability"] == "batch", "the environment's durability"


def test_misspelt_variable_is_warned_about(world):
    assert ("STEMEDB_SNAPSHOT_INTERVALL is not a StemeDB setting; did you mean "
            "STEMEDB_SNAPSHOT_INTERVAL?") in world["server"].log()


def test_pure_python(world):
    assert world["health"]["implementation"] == "pure", "STEMEDB_PURE_PYTHON=1"


def test_api_keys_file_and_metrics_require_key(world):
    url = world["server"].url
    status, _, body = http("GET", url + "/v1/query?concept_path=drugs")
    assert status == 401, "STEMEDB_API_KEYS_FILE: a key is required"
    assert http("GET", url + "/metrics")[0] == 401, "STEMEDB_METRICS_REQUIRE_KEY=1"
    auth = {"Authorization": f"Bearer {world['key']}"}
    assert http("GET", url + "/metrics", headers=auth)[0] == 200
    assert http("GET", url + "/v1/query?concept_path=drugs", headers=auth)[0] == 200


def test_require_signatures(world):
    with pytest.raises(APIError) as exc:
        world["client"].put(claim(0))
    assert exc.value.status == 400 and exc.value.code == "signature_required"
    assert world["client"].put(claim(0), sign=True)["status"] == "created"


def test_batch_delay_and_durability(world):
    """batch mode: the group-commit leader waits STEMEDB_BATCH_DELAY_MS for
    more writers, so even a lone write takes at least that long (fsync mode
    never waits; the default delay is 2 ms)."""
    c = world["client"]
    t0 = time.monotonic()
    c.put(claim(1), sign=True)
    took = time.monotonic() - t0
    assert took >= BATCH_DELAY_S * 0.9, f"a lone write took {took:.3f} s"
    fsyncs = metric(c.metrics(), "stemedb_wal_fsync_latency_seconds_count")
    assert fsyncs >= 1, "durability=batch still fsyncs (durability=none would not)"


def test_threads_bound_the_concurrent_writers(world):
    """STEMEDB_THREADS=2: gunicorn hands at most two requests to the app at
    once, so however many writes arrive together, no group commit holds more
    than two single writes (with 16 threads, six would share one group)."""
    c = world["client"]
    before = c.metrics()
    le2_0 = metric(before, "stemedb_wal_batch_size_bucket", '{le="2.0"}')
    n0 = metric(before, "stemedb_wal_batch_size_count")
    bodies = [sign_assertion(claim(100 + i), c.signing_key) for i in range(6)]
    errors = []

    def put(b):
        try:
            Client(world["server"].url, api_key=world["key"]).put(b)
        except Exception as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)
    threads = [threading.Thread(target=put, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    after = c.metrics()
    groups = metric(after, "stemedb_wal_batch_size_count") - n0
    small = metric(after, "stemedb_wal_batch_size_bucket", '{le="2.0"}') - le2_0
    single = (metric(after, "stemedb_wal_batch_size_bucket", '{le="1.0"}')
              - metric(before, "stemedb_wal_batch_size_bucket", '{le="1.0"}'))
    assert groups >= 3 and small == groups, \
        f"6 writes in {groups:.0f} groups, {groups - small:.0f} of them over 2 records"
    assert single < groups, "two threads did write concurrently (a group of 2 exists)"


def test_segment_size_and_snapshot_interval(world):
    c = world["client"]
    meta = world["data"] / "metadata.json"
    for b in range(4):
        c.put_batch([sign_assertion(claim(1000 + b * 10 + i, size=1000), c.signing_key)
                     for i in range(10)])
    h = c.health()
    assert h["wal_segments"] >= 3, \
        f"STEMEDB_SEGMENT_SIZE={SEGMENT_SIZE}: 4 groups of ~11 KB fill {h['wal_segments']} segments"
    last = wait_for(lambda: json.loads(meta.read_text())["last_seq"] >= SNAPSHOT_INTERVAL)
    assert last, (f"STEMEDB_SNAPSHOT_INTERVAL={SNAPSHOT_INTERVAL} (from .env): metadata.json "
                  f"is rewritten by a snapshot while the server runs")


def test_body_limits(world):
    url, auth = world["server"].url, {"Authorization": f"Bearer {world['key']}",
                                      "Content-Type": "application/json"}
    big = json.dumps(claim(5, size=5000)).encode()
    status, _, answer = http("POST", url + "/v1/assert", big, auth)
    assert status == 413, f"STEMEDB_MAX_BODY_BYTES=4096: {status} {answer[:200]!r}"
    batch = json.dumps({"assertions": [claim(i, size=1000) for i in range(70)]}).encode()
    assert len(batch) > 65536
    status, _, answer = http("POST", url + "/v1/assert/batch", batch, auth)
    assert status == 413, f"STEMEDB_MAX_BATCH_BODY_BYTES=65536: {status} {answer[:200]!r}"


def test_rate_limits(world):
    c = world["client"]
    for _ in range(2):
        c.retract(concept_path="nothing/here", reason="rate limit test")
    with pytest.raises(APIError) as exc:
        c.retract(concept_path="nothing/here", reason="rate limit test")
    assert exc.value.status == 429, "STEMEDB_RATE_LIMITS: retract=2/minute"
    assert int(exc.value.retry_after or 0) >= 1


def test_trusted_proxies(world):
    url = world["server"].url
    auth = {"Authorization": f"Bearer {world['key']}", "X-Forwarded-For": "203.0.113.7",
            "X-Request-Id": "trusted-proxy-test"}
    assert http("GET", url + "/v1/query?concept_path=drugs", headers=auth)[0] == 200
    line = wait_for(lambda: next((x for x in world["server"].log().splitlines()
                                  if "request_id=trusted-proxy-test" in x), None), 5)
    assert line and "client=203.0.113.7" in line, \
        f"STEMEDB_TRUSTED_PROXIES=127.0.0.1: X-Forwarded-For is believed: {line}"


def test_backup_dir(world):
    env = dict(world["server"].env)
    r = subprocess.run([sys.executable, "-m", "stemedb.cli", "backup"], cwd=world["base"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    made = list((world["base"] / "backups").glob("stemedb-backup-*"))
    assert len(made) == 1, "STEMEDB_BACKUP_DIR: the backup went there"
    got = metric(world["client"].metrics(), "stemedb_last_backup_timestamp_seconds")
    assert got > 0, "the server reports the backup of its data directory"


def test_audit_max_bytes(world):
    """STEMEDB_AUDIT_MAX_BYTES=64 KiB: the trail never holds more; its oldest
    files are deleted as queries go on."""
    c = world["client"]
    audit = world["data"] / "audit"

    def trail() -> int:
        return sum(p.stat().st_size for p in audit.glob("queries-*.log"))

    deadline = time.monotonic() + 60
    first_gone = False
    for i in range(3000):
        c.query(f"drugs/d{i % 5}", predicate="risk", limit=5)
        if i % 50 == 49:
            # Only at rest (below) is the size checked: the writer appends a
            # chunk of entries, then prunes, so a reading taken in between
            # can be over the cap by that chunk.
            first_gone = not (audit / "queries-000001.log").exists()
            if first_gone or time.monotonic() > deadline:
                break
    assert first_gone, "the oldest audit file is deleted once the cap is reached"
    time.sleep(1.5)  # the writer flushes at least once a second
    assert trail() <= AUDIT_CAP, f"at rest the audit trail holds {trail()} bytes"


# ---------------------------------------------------------------- the restart

def test_restart_with_audit_off_other_segment_size_and_graceful_timeout(world):
    first = world["server"]
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(40) == 0, first.log()
    env = dict(world["env"])
    env.update({"STEMEDB_BIND": f"127.0.0.1:{free_port()}",
                "STEMEDB_DASHBOARD_BIND": f"127.0.0.1:{free_port()}",
                "STEMEDB_SEGMENT_SIZE": str(2 * SEGMENT_SIZE),
                "STEMEDB_AUDIT": "off", "STEMEDB_PURE_PYTHON": "0",
                "STEMEDB_REQUIRE_FAST": "1", "STEMEDB_BATCH_DELAY_MS": "12000",
                "STEMEDB_LOCK_TIMEOUT": "0"})
    env.pop("STEMEDB_SNAPSHOT_INTERVALL")
    srv = Server(world["base"], env).start()
    try:
        compiled = importlib.util.find_spec("stemedb.core._fast") is not None
        if not compiled:
            assert srv.proc.wait(60) != 0
            assert "STEMEDB_REQUIRE_FAST=1" in srv.log()
            return
        h = srv.wait_healthy()
        assert h["implementation"] == "compiled", "STEMEDB_PURE_PYTHON=0, REQUIRE_FAST=1"
        log = srv.log()
        assert (f"STEMEDB_SEGMENT_SIZE is {2 * SEGMENT_SIZE} bytes but this store last ran "
                f"with {SEGMENT_SIZE} (metadata.json)") in log, log[-3000:]
        c = Client(srv.url, api_key=world["key"])
        audit = world["data"] / "audit"
        before = sorted((p.name, p.stat().st_size) for p in audit.glob("queries-*.log"))
        for i in range(20):
            c.query(f"drugs/d{i % 5}", predicate="risk")
        time.sleep(1.5)  # the audit writer flushes at least once a second
        assert c.audit_queries(limit=10) == [], "STEMEDB_AUDIT=off"
        after = sorted((p.name, p.stat().st_size) for p in audit.glob("queries-*.log"))
        assert after == before, "STEMEDB_AUDIT=off writes no audit entries"

        # STEMEDB_GRACEFUL_TIMEOUT=4: an in-flight request is waited for that
        # long at SIGTERM, then the worker is stopped.  The request here is a
        # write whose group-commit leader waits STEMEDB_BATCH_DELAY_MS=12000,
        # so with the default 25 s the stop would take about 11 s.
        signer = signing_key(b"\x02" * 32)
        late = threading.Thread(target=lambda: _ignore_errors(
            c.put, sign_assertion(claim(5000), signer)), daemon=True)
        late.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(40)
        took = time.monotonic() - t0
        assert 3.0 <= took < 8.0, \
            f"stopped {took:.1f} s after SIGTERM with a write in flight: expected about 4 s"
    finally:
        srv.stop()
