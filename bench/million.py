"""The million-assertion figures of issue 2, in minutes rather than the hour
``python -m bench.run --n 1000000`` takes: open from a snapshot, RSS per
assertion, full rebuild rate, disk per assertion.

    python -m bench.million [--n 1000000] [--rebuilds 3] [--dir DIR]

Loads N assertions (the workload's shape: 10,000 paths, 50 predicates, ~250
bytes) in durable batches of 1,000, closes the store, then measures each
figure in a fresh subprocess (so RSS is the store's, not the loader's):
open with the snapshot (RSS after the open, and again with the read cache
filled to its default bound by queries: the figure the RSS target counts,
the larger of two fills, one per form of answer the cache holds: small
keys' answers with their records, and answers of ~20 candidates holding
frame bodies, asked twice with the audit on),
then open after deleting ``db/indexes`` (rebuild),
``--rebuilds`` times, each figure printed and their median.
Prints one line per figure; each RSS line also says how much of the store's
own mapped files is resident in the process (the snapshot, the WAL
segments: /proc/self/smaps) and how much anonymous memory sits in
transparent huge pages (the figure moves with them,
``bench/results/million-2026-11-27-session10.md``).  The implementation is
the one the environment selects (``STEMEDB_PURE_PYTHON=1`` for the pure path).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PROBE = r"""
import gc, json, os, resource, sys, time
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
def rss_kinds():
    # resident anonymous (heap) and file-backed (mapped files) bytes
    with open("/proc/self/status") as f:
        kv = dict(line.split(":", 1) for line in f if line.startswith(("RssAnon", "RssFile")))
    return {k: int(v.split()[0]) * 1024 for k, v in kv.items()}
def rss_store_maps(root):
    # resident bytes of the store's own mapped files (/proc/self/smaps): the
    # snapshot (db/) and the WAL segments (wal/), the two that can be large;
    # and the anonymous memory in transparent huge pages (numpy advises them)
    out, cur = {"snapshot": 0, "wal": 0, "thp": 0}, None
    db, wal = os.path.join(root, "db") + "/", os.path.join(root, "wal") + "/"
    with open("/proc/self/smaps") as f:
        for line in f:
            if line[:1] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                name = line.split(None, 5)[5].strip() if len(line.split(None, 5)) > 5 else ""
                cur = "snapshot" if name.startswith(db) else "wal" if name.startswith(wal) else None
            elif cur and line.startswith("Rss:"):
                out[cur] += int(line.split()[1]) * 1024
            elif line.startswith("AnonHugePages:"):
                out["thp"] += int(line.split()[1]) * 1024
    return out
import numpy, sortedcontainers, msgspec, orjson, blake3, google_crc32c  # noqa: F401
from stemedb import open_store
import stemedb.core.store, stemedb.core.lens, stemedb.core.query  # noqa: F401
gc.collect(); base = rss(); kinds0 = rss_kinds()
raw = sys.argv[2] == "fill-raw"
t = time.perf_counter(); s = open_store(sys.argv[1], audit=raw); el = time.perf_counter() - t
gc.collect(); used = rss() - base
out = {"open_s": el, "rebuilt": s.rebuilt, "count": s.count, "records": s.replayed,
       "rss_bytes": used, "implementation": s.implementation,
       "rss_maps": rss_store_maps(os.path.abspath(sys.argv[1]))}
