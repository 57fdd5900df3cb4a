"""Run StemeDB and its peers through the same workloads in one run.

    python -m bench.run                      # 200,000 assertions, every workload
    python -m bench.run --quick              # the CI smoke: about 2 minutes
    python -m bench.run --only W1,R1         # some workloads
    python -m bench.run --n 1000000          # the million-assertion figures

Writes ``bench/results/engine-<date>[-quick|-n<N>].md`` and ``.json``.  The
engines run in-process, interleaved slice by slice (a hundred commits of each
engine in turn...) so that a noisy neighbour hits them alike; only ratios
measured in the same run are compared.  StemeDB's pure-Python path
runs afterwards in a subprocess with ``STEMEDB_PURE_PYTHON=1``, together with
the peers again, so that its ratios too come from one run (the peers' REC
and MEM are not repeated: their targets are absolute).  See
``bench/README.md``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace

from . import lens_bench
from .peers import ENGINES, PEERS, SqliteAdapter, StemeAdapter, open_engine
from .suite import (BENCH_DIR, REPO_DIR, disk_usage, fsync_probe, latency_summary, median,
                    memory_probe, r1_candidates, r2_prefix, recovery_peer, recovery_stemedb,
                    summarize_runs, w1_single_writer, w2_threads, w3_bulk)
from .wake_probe import idle_state
from .workload import SEED, encoded_size_stats, generate

WORKLOADS = ("W1", "W2", "W3", "R1", "R2", "DISK", "REC", "MEM", "Q1", "C1", "E1")
NEEDS_LOAD = {"R1", "R2", "DISK", "REC", "MEM", "Q1", "C1", "E1"}
DESCRIPTIONS = {
    "W1": "one writer, one durable record per commit",
    "W2": "8 writer threads, one durable record per commit each",
    "W3": "bulk load in durable batches of 1,000",
    "R1": "all candidates of a (concept_path, predicate), decoded",
    "R2": "all assertions under a domain/entity/ prefix, decoded",
    "DISK": "bytes on disk per assertion (allocated blocks, store closed)",
    "REC": "reopen until the first answer",
    "MEM": "RSS per stored assertion in a fresh process, after open and one query "
           "(read cache nearly empty; bench.million measures it with the cache full)",
    "Q1": "resolved query of one (concept_path, predicate) vs sqlite indexed SELECT",
    "C1": "retraction cascade over dependents",
    "E1": "superseding a large epoch",
}


@dataclass(frozen=True)
class Config:
    """Counts of every workload: what the report says each figure is made of."""

    n: int = 200_000                # assertions loaded by W3 (and read by R1/R2...)
    w1_count: int = 3_000           # durable commits in W1, per run
    w2_count: int = 4_000           # durable commits in W2, per run (all threads)
    w2_threads: int = 8
    w3_batch: int = 1_000
    r1_keys: int = 5_000            # (concept_path, predicate) queries per R1 run
    r2_prefixes: int = 200          # domain/entity/ scans per R2 run
    reps: int = 3                   # runs per throughput figure (median)
    rec_reps: int = 3
    q1_keys: int = 2_000
    q1_hot_reps: int = 50
    c1_dependents: int = 10_000
    c1_reps: int = 3
    e1_size: int = 100_000
    e1_reps: int = 3
    budget_s: float = 180.0         # time bound of one run of one workload

    @classmethod
    def quick(cls, n: int | None = None) -> "Config":
        return cls(n=n or 20_000, w1_count=300, w2_count=800, r1_keys=1_000, r2_prefixes=50,
                   reps=3, rec_reps=1, q1_keys=300, q1_hot_reps=10, c1_dependents=1_000,
                   c1_reps=1, e1_size=10_000, e1_reps=3, budget_s=20.0)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ header

def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", REPO_DIR, *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_header() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in _read("/proc/cpuinfo").splitlines()
                if ln.startswith("model name")), platform.processor() or "unknown")
    mem = next((int(ln.split()[1]) * 1024 for ln in _read("/proc/meminfo").splitlines()
                if ln.startswith("MemTotal:")), 0)
    versions = {}
    import sqlite3
    versions["sqlite"] = sqlite3.sqlite_version
    try:
        import lmdb
        versions["lmdb"] = f"{'.'.join(map(str, lmdb.version()))} (py-lmdb {lmdb.__version__})"
    except ImportError:
        pass
    try:
        from importlib.metadata import version
        versions["rocksdict"] = version("rocksdict")
    except Exception:  # noqa: BLE001
        pass
    commit = _git("rev-parse", "HEAD")
    # The engine is stemedb/ without the HTTP layer (edited concurrently, not benchmarked here).
    dirty = bool(_git("status", "--porcelain", "--untracked-files=all", "--", "stemedb",
                      ":(exclude)stemedb/http"))
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": cpu, "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        # how an idle CPU sleeps: W2's hand-offs between threads pay for it
        # (bench.wake_probe, docs/operations/deployment.md "CPU placement")
        "cpuidle": idle_state(),
        "ram_bytes": mem, "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "python_impl": platform.python_implementation(),
        "git_commit": commit, "git_engine_dirty": dirty,
        "git_describe": _git("describe", "--always", "--dirty"),
        "versions": versions, "loadavg_start": os.getloadavg(),
        "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
    }


# ---------------------------------------------------------------- the run

class Runner:
    """One run: engines x workloads, results in ``self.results[label][workload]``."""

    def __init__(self, cfg: Config, engines: list[str], only: set[str], workdir: str,
                 label_suffix: str = ""):
        self.cfg = cfg
        self.engines = engines
        self.only = only
        self.workdir = workdir
        self.suffix = label_suffix
        self.results: dict[str, dict] = {}
        self.checks: list[dict] = []
        self.diagnostics: dict = {}
        self.loaded: dict[str, object] = {}
        self.paths: dict[str, str] = {}
        self.pure_peers: dict = {}
        self.w = None

    def label(self, name: str) -> str:
        return name + self.suffix if name == "stemedb" else name

    def put(self, name: str, wl: str, value) -> None:
        self.results.setdefault(self.label(name), {})[wl] = value

    def check(self, name: str, what: str, ok: bool, detail: str) -> None:
        self.checks.append({"engine": self.label(name), "check": what, "ok": bool(ok),
                            "detail": detail})
        if not ok:
            log(f"CHECK FAILED {self.label(name)}: {what}: {detail}")

    def fail(self, name: str, wl: str, exc: BaseException) -> None:
        log(f"{wl} {self.label(name)} failed: {type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)
        self.put(name, wl, {"error": f"{type(exc).__name__}: {exc}"})

    def fresh(self, name: str, tag: str):
        path = os.path.join(self.workdir, name, tag)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return open_engine(name, path), path

    # -- interleaving -------------------------------------------------------
    # Every engine's run is cut into slices and the engines take turns slice
    # by slice (the first engine rotating), so that a noisy neighbour's burst
    # of seconds lands on all of them alike.  Measured on this machine: with
    # whole runs back to back, one engine's W1 runs spread 313..2,708
    # records/s while fsync latency moved 0.2 -> 4 ms.  An engine's figure is
    # its records over the sum of its own slices' times.

    def _interleave(self, wl: str, engs: dict, fn, args: list, slice_n: int, *,
                    budget_s: float, reads: bool = False, **kw) -> dict[str, dict]:
        """Run ``fn(engine, slice, budget_s=..., **kw)`` over ``args`` slice by slice,
        the engines taking turns; sums per engine.  An engine that raises is
        recorded, closed and dropped from ``engs``."""
        acc = {name: {"ops": 0, "records": 0, "seconds": 0.0, "latencies": [],
                      "truncated": False} for name in engs}
        order = list(engs)
        deadline = time.perf_counter() + budget_s
        slices = [args[i:i + slice_n] for i in range(0, len(args), slice_n)]
        for i, chunk in enumerate(slices):
            k = i % len(order)
            for name in order[k:] + order[:k]:
                if name not in engs:
                    continue
                try:
                    r = fn(engs[name], chunk, budget_s=max(1.0, deadline - time.perf_counter()),
                           **kw)
                except Exception as exc:  # noqa: BLE001 - recorded, the others go on
                    self.fail(name, wl, exc)
                    _close_quietly(engs.pop(name))
                    acc.pop(name)
                    continue
                a = acc[name]
                a["ops"] += r["ops"]
                a["records"] += r.get("records", r["ops"])
                a["seconds"] += r["seconds"]
                a["latencies"].extend(r["latencies"])
                a["unit"], a["latency_of"] = r["unit"], r.get("latency_of", "operation")
            if time.perf_counter() > deadline and i < len(slices) - 1:
                for a in acc.values():
                    a["truncated"] = True
                break
        for a in acc.values():
            a["throughput"] = a["records"] / a["seconds"] if a["seconds"] else float("nan")
            if reads:
                a["queries_per_s"] = a["ops"] / a["seconds"] if a["seconds"] else float("nan")
            else:
                del a["records"]
        return acc

    def _open_fresh(self, tag: str) -> tuple[dict, dict, dict]:
        engs, paths, groups = {}, {}, {}
        for name in self.engines:
            try:
                engs[name], paths[name] = self.fresh(name, tag)
                groups[name] = _observe_commits(engs[name])
            except Exception as exc:  # noqa: BLE001
                self.fail(name, tag, exc)
        return engs, paths, groups

    def _write_workload(self, wl: str, fn, items: list[dict], slice_n: int, **kw) -> None:
        runs: dict[str, list] = {e: [] for e in self.engines}
        commits: dict[str, list] = {e: [] for e in self.engines}
        for rep in range(self.cfg.reps):
            engs, paths, groups = self._open_fresh(f"{wl.lower()}-{rep}")
            acc = self._interleave(wl, engs, fn, items, slice_n, budget_s=self.cfg.budget_s, **kw)
            for name, eng in engs.items():
                try:
                    n = eng.count()
                    eng.close()
                except Exception as exc:  # noqa: BLE001
                    self.fail(name, wl, exc)
                    continue
                shutil.rmtree(paths[name], ignore_errors=True)
                r = acc[name]
                self.check(name, f"{wl} run {rep + 1} stored every record", n == r["ops"],
                           f"count {n}, wrote {r['ops']}")
                runs[name].append(r)
                commits[name].extend(groups.get(name) or ())
                log(f"{wl} {self.label(name)} run {rep + 1}/{self.cfg.reps}: "
                    f"{r['throughput']:,.0f} {r['unit']}")
        for name in self.engines:
            if runs[name] and not (self.results.get(self.label(name)) or {}).get(wl):
                s = summarize_runs(runs[name])
                s["count"] = len(items)
                s["slice"] = slice_n
                if commits[name]:
                    s["group_commit"] = _group_summary(commits[name])
                self.put(name, wl, s)

    def load(self, with_w3: bool) -> None:
        """W3 (timed, repeated) or one plain load; the last load stays open."""
        reps = self.cfg.reps if with_w3 else 1
        runs: dict[str, list] = {e: [] for e in self.engines}
        batch = self.cfg.w3_batch
        for rep in range(reps):
            last = rep == reps - 1
            engs, paths, _ = self._open_fresh(f"load-{rep}")
            acc = self._interleave("W3" if with_w3 else "load", engs, w3_bulk,
                                   self.w.assertions, batch * 10, batch=batch,
                                   budget_s=max(self.cfg.budget_s, 60.0) * 8)
            for name, eng in engs.items():
                r = acc[name]
                r["batches"] = len(r["latencies"])
                runs[name].append(r)
                log(f"W3 {self.label(name)} run {rep + 1}/{reps}: "
                    f"{r['throughput']:,.0f} records/s ({r['ops']:,} records)")
                if last:
                    self.loaded[name], self.paths[name] = eng, paths[name]
                    n = eng.count()
                    self.check(name, "the loaded store counts every assertion",
                               n == self.w.n, f"count {n}, loaded {self.w.n}")
                else:
                    _close_quietly(eng)
                    shutil.rmtree(paths[name], ignore_errors=True)
        if with_w3:
            for name in self.loaded:
                s = summarize_runs(runs[name])
                s["count"], s["slice"] = self.w.n, batch * 10
                self.put(name, "W3", s)

    def reads(self, wl: str) -> None:
        cfg, w = self.cfg, self.w
        if wl == "R1":   # (concept_path, predicate) keys
            args, fn, expected, slice_n = w.r1_keys(cfg.r1_keys), r1_candidates, w.expected_r1, 250
        else:            # domain/entity/ prefixes
            args, fn, expected, slice_n = (w.r2_prefixes(cfg.r2_prefixes), r2_prefix,
                                           w.expected_r2, 10)
        engs = dict(self.loaded)
        self._interleave(wl, engs, fn, args[: max(1, len(args) // 5)], slice_n,
                         budget_s=cfg.budget_s, reads=True)           # warm-up, untimed
        runs: dict[str, list] = {e: [] for e in engs}
        for rep in range(cfg.reps):
            acc = self._interleave(wl, engs, fn, args, slice_n, budget_s=cfg.budget_s,
                                   reads=True)
            for name, r in acc.items():
                want = expected(args[: r["ops"]])
                self.check(name, f"{wl} run {rep + 1} returned every stored record",
                           r["records"] == want, f"got {r['records']}, expected {want}")
                runs[name].append(r)
                log(f"{wl} {self.label(name)} run {rep + 1}/{cfg.reps}: "
                    f"{r['throughput']:,.0f} records/s, {r['queries_per_s']:,.0f} queries/s")
        for name in list(self.loaded):
            if name not in engs:                      # failed: _interleave closed it
                self.loaded.pop(name)
                self.paths.pop(name, None)
        for name, rs in runs.items():
            if rs and name in engs:
                s = summarize_runs(rs)
                s["count"], s["slice"] = len(args), slice_n
                self.put(name, wl, s)

    def r1_without_audit(self) -> None:
        """Diagnostic: StemeDB's R1 with the query audit log off (``audit=False``,
        a setting outside the contract) against on, alternating run by run on
        the same store (a reopen from the snapshot between runs), to show what
        the audit costs."""
        eng = self.loaded.pop("stemedb", None)
        if eng is None:
            return
        path = self.paths["stemedb"]
        args = self.w.r1_keys(self.cfg.r1_keys)
        eng.close()
        runs: dict[bool, list] = {False: [], True: []}
        try:
            for _rep in range(self.cfg.reps):
                for audit in (False, True):
                    e = StemeAdapter(path, audit=audit)
                    try:
                        r1_candidates(e, args[: max(1, len(args) // 5)], budget_s=self.cfg.budget_s)
                        runs[audit].append(r1_candidates(e, args, budget_s=self.cfg.budget_s))
                    finally:
                        e.close()
            off, on = summarize_runs(runs[False]), summarize_runs(runs[True])
            keep = ("throughput_median", "queries_per_s_median", "latency")
            self.diagnostics["r1_without_audit"] = {
                "off": {k: off[k] for k in keep}, "on": {k: on[k] for k in keep},
                "ratio": off["throughput_median"] / on["throughput_median"]}
            log(f"R1 {self.label('stemedb')} audit off vs on: {off['throughput_median']:,.0f} vs "
                f"{on['throughput_median']:,.0f} records/s")
        except Exception as exc:  # noqa: BLE001 - a diagnostic only (TypeError: no audit=)
            self.diagnostics["r1_without_audit"] = {"error": f"{type(exc).__name__}: {exc}"}
        self.loaded["stemedb"] = StemeAdapter(path)

    def close_loaded(self) -> None:
        for name, eng in list(self.loaded.items()):
            try:
                eng.close()
            except Exception as exc:  # noqa: BLE001
                self.fail(name, "close", exc)
        self.loaded.clear()

    def space_and_recovery(self) -> None:
        cfg, w = self.cfg, self.w
        probe_key = w.r1_keys(1, seed=9)[0]
        for name, path in self.paths.items():
            if "DISK" in self.only:
                try:
                    d = disk_usage(name, path, w.n)
                    self.put(name, "DISK", d)
                    log(f"DISK {self.label(name)}: {d['bytes_per_assertion']:,.0f} bytes/assertion")
                except Exception as exc:  # noqa: BLE001
                    self.fail(name, "DISK", exc)
        for name, path in self.paths.items():
            if "REC" not in self.only:
                break
            if self.suffix and name != "stemedb":
                continue        # the pure pass re-measures peers only for ratios
            try:
                if name == "stemedb":
                    r = recovery_stemedb(path, probe_key, reps=cfg.rec_reps, expected=w.n)
                    for note in r["notes"]:
                        self.check(name, "recovery", False, note)
                    log(f"REC {self.label(name)}: rebuild {r['rebuild_median_s']:.2f}s "
                        f"({r['rebuild_records_per_s']:,.0f} records/s), "
                        f"snapshot open {r['snapshot_median_s']:.3f}s")
                else:
                    r = recovery_peer(name, path, probe_key, reps=cfg.rec_reps)
                    log(f"REC {name}: reopen {r['reopen_median_s'] * 1e3:.1f} ms")
                self.put(name, "REC", r)
            except Exception as exc:  # noqa: BLE001
                self.fail(name, "REC", exc)
        for name, path in self.paths.items():
            if "MEM" not in self.only:
                break
            if self.suffix and name != "stemedb":
                continue
            try:
                m = memory_probe(name, path, probe_key, n=w.n,
                                 pure=self.suffix == "-pure", timeout=max(600, cfg.budget_s * 4))
                self.check(name, "MEM: the fresh process counts every assertion",
                           m["count"] == w.n, f"count {m['count']}, stored {w.n}")
                self.put(name, "MEM", m)
                log(f"MEM {self.label(name)}: {m['rss_bytes_per_assertion']:,.0f} bytes/assertion "
                    f"RSS ({m['anon_bytes_per_assertion']:,.0f} anonymous)")
            except Exception as exc:  # noqa: BLE001
                self.fail(name, "MEM", exc)

    def issue3(self) -> None:
        """Q1, C1, E1 on the loaded StemeDB store (and sqlite for Q1)."""
        cfg = self.cfg
        if "stemedb" not in self.paths:
            for wl in ("Q1", "C1", "E1"):
                if wl in self.only and "stemedb" in self.engines:
                    self.put("stemedb", wl, {"skipped": "no loaded StemeDB store"})
            return
        want = [wl for wl in ("Q1", "C1", "E1") if wl in self.only]
        if not want:
            return
        missing = {wl: lens_bench.feature_missing(f)
                   for wl, f in (("Q1", "query"), ("C1", "cascade"), ("E1", "epoch"))
                   if wl in want}
        for wl, why in missing.items():
            if why:
                log(f"{wl} skipped: {why}")
                self.put("stemedb", wl, {"skipped": why})
        steme = sqlite = None
        try:
            steme = StemeAdapter(self.paths["stemedb"])
            store = steme.store
            if "Q1" in want and not missing["Q1"]:
                if "sqlite" in self.paths:
                    sqlite = SqliteAdapter(self.paths["sqlite"])
                self._q1(store, sqlite)
            if "C1" in want and not missing["C1"]:
                try:
                    runs = []
                    for rep in range(cfg.c1_reps):
                        r = lens_bench.c1_cascade(store, dependents=cfg.c1_dependents,
                                                  tag=f"{self.suffix or 'c'}{rep}",
                                                  budget_s=cfg.budget_s)
                        self.check("stemedb", f"C1 run {rep + 1} retracted the whole cascade",
                                   r["correct"], r["note"] or f"{r['retracted']} retracted")
                        log(f"C1 {self.label('stemedb')} run {rep + 1}: {r['seconds'] * 1e3:.1f} ms "
                            f"for {r['dependents']:,} dependents")
                        runs.append(r)
                    self.put("stemedb", "C1", {
                        "runs": runs, "dependents": runs[0]["dependents"],
                        "median_s": median([r["seconds"] for r in runs]),
                        "latency": latency_summary([r["seconds"] for r in runs])})
                except lens_bench.Skip as s:
                    self.put("stemedb", "C1", {"skipped": str(s)})
                except Exception as exc:  # noqa: BLE001
                    self.fail("stemedb", "C1", exc)
            if "E1" in want and not missing["E1"]:
                try:
                    r = lens_bench.e1_epoch(store, size=cfg.e1_size, reps=cfg.e1_reps,
                                            tag=self.suffix.strip("-") or "c",
                                            budget_s=cfg.budget_s * 2)
                    self.check("stemedb", "E1: the superseded epoch left default queries "
                               "and stays reachable by name", r["correct"], r["note"] or "ok")
                    log(f"E1 {self.label('stemedb')}: supersede {r['size']:,} in "
                        f"{r['big_median_s'] * 1e3:.2f} ms, {r['small']} in "
                        f"{r['small_median_s'] * 1e3:.2f} ms")
                    self.put("stemedb", "E1", r)
                except lens_bench.Skip as s:
                    self.put("stemedb", "E1", {"skipped": str(s)})
                except Exception as exc:  # noqa: BLE001
                    self.fail("stemedb", "E1", exc)
        except Exception as exc:  # noqa: BLE001
            self.fail("stemedb", "Q1/C1/E1", exc)
        finally:
            for eng in (sqlite, steme):
                if eng is not None:
                    eng.close()

    def _q1(self, store, sqlite) -> None:
        cfg, w = self.cfg, self.w
        try:
            hot = lens_bench.hot_key_assertions()
            store.put_batch(hot)
            if sqlite is not None:
                sqlite.put_batch(hot)
            keys = w.r1_keys(cfg.q1_keys, seed=3)
            hot_keys = [(lens_bench.HOT_PATH, lens_bench.HOT_PREDICATE)] * cfg.q1_hot_reps
            variants = lens_bench.q1_variants(store)
            fns = {f"stemedb:{k}": v for k, v in variants.items()}
            if sqlite is not None:
                fns["sqlite:select"] = sqlite.candidates
            out: dict = {}

            def q(fn, chunk, budget_s):
                return lens_bench.q1_resolved_query(fn, chunk, budget_s=budget_s)

            for kind, ks, slice_n in (("keys", keys, 100), ("hot", hot_keys, 5)):
                runs: dict[str, list] = {k: [] for k in fns}
                self._interleave("Q1", dict(fns), q, ks[: max(1, len(ks) // 5)], slice_n,
                                 budget_s=cfg.budget_s)                      # warm-up
                for _rep in range(cfg.reps):
                    acc = self._interleave("Q1", dict(fns), q, ks, slice_n,
                                           budget_s=cfg.budget_s)
                    for name, r in acc.items():
                        runs[name].append(r)
                out[kind] = {name: summarize_runs(rs) for name, rs in runs.items() if rs}
                for name, s in out[kind].items():
                    log(f"Q1 {kind} {name}: {s['throughput_median']:,.0f} queries/s, "
                        f"p99 {s['latency']['p99_ms']:.3f} ms")
            hot_winner = store.query(lens_bench.HOT_PATH, predicate=lens_bench.HOT_PREDICATE,
                                     lens="authority", decay=True).results
            winner = hot_winner[0].get("winner") if hot_winner else None
            ws = getattr(winner, "source_class", None)
            self.check("stemedb", "Q1: authority picks a regulatory claim for the hot key",
                       ws == "regulatory", f"winner source_class {ws!r}")
            out["keys_count"], out["hot_candidates"] = len(keys), len(hot)
            self.put("stemedb", "Q1", out)
        except Exception as exc:  # noqa: BLE001
            self.fail("stemedb", "Q1", exc)

    def diagnose(self) -> None:
        """Where StemeDB's write time goes before any I/O: validation + hash."""
        if "stemedb" not in self.engines:
            return
        try:
            from stemedb.model import prepare_assertion
            items = self.w.assertions[:20_000]
            t0 = time.perf_counter()
            for a in items:
                prepare_assertion(a)
            per = (time.perf_counter() - t0) / len(items)
            self.diagnostics["prepare_assertion_us"] = per * 1e6
            self.diagnostics["prepare_ceiling_records_per_s"] = 1 / per
            from .peers import encode_record
            t0 = time.perf_counter()
            for a in items:
                encode_record(a)
            self.diagnostics["peer_encode_us"] = (time.perf_counter() - t0) / len(items) * 1e6
        except Exception as exc:  # noqa: BLE001
            self.diagnostics["prepare_error"] = f"{type(exc).__name__}: {exc}"

    def run(self) -> None:
        cfg = self.cfg
        t0 = time.perf_counter()
        log(f"generating {cfg.n:,} assertions (seed {SEED})")
        self.w = generate(cfg.n)
        # The workload's million objects would otherwise be traversed by every
        # full GC, charging an engine that allocates (StemeDB's queries) for
        # the harness's own data: measured 108 ms max R1 latency vs 11 ms.
        gc.collect()
        gc.freeze()
        self.diagnostics["workload_bytes"] = encoded_size_stats(self.w)
        self.diagnostics["workload_keys"] = len(self.w.key_counts)
        self.diagnostics["generate_s"] = time.perf_counter() - t0
        self.diagnose()
        try:
            self.diagnostics["fsync"] = fsync_probe(self.workdir)
        except OSError as exc:
            self.diagnostics["fsync"] = {"error": str(exc)}
        if "W1" in self.only:
            self._write_workload("W1", w1_single_writer, self.w.assertions[: cfg.w1_count],
                                 slice_n=100)
        if "W2" in self.only:
            self._write_workload("W2", w2_threads, self.w.assertions[: cfg.w2_count],
                                 slice_n=50 * cfg.w2_threads, threads=cfg.w2_threads)
        if "W3" in self.only or self.only & NEEDS_LOAD:
            self.load(with_w3="W3" in self.only)
            for wl in ("R1", "R2"):
                if wl in self.only:
                    self.reads(wl)
            if "R1" in self.only:
                self.r1_without_audit()
            self.close_loaded()
            self.space_and_recovery()
            self.issue3()
        self.diagnostics["seconds"] = time.perf_counter() - t0


