"""Fixtures for the operations tests: the scripts run as the runbooks write
them (subprocess, from the repository root, settings in the environment)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from stemedb import open_store
from tests.conftest import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")


def run(cmd, env: dict, *, timeout: float = 180, stdin=subprocess.DEVNULL, check=False):
    """Run a runbook command line (a string, through bash) from the repository root."""
    full_env = dict(os.environ)
    full_env["PATH"] = VENV_BIN + os.pathsep + full_env.get("PATH", "")
    full_env.update(env)
    r = subprocess.run(["bash", "-c", cmd] if isinstance(cmd, str) else cmd, cwd=ROOT,
                       env=full_env, stdin=stdin, capture_output=True, text=True,
                       timeout=timeout)
    if check:
        assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


def body(i: int, path: str = "drugs/d", **over) -> dict:
    b = {"concept_path": f"{path}{i % 13}", "predicate": f"p{i % 5}", "value": {"i": i},
         "confidence": round((i % 100) / 100, 2), "source": f"pubmed://{i}",
         "timestamp": 1_700_000_000 + i}
    b.update(over)
    return b


class Writers:
    """Threads writing through the embedded API, bounded in count and time.

    Remembers every acknowledged write with the wall time of its ack, and
    every batch, so tests can check what a backup must contain.
    """

    def __init__(self, store, threads: int = 4, per_thread: int = 5000, seconds: float = 20.0,
                 batch_every: int = 10, batch_size: int = 7):
        self.store = store
        self.acked: list[tuple[float, str]] = []
        self.batches: list[list[str]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + seconds
        self._threads = [threading.Thread(target=self._run, args=(t, per_thread, batch_every,
                                                                   batch_size), daemon=True)
                         for t in range(threads)]

    def _run(self, t: int, n: int, batch_every: int, batch_size: int) -> None:
        try:
            for i in range(n):
                if self._stop.is_set() or time.monotonic() > self._deadline:
                    return
                k = t * 1_000_000 + i
                if batch_every and i % batch_every == 0:
                    rs = self.store.put_batch([body(k * 100 + j, "batch/b") for j in range(batch_size)])
                    now = time.time()
                    with self._lock:
                        self.batches.append([r.hash for r in rs])
                        self.acked.extend((now, r.hash) for r in rs)
                else:
                    r = self.store.put(body(k))
                    with self._lock:
                        self.acked.append((time.time(), r.hash))
        except BaseException as exc:  # noqa: BLE001 -- reported by stop()
            self.errors.append(exc)

    def start(self) -> "Writers":
        for th in self._threads:
            th.start()
        return self

    def wait_for(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < n and time.monotonic() < deadline and not self.errors:
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=30)
        assert not self.errors, f"writer threads failed: {self.errors!r}"


@pytest.fixture
def dirs(tmp_path):
    d = {"data": str(tmp_path / "data"), "backups": str(tmp_path / "backups"),
         "restored": str(tmp_path / "restored")}
    d["env"] = {"STEMEDB_DATA_DIR": d["data"], "STEMEDB_BACKUP_DIR": d["backups"]}
    return d


@pytest.fixture
def store(dirs):
    s = open_store(dirs["data"], durability="batch", segment_size=32 * 1024)
    yield s
    s.close()


def backup_meta(path: str) -> dict:
    with open(os.path.join(path, "metadata.json")) as f:
        return json.load(f)


PY = sys.executable


def http_get(url: str, timeout: float = 5.0, **kw):
    import ssl
    import urllib.request
    ctx = ssl._create_unverified_context() if url.startswith("https") else None
    req = urllib.request.Request(url, **kw)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Server:
    """``stemedb serve`` on loopback ports, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, data_dir: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        full = dict(os.environ)
        full.update({"STEMEDB_DATA_DIR": data_dir, "STEMEDB_BIND": f"127.0.0.1:{self.port}",
                     "STEMEDB_DASHBOARD_BIND": f"127.0.0.1:{free_port()}",
                     "STEMEDB_RATE_LIMITS": "assert=off;batch=off;query=off;retract=off;"
                                            "vote=off;default=off"})
        full.update(env or {})
        self.log = open(os.path.join(os.path.dirname(data_dir), f"serve-{self.port}.log"), "w+")
        self.proc = subprocess.Popen([os.path.join(VENV_BIN, "stemedb"), "serve"], env=full,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_healthy(self, timeout: float = 40.0) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return None
            try:
                status, data = http_get(self.url + "/v1/health", timeout=2)
                if status == 200:
                    return json.loads(data)
            except OSError:
                pass
            time.sleep(0.2)
        return None

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        import signal
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=35)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def server(tmp_path):
    """A running server.  One that does not start fails the test with its
    output: a test may skip for a missing external tool, never because our
    own server failed."""
    srv = Server(str(tmp_path / "srvdata"))
    if srv.wait_healthy() is None:
        code = srv.proc.poll()
        out = srv.output()
        srv.stop()
        state = f"exited {code}" if code is not None else "was not healthy within 40 s"
        pytest.fail(f"stemedb serve {state}; its output:\n{out[-6000:]}", pytrace=False)
    yield srv
    srv.stop()
