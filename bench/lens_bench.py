"""Issue 3's benchmarks: resolved queries, retraction cascades, epochs.

Run by ``bench/run.py`` (workloads ``Q1``, ``C1``, ``E1``) on the store the
engine workloads loaded, after the space and recovery figures are taken
(these add records).  The targets are stated at 1,000,000 assertions
(``python -m bench.run --n 1000000``):

* ``Q1`` a resolved query (``recency``; ``authority`` with ``decay``) for one
  ``(concept_path, predicate)``: at least 1.0x sqlite3 fetching the same
  candidates with an indexed SELECT (and decoding them).  Measured over the
  workload's R1 keys (a few candidates each) and over one hot key with
  :data:`HOT_CANDIDATES` candidates from every source class.
* ``C1`` ``store.retract(hash=root, cascade=True)`` over 10,000 dependents
  (two levels of ``derived_from``): under 100 ms.
* ``E1`` ``store.create_epoch(name, supersedes=[big])`` where ``big`` holds
  100,000 assertions: under 10 ms, and the same as superseding an epoch of 10.

Each needs engine features that arrive with issue 3; :func:`feature_missing`
tries them on a throwaway store first and the workload is skipped with the
reason when one is missing.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from time import perf_counter

from .suite import latency_summary, median, timed_calls

HOT_PATH = "bench/hot/claim"
HOT_PREDICATE = "verdict"
HOT_CANDIDATES = 1000
_HOT_SOURCES = ("fda://label/2024-01", "pubmed://38012345", "cohort://ukb/1",
                "guideline://nice/ng28", "forum://r/x/1", "blog://example.com/p")
_T0 = 1700000000


class Skip(Exception):
    """The store lacks what this workload measures; the message says what."""


def _probe_store():
    from stemedb import open_store
    d = tempfile.mkdtemp(prefix="stemedb-lens-probe-")
    return d, open_store(os.path.join(d, "data"), durability="none")


def feature_missing(feature: str) -> str | None:
    """None when the store supports ``feature`` ("query", "cascade", "epoch"),
    else the reason (one line)."""
    try:
        d, s = _probe_store()
    except Exception as e:  # noqa: BLE001
        return f"open_store failed: {type(e).__name__}: {e}"
    try:
        base = {"concept_path": "probe/a", "predicate": "p", "value": 1, "confidence": 0.5,
                "source": "fda://x", "timestamp": _T0}
        root = s.put(base)
        if root is None:
            return "store.put returned None (the engine is a skeleton)"
        if feature == "query":
            for lens, decay in (("recency", False), ("authority", True)):
                r = s.query("probe/a", predicate="p", lens=lens, decay=decay)
                if r is None or not r.results or r.results[0].get("winner") is None:
                    return f"store.query(lens={lens!r}, decay={decay}) gave no winner"
        elif feature == "cascade":
            child = s.put({**base, "concept_path": "probe/b", "derived_from": [root.hash]})
            r = s.retract(hash=root.hash, reason="probe", cascade=True)
            if r is None:
                return "store.retract returned None (not implemented yet)"
            if r.retracted != 2:
                return (f"store.retract(cascade=True) retracted {r.retracted} of 2 "
                        f"(root and one dependent {child.hash[:12]})")
        elif feature == "epoch":
            if s.create_epoch("probe-old") is None:
                return "store.create_epoch returned None (not implemented yet)"
            s.put({**base, "concept_path": "probe/e", "epoch": "probe-old"})
            s.create_epoch("probe-new", supersedes=["probe-old"])
            r = s.query("probe/e")
            if r.assertions:
                return "a superseded epoch's assertion still shows in a default query"
        else:
            raise ValueError(feature)
    except NotImplementedError as e:
        return f"not implemented yet (NotImplementedError{': ' + str(e) if str(e) else ''})"
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    finally:
        try:
            s.close()
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return None


def hot_key_assertions(n: int = HOT_CANDIDATES) -> list[dict]:
    """``n`` candidates of one key: every source class, 5 competing values."""
    return [{"concept_path": HOT_PATH, "predicate": HOT_PREDICATE,
             "value": ("rare", "common", "very rare", "unknown", "none")[i % 5],
             "confidence": round(0.3 + 0.7 * ((i * 37) % 100) / 100, 2),
             "source": _HOT_SOURCES[i % len(_HOT_SOURCES)] + f"/{i}",
             "timestamp": _T0 + i * 3600}
            for i in range(n)]


def _query_loop(fn, keys, budget_s: float) -> dict:
    lat, wall, _ = timed_calls(fn, keys, budget_s)
    return {"ops": len(lat), "seconds": wall, "throughput": len(lat) / wall,
            "unit": "queries/s", "latency_of": "query", "latencies": lat,
            "truncated": len(lat) < len(keys)}


def q1_variants(store) -> dict:
    """name -> fn(concept_path, predicate) for StemeDB's resolved queries."""
    def recency(cp, p):
        return store.query(cp, predicate=p, lens="recency")

    def authority_decay(cp, p):
        return store.query(cp, predicate=p, lens="authority", decay=True)

    return {"recency": recency, "authority_decay": authority_decay}


