"""The engine workloads: each takes an adapter (``bench/peers.py``) and
returns its samples.  Shared by ``bench/run.py`` and ``pytest bench/``.

Every loop is bounded twice: by a count (the slice of assertions or keys it
is given) and by ``budget_s`` seconds, after which it stops early and says so
(``"truncated": True``).  Latencies are ``time.perf_counter`` seconds per
operation; summaries are p50/p99/max, never a mean alone.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from time import perf_counter

from .peers import StemeAdapter, dir_bytes, open_engine

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)


# ------------------------------------------------------------------ stats

def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(-(-q * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


def latency_summary(samples: list[float]) -> dict:
    """{"n", "p50_ms", "p99_ms", "max_ms"} of per-operation seconds."""
    s = sorted(samples)
    return {"n": len(s), "p50_ms": percentile(s, 50) * 1e3, "p99_ms": percentile(s, 99) * 1e3,
            "max_ms": (s[-1] * 1e3) if s else float("nan")}


def median(values: list[float]) -> float:
    v = sorted(x for x in values if x == x)
    if not v:
        return float("nan")
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def timed_calls(fn, args_list, budget_s: float, count=None) -> tuple[list[float], float, int]:
    """Call ``fn(*args)`` for each args until done or ``budget_s`` is spent.

    Returns (latency per call, wall seconds, sum of ``count(result)``).
    """
    lat = []
    total = 0
    deadline = perf_counter() + budget_s
    t0 = perf_counter()
    for args in args_list:
        s = perf_counter()
        got = fn(*args)
        e = perf_counter()
        if count is not None:
            total += count(got)
        lat.append(e - s)
        if e > deadline:
            break
    return lat, perf_counter() - t0, total


# -------------------------------------------------------------- writes

def w1_single_writer(adapter, assertions: list[dict], *, budget_s: float = 60.0) -> dict:
    """W1: one writer, one durable record per commit.  ops/s = records/s."""
    lat, wall, _ = timed_calls(adapter.put, [(a,) for a in assertions], budget_s)
    return {"ops": len(lat), "seconds": wall, "throughput": len(lat) / wall,
            "unit": "records/s", "latencies": lat, "truncated": len(lat) < len(assertions)}


def w2_threads(adapter, assertions: list[dict], *, threads: int = 8,
               budget_s: float = 60.0) -> dict:
    """W2: ``threads`` writers, one durable record per commit each.

    The assertions are dealt round-robin to the threads; all start together
    at a barrier.  Throughput = all records / wall time; latency per put.
    """
    slices = [assertions[i::threads] for i in range(threads)]
    lats: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker(i: int) -> None:
        put, lat = adapter.put, lats[i]
        try:
            barrier.wait()
            for a in slices[i]:
                s = perf_counter()
                put(a)
                e = perf_counter()
                lat.append(e - s)
                if e > deadline[0]:
                    break
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    ts = [threading.Thread(target=worker, args=(i,), name=f"w2-{i}", daemon=True)
          for i in range(threads)]
    for t in ts:
        t.start()
    deadline[0] = perf_counter() + budget_s
    t0 = perf_counter()
    barrier.wait()
    for t in ts:
        t.join(budget_s + 60)
    wall = perf_counter() - t0
    if any(t.is_alive() for t in ts):
        raise RuntimeError(f"W2: a writer thread did not finish within {budget_s + 60:.0f}s")
    if errors:
        raise errors[0]
    lat = [x for li in lats for x in li]
    return {"ops": len(lat), "seconds": wall, "throughput": len(lat) / wall,
            "unit": "records/s", "latencies": lat, "threads": threads,
            "truncated": len(lat) < len(assertions)}


def w3_bulk(adapter, assertions: list[dict], *, batch: int = 1000,
            budget_s: float = 300.0) -> dict:
    """W3: bulk load in durable, atomic batches of ``batch``.  records/s;
    latency per batch."""
    lat = []
    done = 0
    put_batch = adapter.put_batch
    deadline = perf_counter() + budget_s
    t0 = perf_counter()
    for i in range(0, len(assertions), batch):
        chunk = assertions[i:i + batch]
        s = perf_counter()
        put_batch(chunk)
        e = perf_counter()
        lat.append(e - s)
        done += len(chunk)
        if e > deadline:
            break
    wall = perf_counter() - t0
    return {"ops": done, "batches": len(lat), "seconds": wall, "throughput": done / wall,
            "unit": "records/s", "latencies": lat, "latency_of": f"batch of {batch}",
            "truncated": done < len(assertions)}


# --------------------------------------------------------------- reads

def _reads(fn, args_list, budget_s: float, settle=None) -> dict:
    """Timed reads; then ``settle()`` (an adapter's work the reads left for
    later: StemeDB's query audit entries), its time counted in the wall
    time (not in any query's latency).  Without it a StemeDB slice of 250
    queries never reached the audit writer's wake-up backlog, so the pure
    build, whose writer thread builds the entries, was timed without its
    audit (R1: pure 200,278 records/s against compiled 147,086, whose
    query writes its own line)."""
    lat, wall, records = timed_calls(fn, args_list, budget_s, count=len)
    if settle is not None:
        t0 = perf_counter()
        settle()
        wall += perf_counter() - t0
    return {"ops": len(lat), "records": records, "seconds": wall,
            "throughput": records / wall, "unit": "records/s",
            "queries_per_s": len(lat) / wall, "latencies": lat,
            "latency_of": "query", "truncated": len(lat) < len(args_list)}


def r1_candidates(adapter, keys: list[tuple[str, str]], *, budget_s: float = 60.0) -> dict:
    """R1: all candidates of each ``(concept_path, predicate)``, decoded."""
    return _reads(adapter.candidates, keys, budget_s, getattr(adapter, "settle", None))


def r2_prefix(adapter, prefixes: list[str], *, budget_s: float = 60.0) -> dict:
    """R2: all assertions under each ``domain/entity/`` prefix, decoded."""
    return _reads(adapter.prefix, [(p,) for p in prefixes], budget_s,
                  getattr(adapter, "settle", None))


# --------------------------------------------------- recovery and space

def recovery_peer(name: str, path: str, probe_key: tuple[str, str], *, reps: int) -> dict:
    """Reopen of a closed peer store until its first answer (one R1 query)."""
    times = []
    for _ in range(reps):
        t0 = perf_counter()
        e = open_engine(name, path)
        e.candidates(*probe_key)
        times.append(perf_counter() - t0)
        e.close()
    return {"reopen_s": times, "reopen_median_s": median(times)}


def stemedb_indexes_dir(path: str) -> str:
    return os.path.join(path, "db", "indexes")


class _EngineLog(logging.Handler):
    """Collects the ``stemedb`` logger's lines (the contract fixes their text)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __enter__(self):
        self.logger = logging.getLogger("stemedb")
        self.level = self.logger.level
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level)

    def find(self, pattern: str):
        for line in self.lines:
            m = re.search(pattern, line)
            if m:
                return m
        return None


def recovery_stemedb(path: str, probe_key: tuple[str, str], *, reps: int,
                     expected: int) -> dict:
    """StemeDB reopen, two ways.

    * ``rebuild``: ``db/indexes/`` deleted, so open replays the whole WAL and
      rebuilds every index: records/s = count / (open + first answer).  The
      new snapshot is then written in a background thread while the store
      answers (opening.open_parts; before session 18 the open wrote it
      first), so its time is in this figure only where the first query
      waits for its encode; ``bench.rebuild_stages`` times it.  The
      engine's own ``Index rebuild complete in Xs`` is kept too
      (``rebuild_engine_s``): the replay alone.
    * ``snapshot``: open from the snapshot written at the previous clean
      close (the tail to replay is empty).  A log line saying the snapshot
      was unusable fails a check: that open was a rebuild.

    The first answer (one R1 query) is included in both times.
    """
    out: dict = {"rebuild_s": [], "snapshot_s": [], "rebuild_engine_s": [],
                 "count": None, "notes": []}
    for _ in range(reps):
        shutil.rmtree(stemedb_indexes_dir(path), ignore_errors=True)
        with _EngineLog() as lg:
            t0 = perf_counter()
            e = StemeAdapter(path)
            e.candidates(*probe_key)
            out["rebuild_s"].append(perf_counter() - t0)
        m = lg.find(r"Index rebuild complete in ([0-9.]+)s")
        if m:
            out["rebuild_engine_s"].append(float(m.group(1)))
        else:
            out["notes"].append("no 'Index rebuild complete in Xs' log line after opening "
                                "with db/indexes/ deleted")
        out["count"] = e.count()
        e.close()                                   # writes a snapshot
    if not os.path.isdir(stemedb_indexes_dir(path)) or not os.listdir(stemedb_indexes_dir(path)):
        out["notes"].append("no snapshot in db/indexes/ after a clean close: the snapshot "
                            "open below is another full rebuild")
    for _ in range(reps):
        with _EngineLog() as lg:
            t0 = perf_counter()
            e = StemeAdapter(path)
            e.candidates(*probe_key)
            out["snapshot_s"].append(perf_counter() - t0)
        bad = lg.find(r"Rebuilding indexes|snapshot unusable|does not match the WAL")
        if bad:
            out["notes"].append(f"opening from the snapshot logged: {bad.string!r}")
        m = lg.find(r"Replayed (\d+) entries")
        out["snapshot_tail_replayed"] = int(m.group(1)) if m else None
        c = e.count()
        e.close()
        if c != out["count"]:
            out["notes"].append(f"count after snapshot open {c} != after rebuild {out['count']}")
    if out["count"] != expected:
        out["notes"].append(f"count after rebuild {out['count']} != {expected} stored")
    r = median(out["rebuild_s"])
    out["rebuild_median_s"] = r
    out["rebuild_records_per_s"] = (out["count"] or 0) / r if r else float("nan")
    if out["rebuild_engine_s"]:
        re_ = median(out["rebuild_engine_s"])
        out["rebuild_engine_records_per_s"] = (out["count"] or 0) / re_ if re_ else float("nan")
    out["snapshot_median_s"] = median(out["snapshot_s"])
    return out


def disk_usage(name: str, path: str, n: int) -> dict:
    """Bytes on disk per stored assertion of a closed store (allocated blocks)."""
    d = dir_bytes(path)
    data = d["allocated"]
    out = dict(d)
    if name == "stemedb":
        out["wal_bytes"] = dir_bytes(os.path.join(path, "wal"))["allocated"]
        out["db_bytes"] = dir_bytes(os.path.join(path, "db"))["allocated"]
        # The query audit log grows with queries, not with assertions (R1/R2
        # ran before this): reported, not counted per assertion.
        out["audit_bytes"] = dir_bytes(os.path.join(path, "audit"))["allocated"]
        data -= out["audit_bytes"]
    out["bytes_per_assertion"] = data / n if n else float("nan")
    return out


def memory_probe(name: str, path: str, probe_key: tuple[str, str], *, n: int,
                 pure: bool = False, timeout: float = 600.0) -> dict:
    """RSS per stored assertion, measured in a fresh ``python -m bench.probe``.

    The child imports everything, reads its baseline RSS, opens the store,
    answers one R1 query and reads RSS again; the difference over ``n``.
    """
    env = dict(os.environ)
    if pure:
        env["STEMEDB_PURE_PYTHON"] = "1"
    env["PYTHONPATH"] = REPO_DIR + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "bench.probe", "memory", "--engine", name, "--path", path,
           "--key", probe_key[0], probe_key[1]]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                       cwd=REPO_DIR)
    if p.returncode != 0:
        raise RuntimeError(f"memory probe of {name} failed (exit {p.returncode}): "
                           f"{p.stderr.strip()[-800:]}")
    m = json.loads(p.stdout.strip().splitlines()[-1])
    m["rss_bytes_per_assertion"] = m["rss_delta"] / n if n else float("nan")
    m["anon_bytes_per_assertion"] = m["anon_delta"] / n if n else float("nan")
    m["peak_bytes_per_assertion"] = m["peak_delta"] / n if n else float("nan")
    return m


