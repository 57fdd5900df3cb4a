"""`stemedb serve` for real: gunicorn in a subprocess on free loopback ports,
a temp data directory, driven over HTTP.  Kill -9 and SIGTERM during
concurrent writes; every acknowledged write survives."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from stemedb.client import APIError, Client
from tests.conftest import free_port

pytestmark = pytest.mark.slow

NO_LIMITS = "assert=off;batch=off;query=off;retract=off;vote=off;default=off"


class Server:
    """One `stemedb serve` process group on 127.0.0.1."""

    def __init__(self, data_dir: str, argv: list[str] | None = None, **env):
        self.argv = argv or [sys.executable, "-m", "stemedb.cli", "serve"]
        self.data_dir = str(data_dir)
        self.port, self.dport = free_port(), free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STEMEDB_")}
        self.env.update({"STEMEDB_DATA_DIR": self.data_dir,
                         "STEMEDB_BIND": f"127.0.0.1:{self.port}",
                         "STEMEDB_DASHBOARD_BIND": f"127.0.0.1:{self.dport}",
                         "STEMEDB_RATE_LIMITS": NO_LIMITS, "STEMEDB_THREADS": "8",
                         "STEMEDB_GRACEFUL_TIMEOUT": "20"})
        self.env.update({k: str(v) for k, v in env.items()})
        self.log_path = os.path.join(os.path.dirname(self.data_dir),
                                     f"serve-{self.port}.log")
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dport}"

    def start(self, wait: bool = True) -> "Server":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/v1/health", timeout=2) as r:
                    return json.loads(r.read())
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"server not healthy within {timeout}s:\n{self.log()}")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        """SIGKILL the whole group: master and worker die at once."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-20000:]
        except OSError:
            return ""


@pytest.fixture
def servers(tmp_path):
    started = []

    def make(data_dir=None, argv=None, **env):
        s = Server(data_dir or (tmp_path / "data"), argv, **env)
        started.append(s)
        return s
    yield make
    for s in started:
        s.stop()


def body(i, **over):
    b = {"concept_path": f"drugs/d{i % 7}", "predicate": "risk", "value": i,
         "confidence": 0.5, "source": "pubmed://1", "timestamp": 1700000000 + i}
    b.update(over)
    return b