def q1_resolved_query(fn, keys, *, budget_s: float = 60.0) -> dict:
    """Q1: one resolved query per key; queries/s and latency per query."""
    return _query_loop(fn, keys, budget_s)


def c1_build(store, *, dependents: int = 10_000, tag: str = "0",
             budget_s: float = 120.0) -> tuple[str, int]:
    """A root with ``dependents`` below it in two levels of ``derived_from``
    (sqrt(d) children, the rest grandchildren).  Returns (root hash, count of
    dependents)."""
    children = max(1, int(math.isqrt(dependents)))
    per_child = max(0, (dependents - children) // children)
    base = f"bench/cascade/{tag}"
    root = store.put({"concept_path": f"{base}/root", "predicate": "claim", "value": "root",
                      "confidence": 0.9, "source": "pubmed://1", "timestamp": _T0})
    kids = store.put_batch([
        {"concept_path": f"{base}/c{i:04d}", "predicate": "claim", "value": i,
         "confidence": 0.8, "derived_from": [root.hash], "timestamp": _T0 + 1 + i}
        for i in range(children)])
    pending = [{"concept_path": f"{base}/c{i:04d}/g{j:04d}", "predicate": "claim",
                "value": j, "confidence": 0.7, "derived_from": [k.hash],
                "timestamp": _T0 + 100_000 + i * per_child + j}
               for i, k in enumerate(kids) for j in range(per_child)]
    deadline = perf_counter() + budget_s
    for i in range(0, len(pending), 1000):
        store.put_batch(pending[i:i + 1000])
        if perf_counter() > deadline:
            raise Skip(f"C1 setup of {len(pending)} grandchildren exceeded {budget_s:.0f}s")
    return root.hash, children + len(pending)


def c1_cascade(store, *, dependents: int = 10_000, tag: str = "0",
               budget_s: float = 120.0) -> dict:
    """C1: :func:`c1_build`, then time ``retract(hash=root, cascade=True)``."""
    t_setup = perf_counter()
    root, total = c1_build(store, dependents=dependents, tag=tag, budget_s=budget_s)
    setup_s = perf_counter() - t_setup
    t0 = perf_counter()
    r = store.retract(hash=root, reason="benchmark cascade", cascade=True)
    dt = perf_counter() - t0
    ok = r.retracted == total + 1
    return {"dependents": total, "retracted": r.retracted, "seconds": dt, "setup_s": setup_s,
            "correct": ok,
            "note": None if ok else f"retracted {r.retracted}, expected {total + 1} "
                                    f"(root + {total} dependents)"}


def e1_build(store, name: str, *, size: int, tag: str, budget_s: float = 300.0) -> str:
    """Epoch ``name`` holding ``size`` assertions under ``bench/epoch/<tag>/<name>/``."""
    store.create_epoch(name, description="benchmark: an epoch to supersede")
    base = f"bench/epoch/{tag}/{name}"
    deadline = perf_counter() + budget_s
    items = [{"concept_path": f"{base}/e{i % 100:02d}", "predicate": "fact", "value": i,
              "confidence": 0.5, "epoch": name, "timestamp": _T0 + i} for i in range(size)]
    for i in range(0, size, 1000):
        store.put_batch(items[i:i + 1000])
        if perf_counter() > deadline:
            raise Skip(f"E1 setup of {size} assertions exceeded {budget_s:.0f}s")
    return f"{base}/e00"


def _count(store, path: str, **kw) -> int:
    r = store.query(path, predicate="fact", limit=1, **kw)
    return r.results[0]["candidates_count"] if r.results else 0


def e1_epoch(store, *, size: int = 100_000, small: int = 10, reps: int = 3,
             tag: str = "0", budget_s: float = 300.0) -> dict:
    """E1: an epoch holding ``size`` assertions and one holding ``small``;
    time ``create_epoch(new, supersedes=[...])`` of each, ``reps`` times (the
    later ones supersede an already superseded epoch, which costs the same),
    then check the big epoch left default queries and stays reachable."""
    big, little = f"bench-big-{tag}", f"bench-small-{tag}"
    t_setup = perf_counter()
    probe = e1_build(store, big, size=size, tag=tag, budget_s=budget_s)
    e1_build(store, little, size=small, tag=tag, budget_s=budget_s)
    setup_s = perf_counter() - t_setup
    visible_before = _count(store, probe)
    big_s, small_s = [], []
    for r in range(reps):
        t0 = perf_counter()
        store.create_epoch(f"bench-next-{tag}-{r}", supersedes=[big])
        big_s.append(perf_counter() - t0)
        t0 = perf_counter()
        store.create_epoch(f"bench-next-small-{tag}-{r}", supersedes=[little])
        small_s.append(perf_counter() - t0)
    visible_after = _count(store, probe)
    reachable = _count(store, probe, epoch=big)
    ok = visible_after == 0 and reachable == visible_before > 0
    return {"size": size, "small": small, "big_s": big_s, "small_s": small_s,
            "big_median_s": median(big_s), "small_median_s": median(small_s),
            "big_latency": latency_summary(big_s), "setup_s": setup_s, "correct": ok,
            "note": None if ok else (
                f"{probe}: before superseding {visible_before} candidates; after, a default "
                f"query counts {visible_after} (expected 0) and epoch={big} counts "
                f"{reachable} (expected {visible_before})")}


def lens_stage(store, sizes=(4, 16, 64, 250, 1000), reps_budget: int = 4000) -> list[dict]:
    """The lens stage of one key alone, per query, CPU time (the least of 7
    loops): the Assertion path (every candidate decoded, the lens over
    Assertions: ``query.resolve_groups``, what a key below
    ``query.ROWS_FROM`` takes) against the columns path
    (``query.columns_resolution``: compiled ``_query.resolve_columns``, or
    in the pure build lens.py over rows read from the columns), over the
    first n candidates of the hot key (:func:`hot_key_assertions`, stored
    first).  No page decode, no audit: the stage the columns replace."""
    from time import process_time
    from stemedb.core import query as Q
    r = store.reader
    out = []
    for lens_name, decay in (("recency", False), ("consensus", False), ("authority", True)):
        lens_obj = Q.get_lens(lens_name)
        f = Q.parse_filters(decay=decay)
        with r.lock:
            active, _ = Q.gather(r, [HOT_PATH], HOT_PREDICATE, f)
        f.at_us = at = r.clock()
        for n in sizes:
            ords = active[:n]

            def decoded():
                with r.lock:
                    cands = Q.shown_many(r, ords, f)
                    ctx = Q._context(r, f, cands, ords, need_votes=False)
                Q.resolve_groups(lens_obj, cands, ctx, HOT_PATH, HOT_PREDICATE, False)

            def columns():
                with r.lock:
                    Q.columns_resolution(r, lens_obj, ords, at, decay)

            reps = max(5, reps_budget // n)
            best = {}
            for name, fn in (("decoded", decoded), ("columns", columns)):
                fn()
                t = float("inf")
                for _ in range(7):
                    t0 = process_time()
                    for _ in range(reps):
                        fn()
                    t = min(t, (process_time() - t0) / reps)
                best[name] = t * 1e6
            out.append({"lens": lens_name + (" + decay" if decay else ""), "n": n,
                        "decoded_us": best["decoded"], "columns_us": best["columns"]})
    return out


if __name__ == "__main__":
    # python -m bench.lens_bench: the lens stage table (lens_stage) for the
    # implementation in use (STEMEDB_PURE_PYTHON=1 for the pure one)
    from stemedb import open_store
    from stemedb.core import qfast
    d = tempfile.mkdtemp(prefix="stemedb-lens-stage-")
    try:
        s = open_store(os.path.join(d, "data"), durability="none", audit=False)
        s.put_batch(hot_key_assertions())
        rows = lens_stage(s)
        s.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(f"lens stage, us per query (CPU), {'compiled' if qfast.COMPILED else 'pure'}")
    print("| lens | candidates | decoded + lens over Assertions | columns | ratio |")
    print("|---|---|---|---|---|")
    for x in rows:
        print(f"| {x['lens']} | {x['n']:,} | {x['decoded_us']:,.1f} | {x['columns_us']:,.1f} | "
              f"{x['decoded_us'] / x['columns_us']:.1f}x |")
