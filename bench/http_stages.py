"""Where the server's CPU goes per HTTP request: the stages inside the worker.

    python -m bench.http_stages --workload query            # 1,000,000 stored, 20 candidates a key
    python -m bench.http_stages --workload batch
    python -m bench.http_stages --workload query --store-size 200000 --candidates 20 --profile

``bench.bench_http`` gives the server's CPU per request as a whole (from
``/proc``); this says what it is made of.  It runs the same server as
``stemedb serve`` (``gunicorn_options``, the ``StemeWorker``, ``get_app()``,
log level ``warning`` as in ``bench_http``) with a bench-only instrument put
in before gunicorn starts (nothing in ``stemedb/`` changes):

* the WSGI callable is wrapped: the request thread's CPU
  (``time.thread_time``) inside the application, per request;
* named stages are wrapped the same way (inclusive: a stage's figure counts
  the stages it calls): the Falcon middleware methods, the body read, the
  decode, the store call, the answer's build and encode (table ``STAGES``).

The same load generator as ``bench_http`` (2 processes of raw keep-alive
sockets, 16 clients for a query, 4 for batches of 1,000) runs a warm-up, then
the counters are reset (a request to ``/__stages__/reset``, answered by the
wrapper, never by the app) and one measured run follows; ``/__stages__``
hands back the totals.  Every figure is CPU microseconds per request (per
assertion for the batch, too).  "Rest of the process" is the server's CPU
from ``/proc`` minus the request threads' CPU inside the app: gunicorn's
event loop, its parsing and writing around the app call, and the store's
own threads (WAL writer, audit).  Each wrapped stage costs ~0.7 us of
``thread_time`` calls, counted in its caller; the wrapped total is an upper
bound by that much.

``--profile`` also runs ``cProfile`` in every request thread (inside the
app only) and prints the functions with the most own time: shares, not
figures (the profiler's own cost inflates Python calls far more than C).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time

from bench.bench_http import (NO_LIMITS, Proc, build_query_store, free_port, load, noop_app,
                              process_cpu)

# (module, qualified name, label): wrapped before the app is built, so Falcon
# binds the wrapped middleware methods and the resources call the wrapped
# module functions.
STAGES = (
    ("stemedb.http.middleware", "HostGuard.__call__", "HostGuard (the whole app below it)"),
    # the API's middleware is one component (middleware.Gate): its three calls
    ("stemedb.http.middleware", "Observe.process_request", "mw Gate.process_request (Observe's)"),
    ("stemedb.http.middleware", "Gate.process_resource", "mw Gate.process_resource (key, limits)"),
    ("stemedb.http.middleware", "Gate.process_response",
     "mw Gate.process_response (headers, breaker, metric and log, access fields)"),
    ("stemedb.http.resources", "read_body", "read_body"),
    ("stemedb.http.resources", "decode", "decode (msgspec, schema)"),
    ("stemedb.http.resources", "decode_batch", "decode_batch (msgspec, records)"),
    ("stemedb.http.schemas", "to_kwargs", "to_kwargs"),
    ("stemedb.core.store", "Store.query", "store.query (engine)"),
    ("stemedb.core.store", "Store.put_batch", "store.put_batch (engine)"),
    ("stemedb.core.store", "Store.put", "store.put (engine)"),
    # a single put's steps (Writer.put): validate + canonical form + hash,
    # then the critical section up to the enqueue, then the group commit
    ("stemedb.core.writer", "prepare_one", "put: prepare_one (validate, canonicalize, hash)"),
    ("stemedb.core.writer", "Writer._put_one", "put: _put_one (checks, stamp, frame, wait)"),
    ("stemedb.core.wal", "WAL.wait", "put: WAL.wait (group commit, apply)"),
    ("stemedb.core.wal", "WAL._commit", "put: WAL._commit (leader: write, fdatasync, apply)"),
    ("stemedb.http.resources", "query_body", "query_body (the answer's JSON)"),
    # POST /v1/query's plain request skips Falcon and the middleware above
    # (stemedb.http.fastquery); it calls query_body by its own name
    ("stemedb.http.fastquery", "FastQuery.__call__", "FastQuery (POST /v1/query without Falcon)"),
    ("stemedb.http.fastquery", "query_body", "query_body (the answer's JSON)"),
    ("stemedb.http.resources", "query_answer", "query_answer (answer objects)"),
    ("stemedb.http.resources", "send", "send (encode)"),
    ("stemedb.http.resources", "RecentWrites.add", "RecentWrites.add"),
)


# ------------------------------------------------------------- in the server

class _Totals:
    """Per-thread accumulators, summed on demand."""

    def __init__(self):
        self.lock = threading.Lock()
        self.local = threading.local()
        self.all: list[dict] = []
        self.profiles: list = []
        self.generation = 0
        self.threads0: dict = {}

    def mine(self) -> dict:
        d = getattr(self.local, "d", None)
        if d is None:
            d = self.local.d = {}
            with self.lock:
                self.all.append(d)
        return d

    def reset(self) -> None:
        with self.lock:
            for d in self.all:
                d.clear()
            for p in self.profiles:
                p.disable()
            self.profiles.clear()
            self.generation += 1
            self.threads0 = thread_cpu()
            GC.clear()

    def sum(self) -> dict:
        out: dict = {}
        with self.lock:
            for d in self.all:
                for k, (n, s) in list(d.items()):
                    n0, s0 = out.get(k, (0, 0.0))
                    out[k] = (n0 + n, s0 + s)
        return {k: {"calls": n, "cpu_s": s} for k, (n, s) in out.items()}


TOTALS = _Totals()


class _GCTimes:
    """The cyclic garbage collector's passes in the server, by generation:
    count and thread CPU (``gc.callbacks``; a pass runs in whichever thread
    allocated past the threshold, inside the app or out of it)."""

    def __init__(self):
        self.t0: dict = {}
        self.acc: dict = {}

    def install(self) -> None:
        import gc
        gc.callbacks.append(self.callback)

    def callback(self, phase: str, info: dict) -> None:
        tid = threading.get_ident()
        if phase == "start":
            self.t0[tid] = time.thread_time()
            return
        t0 = self.t0.pop(tid, None)
        if t0 is None:
            return
        gen = info.get("generation", -1)
        n, s = self.acc.get(gen, (0, 0.0))
        self.acc[gen] = (n + 1, s + time.thread_time() - t0)

    def clear(self) -> None:
        self.acc.clear()

    def sum(self) -> dict:
        import gc
        return {f"gc generation {g} (passes, CPU)": {"calls": n, "cpu_s": s}
                for g, (n, s) in sorted(self.acc.items())} | {
            "gc tracked objects at the end": {"calls": len(gc.get_objects()), "cpu_s": 0.0}}


GC = _GCTimes()


def thread_cpu() -> dict:
    """CPU seconds of each thread of this process: ``{native_id: (name, s)}``
    (Python's threads by their names; gunicorn's and the store's included)."""
    import threading as th
    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in th.enumerate()}
    # the worker's main thread (gunicorn's event loop): after the fork its
    # id is the process id, not the one threading recorded in the master
    names.setdefault(os.getpid(), "MainThread (event loop)")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(tid), "(not a Python thread)")
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def thread_groups(before: dict, after: dict) -> dict:
    """CPU seconds between two :func:`thread_cpu` readings, by thread name with
    its numbers dropped (the pool's threads are one group)."""
    import re
    out: dict = {}
    for tid, (name, s) in after.items():
        s0 = before.get(tid, (name, 0.0))[1]
        key = re.sub(r"[0-9]+", "N", name)
        out[key] = out.get(key, 0.0) + s - s0
    return out