def fsync_probe(directory: str, count: int = 200, size: int = 250) -> dict:
    """fdatasync latency of this disk: the floor under W1 for every engine."""
    fn = os.path.join(directory, "fsync-probe")
    fd = os.open(fn, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    lat = []
    try:
        for _ in range(count):
            os.write(fd, b"x" * size)
            s = perf_counter()
            os.fdatasync(fd)
            lat.append(perf_counter() - s)
    finally:
        os.close(fd)
        os.unlink(fn)
    return latency_summary(lat)


def summarize_runs(runs: list[dict]) -> dict:
    """Median throughput over runs, latency over every sample of every run."""
    lat = [x for r in runs for x in r.get("latencies", ())]
    out = {
        "runs": len(runs),
        "throughput_median": median([r["throughput"] for r in runs]),
        "throughputs": [r["throughput"] for r in runs],
        "unit": runs[0].get("unit") if runs else None,
        "ops_per_run": [r["ops"] for r in runs],
        "latency": latency_summary(lat),
        "latency_of": runs[0].get("latency_of", "operation") if runs else None,
        "truncated": any(r.get("truncated") for r in runs),
    }
    if runs and "records" in runs[0]:
        out["records_per_run"] = [r["records"] for r in runs]
        out["queries_per_s_median"] = median([r["queries_per_s"] for r in runs])
    return out