if sys.argv[2] in ("fill", "fill-raw"):
    # The issue's figure counts the caches at their default bound: fill the
    # read cache to 98% of it by queries (answers and their records), as a
    # server's would be, then by single record reads if the queries stop
    # short (answers that thrash are admitted one in eight), and read RSS again.
    cache, full = s.reader.cache, lambda: cache.bytes >= 0.98 * cache.max_bytes
    paths, preds, asked, t = s.state.path_names, [f"pred{i}" for i in range(50)], 0, time.perf_counter()
    if raw:
        # The other form an answer takes (reader.Answer): a parent path with
        # its descendants and one predicate, ~20 candidates over ~10 paths,
        # every one on the page; compiled, such an answer holds its
        # candidates' frame bodies (reader.raw_pack).  Each asked twice with
        # the audit on: the answer then holds its audit line's end and its
        # parameters' JSON too, all it ever holds.
        parents = sorted({p.rsplit("/", 1)[0] for p in paths})
        for i in range(len(parents) * len(preds)):
            if full():
                break
            parent = parents[(i * 7919) % len(parents)]      # every (parent, predicate) once
            for _ in range(2):
                s.query(parent, predicate=preds[i // len(parents)], include_descendants=True,
                        limit=100)
            asked += 1
        s.audit.flush()
    for i in range(len(paths) * len(preds)):
        if full():
            break
        s.query(paths[(i * 7919) % len(paths)], predicate=preds[i % 50], limit=10)
        asked += 1
    o = 0
    while not full() and o < s.count:
        s.reader.read_record(o); o += 1
    if s.audit is not None:
        s.audit.flush()
    gc.collect()
    kinds = rss_kinds()
    held = [type(v.held[0]).__name__ for v in list(cache._d.values())
            if type(v) is not tuple and v.held is not None]
    out.update(raw_answers=held.count("bytes"), list_answers=held.count("list"),
               answers_bytes=cache.answer_bytes)
    out.update(rss_full_bytes=rss() - base,
               rss_full_anon=kinds["RssAnon"] - kinds0["RssAnon"],
               rss_full_file=kinds["RssFile"] - kinds0["RssFile"], fill_queries=asked, fill_records=o,
               rss_full_maps=rss_store_maps(os.path.abspath(sys.argv[1])),
               fill_s=time.perf_counter() - t, cache=cache.stats())
out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
print(json.dumps(out))
s.close()
"""


def load(path: str, n: int) -> float:
    from stemedb import open_store
    rnd = random.Random(20260211)
    t = time.perf_counter()
    with open_store(path, audit=False) as s:
        batch = []
        for i in range(n):
            batch.append({
                "concept_path": f"dom{i % 10}/ent{(i // 10) % 100}/asp{(i // 1000) % 10}",
                "predicate": f"pred{rnd.randrange(50)}",
                "value": {"level": rnd.choice(["rare", "common", "none"]), "n": i,
                          "note": "x" * rnd.randrange(40, 80)},
                "confidence": round(rnd.random(), 3), "source": f"pubmed://{rnd.randrange(10**8)}",
                "timestamp": 1_700_000_000 + i})
            if len(batch) == 1000:
                s.put_batch(batch)
                batch = []
        if batch:
            s.put_batch(batch)
    return time.perf_counter() - t


def probe(path: str, fill: str | bool = False) -> dict:
    mode = fill if isinstance(fill, str) else "fill" if fill else "open"
    out = subprocess.run([sys.executable, "-c", PROBE, path, mode],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def maps(m: dict) -> str:
    """The store's mapped files resident, as a probe measured them."""
    return (f"mapped: snapshot {m['snapshot'] / 1e6:.0f} MB, WAL {m['wal'] / 1e6:.0f} MB; "
            f"huge pages {m['thp'] / 1e6:.0f} MB")


def du(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--rebuilds", type=int, default=3,
                    help="full rebuilds to time, each in a fresh process (the median is reported)")
    ap.add_argument("--dir", default=None, help="where the store goes (default: a temp dir)")
    args = ap.parse_args(argv)
    root = args.dir or tempfile.mkdtemp(prefix="stemedb-million-")
    path = os.path.join(root, "data")
    try:
        el = load(path, args.n)
        print(f"load: {args.n:,} assertions in durable batches of 1,000: {el:.1f} s "
              f"({args.n / el:,.0f}/s)")
        wal, db = du(os.path.join(path, "wal")), du(os.path.join(path, "db"))
        print(f"disk: WAL {wal / args.n:.0f} + snapshot {db / args.n:.0f} = "
              f"{(wal + db) / args.n:.0f} bytes/assertion")
        p = probe(path, fill=True)
        print(f"open from snapshot ({p['implementation']}): {p['open_s']:.2f} s, "
              f"RSS {p['rss_bytes'] / p['count']:.0f} bytes/assertion "
              f"({p['rss_bytes'] / 1e6:.0f} MB for {p['count']:,}) after open "
              f"({maps(p['rss_maps'])})")
        # The cache full of each form of answer (reader.Answer): the small
        # keys' (decoded records, and records), then answers of ~20
        # candidates that hold frame bodies (compiled).  The figure is the
        # larger of the two.
        worst = 0.0
        for label, p in (("records and small answers", p),
                         ("answers of ~20 candidates, audit on", probe(path, fill="fill-raw"))):
            c = p["cache"]
            worst = max(worst, p["rss_full_bytes"] / p["count"])
            print(f"RSS with the read cache full ({label}): "
                  f"{p['rss_full_bytes'] / p['count']:.0f} bytes/assertion "
                  f"({p['rss_full_bytes'] / 1e6:.0f} MB: anonymous "
                  f"{p['rss_full_anon'] / 1e6:.0f} MB, file-backed {p['rss_full_file'] / 1e6:.0f} "
                  f"MB ({maps(p['rss_full_maps'])}); "
                  f"cache {c['bytes'] / 2**20:.1f} of {c['max_bytes'] / 2**20:.0f} MiB, "
                  f"answers {p['answers_bytes'] / 2**20:.1f} MiB: {p['raw_answers']:,} holding "
                  f"frame bodies, {p['list_answers']:,} records; {c['entries']:,} entries, after "
                  f"{p['fill_queries']:,} queries and {p['fill_records']:,} record reads)")
        print(f"RSS with the read cache full: {worst:.0f} bytes/assertion, the larger "
              f"(target <= 300, caches at their default bound)")
        # One open is one sample on a shared machine: each rebuild deletes
        # the indexes again (the previous one wrote them), the median is the figure.
        rates = []
        for _ in range(args.rebuilds):
            shutil.rmtree(os.path.join(path, "db", "indexes"))
            p = probe(path)
            rates.append(p["records"] / p["open_s"])
            print(f"rebuild from WAL ({p['implementation']}): {p['open_s']:.2f} s for "
                  f"{p['records']:,} records = {rates[-1]:,.0f} records/s "
                  f"(open time, snapshot write included)")
        if len(rates) > 1:
            print(f"rebuild, median of {len(rates)}: {statistics.median(rates):,.0f} records/s "
                  f"(each: {', '.join(f'{r:,.0f}' for r in rates)})")
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