def _close_quietly(eng) -> None:
    if eng is not None:
        try:
            eng.close()
        except Exception:  # noqa: BLE001 - already failing; the first error is reported
            pass


def _observe_commits(eng) -> list | None:
    """StemeDB only: collect (records_in_group, fsync_s) of each group commit."""
    store = getattr(eng, "store", None)
    if store is None or not hasattr(store, "set_commit_observer"):
        return None
    groups: list = []
    try:
        store.set_commit_observer(lambda n, s: groups.append((n, s)))
    except Exception:  # noqa: BLE001 - the observer is a diagnostic only
        return None
    return groups


def _group_summary(groups: list) -> dict:
    sizes = sorted(n for n, _ in groups)
    return {"commits": len(groups), "records": sum(sizes),
            "records_per_commit_p50": sizes[len(sizes) // 2], "records_per_commit_max": sizes[-1],
            "records_per_commit_mean": sum(sizes) / len(sizes),
            "fsync": latency_summary([s for _, s in groups])}


# ----------------------------------------------------------- the targets

def _thr(res, wl):
    return (res.get(wl) or {}).get("throughput_median")


TARGETS = (
    # id, figure, kind, getter, peer/limit, unit, note
    {"id": "W1", "what": "W1 one writer, durable commit per record", "kind": "ratio",
     "get": lambda r: _thr(r, "W1"), "peer": "sqlite", "min": 1.0},
    {"id": "W2", "what": "W2 8 threads, durable commit per record", "kind": "ratio",
     "get": lambda r: _thr(r, "W2"), "peer": "sqlite", "min": 3.0},
    {"id": "W2-p99", "what": "W2 p99 latency per put", "kind": "max",
     "get": lambda r: ((r.get("W2") or {}).get("latency") or {}).get("p99_ms"),
     "max": 2.0, "unit": "ms"},
    {"id": "W3", "what": "W3 bulk load, durable batches of 1,000", "kind": "ratio",
     "get": lambda r: _thr(r, "W3"), "peer": "rocksdb", "min": 1.0},
    {"id": "R1", "what": "R1 candidates of a (concept_path, predicate)", "kind": "ratio",
     "get": lambda r: _thr(r, "R1"), "peer": "lmdb", "min": 1.0},
    {"id": "R2", "what": "R2 assertions under domain/entity/", "kind": "ratio",
     "get": lambda r: _thr(r, "R2"), "peer": "lmdb", "min": 1.0},
    {"id": "REC-rebuild", "what": "full rebuild from the WAL (db/indexes/ deleted)", "kind": "min",
     "get": lambda r: (r.get("REC") or {}).get("rebuild_records_per_s"), "min": 1_000_000,
     "unit": "records/s", "compiled_only": True},
    {"id": "REC-snapshot", "what": "open from a snapshot", "kind": "max",
     "get": lambda r: (r.get("REC") or {}).get("snapshot_median_s"), "max": 2.0, "unit": "s",
     "at_n": 1_000_000},
    {"id": "MEM", "what": "RSS per stored assertion after open (the target counts the read "
                          "cache full: bench.million)", "kind": "max",
     "get": lambda r: (r.get("MEM") or {}).get("rss_bytes_per_assertion"), "max": 300,
     "unit": "bytes", "at_n": 1_000_000},
    {"id": "DISK", "what": "disk per assertion", "kind": "ratio_max",
     "get": lambda r: (r.get("DISK") or {}).get("bytes_per_assertion"), "peer": "sqlite",
     "max": 1.2},
    {"id": "Q1-recency", "what": "resolved query, recency, vs sqlite SELECT", "kind": "q1",
     "variant": "stemedb:recency", "min": 1.0, "at_n": 1_000_000},
    {"id": "Q1-authority", "what": "resolved query, authority + decay, vs sqlite SELECT",
     "kind": "q1", "variant": "stemedb:authority_decay", "min": 1.0, "at_n": 1_000_000},
    {"id": "C1", "what": "retraction cascade over 10,000 dependents", "kind": "max",
     "get": lambda r: ((r.get("C1") or {}).get("median_s") or float("nan")) * 1e3
     if (r.get("C1") or {}).get("median_s") is not None else None,
     "max": 100.0, "unit": "ms", "at_n": 1_000_000},
    {"id": "E1", "what": "superseding an epoch of 100,000 assertions", "kind": "max",
     "get": lambda r: ((r.get("E1") or {}).get("big_median_s") or float("nan")) * 1e3
     if (r.get("E1") or {}).get("big_median_s") is not None else None,
     "max": 10.0, "unit": "ms", "at_n": 1_000_000},
)


def _fmt(x, unit: str = "") -> str:
    if x is None or x != x:
        return "—"
    if unit == "ms":
        return f"{x:.2f} ms"
    if unit == "s":
        return f"{x:.3f} s"
    if abs(x) >= 100:
        return f"{x:,.0f}" + (f" {unit}" if unit else "")
    return f"{x:.3g}" + (f" {unit}" if unit else "")


def _target_text(t: dict) -> str:
    unit = t.get("unit", "")
    if t["kind"] == "ratio":
        return f">= {t['min']:g}x {t['peer']}"
    if t["kind"] == "ratio_max":
        return f"<= {t['max']:g}x {t['peer']}"
    if t["kind"] == "q1":
        return f">= {t['min']:g}x sqlite SELECT"
    if t["kind"] == "min":
        return f">= {_fmt(t['min'], unit)}"
    return f"<= {_fmt(t['max'], unit)}"


def verdicts(results: dict, cfg: Config, label: str, implementation: str | None) -> list[dict]:
    """One row per target for StemeDB result set ``label``."""
    mine = results.get(label) or {}
    out = []
    for t in TARGETS:
        row = {"id": t["id"], "what": t["what"], "label": label, "value": None,
               "verdict": "n/a", "detail": "", "target": _target_text(t)}
        kind = t["kind"]
        if kind in ("ratio", "ratio_max"):
            v, p = t["get"](mine), t["get"](results.get(t["peer"]) or {})
            if v is None or p is None or not p:
                row["detail"] = "not measured" if v is None else f"no {t['peer']} figure"
            else:
                ratio = v / p
                row["value"] = ratio
                if kind == "ratio":
                    ok = ratio >= t["min"]
                    row["detail"] = f"{ratio:.2f}x ({_fmt(v)} vs {_fmt(p)})"
                    if not ok:
                        row["detail"] += f"; {1 - ratio / t['min']:.0%} short of the target"
                else:
                    ok = ratio <= t["max"]
                    row["detail"] = f"{ratio:.2f}x ({_fmt(v)} vs {_fmt(p)} bytes)"
                    if not ok:
                        row["detail"] += f"; {ratio / t['max'] - 1:.0%} over the target"
                row["verdict"] = "PASS" if ok else "MISS"
        elif kind == "q1":
            q = mine.get("Q1") or {}
            base = q            # the sqlite SELECT of the same pass
            parts, oks = [], []
            for kind_ in ("keys", "hot"):
                v = ((q.get(kind_) or {}).get(t["variant"]) or {}).get("throughput_median")
                p = ((base.get(kind_) or {}).get("sqlite:select") or {}).get("throughput_median")
                if v and p:
                    parts.append(f"{kind_}: {v / p:.2f}x ({_fmt(v)} vs {_fmt(p)} q/s)")
                    oks.append(v / p >= t["min"])
                    if kind_ == "keys":
                        row["value"] = v / p
            if oks:
                row["verdict"] = "PASS" if all(oks) else "MISS"
            row["detail"] = "; ".join(parts) or (q.get("skipped") or q.get("error")
                                                 or "not measured")
        else:
            v = t["get"](mine)
            unit = t.get("unit", "")
            if v is None:
                w = t["id"].split("-")[0]
                m = mine.get(w) or {}
                row["detail"] = m.get("skipped") or m.get("error") or "not measured"
            else:
                row["value"] = v
                if kind == "min":
                    ok = v >= t["min"]
                    row["detail"] = _fmt(v, unit) + ("" if ok else
                                                     f"; {1 - v / t['min']:.0%} short")
                else:
                    ok = v <= t["max"]
                    row["detail"] = _fmt(v, unit) + ("" if ok else
                                                     f"; {v / t['max'] - 1:.0%} over")
                row["verdict"] = "PASS" if ok else "MISS"
                if t.get("compiled_only") and implementation != "compiled":
                    row["verdict"] = "(info)"
                    row["detail"] += " (the target is for the compiled path)"
        if t["id"] == "C1" and row["value"] is not None:
            row["detail"] += f" ({mine['C1']['dependents']:,} dependents)"
        if t["id"] == "E1" and row["value"] is not None:
            row["detail"] += (f" (epoch of {mine['E1']['size']:,}; of {mine['E1']['small']}: "
                              f"{mine['E1']['small_median_s'] * 1e3:.2f} ms)")
        if t.get("at_n") and cfg.n != t["at_n"] and row["verdict"] in ("PASS", "MISS"):
            row["verdict"] += "*"
        out.append(row)
    return out


# ------------------------------------------------------------- the report

def _engine_rows(results: dict, wl: str, peer: str | None, labels: list[str],
                 pure_peers: dict | None = None) -> list[str]:
    """One table row per engine; the pure pass's row is divided by the peer
    figure of its own pass (``pure_peers``), like its verdicts."""
    rows = []
    for label in labels:
        src = (pure_peers or {}) if label == "stemedb-pure" else results
        base = _thr(src.get(peer) or {}, wl) if peer else None
        r = (results.get(label) or {}).get(wl)
        if r is None:
            continue
        if "throughput_median" not in r:
            rows.append(f"| {label} | {r.get('skipped') or r.get('error') or '—'} | | | | | |")
            continue
        lat = r["latency"]
        ratio = f"{r['throughput_median'] / base:.2f}x" if base else "—"
        extra = ""
        if "queries_per_s_median" in r:
            extra = f" ({r['queries_per_s_median']:,.0f} q/s)"
        runs = ", ".join(f"{x:,.0f}" for x in r["throughputs"])
        rows.append(f"| {label} | {r['throughput_median']:,.0f}{extra} | {runs} | "
                    f"{lat['p50_ms']:.3f} | {lat['p99_ms']:.3f} | {lat['max_ms']:.3f} | {ratio} |"
                    + (" truncated by the time bound |" if r.get("truncated") else ""))
    return rows



# The compiled-vs-pure target (issue 9: compiled >= 3x pure on W3, R1 and the
# rebuild): each figure of the in-process pass over the same figure of the
# pure pass, and the same through the peer each pass measured itself (the
# two passes run minutes apart in different processes; the peer's own drift
# between them cancels in the second column).
COMPILED_VS_PURE = (("W3", "bulk load (W3)"), ("R1", "R1 candidates"),
                    ("REC-rebuild", "rebuild from the WAL"))
COMPILED_VS_PURE_MIN = 3.0


def _compiled_vs_pure(doc: dict) -> list[str]:
    res, peers = doc["results"], doc.get("pure_pass_peers") or {}
    comp, pure = res.get("stemedb") or {}, res.get("stemedb-pure") or {}
    if (doc.get("implementation") or {}).get("stemedb") != "compiled" or not pure:
        return []
    rows = []
    targets = {t["id"]: t for t in TARGETS}
    for tid, what in COMPILED_VS_PURE:
        get, peer = targets[tid]["get"], targets[tid].get("peer")
        c, p = get(comp), get(pure)
        if not c or not p:
            continue
        ratio = c / p
        through = "—"
        if peer:
            pc, pp = get(res.get(peer) or {}), get(peers.get(peer) or {})
            if pc and pp:
                through = f"{(c / pc) / (p / pp):.2f}x ({c / pc:.2f} / {p / pp:.2f} {peer})"
        verdict = "met" if ratio >= COMPILED_VS_PURE_MIN else "MISSED"
        rows.append(f"| {what} | {c:,.0f} | {p:,.0f} | **{ratio:.2f}x** | {through} | "
                    f">= {COMPILED_VS_PURE_MIN:.0f}x: {verdict} |")
    if not rows:
        return []
    return ["## Compiled vs pure", "",
            "| figure | compiled | pure (second pass) | compiled / pure | through the peer of "
            "each pass | target |", "|---|---|---|---|---|---|", *rows, "",
            "The verdict is on the direct ratio; the peer column divides each build's ratio "
            "to its peer, measured in its own pass.", ""]

def render_markdown(doc: dict) -> str:
    h, cfg, res = doc["header"], Config(**doc["config"]), doc["results"]
    diag = doc["diagnostics"]
    labels = [x for x in ("sqlite", "lmdb", "rocksdb", "stemedb", "stemedb-pure") if x in res]
    impl = doc.get("implementation") or {}
    L = []
    title = f"# StemeDB engine benchmarks, {h['date_utc'][:10]}"
    if doc.get("quick"):
        title += " (--quick smoke: small counts, not for comparison)"
    L += [title, ""]
    wb = diag.get("workload_bytes") or {}
    fs = diag.get("fsync") or {}
    L += ["| | |", "|---|---|",
          f"| machine | {h['cpu']}, {h['cores']} cores ({h.get('cores_usable')} usable), "
          f"{h['ram_bytes'] / 2**30:.1f} GiB RAM, {h['os']}"
          + (f", {h['cpuidle']}" if h.get("cpuidle") else "") + " |",
          f"| Python | {h['python']} ({h['python_impl']}) |",
          f"| StemeDB | commit `{h['git_commit'][:12]}`"
          + (" (the engine, stemedb/ outside http/, had uncommitted changes)"
             if h.get("git_engine_dirty") else "")
          + f"; in-process implementation **{impl.get('stemedb', 'unavailable')}**"
          + (f", second pass **{impl.get('stemedb-pure', '?')}** (STEMEDB_PURE_PYTHON=1, subprocess)"
             if "stemedb-pure" in impl else "") + " |",
          "| peers | " + ", ".join(f"{k} {v}" for k, v in h["versions"].items()) + " |",
          f"| disk | fdatasync of 250 B: p50 {fs.get('p50_ms', float('nan')):.3f} ms, "
          f"p99 {fs.get('p99_ms', float('nan')):.3f} ms, max {fs.get('max_ms', float('nan')):.3f} ms |",
          f"| load average | start {'/'.join(f'{x:.2f}' for x in h['loadavg_start'])}, "
          f"end {'/'.join(f'{x:.2f}' for x in h.get('loadavg_end', (0, 0, 0)))} |",
          f"| workload | {cfg.n:,} assertions (seed {SEED}), {wb.get('mean', 0):.0f} bytes mean "
          f"as JSON, {diag.get('workload_keys', 0):,} (concept_path, predicate) keys over 10,000 "
          f"paths and 50 predicates |",
          f"| command | `{h['command']}` ({diag.get('seconds', 0):.0f} s) |", ""]
    L += ["Counts: " + f"W1 {cfg.w1_count:,} durable commits per run; W2 {cfg.w2_count:,} "
          f"({cfg.w2_threads} threads x {cfg.w2_count // cfg.w2_threads}); W3 {cfg.n:,} in "
          f"batches of {cfg.w3_batch:,}; R1 {cfg.r1_keys:,} keys; R2 {cfg.r2_prefixes:,} "
          f"prefixes; {cfg.reps} runs per throughput figure (median), latency p50/p99/max over "
          f"every sample of every run; reopen x{cfg.rec_reps}; Q1 {cfg.q1_keys:,} keys + hot key "
          f"({lens_bench.HOT_CANDIDATES:,} candidates) x{cfg.q1_hot_reps}; C1 "
          f"{cfg.c1_dependents:,} dependents x{cfg.c1_reps}; E1 epoch of {cfg.e1_size:,} "
          f"x{cfg.e1_reps}.", ""]

    vs = doc.get("verdicts") or {}
    steme_labels = [x for x in labels if x.startswith("stemedb")]
    L += ["## Targets (issues 2 and 3)", ""]
    if steme_labels:
        L += ["| figure | target | " + " | ".join(f"{x} ({impl.get(x, '?')}) | verdict"
                                                  for x in steme_labels) + " |",
              "|---|---|" + "---|---|" * len(steme_labels)]
        selected = set(doc.get("only") or WORKLOADS)
        for i, t in enumerate(TARGETS):
            if t["id"].split("-")[0] not in selected:
                continue
            cells = [f"{vs[lab][i]['detail']} | {vs[lab][i]['verdict']}" for lab in steme_labels]
            L.append(f"| {t['what']} | {_target_text(t)} | " + " | ".join(cells) + " |")
    else:
        why = (doc.get("unavailable") or {}).get("stemedb", "not selected (--engines)")
        L.append(f"StemeDB did not run: {why}. The peers' figures below stand alone.")
    L.append("")
    if "stemedb-pure" in steme_labels:
        L += ["The pure-Python column's ratios divide by the peers' figures of the pure "
              "pass (the same subprocess run; in the JSON under `pure_pass_peers`), in the "
              "tables below too.", ""]
    if steme_labels and cfg.n != 1_000_000:
        L += ["`*` the target is stated at 1,000,000 assertions; this run had "
              f"{cfg.n:,}, so the verdict is indicative only.", ""]
    L += ["Ratios compare figures of this run only.", ""]
    L += _compiled_vs_pure(doc)

    bad = [c for c in doc.get("checks", []) if not c["ok"]]
    L += ["## Correctness checks", ""]
    if bad:
        L += [f"- **FAILED** {c['engine']}: {c['check']}: {c['detail']}" for c in bad]
    else:
        L.append(f"All {len(doc.get('checks', []))} checks passed (every engine stored every "
                 "record and returned every expected candidate).")
    L.append("")

    peers_for = {"W1": "sqlite", "W2": "sqlite", "W3": "rocksdb", "R1": "lmdb", "R2": "lmdb"}
    L += ["## Throughput and latency", ""]
    for wl, peer in peers_for.items():
        if not any(wl in (res.get(x) or {}) for x in labels):
            continue
        unit = "records/s"
        lat_of = "per put" if wl in ("W1", "W2") else ("per batch of 1,000" if wl == "W3"
                                                      else "per query")
        L += [f"### {wl}: {DESCRIPTIONS[wl]}", "",
              f"| engine | {unit} (median) | each run | p50 ms | p99 ms | max ms | vs {peer} |",
              "|---|---|---|---|---|---|---|",
              *_engine_rows(res, wl, peer, labels, doc.get("pure_pass_peers")), "",
              f"Latency {lat_of}."]
        for lab in steme_labels:
            g = ((res.get(lab) or {}).get(wl) or {}).get("group_commit")
            if g:
                L.append(f"{lab} group commit: {g['commits']:,} fsyncs for {g['records']:,} "
                         f"records (records per commit p50 {g['records_per_commit_p50']}, "
                         f"mean {g['records_per_commit_mean']:.1f}, max "
                         f"{g['records_per_commit_max']}); fsync p50 "
                         f"{g['fsync']['p50_ms']:.3f} ms, p99 {g['fsync']['p99_ms']:.3f} ms.")
        L.append("")

    if any("REC" in (res.get(x) or {}) for x in labels):
        L += ["## Recovery: reopen until the first answer", "",
              "| engine | reopen (median) | each run | rebuild from WAL (records/s) |",
              "|---|---|---|---|"]
        for lab in labels:
            r = (res.get(lab) or {}).get("REC")
            if not r:
                continue
            if "error" in r:
                L.append(f"| {lab} | {r['error']} | | |")
            elif "snapshot_median_s" in r:
                L.append(f"| {lab} (snapshot) | {r['snapshot_median_s']:.3f} s | "
                         + ", ".join(f"{x:.3f}" for x in r["snapshot_s"]) + " | |")
                eng = r.get("rebuild_engine_records_per_s")
                L.append(f"| {lab} (rebuild, db/indexes/ deleted) | {r['rebuild_median_s']:.3f} s"
                         " | " + ", ".join(f"{x:.3f}" for x in r["rebuild_s"])
                         + f" | {r['rebuild_records_per_s']:,.0f}"
                         + (f" (engine log: {eng:,.0f}, the replay alone; the new snapshot is"
                            " written in the background once the store answers)"
                            if eng else "") + " |")
            else:
                L.append(f"| {lab} | {r['reopen_median_s']:.3f} s | "
                         + ", ".join(f"{x:.3f}" for x in r["reopen_s"]) + " | |")
        L.append("")

    if any("MEM" in (res.get(x) or {}) or "DISK" in (res.get(x) or {}) for x in labels):
        L += ["## Memory and disk", "",
              "| engine | RSS bytes/assertion | anonymous | file-backed (total) | peak | "
              "disk bytes/assertion | disk vs sqlite |", "|---|---|---|---|---|---|---|"]
        sq = ((res.get("sqlite") or {}).get("DISK") or {}).get("bytes_per_assertion")
        for lab in labels:
            m = (res.get(lab) or {}).get("MEM") or {}
            d = (res.get(lab) or {}).get("DISK") or {}
            if not m and not d:
                continue
            mcells = (f"{m['rss_bytes_per_assertion']:,.0f} | {m['anon_bytes_per_assertion']:,.0f}"
                      f" | {m['file_delta']:,} | {m['peak_bytes_per_assertion']:,.0f}"
                      if "rss_delta" in m else f"{m.get('error', '—')} | | |")
            dcell = f"{d['bytes_per_assertion']:,.0f}" if "bytes_per_assertion" in d else \
                d.get("error", "—")
            if "wal_bytes" in d:
                dcell += (f" (wal {d['wal_bytes'] / cfg.n:,.0f} + db {d['db_bytes'] / cfg.n:,.0f};"
                          f" audit log {d.get('audit_bytes', 0):,} bytes not counted)")
            ratio = f"{d['bytes_per_assertion'] / sq:.2f}x" if sq and "bytes_per_assertion" in d \
                else "—"
            L.append(f"| {lab} | {mcells} | {dcell} | {ratio} |")
        L += ["", "RSS: a fresh process imports everything, reads VmRSS, opens the store, "
              "answers one R1 query, reads VmRSS again; the difference divided by the stored "
              "assertions. Peers keep their data in the page cache or mmap, so their RSS "
              "is small by design; the 300-byte target is StemeDB's. Disk: allocated blocks "
              "of the closed store's directory; StemeDB's query audit log (`audit/`, written by "
          "every query) is left out.", ""]

    q = {lab: (res.get(lab) or {}).get("Q1") for lab in steme_labels}
    if any(q.values()):
        L += ["## Q1: resolved query vs sqlite indexed SELECT of the same candidates", "",
              "| engine / query | keys: queries/s (median) | p50 ms | p99 ms | max ms | "
              "hot key: queries/s | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|---|---|---|---|"]
        for lab, qq in q.items():
            if not qq:
                continue
            if "keys" not in qq:
                L.append(f"| {lab} | {qq.get('skipped') or qq.get('error')} | | | | | | | |")
                continue
            for name in qq["keys"]:
                k, hh = qq["keys"][name], qq["hot"][name]
                who = lab if not name.startswith("sqlite") else (
                    "sqlite" if lab == "stemedb" else f"sqlite (the {lab} pass)")
                L.append(f"| {who} {name.split(':')[1]}"
                         f" | {k['throughput_median']:,.0f} | {k['latency']['p50_ms']:.3f} | "
                         f"{k['latency']['p99_ms']:.3f} | {k['latency']['max_ms']:.3f} | "
                         f"{hh['throughput_median']:,.0f} | {hh['latency']['p50_ms']:.3f} | "
                         f"{hh['latency']['p99_ms']:.3f} | {hh['latency']['max_ms']:.3f} |")
        L.append("")
    for wl, title in (("C1", "C1: retraction cascade"), ("E1", "E1: superseding an epoch")):
        rows = {lab: (res.get(lab) or {}).get(wl) for lab in steme_labels}
        if not any(rows.values()):
            continue
        L += [f"## {title}", ""]
        for lab, r in rows.items():
            if not r:
                continue
            if "skipped" in r or "error" in r:
                L.append(f"- {lab}: skipped: {r.get('skipped') or r.get('error')}")
            elif wl == "C1":
                L.append(f"- {lab}: retract(cascade=True) of a root with {r['dependents']:,} "
                         f"dependents (two levels): median {r['median_s'] * 1e3:.1f} ms, runs "
                         + ", ".join(f"{x['seconds'] * 1e3:.1f}" for x in r["runs"]) + " ms")
            else:
                L.append(f"- {lab}: create_epoch(supersedes=[epoch of {r['size']:,}]): median "
                         f"{r['big_median_s'] * 1e3:.2f} ms (runs "
                         + ", ".join(f"{x * 1e3:.2f}" for x in r["big_s"])
                         + f"); of an epoch of {r['small']}: {r['small_median_s'] * 1e3:.2f} ms")
        L.append("")

    L += ["## What bounds the figures", ""]
    if fs.get("p50_ms"):
        L.append(f"- Durable single-record commits wait for an fdatasync: p50 "
                 f"{fs['p50_ms']:.3f} ms on this disk, so one writer cannot exceed about "
                 f"{1e3 / fs['p50_ms']:,.0f} commits/s on any engine; only group commit "
                 f"(several records per fsync) goes past it (W2).")
    if "prepare_assertion_us" in diag:
        L.append(f"- StemeDB's validation + canonical JSON + BLAKE3 "
                 f"(`prepare_assertion`) costs {diag['prepare_assertion_us']:.1f} us per "
                 f"record in this process: a ceiling of "
                 f"{diag['prepare_ceiling_records_per_s']:,.0f} records/s for W3 before any I/O; "
                 f"a peer's serialize + hash costs {diag.get('peer_encode_us', 0):.1f} us.")
    L.append("- StemeDB's reads go through `query`, which also resolves the lens (a winner "
             "and conflict score per key) and queues a query audit entry; the peers only "
             "fetch and decode.")
    for lab, dg in (("stemedb", diag), ("stemedb-pure", doc.get("pure_diagnostics") or {})):
        na = dg.get("r1_without_audit") or {}
        if "ratio" in na:
            off, on = na["off"], na["on"]
            L.append(f"- {lab} R1 with the query audit log off (`audit=False`) vs on, "
                     f"alternating runs: {off['throughput_median']:,.0f} vs "
                     f"{on['throughput_median']:,.0f} records/s ({na['ratio']:.2f}x); max "
                     f"latency {off['latency']['max_ms']:.3f} vs {on['latency']['max_ms']:.3f} ms, "
                     f"p99 {off['latency']['p99_ms']:.3f} vs {on['latency']['p99_ms']:.3f} ms.")
    for lab in steme_labels:
        for row in vs.get(lab, ()):
            if row["verdict"].startswith("MISS"):
                L.append(f"- {lab} misses {row['id']}: {row['detail']}.")
    L.append("")
    skipped = [(lab, wl, r.get("skipped") or r.get("error"))
               for lab in labels for wl, r in (res.get(lab) or {}).items()
               if isinstance(r, dict) and ("skipped" in r or "error" in r)]
    skipped += [(e, "all", why) for e, why in (doc.get("unavailable") or {}).items()]
    if skipped:
        L += ["## Skipped or failed", ""]
        L += [f"- {lab} {wl}: {why}" for lab, wl, why in skipped]
        L.append("")
    L += ["How to read this: `bench/README.md`. The JSON next to this file holds every "
          "sample summary.", ""]
    return "\n".join(L)


# ------------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=None, help="assertions to load (default 200,000; "
                    "20,000 with --quick)")
    ap.add_argument("--quick", action="store_true", help="the CI smoke: small counts, ~2 min")
    ap.add_argument("--only", default="", help="comma-separated workloads: " + ",".join(WORKLOADS))
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated engines")
    ap.add_argument("--out", default=os.path.join(BENCH_DIR, "results"),
                    help="directory of the .md and .json results")
    ap.add_argument("--reps", type=int, default=None, help="runs per throughput figure")
    ap.add_argument("--workdir", default=None, help="where the stores go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the stores after the run")
    ap.add_argument("--no-pure", action="store_true",
                    help="skip the second StemeDB pass with STEMEDB_PURE_PYTHON=1")
    ap.add_argument("--worker-json", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = Config.quick(args.n) if args.quick else Config(n=args.n or Config.n)
    if args.reps:
        cfg = replace(cfg, reps=args.reps)
    only = set(WORKLOADS) if not args.only else {x.strip().upper() for x in args.only.split(",")
                                                  if x.strip()}
    unknown = only - set(WORKLOADS)
    if unknown:
        print(f"unknown workload(s) {', '.join(sorted(unknown))}; the workloads are "
              f"{', '.join(WORKLOADS)}", file=sys.stderr)
        return 2
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for e in engines:
        if e not in ENGINES:
            print(f"unknown engine {e!r}; the engines are {', '.join(ENGINES)}", file=sys.stderr)
            return 2
    worker = args.worker_json is not None
    header = None if worker else machine_header()
    unavailable = {}
    for e in list(engines):
        why = ENGINES[e].available()
        if why:
            log(f"{e} skipped: {why}")
            unavailable[e] = why
            engines.remove(e)
    implementation = {}
    if "stemedb" in engines:
        from .peers import stemedb_implementation
        implementation["stemedb-pure" if worker else "stemedb"] = stemedb_implementation()
    workdir = args.workdir or tempfile.mkdtemp(prefix="stemedb-bench-")
    os.makedirs(workdir, exist_ok=True)
    runner = Runner(cfg, engines, only, os.path.join(workdir, "pure" if worker else "main"),
                    label_suffix="-pure" if worker else "")
    os.makedirs(runner.workdir, exist_ok=True)
    try:
        runner.run()
        if worker:
            with open(args.worker_json, "w") as f:
                json.dump({"results": runner.results, "checks": runner.checks,
                           "diagnostics": runner.diagnostics,
                           "implementation": implementation}, f, default=str)
            return 0
        pure_diag = None
        if "stemedb" in engines and not args.no_pure:
            pure_diag = _run_pure(args, cfg, only, workdir, runner, implementation)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not worker:
            log(f"stores kept in {workdir}")
    header["loadavg_end"] = os.getloadavg()
    doc = {"header": header, "config": asdict(cfg), "quick": args.quick,
           "only": sorted(only), "implementation": implementation,
           "results": _strip(runner.results), "checks": runner.checks,
           "diagnostics": runner.diagnostics, "pure_diagnostics": pure_diag,
           "pure_pass_peers": runner.pure_peers, "unavailable": unavailable}
    doc["verdicts"] = {}
    if "stemedb" in doc["results"]:
        doc["verdicts"]["stemedb"] = verdicts(doc["results"], cfg, "stemedb",
                                              implementation.get("stemedb"))
    if "stemedb-pure" in doc["results"]:
        same_pass = {**runner.pure_peers, "stemedb-pure": doc["results"]["stemedb-pure"]}
        doc["verdicts"]["stemedb-pure"] = verdicts(same_pass, cfg, "stemedb-pure",
                                                   implementation.get("stemedb-pure"))
    os.makedirs(args.out, exist_ok=True)
    stem = f"engine-{header['date_utc'][:10]}"
    if args.quick:
        stem += "-quick"
    elif cfg.n != Config.n:
        stem += f"-n{cfg.n}"
    md_path = os.path.join(args.out, stem + ".md")
    with open(os.path.join(args.out, stem + ".json"), "w") as f:
        json.dump(doc, f, indent=1, default=str)
        f.write("\n")
    with open(md_path, "w") as f:
        f.write(render_markdown(doc))
    log(f"wrote {md_path} and .json")
    print(md_path)
    failed = [c for c in runner.checks if not c["ok"]]
    return 1 if failed else 0


def _run_pure(args, cfg, only, workdir, runner, implementation) -> dict | None:
    """The StemeDB-only second pass with STEMEDB_PURE_PYTHON=1."""
    out = os.path.join(workdir, "pure.json")
    engines = ",".join(["stemedb", *(e for e in PEERS if e in runner.engines)])
    cmd = [sys.executable, "-m", "bench.run", "--engines", engines, "--worker-json", out,
           "--only", ",".join(sorted(only)), "--workdir", workdir, "--keep", "--no-pure",
           "--reps", str(cfg.reps)]
    if args.quick:
        cmd.append("--quick")
    if args.n:
        cmd += ["--n", str(args.n)]
    env = dict(os.environ, STEMEDB_PURE_PYTHON="1")
    env["PYTHONPATH"] = REPO_DIR + os.pathsep + env.get("PYTHONPATH", "")
    log(f"second pass with STEMEDB_PURE_PYTHON=1 in a subprocess: {engines} "
        "(the peers again, so the pure path's ratios come from one run)")
    timeout = 3600 * 6 if not args.quick else 600
    try:
        p = subprocess.run(cmd, env=env, cwd=REPO_DIR, timeout=timeout)
    except subprocess.TimeoutExpired:
        runner.results["stemedb-pure"] = {"W1": {"error": f"pure pass exceeded {timeout}s"}}
        return None
    if p.returncode != 0 or not os.path.exists(out):
        runner.results["stemedb-pure"] = {"W1": {"error": f"pure pass exited {p.returncode}"}}
        return None
    with open(out) as f:
        sub = json.load(f)
    # StemeDB's pure figures join the tables; the peers of the pure pass are
    # kept apart: they are the baseline of the pure path's ratios only.
    runner.results["stemedb-pure"] = sub["results"].pop("stemedb-pure", {})
    runner.pure_peers = _strip(sub["results"])
    for c in sub["checks"]:
        if c["engine"] != "stemedb-pure":
            c["engine"] = f"{c['engine']} (pure pass)"
        runner.checks.append(c)
    implementation.update(sub["implementation"])
    return sub["diagnostics"]


def _strip(results: dict) -> dict:
    """Drop raw samples (kept only as summaries) before writing JSON."""
    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if k != "latencies"}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x
    return clean(results)


if __name__ == "__main__":
    sys.exit(main())