def _timed(label: str, fn):
    tt = time.thread_time

    def wrapper(*args, **kwargs):
        t0 = tt()
        try:
            return fn(*args, **kwargs)
        finally:
            d = TOTALS.mine()
            n, s = d.get(label, (0, 0.0))
            d[label] = (n + 1, s + tt() - t0)
    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    wrapper.__name__ = getattr(fn, "__name__", label)
    return wrapper


def instrument() -> list[str]:
    """Wrap every stage of ``STAGES`` that exists (a missing one is listed)."""
    import importlib
    missing = []
    for modname, qual, label in STAGES:
        mod = importlib.import_module(modname)
        owner, _, name = qual.rpartition(".")
        target = getattr(mod, owner) if owner else mod
        fn = getattr(target, name, None)
        if fn is None:
            missing.append(qual)
            continue
        setattr(target, name, _timed(label, fn))
    return missing


class StagesApp:
    """The WSGI wrapper: the app's CPU per request, and the two control paths."""

    def __init__(self, app, profile: bool):
        self.app = app
        self.state = getattr(app, "state", None)   # worker_exit closes the store through it
        self.profile = profile
        self.local = threading.local()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/__stages__"):
            if path == "/__stages__/reset":
                TOTALS.reset()
                body = b"{}"
            else:
                body = json.dumps({"stages": TOTALS.sum() | GC.sum(),
                                   "threads": thread_groups(TOTALS.threads0, thread_cpu()),
                                   "profile": self._profile_rows()}).encode()
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        prof = None
        if self.profile:
            prof = getattr(self.local, "prof", None)
            if prof is None or getattr(self.local, "gen", -1) != TOTALS.generation:
                import cProfile
                # thread CPU, not wall time: a profile of a busy server in wall
                # time charges the GIL waits to whatever function was waiting
                prof = self.local.prof = cProfile.Profile(time.thread_time)
                self.local.gen = TOTALS.generation
                with TOTALS.lock:
                    TOTALS.profiles.append(prof)
        tt = time.thread_time
        t0 = tt()
        if prof is not None:
            prof.enable()
        try:
            return self.app(environ, start_response)
        finally:
            if prof is not None:
                prof.disable()
            d = TOTALS.mine()
            n, s = d.get("app", (0, 0.0))
            d["app"] = (n + 1, s + tt() - t0)

    def _profile_rows(self, top: int = 45) -> list:
        if not self.profile:
            return []
        import pstats
        with TOTALS.lock:
            profs = list(TOTALS.profiles)
        stats = None
        for p in profs:
            p.create_stats()
            if stats is None:
                stats = pstats.Stats(p)
            else:
                stats.add(p)
        if stats is None:
            return []
        rows = []
        for (file, line, func), (cc, nc, tt_, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
            rows.append((tt_, ct, nc, f"{os.path.relpath(file, ROOT) if file.startswith('/') else file}:{line}({func})"))
        rows.sort(reverse=True)
        return rows[:top]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def serve(profile: bool, noop: bool = False) -> None:
    """``stemedb serve``'s gunicorn with the instrument (``--serve``); with
    ``noop``, bench_http's no-op Falcon app under the same gunicorn."""
    from gunicorn.app.base import BaseApplication

    from stemedb.config import Settings
    from stemedb.http import server as srv

    missing = instrument()
    if missing:
        print(f"http_stages: not in this tree (left out): {', '.join(missing)}",
              file=sys.stderr)
    settings = Settings.from_env()
    options = srv.gunicorn_options(settings)

    def post_worker_init(worker):
        worker.wsgi = StagesApp(worker.wsgi, profile)
        GC.install()

    options["post_worker_init"] = post_worker_init

    class App(BaseApplication):
        def load_config(self):
            for key, value in options.items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self):
            if noop:
                return noop_app()
            from stemedb.http.app import get_app
            return get_app()

    App().run()


