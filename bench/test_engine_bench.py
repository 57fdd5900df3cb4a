"""pytest-benchmark versions of the engine workloads (``pytest bench/``).

Each benchmark is a small run of the workload ``bench/run.py`` measures at
full size, for every available engine.  Nothing here asserts a timing
target; the asserts are about answers (every record stored, every candidate
returned, the same count for every engine), so a failure means an engine is
wrong, not slow.  ``--benchmark-disable`` runs them once each as plain tests.
"""
from __future__ import annotations

import math
import shutil

import pytest

from . import lens_bench
from .conftest import unavailable
from .peers import ENGINES, StemeAdapter, encode_record, open_engine
from .run import Config, render_markdown, verdicts
from .suite import (disk_usage, latency_summary, memory_probe, percentile, r1_candidates,
                    r2_prefix, recovery_stemedb, stemedb_indexes_dir, w1_single_writer,
                    w2_threads, w3_bulk)
from .workload import ASPECTS, DOMAINS, PREDICATES, encoded_size_stats, generate

W1_COUNT = 200         # durable commits per round
W2_COUNT = 400         # 8 threads x 50
W3_COUNT = 10_000      # 10 batches of 1,000
R1_KEYS = 1000
R2_PREFIXES = 50
ROUNDS = 5


def _info(benchmark, r: dict) -> None:
    lat = latency_summary(r["latencies"])
    benchmark.extra_info.update({"throughput": round(r["throughput"]), "unit": r["unit"],
                                 "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"],
                                 "max_ms": lat["max_ms"]})


# ------------------------------------------------------------- workload

def test_workload_is_deterministic_and_shaped_as_issue_2_says():
    a, b = generate(2000), generate(2000)
    assert a.assertions == b.assertions, "the same (n, seed) must give the same assertions"
    w = generate(20_000)
    size = encoded_size_stats(w)
    assert 225 <= size["mean"] <= 275, f"assertions should be about 250 bytes, mean {size}"
    assert len(w.paths) == len(DOMAINS) * 100 * len(ASPECTS) == 10_000
    assert len(PREDICATES) == 50
    assert all(p.count("/") == 2 for p in w.paths), "paths are domain/entity/aspect"
    assert len({x["timestamp"] for x in w.assertions}) == w.n, "timestamps are unique"
    assert sum(w.key_counts.values()) == w.n == sum(w.prefix_counts.values())
    keys = w.r1_keys(100)
    assert all(w.key_counts[k] > 0 for k in keys), "R1 keys must exist"
    assert all(p.endswith("/") and p.count("/") == 2 for p in w.r2_prefixes(10))
    schemes = {x["source"].split("://")[0] for x in w.assertions if "source" in x}
    assert {"fda", "pubmed", "forum", "blog"} <= schemes


def test_workload_is_valid_for_stemedb():
    from stemedb.model import prepare_assertion
    for a in generate(3000).assertions:
        prepare_assertion(a)        # raises ValidationError naming the field


def test_peer_key_is_blake3_of_sorted_json():
    import blake3
    import orjson
    a = generate(1).assertions[0]
    h, doc = encode_record(a)
    assert h == blake3.blake3(orjson.dumps(a, option=orjson.OPT_SORT_KEYS)).digest()
    d = orjson.loads(doc)
    assert d["hash"] == h.hex() and {k: d[k] for k in a} == a


# --------------------------------------------------------------- writes

def _write_rounds(benchmark, engine_name, fresh, items, write, what):
    """Each round writes ``items`` into a fresh store; every store must hold them all."""
    engines, results = [], []

    def setup():
        eng = fresh(engine_name)
        engines.append(eng)
        return (eng,), {}

    def run(eng):
        results.append(write(eng, items))

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    _info(benchmark, results[-1])
    for eng in engines:
        assert eng.count() == len(items), f"{engine_name}: {what}"


def test_w1_single_writer(benchmark, engine_name, workload, fresh):
    _write_rounds(benchmark, engine_name, fresh, workload.assertions[:W1_COUNT],
                  lambda eng, items: w1_single_writer(eng, items, budget_s=30),
                  "W1 must store every durable record")


def test_w2_eight_threads(benchmark, engine_name, workload, fresh):
    _write_rounds(benchmark, engine_name, fresh, workload.assertions[:W2_COUNT],
                  lambda eng, items: w2_threads(eng, items, threads=8, budget_s=30),
                  "W2 must store every thread's records")


def test_w3_bulk_batches(benchmark, engine_name, workload, fresh):
    _write_rounds(benchmark, engine_name, fresh, workload.assertions[:W3_COUNT],
                  lambda eng, items: w3_bulk(eng, items, batch=1000, budget_s=60),
                  "W3 must store every batch")


# ---------------------------------------------------------------- reads