class Writers:
    """Threads that write until told to stop (or a bound), recording each 201."""

    def __init__(self, url: str, threads: int = 8, per_thread: int = 5000, batch_every: int = 0):
        self.url, self.acked, self.errors = url, [], []
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(t, per_thread, batch_every),
                                         daemon=True) for t in range(threads)]

    def _run(self, t, n, batch_every):
        c = Client(self.url, timeout=10)
        for i in range(n):
            if self.stop_flag.is_set():
                return
            try:
                if batch_every and i % batch_every == 0:
                    items = [body(t * 10_000_000 + i * 100 + k) for k in range(20)]
                    res = c.put_batch(items)
                    with self.lock:
                        self.acked += [r["hash"] for r in res]
                else:
                    r = c.put(body(t * 10_000_000 + i))
                    with self.lock:
                        self.acked.append(r["hash"])
            except (OSError, APIError, ValueError, http.client.HTTPException) as exc:  # server gone
                with self.lock:
                    self.errors.append(exc)
                return

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self, timeout=30):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "writers did not stop"


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_crud_over_http(servers):
    s = servers().start()
    c = Client(s.url)
    h = c.health()
    assert h["status"] == "healthy" and h["assertion_count"] == 0
    r = c.put(body(1))
    assert r["status"] == "created"
    assert c.put(body(1))["status"] == "exists"
    assert [x["status"] for x in c.put_batch([body(2), body(3)])] == ["created", "created"]
    assert c.get(r["hash"])["value"] == 1
    assert c.query("drugs", include_descendants=True)["assertions"]
    assert c.query_get("drugs/d1", predicate="risk")["results"][0]["winner"]["hash"] == r["hash"]
    assert c.trace(r["hash"])["assertion"]["hash"] == r["hash"]
    assert c.retract(hash=r["hash"], reason="test")["retracted"] == 1
    req = urllib.request.Request(s.url + "/v1/health", headers={"X-Request-Id": "rid-1"})
    with urllib.request.urlopen(req) as resp:
        assert resp.headers["X-Request-Id"] == "rid-1"
    metrics = c.metrics()
    assert "stemedb_assertions 3.0" in metrics
    assert 'route="/v1/assertions/{hash}"' in metrics
    assert "stemedb_wal_fsync_latency_seconds_count" in metrics
    assert c.openapi()["openapi"].startswith("3.1")
    big = urllib.request.Request(s.url + "/v1/assert", data=b"x" * (2 * 1024 * 1024),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(big)
    assert e.value.code == 413
    assert json.loads(e.value.read())["error"]["code"] == "payload_too_large"
    assert c.health()["assertion_count"] == 3
    with urllib.request.urlopen(s.dashboard_url + "/") as page:
        assert b"StemeDB" in page.read()
    assert s.terminate() == 0


def test_post_query_fast_path_over_a_real_server(servers, tmp_path):
    """POST /v1/query's plain request (answered without Falcon,
    stemedb.http.fastquery) and its refusals (Falcon's), through gunicorn:
    keys, the rate limit counted once a request, the headers, the metric."""
    keys = str(tmp_path / "keys.json")
    key = subprocess.run([sys.executable, "-m", "stemedb.cli", "keys", "add", "--id", "rd",
                          "--scopes", "admin", "--file", keys],
                         capture_output=True, text=True, check=True).stdout.strip()
    s = servers(STEMEDB_API_KEYS_FILE=keys, STEMEDB_RATE_LIMITS="query=6/minute").start()
    Client(s.url, api_key=key).put(body(1))
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)

    def post(doc, **headers):
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        conn.request("POST", "/v1/query", body=data, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {key}", **headers})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()

    status, headers, out = post({"concept_path": "drugs/d1"}, **{"X-Request-Id": "rid-q"})
    assert status == 200 and json.loads(out)["assertions"][0]["value"] == 1
    assert headers["x-request-id"] == "rid-q" and headers["x-content-type-options"] == "nosniff"
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(out))
    status, headers, out = post({"concept_path": "drugs/d1", "limit": "ten"})
    assert status == 400 and json.loads(out)["error"]["field"] == "limit"
    assert len(headers["x-request-id"]) == 32
    assert post({"concept_path": "drugs/d1"}, Authorization="Bearer nope")[0] == 401
    assert post(b"{")[0] == 400
    assert [post({"concept_path": "drugs/d1"})[0] for _ in range(4)] == [200, 200, 200, 429], \
        "query=6/minute: the 200, the 400s and these three are six (a wrong key is not counted)"
    metrics = Client(s.url, api_key=key).metrics()
    assert [line for line in metrics.splitlines() if line.startswith(
        "stemedb_http_requests_total") and "/v1/query" in line and "POST" in line] == [
        f'stemedb_http_requests_total{{method="POST",route="/v1/query",status="{st}"}} {n}'
        for st, n in (("200", "4.0"), ("400", "2.0"), ("401", "1.0"), ("429", "1.0"))]
    conn.close()
    assert s.terminate() == 0


def test_dashboard_port_serves_only_the_dashboard(servers):
    s = servers().start()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(s.dashboard_url + "/v1/health")
    assert e.value.code == 404
    with urllib.request.urlopen(s.dashboard_url + "/api/summary") as r:
        assert json.loads(r.read())["health"]["status"] == "healthy"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(s.url + "/api/summary")
    assert e.value.code == 404


def test_sigterm_during_writes_exits_clean_and_counts_match(servers, tmp_path):
    s = servers().start()
    w = Writers(s.url, threads=8).start()
    assert wait_for(lambda: len(w.acked) >= 200, 20), s.log()
    t0 = time.monotonic()
    code = s.terminate(timeout=30)
    took = time.monotonic() - t0
    w.stop_flag.set()
    w.join()
    assert code == 0, f"SIGTERM exits 0:\n{s.log()}"
    assert took < 30
    meta = json.loads((tmp_path / "data" / "metadata.json").read_text())
    assert meta["assertion_count"] >= len(set(w.acked))
    assert "Traceback" not in s.log(), s.log()
    s2 = servers().start()
    h = Client(s2.url).health()
    assert h["assertion_count"] == meta["assertion_count"], "the count in metadata.json is the truth"
    assert h["last_seq"] == meta["last_seq"]
    c = Client(s2.url)
    missing = [x for x in set(w.acked) if c.get(x) is None]
    assert not missing, f"{len(missing)} acknowledged writes lost"