# ------------------------------------------------------------- the driver

def _get(port: int, path: str) -> dict:
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
        return json.loads(r.read())


def start(data_dir: str, logdir: str, profile: bool, noop: bool = False) -> Proc:
    port, dport = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEMEDB_")}
    # log level warning, as bench_http: the per-request DEBUG lines are off in
    # production too (STEMEDB_LOG_LEVEL defaults to info; request lines are debug)
    env.update(STEMEDB_DATA_DIR=data_dir, STEMEDB_BIND=f"127.0.0.1:{port}",
               STEMEDB_DASHBOARD_BIND=f"127.0.0.1:{dport}", STEMEDB_RATE_LIMITS=NO_LIMITS,
               STEMEDB_DURABILITY="fsync", STEMEDB_LOG_LEVEL="warning")
    argv = [sys.executable, "-m", "bench.http_stages", "--serve"] + (
        ["--profile"] if profile else []) + (["--noop"] if noop else [])
    return Proc(argv, env, port, os.path.join(logdir, "stages-server.log"))


def run(workload: str, size: int, candidates: int | None, duration: float, warmup: float,
        profile: bool) -> dict:
    tmp = tempfile.mkdtemp(prefix="stemedb-http-stages-")
    try:
        keys = None
        shape: dict = {}
        if workload == "query":
            keys, shape = build_query_store(os.path.join(tmp, "d"), size, 1.0, candidates)
        srv = start(os.path.join(tmp, "d"), tmp, profile, noop=workload == "noop")
        try:
            path, clients = {"query": ("/v1/query", 16), "batch": ("/v1/assert/batch", 4),
                             "assert": ("/v1/assert", 16), "noop": ("/noop", 16)}[workload]
            if warmup > 0:
                load(srv.port, workload, path, clients, warmup, keys=keys)
            _get(srv.port, "/__stages__/reset")
            cpu0 = process_cpu(srv.p.pid)
            r = load(srv.port, workload, path, clients, duration, keys=keys)
            server_cpu = process_cpu(srv.p.pid) - cpu0
            got = _get(srv.port, "/__stages__")
        finally:
            srv.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = got["stages"].get("app", {}).get("calls", 0)
    return {"workload": workload, "store_size": size if workload == "query" else None,
            "shape": shape, "rps": r["rps"], "requests": n, "errors": r["errors"],
            "server_cpu_s": server_cpu, "stages": got["stages"], "profile": got["profile"],
            "threads": got["threads"],
            "profiled": profile}