def test_r1_candidates(benchmark, engine_name, workload, loaded):
    eng = loaded(engine_name)
    keys = workload.r1_keys(R1_KEYS)
    r = benchmark.pedantic(r1_candidates, args=(eng, keys), kwargs={"budget_s": 30},
                           rounds=ROUNDS, iterations=1, warmup_rounds=1)
    _info(benchmark, r)
    assert r["records"] == workload.expected_r1(keys), \
        f"{engine_name}: R1 must return every candidate of each (concept_path, predicate)"


def test_r2_prefix(benchmark, engine_name, workload, loaded):
    eng = loaded(engine_name)
    prefixes = workload.r2_prefixes(R2_PREFIXES)
    r = benchmark.pedantic(r2_prefix, args=(eng, prefixes), kwargs={"budget_s": 30},
                           rounds=ROUNDS, iterations=1, warmup_rounds=1)
    _info(benchmark, r)
    assert r["records"] == workload.expected_r2(prefixes), \
        f"{engine_name}: R2 must return every assertion under each domain/entity/ prefix"


def test_every_engine_returns_the_same_candidates(workload, loaded):
    """Same keys, same number of records, same (concept_path, predicate,
    timestamp) set, for every engine: the engines really do the same work."""
    names = [n for n in ENGINES if not unavailable(n)]
    keys = workload.r1_keys(50, seed=7)
    seen = {}
    for name in names:
        eng = loaded(name)
        got = []
        for cp, p in keys:
            for rec in eng.candidates(cp, p):
                get = (lambda k, rec=rec: rec[k]) if isinstance(rec, dict) else \
                    (lambda k, rec=rec: getattr(rec, k))
                ts = get("timestamp")
                got.append((get("concept_path"), get("predicate"),
                            ts if isinstance(ts, int) else getattr(rec, "timestamp_us") // 10**6))
        seen[name] = sorted(got)
    first = names[0]
    for name in names[1:]:
        assert seen[name] == seen[first], f"{name} and {first} disagree on R1 candidates"
    assert len(seen[first]) == workload.expected_r1(keys)


# ------------------------------------------------------- recovery, space

def test_recovery_reopen(benchmark, engine_name, workload, tmp_path):
    path = str(tmp_path / engine_name)
    eng = open_engine(engine_name, path)
    for batch in workload.batches(1000):
        eng.put_batch(batch)
    eng.close()
    key = workload.r1_keys(1)[0]

    def setup():
        if engine_name == "stemedb":      # force the full rebuild from the WAL
            shutil.rmtree(stemedb_indexes_dir(path), ignore_errors=True)
        return (), {}

    counts = []

    def reopen():
        e = open_engine(engine_name, path)
        e.candidates(*key)
        counts.append(e.count())
        e.close()

    benchmark.pedantic(reopen, setup=setup, rounds=ROUNDS, iterations=1)
    # (--benchmark-disable runs it once, so not ROUNDS counts)
    assert counts and set(counts) == {workload.n}, \
        f"{engine_name}: reopen must find every record, counted {counts}"


def test_stemedb_rebuild_and_snapshot_open(workload, tmp_path):
    why = unavailable("stemedb")
    if why:
        pytest.skip(why)
    path = str(tmp_path / "data")
    eng = StemeAdapter(path)
    for batch in workload.batches(1000):
        eng.put_batch(batch)
    eng.close()
    r = recovery_stemedb(path, workload.r1_keys(1)[0], reps=1, expected=workload.n)
    assert r["count"] == workload.n
    assert not r["notes"], f"recovery findings: {r['notes']}"


def test_disk_and_memory_probe(engine_name, workload, loaded):
    eng = loaded(engine_name)
    path = loaded.paths[engine_name]
    d = disk_usage(engine_name, path, workload.n)
    assert d["allocated"] > 0 and d["bytes_per_assertion"] > 0
    # The memory probe opens the store in another process: close ours first
    # (StemeDB holds LOCK), and reopen afterwards for later tests.
    eng.close()
    del loaded.open[engine_name]
    m = memory_probe(engine_name, path, workload.r1_keys(1)[0], n=workload.n, timeout=120)
    assert m["count"] == workload.n, f"{engine_name}: the fresh process must see every record"
    assert m["probe_records"] == workload.key_counts[workload.r1_keys(1)[0]]
    loaded.open[engine_name] = open_engine(engine_name, path)


# ----------------------------------------------------- issue 3 (lenses)

def _stemedb_or_skip(feature: str):
    why = unavailable("stemedb") or lens_bench.feature_missing(feature)
    if why:
        pytest.skip(f"StemeDB {feature}: {why}")


@pytest.mark.parametrize("variant", ["recency", "authority_decay"])
def test_q1_resolved_query(benchmark, variant, workload, loaded):
    _stemedb_or_skip("query")
    store = loaded("stemedb").store
    fn = lens_bench.q1_variants(store)[variant]
    keys = workload.r1_keys(200, seed=3)
    r = benchmark.pedantic(lens_bench.q1_resolved_query, args=(fn, keys),
                           kwargs={"budget_s": 30}, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    _info(benchmark, r)
    assert r["ops"] == len(keys)


def test_q1_sqlite_select_baseline(benchmark, workload, loaded):
    eng = loaded("sqlite")
    keys = workload.r1_keys(200, seed=3)
    r = benchmark.pedantic(lens_bench.q1_resolved_query, args=(eng.candidates, keys),
                           kwargs={"budget_s": 30}, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    _info(benchmark, r)


def test_c1_cascade(benchmark, tmp_path):
    _stemedb_or_skip("cascade")
    eng = StemeAdapter(str(tmp_path / "data"))
    store = eng.store
    results = []

    def setup():
        root, total = lens_bench.c1_build(store, dependents=500, tag=f"t{len(results)}")
        results.append(total)
        return (root,), {}

    out = []

    def cascade(root):
        out.append(store.retract(hash=root, reason="bench", cascade=True))

    try:
        benchmark.pedantic(cascade, setup=setup, rounds=ROUNDS, iterations=1)
        for r, total in zip(out, results):
            assert r.retracted == total + 1, "a cascade retracts the root and every dependent"
    finally:
        eng.close()


def test_e1_supersede_epoch(benchmark, tmp_path):
    _stemedb_or_skip("epoch")
    eng = StemeAdapter(str(tmp_path / "data"))
    store = eng.store
    try:
        probe = lens_bench.e1_build(store, "big", size=2000, tag="t")
        before = lens_bench._count(store, probe)
        names = iter(range(1000))

        def supersede():
            store.create_epoch(f"next-{next(names)}", supersedes=["big"])

        benchmark.pedantic(supersede, rounds=ROUNDS, iterations=1)
        assert lens_bench._count(store, probe) == 0, "a superseded epoch leaves default queries"
        assert lens_bench._count(store, probe, epoch="big") == before > 0, \
            "a superseded epoch stays reachable by name"
    finally:
        eng.close()


# -------------------------------------------------- the report's logic

def test_percentile_is_nearest_rank():
    v = sorted(float(i) for i in range(1, 101))
    assert percentile(v, 50) == 50 and percentile(v, 99) == 99 and percentile(v, 100) == 100
    assert percentile([3.0], 99) == 3.0 and math.isnan(percentile([], 50))


def test_verdicts_and_report_render():
    cfg = Config.quick()

    def thr(x):
        return {"throughput_median": x, "throughputs": [x], "latency":
                {"p50_ms": 1.0, "p99_ms": 1.5, "max_ms": 2.0, "n": 1}}

    results = {"sqlite": {"W1": thr(1000.0), "W2": thr(1000.0), "DISK": {"bytes_per_assertion": 300}},
               "rocksdb": {"W3": thr(100.0)}, "lmdb": {"R1": thr(10.0), "R2": thr(10.0)},
               "stemedb": {"W1": thr(1500.0), "W2": thr(2000.0), "W3": thr(100.0),
                           "R1": thr(5.0), "DISK": {"bytes_per_assertion": 400},
                           "C1": {"skipped": "not implemented yet"}}}
    rows = {r["id"]: r for r in verdicts(results, cfg, "stemedb", "compiled")}
    assert rows["W1"]["verdict"] == "PASS" and abs(rows["W1"]["value"] - 1.5) < 1e-9
    assert rows["W2"]["verdict"] == "MISS" and "33% short" in rows["W2"]["detail"]
    assert rows["W2-p99"]["verdict"] == "PASS"
    assert rows["W3"]["verdict"] == "PASS"
    assert rows["R1"]["verdict"] == "MISS"
    assert rows["R2"]["verdict"] == "n/a", "no StemeDB figure: not a verdict"
    assert rows["DISK"]["verdict"] == "MISS" and "11% over" in rows["DISK"]["detail"]
    assert rows["C1"]["verdict"] == "n/a" and "not implemented" in rows["C1"]["detail"]
    doc = {"header": {"date_utc": "2026-01-01T00:00:00Z", "cpu": "x", "cores": 2,
                      "cores_usable": 2, "ram_bytes": 2**30, "os": "Linux", "python": "3.11",
                      "python_impl": "CPython", "git_commit": "0" * 40, "versions": {},
                      "loadavg_start": (0, 0, 0), "command": "python -m bench.run"},
           "config": cfg.__dict__, "quick": True, "results": results, "checks": [],
           "diagnostics": {}, "implementation": {"stemedb": "compiled"},
           "verdicts": {"stemedb": list(rows.values())}}
    md = render_markdown(doc)
    assert "| W1 one writer, durable commit per record | >= 1x sqlite | 1.50x" in md
    assert "C1 skipped" not in md or "not implemented yet" in md