def test_kill9_during_concurrent_writes_keeps_every_201(servers):
    s = servers().start()
    w = Writers(s.url, threads=8, batch_every=7).start()
    assert wait_for(lambda: len(w.acked) >= 300, 20), s.log()
    s.kill9()
    w.stop_flag.set()
    w.join()
    acked = set(w.acked)
    s2 = servers().start()
    c = Client(s2.url)
    missing = [x for x in acked if c.get(x) is None]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged writes lost after kill -9"
    assert c.health()["assertion_count"] >= len(acked)


def test_second_server_on_a_held_store_exits_at_once(servers, tmp_path):
    first = servers().start()
    worker = first.worker_pids()
    second = servers(tmp_path / "data").start(wait=False)
    code = second.proc.wait(30)
    assert code != 0
    log = second.log()
    assert "Store is locked by PID" in log, log
    assert any(f"PID {pid}" in log for pid in worker), (worker, log)
    assert Client(first.url).health()["status"] == "healthy", "the first server is untouched"


def test_reload_with_hup_keeps_serving(servers):
    s = servers().start()
    c = Client(s.url)
    h = c.put(body(1))["hash"]
    old = s.worker_pids()
    s.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: s.worker_pids() and s.worker_pids() != old, 40), s.log()

    def ready():
        try:
            return Client(s.url).health().get("status") == "healthy"
        except OSError:
            return False
    assert wait_for(ready, 40), s.log()
    c2 = Client(s.url)
    assert c2.get(h)["hash"] == h
    assert c2.put(body(2))["status"] == "created"
    assert s.terminate() == 0


def test_keys_enforced_and_added_while_running(servers, tmp_path):
    keys = str(tmp_path / "keys.json")
    first = subprocess.run([sys.executable, "-m", "stemedb.cli", "keys", "add", "--id", "ops",
                            "--scopes", "admin", "--file", keys],
                           capture_output=True, text=True, check=True).stdout.strip()
    s = servers(STEMEDB_API_KEYS_FILE=keys).start()
    with pytest.raises(APIError) as e:
        Client(s.url).put(body(1))
    assert e.value.status == 401
    assert Client(s.url, api_key=first).put(body(1))["status"] == "created"
    env = dict(os.environ, STEMEDB_API_KEYS_FILE=keys)
    reader = subprocess.run([sys.executable, "-m", "stemedb.cli", "keys", "add", "--id", "dash",
                             "--scopes", "read"], env=env, capture_output=True, text=True,
                            check=True).stdout.strip()

    def reader_works():
        try:
            return Client(s.url, api_key=reader).query("drugs/d1") is not None
        except APIError:
            return False
    assert wait_for(reader_works, 10), "a key added while running works without a restart"
    with pytest.raises(APIError) as e:
        Client(s.url, api_key=reader).put(body(2))
    assert e.value.status == 403


def test_public_bind_allowed_with_keys_or_anonymous_flag(servers, tmp_path):
    s = servers(STEMEDB_ALLOW_ANONYMOUS=1)
    s.env["STEMEDB_BIND"] = f"0.0.0.0:{s.port}"
    s.start()
    assert Client(s.url).health()["status"] == "healthy"


def test_ops_gunicorn_conf_runs_the_same_server(servers, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    conf = os.path.join(root, "ops", "gunicorn.conf.py")
    s = servers(argv=[sys.executable, "-m", "gunicorn", "-c", conf],
                STEMEDB_SNAPSHOT_INTERVALL="5").start()
    assert "did you mean STEMEDB_SNAPSHOT_INTERVAL?" in s.log()      # warned, as by serve
    c = Client(s.url)
    assert c.put(body(1))["status"] == "created"
    with urllib.request.urlopen(s.dashboard_url + "/") as page:
        assert b"StemeDB" in page.read()
    req = urllib.request.Request(s.url + "/v1/health", method="HEAD")
    with urllib.request.urlopen(req) as r:
        assert r.status == 200 and r.read() == b""
    assert s.terminate() == 0
    meta = json.loads((tmp_path / "data" / "metadata.json").read_text())
    assert meta["assertion_count"] == 1, "worker_exit closed the store (metadata.json)"
