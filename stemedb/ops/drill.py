"""Disaster-recovery drill: backup under load, destroy, restore, verify, measure.

    stemedb drill [--dir DRILL_DIR] [--seconds 6] [--keep]    (or scripts/dr-drill.sh)

Works only in its own scratch directory (never STEMEDB_DATA_DIR): it starts
``stemedb serve`` on a free loopback port, writes through HTTP from several
threads, takes a backup with ``stemedb backup`` while they write,
keeps writing (the writes a real disaster would lose), stops the server,
deletes the data directory, restores with ``stemedb restore --yes``,
starts the server again and checks ``/v1/health``'s count and a sample of
``GET /v1/assertions/{hash}`` answers.  Prints the measured RTO (restore
start to a healthy, verified server) and RPO (time and writes between the
backup's last record and the disaster).  Exit 0 when the drill passed.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request


def _cli() -> list[str]:
    """The ``stemedb`` command of this installation (a checkout is not needed)."""
    cli = os.path.join(os.path.dirname(sys.executable), "stemedb")
    return [cli] if os.path.exists(cli) else [sys.executable, "-m", "stemedb"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _req(url: str, body: dict | None = None, timeout: float = 10.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


class Drill:
    def __init__(self, base: str, seconds: float):
        self.base = base
        self.data = os.path.join(base, "data")
        self.backups = os.path.join(base, "backups")
        self.seconds = seconds
        self.env = dict(os.environ, STEMEDB_DATA_DIR=self.data, STEMEDB_BACKUP_DIR=self.backups,
                        STEMEDB_RATE_LIMITS="assert=off;batch=off;query=off;retract=off;"
                                            "vote=off;default=off")
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""                   # set by start()
        self.acked: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def say(self, msg: str) -> None:
        print(f"[dr-drill {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def start(self, timeout: float = 60.0) -> dict:
        port = _port()
        self.url = f"http://127.0.0.1:{port}"
        env = dict(self.env, STEMEDB_BIND=f"127.0.0.1:{port}",
                   STEMEDB_DASHBOARD_BIND=f"127.0.0.1:{_port()}")
        log = open(os.path.join(self.base, f"serve-{port}.log"), "w")
        self.proc = proc = subprocess.Popen(_cli() + ["serve"],
                                            env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"stemedb serve exited {proc.returncode}; see {log.name}")
            try:
                status, body = _req(self.url + "/v1/health", timeout=2)
                if status == 200:
                    return body
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"stemedb serve not healthy within {timeout}s; see {log.name}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def writer(self, wid: int, stop: threading.Event, limit: int) -> None:
        for i in range(limit):
            if stop.is_set():
                return
            try:
                status, body = _req(self.url + "/v1/assert", {
                    "concept_path": f"drill/w{wid}/c{i % 50}", "predicate": "value",
                    "value": i, "confidence": 0.5, "source": f"drill://{wid}/{i}"})
            except OSError:
                continue
            if status == 201:
                with self._lock:
                    self.acked.append((time.time(), body["hash"]))

    def run(self) -> int:
        self.say(f"scratch directory {self.base}")
        self.start()
        stop = threading.Event()
        threads = [threading.Thread(target=self.writer, args=(w, stop, 200_000), daemon=True)
                   for w in range(4)]
        for t in threads:
            t.start()
        time.sleep(self.seconds / 2)
        self.say(f"backup under load ({len(self.acked)} writes so far)")
        t_backup = time.time()
        r = subprocess.run(_cli() + ["backup"], env=self.env,
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            self.say(f"FAIL: backup failed: {r.stderr}")
            return 1
        backup = r.stdout.strip().splitlines()[-1]
        with open(os.path.join(backup, "metadata.json")) as f:
            meta = json.load(f)
        time.sleep(self.seconds / 2)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        t_disaster = time.time()
        _, health = _req(self.url + "/v1/health")
        count_at_disaster = health["assertion_count"]
        self.say(f"disaster: stopping the server and deleting {self.data} "
                 f"({count_at_disaster} assertions)")
        self.stop()
        shutil.rmtree(self.data)

        t0 = time.monotonic()
        r = subprocess.run(_cli() + ["restore", backup, "--yes"],
                           env=self.env, capture_output=True, text=True, timeout=600,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            self.say(f"FAIL: restore failed: {r.stderr}")
            return 1
        health = self.start()
        ok = health["assertion_count"] == meta["assertion_count"]
        before = [h for t, h in self.acked if t < t_backup]
        sample = random.Random(7).sample(before, min(50, len(before)))
        found = sum(1 for h in sample if _req(self.url + f"/v1/assertions/{h}")[0] == 200)
        _, q = _req(self.url + "/v1/query", {"concept_path": "drill", "include_descendants": True,
                                             "limit": 1})
        rto = time.monotonic() - t0
        self.stop()
        last_us = meta.get("last_recorded_at_us") or 0
        rpo = t_disaster - last_us / 1e6 if last_us else float("nan")
        lost = count_at_disaster - meta["assertion_count"]
        self.say(f"backup {os.path.basename(backup)}: {meta['assertion_count']} assertions; "
                 f"restored health count {health['assertion_count']}")
        self.say(f"sample reads of writes acknowledged before the backup: {found}/{len(sample)}")
        print(f"RTO: {rto:.2f} s (restore start to a healthy, verified server)")
        print(f"RPO: {rpo:.2f} s ({lost} assertions written after the backup were lost)")
        passed = ok and found == len(sample) and q is not None and q.get("results")
        print(f"DR drill: {'PASSED' if passed else 'FAILED'}")
        return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="stemedb drill", description=__doc__.split("\n")[0])
    p.add_argument("--dir", help="scratch directory (default: a new temporary one)")
    p.add_argument("--seconds", type=float, default=6.0, help="load duration (default 6)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = p.parse_args(argv)
    base = args.dir or tempfile.mkdtemp(prefix="stemedb-dr-drill-")
    os.makedirs(base, exist_ok=True)
    if os.path.exists(os.path.join(base, "data")):
        print(f"dr-drill: {base}/data exists; give an empty --dir (the drill deletes its data)",
              file=sys.stderr)
        return 2
    drill = Drill(base, min(max(args.seconds, 1.0), 600.0))
    try:
        return drill.run()
    except Exception as exc:  # noqa: BLE001 -- a drill reports, it does not trace back
        print(f"DR drill: FAILED: {exc}")
        return 1
    finally:
        drill.stop()
        if not args.keep and not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
