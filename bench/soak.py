"""A bounded mixed soak of a real ``stemedb serve`` on 127.0.0.1 (issue 8, item 23).

    python -m bench.soak --quick             # ~45 s: 25 s mixed, 8 s read-only
    python -m bench.soak                     # 5 minutes mixed, 1 minute read-only
    python -m bench.soak --audit off         # the same without the query audit

Writers (one process) post batches of ``--batch`` assertions and single
assertions over ``--groups`` (concept_path, predicate) pairs, so every group
gains candidates as the store grows; readers (another process) query random
groups (``limit=10``, lenses recency/consensus/confidence).  After the mixed
phase the writers stop and the readers go on alone (a read-only phase: memory
that still grows there is not the data).

Every ``--window`` seconds it prints the worker's RSS (``/proc/<pid>/status``),
the assertions stored, RSS per assertion above the idle worker, the heap
alone per assertion (RssAnon above the idle worker's: RSS also counts the
snapshot's pages that queries read through its mapping, page cache the kernel
can drop; WAL records are read by pread, never mapped), requests/s of
the window (reads, writes), the audit trail's size and the window's read cache
hit rates, records and answers (``/metrics``); at the
end the first and last windows of the mixed phase and of the read-only phase.
The load shares the machine's cores with the server, as in bench_http, so
compare runs of one machine, not figures across machines.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import urllib.request

from bench.bench_http import NO_LIMITS, Conn, Proc, free_port

T0 = 1_709_294_400


def start_server(data_dir: str, logdir: str, *, audit: str, durability: str) -> Proc:
    port, dport = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEMEDB_")}
    env.update(STEMEDB_DATA_DIR=data_dir, STEMEDB_BIND=f"127.0.0.1:{port}",
               STEMEDB_DASHBOARD_BIND=f"127.0.0.1:{dport}", STEMEDB_RATE_LIMITS=NO_LIMITS,
               STEMEDB_DURABILITY=durability, STEMEDB_LOG_LEVEL="warning", STEMEDB_AUDIT=audit)
    if os.environ.get("STEMEDB_PURE_PYTHON"):
        env["STEMEDB_PURE_PYTHON"] = os.environ["STEMEDB_PURE_PYTHON"]
    return Proc([sys.executable, "-m", "stemedb.cli", "serve"], env, port,
                os.path.join(logdir, "stemedb.log"))


def worker_pid(master: int) -> int:
    """The gunicorn worker: the master's child process."""
    for _ in range(100):
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                return int(name)
        time.sleep(0.1)
    raise RuntimeError(f"no worker process under the gunicorn master {master}")


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """``VmRSS`` (all), ``RssAnon`` (the heap) or ``RssFile`` (mapped files:
    the WAL segments the engine reads through mmap) of ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for {pid}")


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return r.read()


def audit_bytes(port: int, data_dir: str, metrics: str | None = None) -> int:
    """``stemedb_audit_bytes``, or the files under ``audit/`` for a server
    from before the metric (to compare with older commits).  ``metrics``:
    the ``/metrics`` text, fetched when not given."""
    if metrics is None:
        metrics = get(port, "/metrics").decode()
    for line in metrics.splitlines():
        if line.startswith("stemedb_audit_bytes "):
            return int(float(line.split()[1]))
    d = os.path.join(data_dir, "audit")
    return sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d)) \
        if os.path.isdir(d) else 0


def cache_counts(metrics: str) -> dict:
    """The read cache's lookups so far from the ``/metrics`` text:
    ``{(kind, "hits" | "misses"): count}``, kind ``record`` or ``answer``
    (empty from a server without the metric)."""
    out = {}
    for line in metrics.splitlines():
        for what in ("hits", "misses"):
            pre = f'stemedb_read_cache_{what}_total{{kind="'
            if line.startswith(pre):
                kind = line[len(pre):line.index('"', len(pre))]
                out[(kind, what)] = float(line.rsplit(" ", 1)[1])
    return out


def hit_rate(now: dict, before: dict, kind: str) -> float | None:
    """Hits over lookups of ``kind`` between two ``cache_counts``; None without lookups."""
    hits = now.get((kind, "hits"), 0.0) - before.get((kind, "hits"), 0.0)
    misses = now.get((kind, "misses"), 0.0) - before.get((kind, "misses"), 0.0)
    return hits / (hits + misses) if hits + misses > 0 else None


# ------------------------------------------------------------ load processes

def _writer(port, groups, batch, threads, stop, writes, failures, seed):
    def run(tid):
        rnd = random.Random(seed * 1000 + tid)
        conn, n = Conn(port), 0
        while not stop.value:
            n += 1
            if n % 4:       # three batches, then one single assertion
                items = [_assertion(rnd, groups) for _ in range(batch)]
                status = conn.post("/v1/assert/batch", json.dumps({"assertions": items}).encode())
            else:
                status = conn.post("/v1/assert", json.dumps(_assertion(rnd, groups)).encode())
            with writes.get_lock():
                writes.value += 1
            if status >= 300:
                with failures.get_lock():
                    failures.value += 1
    _in_threads(run, threads)


def _in_threads(run, threads: int) -> None:
    """``run(thread_index)`` on ``threads`` threads; returns when all end."""
    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def _assertion(rnd, groups) -> dict:
    g = rnd.randrange(groups)
    return {"concept_path": f"soak/c{g}", "predicate": f"p{g % 3}",
            "value": rnd.choice(("yes", "no", "maybe", {"n": rnd.randrange(5)})),
            "confidence": round(rnd.uniform(0.1, 1.0), 3),
            "source": f"src/{rnd.randrange(50)}",
            "timestamp": T0 + rnd.randrange(10 ** 8)}


def _reader(port, groups, threads, stop, reads, failures, seed):
    lenses = ("recency", "consensus", "confidence")

    def run(tid):
        rnd = random.Random(seed * 1000 + 500 + tid)
        conn = Conn(port)
        while not stop.value:
            g = rnd.randrange(groups)
            body = {"concept_path": f"soak/c{g}", "predicate": f"p{g % 3}", "limit": 10,
                    "lens": rnd.choice(lenses)}
            status = conn.post("/v1/query", json.dumps(body).encode())
            with reads.get_lock():
                reads.value += 1
            if status >= 300:
                with failures.get_lock():
                    failures.value += 1
    _in_threads(run, threads)


# ------------------------------------------------------------ the soak

def soak(args) -> dict:
    tmp = tempfile.mkdtemp(prefix="stemedb-soak-")
    data = os.path.join(tmp, "data")
    try:
        server = start_server(data, tmp, audit=args.audit, durability=args.durability)
    except BaseException:
        log = os.path.join(tmp, "stemedb.log")
        if os.path.exists(log):
            sys.stderr.write(open(log, errors="replace").read()[-4000:])
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    procs = []
    try:
        pid = worker_pid(server.p.pid)
        time.sleep(0.5)
        idle = rss_bytes(pid)
        idle_anon = rss_bytes(pid, "RssAnon")
        ctx = mp.get_context("spawn")
        stop_w, stop_r = ctx.Value("b", 0), ctx.Value("b", 0)
        writes, reads, failures = ctx.Value("q", 0), ctx.Value("q", 0), ctx.Value("q", 0)
        procs = [ctx.Process(target=_writer, args=(server.port, args.groups, args.batch,
                                                   args.writer_threads, stop_w, writes,
                                                   failures, args.seed)),
                 ctx.Process(target=_reader, args=(server.port, args.groups,
                                                   args.reader_threads, stop_r, reads,
                                                   failures, args.seed))]
        for p in procs:
            p.start()
        print(f"soak: audit={args.audit} durability={args.durability} groups={args.groups} "
              f"batch={args.batch} idle worker RSS {idle / 2**20:.1f} MiB; data in {data}")
        print(f"{'phase':<9} {'t/s':>5} {'assertions':>10} {'RSS MiB':>8} {'anon':>6} "
              f"{'file':>6} {'B/assert':>9} {'heap B/a':>8} {'reads/s':>8} {'writes/s':>8} {'audit MiB':>9} "
              f"{'rec hit':>7} {'ans hit':>7}")
        rows = []
        t_start = time.monotonic()
        last = (t_start, 0, 0)
        counts = cache_counts(get(server.port, "/metrics").decode())
        phases = [("mixed", args.mixed), ("readonly", args.readonly)]
        for phase, seconds in phases:
            if phase == "readonly":
                stop_w.value = 1
                procs[0].join(30)
                last = (time.monotonic(), reads.value, writes.value)
            end = time.monotonic() + seconds
            while time.monotonic() < end - 0.01:
                time.sleep(min(args.window, max(0.0, end - time.monotonic())))
                now, r, w = time.monotonic(), reads.value, writes.value
                dt = now - last[0]
                health = json.loads(get(server.port, "/v1/health"))
                n = health["assertion_count"]
                rss = rss_bytes(pid)
                metrics = get(server.port, "/metrics").decode()
                now_counts = cache_counts(metrics)
                row = {"phase": phase, "t": round(now - t_start, 1), "assertions": n,
                       "rss": rss, "rss_anon": rss_bytes(pid, "RssAnon"),
                       "rss_file": rss_bytes(pid, "RssFile"),
                       "rss_per_assertion": (rss - idle) / n if n else None,
                       # the heap alone: RSS also counts the snapshot's pages
                       # queries read through its mapping, which the page cache can drop
                       "heap_per_assertion": (rss_bytes(pid, "RssAnon") - idle_anon) / n
                       if n else None,
                       "reads_per_s": (r - last[1]) / dt, "writes_per_s": (w - last[2]) / dt,
                       "audit_bytes": audit_bytes(server.port, data, metrics),
                       # the window's read cache hit rates: records (decoded
                       # candidates) and answers (materialized, invalidated by writes)
                       "record_hit_rate": hit_rate(now_counts, counts, "record"),
                       "answer_hit_rate": hit_rate(now_counts, counts, "answer")}
                counts = now_counts
                rows.append(row)
                print(f"{phase:<9} {row['t']:>5.0f} {n:>10} {rss / 2**20:>8.1f} "
                      f"{row['rss_anon'] / 2**20:>6.1f} {row['rss_file'] / 2**20:>6.1f} "
                      f"{row['rss_per_assertion'] or 0:>9.0f} {row['heap_per_assertion'] or 0:>8.0f} "
                      f"{row['reads_per_s']:>8.0f} "
                      f"{row['writes_per_s']:>8.0f} {row['audit_bytes'] / 2**20:>9.1f} "
                      f"{_pct(row['record_hit_rate']):>7} {_pct(row['answer_hit_rate']):>7}",
                      flush=True)
                last = (now, r, w)
        stop_r.value = 1
        for p in procs:
            p.join(30)
        return {"idle_rss": idle, "idle_heap": idle_anon, "rows": rows, "failures": failures.value}
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.0f}%"


def summary(result: dict, batch: int) -> None:
    rows = result["rows"]
    mixed = [r for r in rows if r["phase"] == "mixed"]
    ro = [r for r in rows if r["phase"] == "readonly"]

    def line(name, r):
        per = r["rss_per_assertion"]
        rps = r["reads_per_s"] + r["writes_per_s"]
        print(f"  {name:<16} {r['assertions']:>9} assertions  RSS {r['rss'] / 2**20:7.1f} MiB "
              f"({per or 0:5.0f} B/assertion above idle; heap {r['rss_anon'] / 2**20:.1f}, "
              f"{r.get('heap_per_assertion') or 0:.0f} B/assertion above idle, "
              f"mapped files {r['rss_file'] / 2**20:.1f})  {rps:7.0f} requests/s "
              f"({r['reads_per_s']:.0f} queries/s, {r['writes_per_s']:.0f} writes/s of which "
              f"3 in 4 are batches of {batch}); read cache hits: records "
              f"{_pct(r.get('record_hit_rate'))}, answers {_pct(r.get('answer_hit_rate'))}")
    print("summary:")
    if mixed:
        line("mixed, start", mixed[0])
        line("mixed, end", mixed[-1])
    if ro:
        line("read-only, start", ro[0])
        line("read-only, end", ro[-1])
        grow = ro[-1]["rss"] - ro[0]["rss"]
        print(f"  RSS change over the read-only phase: {grow / 2**20:+.1f} MiB")
    print(f"  audit trail at the end: {rows[-1]['audit_bytes'] / 2**20:.1f} MiB")
    print(f"  requests answered >= 300: {result['failures']}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="25 s mixed + 8 s read-only")
    p.add_argument("--mixed", type=float, default=300.0, help="seconds of mixed load")
    p.add_argument("--readonly", type=float, default=60.0, help="seconds of queries only")
    p.add_argument("--window", type=float, default=10.0, help="seconds per printed row")
    p.add_argument("--audit", choices=("on", "off"), default="on")
    p.add_argument("--durability", choices=("fsync", "batch", "none"), default="batch")
    p.add_argument("--groups", type=int, default=1000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--writer-threads", type=int, default=2)
    p.add_argument("--reader-threads", type=int, default=6)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.mixed, args.readonly, args.window = 25.0, 8.0, 4.0
    result = soak(args)
    summary(result, args.batch)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), **result}, f, indent=1)
    return 0 if result["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