def report(res: dict) -> str:
    n = max(res["requests"], 1)
    per = 1000 if res["workload"] == "batch" else 1
    st = res["stages"]
    app = st.get("app", {}).get("cpu_s", 0.0)
    lines = [f"## {res['workload']}" + (f" ({res['shape'].get('store_assertions', 0):,} stored, "
                                        f"{res['shape'].get('candidates_mean', 0):.1f} candidates "
                                        f"per queried key)" if res["shape"] else ""),
             "",
             f"{res['requests']:,} requests in the measured run, {res['rps']:,.0f} req/s, "
             f"{res['errors']} errors" + (" (cProfile on: figures inflated)"
                                          if res["profiled"] else ""),
             "",
             "| stage | calls/request | CPU us per request" +
             (" | per assertion |" if per > 1 else " |"),
             "|---|---:|---:|" + ("---:|" if per > 1 else "")]

    def row(label, s, calls):
        us = 1e6 * s / n
        extra = f" {us / per:,.2f} |" if per > 1 else ""
        lines.append(f"| {label} | {calls / n:.2f} | {us:,.1f} |{extra}")
    row("server process (from /proc)", res["server_cpu_s"], n)
    row("request threads inside the app", app, n)
    row("rest of the process (gunicorn around the app, store threads)",
        res["server_cpu_s"] - app, n)
    for name, s in sorted(res["threads"].items(), key=lambda x: -x[1]):
        row(f"thread CPU: {name}", s, n)
    order = [label for _, _, label in STAGES]
    for label in order:
        if label in st:
            row(label, st[label]["cpu_s"], st[label]["calls"])
    for label in sorted(st):
        if label.startswith("gc generation"):
            row(label, st[label]["cpu_s"], st[label]["calls"])
    tracked = st.get("gc tracked objects at the end")
    if tracked:
        lines.append(f"\n{tracked['calls']:,} objects tracked by the collector at the end "
                     f"of the run")
    if res["profile"]:
        lines += ["", "cProfile, request threads inside the app (own time first):", "",
                  "| own s | cumulative s | calls | function |", "|---:|---:|---:|---|"]
        for tt_, ct, nc, name in res["profile"]:
            lines.append(f"| {tt_:.3f} | {ct:.3f} | {nc:,} | `{name}` |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", default="query",
                   help="query, batch, assert or noop (bench_http's floor), comma-separated")
    p.add_argument("--store-size", type=int, default=1_000_000)
    p.add_argument("--candidates", type=int, default=None,
                   help="as bench_http: candidates per query key (default the workload's keys)")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--profile", action="store_true", help="cProfile in the request threads")
    p.add_argument("--out", default=None, help="append the report (markdown) to this file")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--noop", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.profile, args.noop)
        return 0
    if args.out:
        from bench.bench_http import header
        h = header("compiled" if os.environ.get("STEMEDB_PURE_PYTHON") != "1" else "pure")
        with open(args.out, "a") as f:
            f.write(f"# HTTP server CPU by stage (python -m bench.http_stages)\n\n"
                    f"- date: {h['date']}; machine: {h['machine']}; Python {h['python']}; "
                    f"commit {h['commit']}\n- load at the start: {h['load'].split(': ')[1]}\n"
                    f"- workloads {args.workload}; store {args.store_size:,}"
                    f"{f', {args.candidates} candidates a key' if args.candidates else ''}; "
                    f"warm-up {args.warmup} s, measured {args.duration} s; servers at log "
                    f"level warning, as bench_http\n\n")
    for w in args.workload.split(","):
        res = run(w, args.store_size, args.candidates, args.duration, args.warmup, args.profile)
        text = report(res)
        print(text, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(text + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
