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
  assertions/s);
* ``query``  POST /v1/query, lens ``consensus``, one (concept_path, predicate)
  of a 1,000,000-assertion store per request, from 16 clients (target >= 0.6x
  noop).

Rate limits and the circuit breaker are off (``STEMEDB_RATE_LIMITS``), keys
off, durability ``fsync``.  The load generator is 2 processes x 8 threads of
raw keep-alive HTTP/1.1 sockets; it shares the two cores with the server, the
same for every workload, so the ratios compare like with like.  Results go to
``bench/results/http.md`` and ``bench/results/http.json``.
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


def noop_server(port: int, dport: int) -> None:
    """gunicorn with the options of `stemedb serve`, serving a no-op Falcon app."""
    import falcon
    from gunicorn.app.base import BaseApplication

    from stemedb.config import Settings
    from stemedb.http.server import gunicorn_options

    options = gunicorn_options(Settings(bind=f"127.0.0.1:{port}",
                                        dashboard_bind=f"127.0.0.1:{dport}"))
    options.update(loglevel="warning")

    class NoOp:
        def on_post(self, req, resp):
            req.bounded_stream.read()
            resp.content_type = "application/json"
            resp.data = b"{}"

        def on_get(self, req, resp):
            resp.content_type = "application/json"
            resp.data = b'{"status":"healthy"}'

    class App(BaseApplication):
        def load_config(self):
            for k, v in options.items():
                if k in self.cfg.settings:
                    self.cfg.set(k, v)

        def load(self):
            app = falcon.App()
            app.add_route("/noop", NoOp())
            app.add_route("/v1/health", NoOp())
            return app

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


def start_stemedb(data_dir: str, logdir: str) -> Proc:
    port, dport = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEMEDB_")}
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
            items = [{**base, "concept_path": f"bench/batch/w{wid}",
                      "value": f"r{nonce}-{i * 1000 + k}",
                      "timestamp": 1_600_000_000 + wid * 10_000_000 + i * 1000 + k}
                     for k in range(1000)]
            yield orjson.dumps({"assertions": items})
        else:  # query
            path, pred = keys[(wid * 7919 + i * 104729) % len(keys)]
            yield orjson.dumps({"concept_path": path, "predicate": pred, "lens": "consensus"})


def _client_process(port, kind, path, threads, wid0, duration, keys, nonce, out_q):
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
    out_q.put((done[0], errors[0], lat))


def load(port: int, kind: str, path: str, clients: int, duration: float,
         keys: list | None = None, procs: int = 2) -> dict:
    """``clients`` concurrent keep-alive clients for ``duration`` seconds."""
    q = mp.get_context("fork").Queue()
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
    return {"requests": n, "errors": errors, "rps": n / duration,
            "p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
            "max_ms": 1000 * lat[-1] if lat else None}


def median_run(runs: list[dict]) -> dict:
    best = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
    return {**best, "runs_rps": [round(r["rps"], 1) for r in runs]}


# ------------------------------------------------------------------ main

def build_query_store(data_dir: str, n: int, duration: float) -> tuple[list, dict]:
    """A store of ``n`` workload assertions (embedded API), the query keys, and
    the engine's own query rate on it (no HTTP), for comparison."""
    from bench.workload import generate
    from stemedb.core.store import open_store
    w = generate(n)
    keys = w.r1_keys(5000)
    with open_store(data_dir, durability="none") as s:
        for i in range(0, n, 5000):
            s.put_batch(w.assertions[i:i + 5000])
        done, end = 0, time.monotonic() + duration
        while time.monotonic() < end:
            path, pred = keys[done % len(keys)]
            s.query(path, predicate=pred, lens="consensus")
            done += 1
    return keys, {"rps": done / duration}


def engine_writes(data_dir: str, duration: float) -> dict:
    """The engine alone, same shapes as the HTTP workloads: 16 threads of
    single durable puts, then one thread of 1,000-item batches."""
    import orjson
    from stemedb.core.store import open_store
    out = {}
    with open_store(data_dir, durability="fsync") as s:
        counts = [0] * 16
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
        bodies = _bodies("batch", 99, None, 2)
        n, t0 = 0, time.monotonic()
        while time.monotonic() < t0 + duration:
            s.put_batch(orjson.loads(next(bodies))["assertions"])
            n += 1000
        out["batch_assertions_per_s"] = n / (time.monotonic() - t0)
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
            "implementation": impl, "commit": commit}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small store, short runs (smoke)")
    p.add_argument("--store-size", type=int, default=None)
    p.add_argument("--duration", type=float, default=None, help="seconds per run")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--out", default=None, help="results base name (default bench/results/http)")
    p.add_argument("--noop-server", nargs=2, type=int, help=argparse.SUPPRESS)
    p.add_argument("--render", metavar="JSON", help="rewrite the .md of a saved results .json")
    args = p.parse_args(argv)
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
    out = args.out or os.path.join(RESULTS, "http-quick" if args.quick else "http")
    tmp = tempfile.mkdtemp(prefix="stemedb-bench-http-")
    results: dict = {}
    try:
        noop = start_noop(tmp)
        try:
            results["noop"] = median_run([load(noop.port, "noop", "/noop", 16, duration)
                                          for _ in range(repeats)])
        finally:
            noop.stop()
        print("noop", results["noop"], flush=True)

        srv = start_stemedb(os.path.join(tmp, "w"), tmp)
        try:
            impl = srv.health()["implementation"]
            results["assert"] = median_run([load(srv.port, "assert", "/v1/assert", 16, duration)
                                            for _ in range(repeats)])
            print("assert", results["assert"], flush=True)
            runs = [load(srv.port, "batch", "/v1/assert/batch", 4, duration, procs=2)
                    for _ in range(repeats)]
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
        t0 = time.monotonic()
        keys, eq = build_query_store(os.path.join(tmp, "q"), size, duration)
        engine["query_rps"] = eq["rps"]
        build_s = time.monotonic() - t0
        srv = start_stemedb(os.path.join(tmp, "q"), tmp)
        try:
            count = srv.health()["assertion_count"]
            results["query"] = median_run([load(srv.port, "query", "/v1/query", 16, duration,
                                                keys=keys) for _ in range(repeats)])
            results["query"]["store_assertions"] = count
            print("query", results["query"], flush=True)
        finally:
            srv.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    doc = {"header": header(impl), "settings": {"duration_s": duration, "repeats": repeats,
                                                 "store_size": size, "store_build_s": build_s},
           "results": results, "engine_alone": engine}
    write(doc, out)
    return 0


