"""HTTP benchmarks (issue 4): `stemedb serve` against a no-op endpoint under
the same gunicorn configuration, in one run, with the load generator on the
same machine.

    python -m bench.bench_http                 # full: 1,000,000-assertion query store
    python -m bench.bench_http --quick         # smoke: small store, short runs

Workloads (each repeated, throughput is the median, latency p50/p99/max):

* ``noop``   POST /noop (a body the size of one assertion) from 16 clients:
  gunicorn + Falcon reading the body and answering ``{}``, the floor;
* ``assert`` single durable POST /v1/assert from 16 clients (target >= 0.5x noop);
* ``batch``  POST /v1/assert/batch of 1,000 from 4 clients (target >= 100,000
  assertions/s); every body holds 1,000 new assertions, written from one
  template per client (``_batch_template``: ~0.25 ms of client CPU a body,
  where orjson over 1,000 dicts took ~1.65 ms of the cores the server uses);
* ``query``  POST /v1/query, lens ``consensus``, one (concept_path, predicate)
  of a 1,000,000-assertion store per request, from 16 clients (target >= 0.6x
  noop).  The workload's 50,000 keys hold ~20 candidates each at 1,000,000
  but ~1 at the 50,000 of ``--quick``; ``--candidates K`` puts the store's
  assertions on ``store_size / K`` keys instead (K candidates per key at any
  size, spread over the whole time range), so a small store answers pages
  of the size the target is stated for.  The output states the store size,
  its keys and the candidates per queried key.

The ratio targets (assert, query) are measured in pairs: each run of the
workload right after a no-op run of its own (the no-op server stays up,
idle, for the whole invocation), and the result is the median of the
pairs' ratios, so that a ratio compares two runs under the same load of the
neighbours on a shared machine; the no-op row itself is its first runs.

Each run also reads the CPU seconds the server's processes (gunicorn master
and worker, from ``/proc``) and the load generator's processes used: CPU per
request is the figure that holds on a shared machine, where req/s moves with
whatever else runs.

Rate limits and the circuit breaker are off (``STEMEDB_RATE_LIMITS``), keys
off, durability ``fsync``, log level ``warning`` for both servers
(``STEMEDB_LOG_LEVEL``): so no access line is written (the access log,
``stemedb.access``, is on by default and logs at ``info``, one line a
request, ~14.5 us of CPU each: docs/http.md), and the figures are the
server's work without its log.  A deployment at the default ``info`` pays
that per request on top; ``STEMEDB_ACCESS_LOG=off`` or a level of
``warning`` drops it.  The load generator is 2 processes x 8 threads of
raw keep-alive HTTP/1.1 sockets; it shares the two cores with the server, the
same for every workload, so the ratios compare like with like.  Results go to
``bench/results/http.md`` and ``bench/results/http.json``.

``--server-env NAME=VALUE`` (repeatable) starts the stemedb server with a
``STEMEDB_*`` setting other than its default (not one of those fixed above,
and never the no-op server's): e.g. ``STEMEDB_READ_CACHE_BYTES`` to see what
a larger read cache gives the query row (the engine-alone figure opens its
store with the same settings).  The results state the settings given; without
the option every setting is at its default, as ``stemedb serve`` runs.

Where each request's CPU goes inside the server (middleware, body, decode,
the engine's call, the answer, gunicorn around the app, the store's
threads): ``python -m bench.http_stages`` (same servers, same load).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
NO_LIMITS = ("assert=off;batch=off;query=off;retract=off;vote=off;default=off;circuit=off")


# ------------------------------------------------------------------ servers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its child processes, from
    ``/proc`` (Linux); 0.0 where it cannot be read."""
    tick = os.sysconf("SC_CLK_TCK")
    pids, total = [pid], 0.0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def noop_app():
    """The no-op endpoint: a Falcon app that reads the body and answers ``{}``."""
    import falcon

    class NoOp:
        def on_post(self, req, resp):
            req.bounded_stream.read()
            resp.content_type = "application/json"
            resp.data = b"{}"

        def on_get(self, req, resp):
            resp.content_type = "application/json"
            resp.data = b'{"status":"healthy"}'

    app = falcon.App()
    app.add_route("/noop", NoOp())
    app.add_route("/v1/health", NoOp())
    return app


