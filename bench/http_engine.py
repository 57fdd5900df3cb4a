"""The engine alone on ``bench.bench_http``'s consensus-query workload: the
read cache's answer hit rate at steady state and where a query's CPU goes.

    python -m bench.http_engine --store /tmp/httpq            # builds it once (~25 s)
    python -m bench.http_engine --store /tmp/httpq --stages   # + the miss's stages
    python -m bench.http_engine --store /tmp/httpq --read-cache-bytes 125829120

The store is bench_http's (``query_workload``: 1,000,000 assertions, 20
candidates a key, the ~4,771 distinct keys its clients cycle over) and the
queries are one client's stride over them (``build_query_store``'s order:
a cyclic scan, an LRU cache's worst case), through ``Store.query`` with the
consensus lens, one thread, no HTTP.  A first pass of ``--queries`` brings
the cache to its steady state; the second is measured: CPU per query
(process time, the audit writer's included), the answer and record hits
and misses over it, and what the cache holds at its end.

``--stages`` wraps the functions a miss runs through (inclusive thread CPU;
each wrapper adds ~0.5 us): what a miss is made of, not a figure to compare
with the unwrapped run.  ``--what-if`` is an experiment, not the engine's
behaviour: ``unheld`` makes every answer without its records (the
``held`` list), ``unheld-thrash`` only while the answers thrash; it says
what a more compact answer would be worth on this workload.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import time


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="the store (built here if missing)")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--queries", type=int, default=20_000, help="per pass (warm-up, measured)")
    ap.add_argument("--read-cache-bytes", type=int, default=None)
    ap.add_argument("--stages", action="store_true")
    ap.add_argument("--what-if", choices=("unheld", "unheld-thrash"), default=None)
    a = ap.parse_args(argv)

    from stemedb.core import query as Q
    from stemedb.core import reader as R
    from stemedb.core import readcache as RC
    from stemedb.core.store import open_store
    keys_file = os.path.join(a.store, "http-keys.json")
    if not os.path.exists(keys_file):
        from .bench_http import query_workload
        assertions, keys, shape = query_workload(a.n, a.candidates)
        with open_store(a.store, durability="none") as s:
            for i in range(0, len(assertions), 5000):
                s.put_batch(assertions[i:i + 5000])
        del assertions
        with open(keys_file, "w") as f:
            json.dump([list(k) for k in keys], f)
        print("built:", shape)
    with open(keys_file) as f:
        keys = [tuple(k) for k in json.load(f)]

    acc: collections.Counter = collections.Counter()
    cnt: collections.Counter = collections.Counter()
    order: list[str] = []

    def wrap(owner, name: str, label: str) -> None:
        fn = getattr(owner, name)
        order.append(label)

        def timed(*args, **kw):
            t = time.thread_time_ns()
            try:
                return fn(*args, **kw)
            finally:
                acc[label] += time.thread_time_ns() - t
                cnt[label] += 1
        setattr(owner, name, timed)

    if a.stages:
        from stemedb.core import qaudit
        wrap(Q, "gather", "gather (the candidates' ordinals)")
        wrap(Q, "rows_answer", "rows_answer (lens over the columns, winners, Answer)")
        wrap(Q, "rank_rows", "  rank_rows (the lens's rows and ranking)")
        wrap(R.Reader, "assertions", "  Reader.assertions (the candidates decoded)")
        wrap(RC.ReadCache, "take", "    ReadCache.take (record cache lookups)")
        wrap(R.Reader, "_fill", "    Reader._fill (missed records read, sized, cached)")
        wrap(R.Reader, "_read_many", "      Reader._read_many (pread/mapping + CRC + decode)")
        wrap(RC.ReadCache, "add_records", "      ReadCache.add_records")
        wrap(RC.Answer, "__init__", "  Answer.__init__ (its size estimate)")
        wrap(Q, "_audit", "_audit (the entry, on a miss)")
        wrap(qaudit, "_tail", "  qaudit._tail (the line's end the answer keeps)")

    opts = {} if a.read_cache_bytes is None else {"read_cache_bytes": a.read_cache_bytes}
    s = open_store(a.store, durability="none", **opts)
    cache = s.reader.cache
    if cache is None:
        raise SystemExit("the read cache is off (--read-cache-bytes 0): nothing to measure")
    if a.what_if:
        made = Q.Answer

        def answer(token, results, ords, active, shown=None, raw=None, tail=None):
            if a.what_if == "unheld" or cache.answer_thrashing:
                shown = raw = tail = None
            return made(token, results, ords, active, shown, raw, tail)
        Q.Answer = answer       # type: ignore[misc, assignment]

    def one_pass(start: int) -> None:
        query = s.query
        for i in range(start, start + a.queries):
            path, pred = keys[(i * 104729) % len(keys)]
            query(path, predicate=pred, lens="consensus")
        if s.audit is not None:
            s.audit.flush()
    try:
        one_pass(0)
        acc.clear()
        cnt.clear()
        h0, m0 = cache.answer_hits, cache.answer_misses
        rh0, rm0 = cache.record_hits, cache.record_misses
        c0 = time.process_time()
        one_pass(a.queries)
        cpu = time.process_time() - c0
        h, m = cache.answer_hits - h0, cache.answer_misses - m0
        print(f"{a.queries:,} queries: CPU {1e6 * cpu / a.queries:.1f} us a query; answers "
              f"{h:,} hits, {m:,} misses ({100 * h / max(h + m, 1):.1f}% hits); records "
              f"{cache.record_hits - rh0:,} hits, {cache.record_misses - rm0:,} misses; cache "
              f"{cache.bytes / 2**20:.1f} of {cache.max_bytes / 2**20:.0f} MiB, answers "
              f"{cache.answer_bytes / 2**20:.1f} MiB, {len(cache):,} entries, thrashing "
              f"{cache.thrashing}, answers thrashing {cache.answer_thrashing}")
        held = [type(v.held[0]).__name__ if v.held is not None else "none"
                for v in list(cache._d.values()) if type(v) is not tuple]
        if held:
            est = cache.answer_bytes / len(held)
            print(f"  answers held: {held.count('bytes'):,} as frame bodies, "
                  f"{held.count('list'):,} as records, {held.count('none'):,} without; "
                  f"{est:,.0f} estimated bytes an answer")
        for label in order:
            print(f"  {label}: {acc[label] / 1e3 / max(cnt[label], 1):.1f} us a call "
                  f"({cnt[label]:,} calls)")
    finally:
        s.close()


if __name__ == "__main__":
    main()