def write(doc: dict, out: str) -> None:
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(doc, f, indent=2)
    r, h = doc["results"], doc["header"]
    noop = r["noop"]["rps"]
    rows = [
        ("noop (floor)", r["noop"], "-", "-"),
        ("assert, 16 clients", r["assert"], f"{r['assert']['rps'] / noop:.2f}x noop",
         ">= 0.5x noop"),
        ("batch of 1,000, 4 clients", r["batch"],
         f"{r['batch']['assertions_per_s']:,.0f} assertions/s", ">= 100,000 assertions/s"),
        (f"query consensus, {r['query']['store_assertions']:,} stored, 16 clients", r["query"],
         f"{r['query']['rps'] / noop:.2f}x noop", ">= 0.6x noop"),
    ]
    met = {"assert": r["assert"]["rps"] / noop >= 0.5,
           "batch": r["batch"]["assertions_per_s"] >= 100_000,
           "query": r["query"]["rps"] / noop >= 0.6}
    lines = [
        "# HTTP benchmark", "",
        f"- date: {h['date']}", f"- machine: {h['machine']}", f"- os: {h['os']}",
        f"- Python {h['python']}, implementation: {h['implementation']}, commit {h['commit']}",
        f"- {doc['settings']['repeats']} runs of {doc['settings']['duration_s']} s each; "
        f"throughput is the median run, latency from that run; durability fsync; "
        f"load generator on the same 2-core machine (2 processes of raw keep-alive sockets)",
        "", "| workload | req/s (median) | p50 ms | p99 ms | max ms | result | target |",
        "|---|---:|---:|---:|---:|---|---|"]
    for name, x, res, target in rows:
        lines.append(f"| {name} | {x['rps']:,.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | "
                     f"{x['max_ms']:.1f} | {res} | {target} |")
    e = doc.get("engine_alone", {})
    if e:
        lines += ["", "The engine alone in the same run (embedded API, no HTTP, no load "
                  "generator), the ceiling for the rows above:", "",
                  "| workload | engine alone | over HTTP | HTTP / engine |", "|---|---:|---:|---:|",
                  f"| 16 threads of single durable puts | {e['assert_rps']:,.0f}/s | "
                  f"{r['assert']['rps']:,.0f}/s | {r['assert']['rps'] / e['assert_rps']:.2f} |",
                  f"| batches of 1,000 (assertions) | {e['batch_assertions_per_s']:,.0f}/s | "
                  f"{r['batch']['assertions_per_s']:,.0f}/s | "
                  f"{r['batch']['assertions_per_s'] / e['batch_assertions_per_s']:.2f} |",
                  f"| consensus query, one thread | {e['query_rps']:,.0f}/s | "
                  f"{r['query']['rps']:,.0f}/s | {r['query']['rps'] / e['query_rps']:.2f} |"]
    if e:
        lines += ["", "Reading it:"]
        if not met["batch"]:
            lines.append(
                f"- batch: {r['batch']['assertions_per_s']:,.0f} assertions/s is "
                f"{r['batch']['assertions_per_s'] / 100_000:.2f}x the 100,000 target, and "
                f"{r['batch']['assertions_per_s'] / e['batch_assertions_per_s']:.2f}x what the "
                f"engine's put_batch does alone: the store bounds it (validation, hashing and "
                f"indexing per assertion), not HTTP (decoding 1,000 items costs ~3 ms of the "
                f"{1000 * 1000 / e['batch_assertions_per_s']:.0f} ms per batch).")
        for k, label in (("assert", "assert"), ("query", "query")):
            if not met[k]:
                ratio = r[k]["rps"] / noop
                lines.append(
                    f"- {label}: {ratio:.2f}x no-op. The engine alone (no HTTP, no load "
                    f"generator) does {e[k + '_rps']:,.0f}/s; over HTTP {r[k]['rps'] / e[k + '_rps']:.2f} "
                    f"of that, with the load generator sharing the 2 cores. The no-op floor is "
                    f"{noop:,.0f} req/s, so the store's own cost per request "
                    f"({1000 / e[k + '_rps']:.2f} ms per call at that rate) exceeds a whole no-op "
                    f"request: no HTTP-layer change can reach the ratio; the store's per-call "
                    f"cost has to drop.")
    lines += ["", "Targets met: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in met.items()),
              "", "Runs (req/s): " + "; ".join(f"{k} {v['runs_rps']}" for k, v in r.items()),
              f"Errors (non-2xx): " + ", ".join(f"{k} {v['errors']}" for k, v in r.items()), ""]
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
