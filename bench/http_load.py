"""What a request costs the loaded server beyond its own work: per thread group,
CPU (user, system), context switches and page faults per request, and the
read cache's hits, under ``bench.bench_http``'s load.

    python -m bench.http_load --store /tmp/httpq                  # query, 16 clients
    python -m bench.http_load --store /tmp/httpq --workload empty # same path, no candidates
    python -m bench.http_load --workload noop                     # the floor
    python -m bench.http_load --store /tmp/httpq --clients 4 --server-env STEMEDB_READ_CACHE_BYTES=134217728

``bench.bench_http`` gives the server's CPU per request as a whole and
``bench.http_stages`` what the request threads spend inside the app; this
says where the rest goes, from ``/proc/<worker>/task/*``: user and system
CPU, voluntary and involuntary context switches (``status``) and minor and
major faults (``stat``) of each thread over one measured run, after a
warm-up, per request; and the read cache's hits and misses over the run
(``/metrics``).  The worker's main thread is gunicorn's event loop; the
others are the pool's threads and the store's (audit, WAL); with ``py-spy``
on the ``PATH`` the threads are named from its ``dump`` (no profiling).

Workloads: ``query`` (bench_http's: the consensus lens over the store's
keys, the clients' order and count the same), ``empty`` (the same requests
on keys with no candidates: the query path, middleware, decode, the audit
line, with neither the engine's work nor the 12 KB answer) and ``noop``
(bench_http's no-op server).  The store is bench_http's query store
(``build_query_store``), built once in ``--store`` (~30 s) and reused.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request

from bench.bench_http import (QUERY_KEYS, build_query_store, load, server_settings,
                              start_noop, start_stemedb)


def threads(pid: int) -> dict:
    """Per thread id: user and system ticks, context switches, faults."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = f.read()
        except OSError:
            continue        # the thread ended
        switches = dict(re.findall(r"^(voluntary_ctxt_switches|nonvoluntary_ctxt_switches):"
                                   r"\s+(\d+)", status, re.M))
        out[int(tid)] = {"user": int(fields[11]), "sys": int(fields[12]),
                         "vol": int(switches.get("voluntary_ctxt_switches", 0)),
                         "nvol": int(switches.get("nonvoluntary_ctxt_switches", 0)),
                         "minflt": int(fields[7]), "majflt": int(fields[9])}
    return out


def thread_names(pid: int) -> dict:
    """Thread id -> name from ``py-spy dump`` when py-spy is installed (else {})."""
    spy = shutil.which("py-spy")
    if not spy:
        return {}
    try:
        text = subprocess.run([spy, "dump", "-p", str(pid)], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    alias = {"MainThread": "event loop"}
    return {int(t): ("pool" if n.startswith("ThreadPoolExecutor") else alias.get(n, n))
            for t, n in re.findall(r'Thread (\d+) \([^)]*\): "([^"]+)"', text)}


def cache_counters(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {m.group(1): float(m.group(2)) for m in
            re.finditer(r"^stemedb_read_cache_(\w+_total\{kind=\"\w+\"\}) (\S+)$", text, re.M)}


def worker_pid(master: int) -> int:
    with open(f"/proc/{master}/task/{master}/children") as f:
        return int(f.read().split()[0])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=("query", "empty", "noop"), default="query")
    p.add_argument("--store", default=None, help="bench_http's query store (built if missing)")
    p.add_argument("--store-size", type=int, default=1_000_000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before the measured run")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE")
    a = p.parse_args(argv)
    settings = server_settings(a.server_env)
    if a.clients < 1 or (a.clients > 2 and a.clients % 2):
        p.error("--clients: 1, 2 or an even number (two load processes share them)")
    tmp = tempfile.mkdtemp(prefix="stemedb-http-load-")
    keys = None
    try:
        if a.workload == "noop":
            srv, path = start_noop(tmp), "/noop"
        else:
            store = a.store or os.path.join(tmp, "q")
            keys_file = os.path.join(store, "http-load-keys.json")
            if not os.path.exists(keys_file):
                keys, _ = build_query_store(store, a.store_size, 1.0, None, QUERY_KEYS)
                with open(keys_file, "w") as f:
                    json.dump([list(k) for k in keys], f)
            with open(keys_file) as f:
                keys = [tuple(k) for k in json.load(f)]
            if a.workload == "empty":
                keys = [(path + "/none", pred) for path, pred in keys]
            srv, path = start_stemedb(store, tmp, settings), "/v1/query"
        kind = "noop" if a.workload == "noop" else "query"
        try:
            wpid = worker_pid(srv.p.pid)
            procs = min(2, a.clients)
            load(srv.port, kind, path, a.clients, a.warmup, keys=keys, procs=procs)
            names = thread_names(wpid)
            c0 = cache_counters(srv.port) if kind == "query" else {}
            t0 = threads(wpid)
            r = load(srv.port, kind, path, a.clients, a.duration, keys=keys, procs=procs,
                     server_pid=srv.p.pid)
            t1 = threads(wpid)
            c1 = cache_counters(srv.port) if kind == "query" else {}
        finally:
            srv.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = max(r["requests"], 1)
    tick = os.sysconf("SC_CLK_TCK")
    groups: dict = {}
    for tid, after in t1.items():
        before = t0.get(tid, dict.fromkeys(after, 0))
        name = names.get(tid, "event loop" if tid == wpid else "other threads")
        g = groups.setdefault(name, dict.fromkeys(after, 0) | {"threads": 0})
        for k in after:
            g[k] += after[k] - before[k]
        g["threads"] += 1
    print(f"{a.workload}, {a.clients} clients: {r['rps']:,.0f} req/s, server CPU "
          f"{r['server_cpu_us']:,.0f} us/req, p50 {r['p50_ms']:.2f} ms, errors {r['errors']}")
    print("| threads | n | user us/req | sys us/req | voluntary switches/req | "
          "involuntary/req | minor faults/req | major faults/req |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    total = dict.fromkeys(("user", "sys", "vol", "nvol", "minflt", "majflt", "threads"), 0)
    for name, g in sorted(groups.items(), key=lambda x: -(x[1]["user"] + x[1]["sys"])):
        for k in total:
            total[k] += g[k]
    for name, g in [*sorted(groups.items(), key=lambda x: -(x[1]["user"] + x[1]["sys"])),
                    ("all", total)]:
        print(f"| {name} | {g['threads']} | {1e6 * g['user'] / tick / n:,.0f} | "
              f"{1e6 * g['sys'] / tick / n:,.0f} | {g['vol'] / n:.2f} | {g['nvol'] / n:.2f} | "
              f"{g['minflt'] / n:.2f} | {g['majflt'] / n:.3f} |")
    if c1:
        d = {k: c1[k] - c0.get(k, 0) for k in c1}
        hits, misses, rhits, rmisses = (d.get(f'{k}_total{{kind="{what}"}}', 0)
                                        for what in ("answer", "record")
                                        for k in ("hits", "misses"))
        print(f"read cache over the run: answers {hits:,.0f} hits, {misses:,.0f} misses "
              f"({hits / max(hits + misses, 1):.1%} hits); records {rhits:,.0f} hits, "
              f"{rmisses:,.0f} misses")
    return 0


if __name__ == "__main__":
    sys.exit(main())