def noop_server(port: int, dport: int) -> None:
    """gunicorn with the options of `stemedb serve`, serving :func:`noop_app`."""
    from gunicorn.app.base import BaseApplication

    from stemedb.config import Settings
    from stemedb.http.server import gunicorn_options

    options = gunicorn_options(Settings(bind=f"127.0.0.1:{port}",
                                        dashboard_bind=f"127.0.0.1:{dport}"))
    options.update(loglevel="warning")

    class App(BaseApplication):
        def load_config(self):
            for k, v in options.items():
                if k in self.cfg.settings:
                    self.cfg.set(k, v)

        def load(self):
            return noop_app()

    App().run()


class Proc:
    def __init__(self, argv: list[str], env: dict, port: int, log: str):
        self.port = port
        self.log = open(log, "ab")
        self.p = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                  start_new_session=True, cwd=ROOT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"server exited {self.p.returncode}; see {log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"server not healthy in 120 s; see {log}")

    def health(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/health") as r:
            return json.loads(r.read())

    def stop(self) -> int:
        self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(60)
        finally:
            self.log.close()


# Settings the benchmark fixes for the stemedb server (start_stemedb): not
# for --server-env to change.
FIXED_SETTINGS = ("STEMEDB_DATA_DIR", "STEMEDB_BIND", "STEMEDB_DASHBOARD_BIND",
                  "STEMEDB_RATE_LIMITS", "STEMEDB_DURABILITY", "STEMEDB_LOG_LEVEL")


def server_settings(pairs: list[str]) -> dict:
    """``--server-env NAME=VALUE`` pairs as a dict: ``STEMEDB_*`` settings for
    the stemedb server (a setting's effect on the same workload, e.g.
    ``STEMEDB_READ_CACHE_BYTES``), never one the benchmark fixes."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.startswith("STEMEDB_") or name in FIXED_SETTINGS:
            raise SystemExit(f"--server-env {pair!r}: NAME=VALUE with a STEMEDB_ setting "
                             f"other than {', '.join(FIXED_SETTINGS)}")
        out[name] = value
    return out


def start_stemedb(data_dir: str, logdir: str, settings: dict | None = None) -> Proc:
    """``stemedb serve`` on ``data_dir``: the benchmark's fixed settings, the
    defaults for the rest but ``settings`` (:func:`server_settings`); any
    ``STEMEDB_*`` of the caller's environment is left out."""
    port, dport = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEMEDB_")}
    env.update(settings or {})
    env.update(STEMEDB_DATA_DIR=data_dir, STEMEDB_BIND=f"127.0.0.1:{port}",
               STEMEDB_DASHBOARD_BIND=f"127.0.0.1:{dport}", STEMEDB_RATE_LIMITS=NO_LIMITS,
               STEMEDB_DURABILITY="fsync", STEMEDB_LOG_LEVEL="warning")
    return Proc([sys.executable, "-m", "stemedb.cli", "serve"], env, port,
                os.path.join(logdir, "stemedb.log"))


def start_noop(logdir: str) -> Proc:
    port, dport = free_port(), free_port()
    return Proc([sys.executable, "-m", "bench.bench_http", "--noop-server", str(port), str(dport)],
                dict(os.environ), port, os.path.join(logdir, "noop.log"))


# ------------------------------------------------------------ load generator

class Conn:
    """One keep-alive HTTP/1.1 connection, as lean as Python allows."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def post(self, path: str, body: bytes) -> int:
        self.sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Type: application/json\r\nContent-Length: "
                          + str(len(body)).encode() + b"\r\n\r\n" + body)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            rest += chunk
        self.buf = rest[length:]
        return status


def _bodies(kind: str, wid: int, keys: list | None, nonce: int = 0):
    """An endless generator of request bodies for one client thread; ``nonce``
    (one per run) keeps every run's assertions new."""
    import orjson
    i = 0
    base = {"concept_path": "bench/http/assert", "predicate": "p", "confidence": 0.5,
            "source": "pubmed://1"}
    while True:
        i += 1
        if kind in ("assert", "noop"):
            # Unique (so every assert is a new durable record), same size for both.
            yield orjson.dumps({**base, "value": f"r{nonce}-w{wid}-{i}",
                                "timestamp": 1_700_000_000 + wid * 1_000_000 + i})
        elif kind == "batch":
            if i == 1:
                tpl, ts_mark = _batch_template(base, wid, nonce)
            # the same 1,000 new assertions orjson would give (a unique value
            # each, a timestamp moving with i), from one template in two
            # C-level replaces: 1.65 ms of the client's CPU a body by orjson
            # over 1,000 dicts, on the two cores the server uses too
            yield tpl.replace(b"@@@@@@", b"%06d" % (i % 1_000_000)).replace(
                ts_mark, ts_mark[:4] + b"%04d" % (i % 10_000))
        else:  # query
            path, pred = keys[(wid * 7919 + i * 104729) % len(keys)]
            yield orjson.dumps({"concept_path": path, "predicate": pred, "lens": "consensus"})


def _alpha(n: int) -> str:
    """``n`` in letters (a run's nonce in a value without digits)."""
    out = ""
    while True:
        n, r = divmod(n, 26)
        out += chr(97 + r)
        if not n:
            return out


def _batch_template(base: dict, wid: int, nonce: int) -> tuple[bytes, bytes]:
    """A batch body of 1,000 assertions whose request counter is still to be
    written: ``@@@@@@`` in each value (the counter, six digits; the run's
    nonce and the client are letters, so the value holds no other digits
    but the item's three) and a timestamp ``16<wid>9999<item>`` whose
    ``9999`` becomes the counter's last four digits: returns the template
    and the timestamps' common start (``:16<wid>9999``, which nothing else
    in the body contains)."""
    import orjson
    w = wid % 10
    items = [{**base, "concept_path": f"bench/batch/w{wid}",
              "value": f"r{_alpha(nonce)}-{_alpha(wid)}-@@@@@@-{k:03d}",
              "timestamp": int(f"16{w}9999{k:03d}")}
             for k in range(1000)]
    tpl = orjson.dumps({"assertions": items})
    mark = f":16{w}9999".encode()
    assert tpl.count(mark) == 1000 and tpl.count(b"@@@@@@") == 1000
    return tpl, mark


def _client_process(port, kind, path, threads, wid0, duration, keys, nonce, out_q):
    cpu0 = time.process_time()
    lat, errors, done = [], [0], [0]
    lock = threading.Lock()
    start_at = time.monotonic() + 0.3  # every thread connected before the clock starts

    def run(wid):
        conn = Conn(port)
        bodies = _bodies(kind, wid, keys, nonce)
        body = next(bodies)
        local = []
        while time.monotonic() < start_at:
            time.sleep(0.001)
        end = start_at + duration
        n = 0
        while True:
            t0 = time.perf_counter()
            if time.monotonic() >= end:
                break
            status = conn.post(path, body)
            local.append(time.perf_counter() - t0)
            if status >= 300:
                with lock:
                    errors[0] += 1
            n += 1
            body = next(bodies)
        with lock:
            lat.extend(local)
            done[0] += n

    ts = [threading.Thread(target=run, args=(wid0 + t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out_q.put((done[0], errors[0], lat, time.process_time() - cpu0))


def load(port: int, kind: str, path: str, clients: int, duration: float,
         keys: list | None = None, procs: int = 2, server_pid: int | None = None) -> dict:
    """``clients`` concurrent keep-alive clients for ``duration`` seconds;
    with ``server_pid``, the server's CPU per request over the run too."""
    q = mp.get_context("fork").Queue()
    cpu0 = process_cpu(server_pid) if server_pid else None
    per = clients // procs
    nonce = random.randrange(10 ** 9)
    ps = [mp.get_context("fork").Process(
        target=_client_process, args=(port, kind, path, per, i * per, duration, keys, nonce, q))
        for i in range(procs)]
    for p in ps:
        p.start()
    results = [q.get(timeout=duration + 120) for _ in ps]
    for p in ps:
        p.join(30)
    n = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    lat = sorted(x for r in results for x in r[2])
    # the clients' and the server's CPU over the run (the server's also
    # counts the second it takes the clients to hand in their results)
    cpu = {"client_cpu_us": 1e6 * sum(r[3] for r in results) / max(n, 1)}
    if cpu0 is not None:
        cpu["server_cpu_us"] = 1e6 * (process_cpu(server_pid) - cpu0) / max(n, 1)
    return {"requests": n, "errors": errors, "rps": n / duration, **cpu,
            "p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
            "max_ms": 1000 * lat[-1] if lat else None}


def median_run(runs: list[dict]) -> dict:
    best = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
    out = {**best, "runs_rps": [round(r["rps"], 1) for r in runs]}
    if all("server_cpu_us" in r for r in runs):
        out["server_cpu_us_median"] = statistics.median(r["server_cpu_us"] for r in runs)
        out["runs_server_cpu_us"] = [round(r["server_cpu_us"], 1) for r in runs]
    return out


# ------------------------------------------------------------------ main

QUERY_KEYS = 5000  # distinct keys the query clients cycle through


def query_workload(n: int, candidates: int | None,
                   query_keys: int = QUERY_KEYS) -> tuple[list, list, dict]:
    """The query store's assertions, the keys the clients query, and what the
    store looks like (``store_assertions``, ``store_keys`` and the candidates
    per queried key: mean, min, max).

    Without ``candidates``: the benchmark workload as it is (its 50,000 keys
    hold ~n / 50,000 candidates each).  With it: the same assertions put on
    ``n // candidates`` of those keys, assertion ``i`` on key ``i % keys``,
    so every key holds ``candidates`` (+-1) spread over the whole time range.
    """
    from collections import Counter

    from bench.workload import generate
    w = generate(n)
    if not candidates:
        keys, counts = w.r1_keys(query_keys), w.key_counts
    else:
        every = sorted(w.key_counts)
        nkeys = n // candidates
        if not 1 <= nkeys <= len(every):
            raise SystemExit(f"--candidates {candidates} at {n:,} assertions needs "
                             f"{n // max(candidates, 1):,} keys; the workload has 1 to "
                             f"{len(every):,} (use {max(1, -(-n // len(every)))} to {n})")
        used = [every[(j * len(every)) // nkeys] for j in range(nkeys)]
        for i, a in enumerate(w.assertions):
            a["concept_path"], a["predicate"] = used[i % nkeys]
        counts = Counter(used[i % nkeys] for i in range(n))
        r = random.Random(w.seed * 1000 + 1)
        keys = [used[r.randrange(nkeys)] for _ in range(query_keys)]
    per = [counts[k] for k in keys]
    shape = {"store_assertions": n, "store_keys": len(counts),
             "candidates_mean": statistics.fmean(per), "candidates_min": min(per),
             "candidates_max": max(per), "query_keys": len(set(keys)),
             # what the queries touch: a working set that fits the read cache
             # (128 MiB by default) costs the engine less than the whole store
             "queried_assertions": sum(counts[k] for k in set(keys))}
    return w.assertions, keys, shape


def build_query_store(data_dir: str, n: int, duration: float,
                      candidates: int | None = None,
                      query_keys: int = QUERY_KEYS,
                      settings: dict | None = None) -> tuple[list, dict]:
    """A store of ``n`` workload assertions (embedded API; see
    :func:`query_workload`), the query keys, and the engine's own query rate
    and CPU per query on it (no HTTP), for comparison; ``settings``: the
    server's ``--server-env`` (the store's own settings apply here too)."""
    from stemedb.config import Settings
    from stemedb.core.store import open_store
    assertions, keys, shape = query_workload(n, candidates, query_keys)
    with open_store(data_dir, settings=Settings.from_env(settings or {}),
                    durability="none") as s:
        for i in range(0, n, 5000):
            s.put_batch(assertions[i:i + 5000])
        del assertions
        done, shown, end = 0, 0, time.monotonic() + duration
        cpu0 = time.process_time()
        while time.monotonic() < end:
            # one client's stride over the keys (_bodies): every key once per
            # len(keys) queries, in one fixed order (a cyclic scan, an LRU
            # cache's worst case); the 16 HTTP clients walk the same cycle from
            # 16 offsets, so the server sees a key again sooner than this loop
            path, pred = keys[(done * 104729) % len(keys)]
            shown += len(s.query(path, predicate=pred, lens="consensus").assertions)
            done += 1
        cpu = time.process_time() - cpu0
    return keys, {"rps": done / duration, "cpu_us": 1e6 * cpu / done,
                  "page_mean": shown / done, **shape}


def engine_writes(data_dir: str, duration: float) -> dict:
    """The engine alone, same shapes as the HTTP workloads: 16 threads of
    single durable puts, then one thread of 1,000-item batches."""
    import orjson
    from stemedb.core.store import open_store
    out = {}
    with open_store(data_dir, durability="fsync") as s:
        counts = [0] * 16
        cpu0 = time.process_time()
        end = time.monotonic() + duration

        def writer(t):
            bodies = _bodies("assert", t, None, 1)
            while time.monotonic() < end:
                s.put(orjson.loads(next(bodies)))
                counts[t] += 1
        ts = [threading.Thread(target=writer, args=(t,)) for t in range(16)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        out["assert_rps"] = sum(counts) / duration
        out["assert_cpu_us"] = 1e6 * (time.process_time() - cpu0) / max(sum(counts), 1)
        bodies = _bodies("batch", 99, None, 2)
        n, t0, spent = 0, time.monotonic(), 0.0
        while time.monotonic() < t0 + duration:
            items = orjson.loads(next(bodies))["assertions"]   # the body: not the engine's time
            c0 = time.process_time()
            s.put_batch(items)
            spent += time.process_time() - c0
            n += 1000
        out["batch_assertions_per_s"] = n / (time.monotonic() - t0)
        out["batch_cpu_us"] = 1e6 * spent / n
    return out


def header(impl: str) -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "unknown"
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {cpu}",
            "os": platform.platform(), "python": platform.python_version(),
            "implementation": impl, "commit": commit,
            "load": "load average (1, 5, 15 min) at the end: "
                    + ", ".join(f"{x:.2f}" for x in os.getloadavg())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small store, short runs (smoke)")
    p.add_argument("--store-size", type=int, default=None)
    p.add_argument("--duration", type=float, default=None, help="seconds per run")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--candidates", type=int, default=None,
                   help="candidates per query key: put the query store's assertions on "
                        "store_size / K keys (default: the workload's own 50,000 keys, ~20 "
                        "candidates each at 1,000,000; --quick defaults to 20)")
    p.add_argument("--query-keys", type=int, default=QUERY_KEYS,
                   help=f"keys drawn for the query clients (default {QUERY_KEYS:,}: at "
                        f"1,000,000 ~4,800 distinct keys, ~10%% of the store, which about "
                        f"fits the default read cache; 200000 draws over nearly every key)")
    p.add_argument("--only", default=None,
                   help="comma-separated workloads to run (noop,assert,batch,query; "
                        "default all); the .md is written only for a full run")
    p.add_argument("--out", default=None, help="results base name (default bench/results/http)")
    p.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                   help="a STEMEDB_* setting for the stemedb server (not the no-op), e.g. "
                        "STEMEDB_READ_CACHE_BYTES=100663296; repeatable; stated in the "
                        "results (default: every setting at its default)")
    p.add_argument("--noop-server", nargs=2, type=int, help=argparse.SUPPRESS)
    p.add_argument("--render", metavar="JSON", help="rewrite the .md of a saved results .json")
    args = p.parse_args(argv)
    settings = server_settings(args.server_env)
    if args.noop_server:
        noop_server(*args.noop_server)
        return 0
    if args.render:
        with open(args.render) as f:
            write(json.load(f), args.render[:-len(".json")])
        return 0
    size = args.store_size or (50_000 if args.quick else 1_000_000)
    duration = args.duration or (2.0 if args.quick else 5.0)
    repeats = args.repeats or (1 if args.quick else 3)
    candidates = args.candidates if args.candidates is not None else (20 if args.quick else None)
    only = set((args.only or "noop,assert,batch,query").split(","))
    out = args.out or os.path.join(RESULTS, "http-quick" if args.quick else "http")
    tmp = tempfile.mkdtemp(prefix="stemedb-bench-http-")
    results: dict = {}
    engine: dict = {}
    impl, build_s = "unknown", 0.0
    noop = None
    try:
        if "noop" in only:
            # kept up (idle between runs) for the paired runs below
            noop = start_noop(tmp)
            results["noop"] = median_run([load(noop.port, "noop", "/noop", 16, duration,
                                               server_pid=noop.p.pid)
                                          for _ in range(repeats)])
            print("noop", results["noop"], flush=True)

        def paired(run):
            """``repeats`` runs of ``run()``, each right after a no-op run when
            the no-op server is up: the neighbours' load drifts over the
            minutes of an invocation, and a ratio of two runs minutes apart
            measures it as much as the server (on the shared machine two
            invocations read the no-op at 262 and 372 us of CPU a request,
            and one invocation's load average went from 3.0 to 4.65 between
            its no-op and its query runs)."""
            runs = []
            for _ in range(repeats):
                floor = None
                if noop is not None:
                    floor = load(noop.port, "noop", "/noop", 16, duration,
                                 server_pid=noop.p.pid)
                r = run()
                if floor is not None:
                    r["paired_noop_rps"] = floor["rps"]
                    r["paired_noop_cpu_us"] = floor.get("server_cpu_us")
                    r["paired_ratio"] = r["rps"] / floor["rps"]
                runs.append(r)
            out = median_run(runs)
            if noop is not None:
                out["runs_paired_ratio"] = [round(r["paired_ratio"], 3) for r in runs]
                out["paired_ratio_median"] = statistics.median(r["paired_ratio"] for r in runs)
                out["runs_paired_noop_rps"] = [round(r["paired_noop_rps"], 1) for r in runs]
            return out

        if only & {"assert", "batch"}:
            srv = start_stemedb(os.path.join(tmp, "w"), tmp, settings)
            try:
                impl = srv.health()["implementation"]
                if "assert" in only:
                    results["assert"] = paired(lambda: load(
                        srv.port, "assert", "/v1/assert", 16, duration, server_pid=srv.p.pid))
                    print("assert", results["assert"], flush=True)
                if "batch" in only:
                    runs = [load(srv.port, "batch", "/v1/assert/batch", 4, duration, procs=2,
                                 server_pid=srv.p.pid) for _ in range(repeats)]
                    for r in runs:
                        r["assertions_per_s"] = r["rps"] * 1000
                    results["batch"] = median_run(runs)
                    results["batch"]["assertions_per_s"] = results["batch"]["rps"] * 1000
                    print("batch", results["batch"], flush=True)
            finally:
                srv.stop()
            shutil.rmtree(os.path.join(tmp, "w"), ignore_errors=True)

            engine = engine_writes(os.path.join(tmp, "e"), duration)
            shutil.rmtree(os.path.join(tmp, "e"), ignore_errors=True)
            print("engine", engine, flush=True)
        if "query" in only:
            t0 = time.monotonic()
            keys, eq = build_query_store(os.path.join(tmp, "q"), size, duration, candidates,
                                         args.query_keys, settings)
            engine["query_rps"], engine["query_cpu_us"] = eq["rps"], eq["cpu_us"]
            build_s = time.monotonic() - t0
            srv = start_stemedb(os.path.join(tmp, "q"), tmp, settings)
            try:
                impl = srv.health()["implementation"]
                count = srv.health()["assertion_count"]
                results["query"] = paired(lambda: load(
                    srv.port, "query", "/v1/query", 16, duration, keys=keys,
                    server_pid=srv.p.pid))
                results["query"].update(
                    {k: eq[k] for k in ("store_keys", "candidates_mean", "candidates_min",
                                        "candidates_max", "query_keys", "page_mean",
                                        "queried_assertions")},
                    store_assertions=count)
                print("query", results["query"], flush=True)
            finally:
                srv.stop()
    finally:
        if noop is not None:
            noop.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    doc = {"header": header(impl), "settings": {"duration_s": duration, "repeats": repeats,
                                                 "store_size": size, "candidates": candidates,
                                                 "store_build_s": build_s,
                                                 "server_env": settings},
           "results": results, "engine_alone": engine}
    if only >= {"noop", "assert", "batch", "query"}:
        write(doc, out)
    else:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out + ".json", "w") as f:
            json.dump(doc, f, indent=2)
    return 0


def _cpu(x: dict) -> str:
    v = x.get("server_cpu_us_median", x.get("server_cpu_us"))
    return f"{v:,.0f}" if v is not None else "-"


def write(doc: dict, out: str) -> None:
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(doc, f, indent=2)
    r, h = doc["results"], doc["header"]
    noop = r["noop"]["rps"]
    q = r["query"]
    shape = (f"{q['store_assertions']:,} stored on {q['store_keys']:,} keys, "
             f"{q['candidates_mean']:.1f} candidates per queried key"
             if "store_keys" in q else f"{q['store_assertions']:,} stored")
    def ratio(x: dict) -> float:
        """The median of the paired ratios (each run over the no-op run just
        before it) where the run has them, else over the no-op row."""
        return x.get("paired_ratio_median", x["rps"] / noop)

    def ratio_text(x: dict) -> str:
        return f"{ratio(x):.2f}x noop" + (" (paired)" if "paired_ratio_median" in x else "")

    rows = [
        ("noop (floor)", r["noop"], "-", "-"),
        ("assert, 16 clients", r["assert"], ratio_text(r["assert"]), ">= 0.5x noop"),
        ("batch of 1,000, 4 clients", r["batch"],
         f"{r['batch']['assertions_per_s']:,.0f} assertions/s", ">= 100,000 assertions/s"),
        (f"query consensus, {shape}, 16 clients", q, ratio_text(q), ">= 0.6x noop"),
    ]
    met = {"assert": ratio(r["assert"]) >= 0.5,
           "batch": r["batch"]["assertions_per_s"] >= 100_000,
           "query": ratio(q) >= 0.6}
    st = doc["settings"]
    lines = [
        "# HTTP benchmark", "",
        f"- date: {h['date']}", f"- machine: {h['machine']}", f"- os: {h['os']}",
        f"- Python {h['python']}, implementation: {h['implementation']}, commit {h['commit']}",
        *([f"- load: {h['load']}"] if h.get("load") else []),
        f"- {st['repeats']} runs of {st['duration_s']} s each; "
        f"throughput is the median run, latency from that run; durability fsync; "
        f"load generator on the same 2-core machine (2 processes of raw keep-alive sockets); "
        f"servers at log level warning (no access line per request: see the module docstring)",
        (f"- query store: {shape} (min {q['candidates_min']}, max {q['candidates_max']}; "
         f"{q['query_keys']:,} distinct keys queried"
         + (f", holding {q['queried_assertions']:,} assertions, "
            f"{q['queried_assertions'] / max(q.get('store_assertions') or 1, 1):.0%} of the store"
            if q.get("queried_assertions") else "")
         + f"; {q['page_mean']:.1f} assertions per answer), " + (f"built with --candidates {st['candidates']}" if st.get("candidates")
                         else "the workload's own keys")) if "store_keys" in q
        else f"- query store: {shape}",
        *([f"- stemedb server settings (--server-env; every other at its default): "
           + ", ".join(f"{k}={v}" for k, v in sorted(st["server_env"].items()))]
          if st.get("server_env") else []),
        "- server CPU: user + system seconds of the server's processes over the median "
        "run, per request (what holds on a shared machine)",
        "", "| workload | req/s (median) | p50 ms | p99 ms | max ms | server CPU us/req | "
        "result | target |",
        "|---|---:|---:|---:|---:|---:|---|---|"]
    for name, x, res, target in rows:
        lines.append(f"| {name} | {x['rps']:,.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | "
                     f"{x['max_ms']:.1f} | {_cpu(x)} | {res} | {target} |")
    e = doc.get("engine_alone", {})
    if e:
        def eng_cpu(key):
            return f"{e[key]:,.1f}" if key in e else "-"
        bcpu = r["batch"].get("server_cpu_us_median")
        lines += ["", "The engine alone in the same run (embedded API, no HTTP, no load "
                  "generator), the ceiling for the rows above; CPU per request (per "
                  "assertion for the batch):", "",
                  "| workload | engine alone | over HTTP | HTTP / engine | engine CPU us | "
                  "server CPU us over HTTP |", "|---|---:|---:|---:|---:|---:|",
                  f"| 16 threads of single durable puts | {e['assert_rps']:,.0f}/s | "
                  f"{r['assert']['rps']:,.0f}/s | {r['assert']['rps'] / e['assert_rps']:.2f} | "
                  f"{eng_cpu('assert_cpu_us')} | {_cpu(r['assert'])} |",
                  f"| batches of 1,000 (assertions) | {e['batch_assertions_per_s']:,.0f}/s | "
                  f"{r['batch']['assertions_per_s']:,.0f}/s | "
                  f"{r['batch']['assertions_per_s'] / e['batch_assertions_per_s']:.2f} | "
                  f"{eng_cpu('batch_cpu_us')} | "
                  f"{(f'{bcpu / 1000:,.1f}' if bcpu is not None else '-')} |",
                  f"| consensus query, one thread | {e['query_rps']:,.0f}/s | "
                  f"{q['rps']:,.0f}/s | {q['rps'] / e['query_rps']:.2f} | "
                  f"{eng_cpu('query_cpu_us')} | {_cpu(q)} |"]
        ncpu = r["noop"].get("server_cpu_us_median")
        if ncpu is not None:
            lines += ["", "Reading it (server CPU per request, the no-op's being the "
                      f"gunicorn + Falcon floor of {ncpu:,.0f} us):"]
            for k, label, ek in (("assert", "assert", "assert_cpu_us"),
                                 ("query", "query", "query_cpu_us")):
                c = r[k].get("server_cpu_us_median")
                if c is None or ek not in e:
                    continue
                lines.append(
                    f"- {label}: {c:,.0f} us = the floor + {c - ncpu:,.0f} us, of which the "
                    f"engine's own call is ~{e[ek]:,.0f} us; {ratio(r[k]):.2f}x no-op "
                    f"(a server at one core would reach ~{ncpu / c:.2f}x).")
            if bcpu is not None and "batch_cpu_us" in e:
                lines.append(
                    f"- batch: {bcpu / 1000:,.1f} us of server CPU per assertion, of which "
                    f"the engine's put_batch is ~{e['batch_cpu_us']:,.1f} us; "
                    f"{r['batch']['assertions_per_s']:,.0f} assertions/s is "
                    f"{r['batch']['assertions_per_s'] / 100_000:.2f}x the 100,000 target.")
    lines += ["", "Targets met: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in met.items()),
              "", "Runs (req/s): " + "; ".join(f"{k} {v['runs_rps']}" for k, v in r.items()),
              "Runs (server CPU us/req): " + "; ".join(
                  f"{k} {v.get('runs_server_cpu_us', '-')}" for k, v in r.items()),
              "Load generator CPU us/req (median run): " + ", ".join(
                  f"{k} {v.get('client_cpu_us', 0):,.0f}" for k, v in r.items()),
              "Errors (non-2xx): " + ", ".join(f"{k} {v['errors']}" for k, v in r.items())]
    paired_rows = [(k, v) for k, v in r.items() if "runs_paired_ratio" in v]
    if paired_rows:
        lines += ["", "Paired runs (each run right after a no-op run of its own, so that the "
                  "ratio compares runs under the same neighbours' load; the result column "
                  "is their median): " + "; ".join(
                      f"{k} ratios {v['runs_paired_ratio']}, no-op req/s "
                      f"{v['runs_paired_noop_rps']}" for k, v in paired_rows)]
    lines.append("")
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
