"""Bytes per query audit entry, read back from the files the store wrote
(docs/semantics.md, "Audit": "An entry is bounded").

    python -m bench.audit_size                 # ~20 s
    python -m bench.audit_size --out FILE      # also write the markdown report

An embedded store (``open_store``, audit on) holds:

* ``audit/hot`` / ``p``: one key with ``--hot`` (10,000) candidates;
* ``audit/small/kNNN`` / ``p``: keys with 2, 5, 10, 20, 50, 100 and 200
  candidates (``--small-keys`` of each);
* ``audit/wide`` with 200 predicates of 3 candidates each (a query without
  ``predicate`` answers 200 keys);
* ``audit/tree/cNNN`` / ``p``: 200 child paths of 3 candidates each (a query
  of ``audit/tree`` with ``include_descendants`` answers 200 keys).

Every lens is asked of the hot key (``limit=1`` and ``limit=100``) and of
every small key; the wide path and the tree with ``limit`` 1, 100 and 1000;
then each lens's second page of the wide path (``cursor``).  Queries run on one thread with
``agent`` set to a 16-character id (over HTTP the agent is the API key id).
The store is closed (the audit writer flushes), then every
``audit/queries-*.log`` line is read back: the number of lines must equal the
number of queries, and each line's ``params`` must be the query that made it
(same order), else the run fails.  An entry's size is its line's bytes,
newline included.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import orjson

from stemedb.core.audit import file_numbers
from stemedb.core.lens import LENSES
from stemedb.core.query import AUDIT_CONTRIBUTORS, AUDIT_RESULTS
from stemedb.core.store import open_store

T0 = 1_709_294_400
AGENT = "bench-agent-0001"   # 16 characters, like a short API key id
SMALL_SIZES = (2, 5, 10, 20, 50, 100, 200)
FAN = 200                    # predicates of audit/wide, children of audit/tree


def _assertion(path: str, predicate: str, i: int) -> dict:
    return {"concept_path": path, "predicate": predicate,
            "value": ("yes", "no", "maybe", {"n": i % 7}, i % 11)[i % 5],
            "confidence": round(0.05 + (i * 37 % 95) / 100, 3),
            "source": f"pubmed://{100000 + i}" if i % 3 else f"forum://thread/{i}",
            "timestamp": T0 + i * 61}


def load(store, hot: int, small_keys: int) -> list[str]:
    """Write the data; return the small keys' paths."""
    batch: list[dict] = []

    def put(a: dict) -> None:
        batch.append(a)
        if len(batch) == 1000:
            store.put_batch(batch)
            batch.clear()

    for i in range(hot):
        put(_assertion("audit/hot", "p", i))
    small = []
    for size in SMALL_SIZES:
        for k in range(small_keys):
            path = f"audit/small/n{size}k{k}"
            small.append(path)
            for i in range(size):
                put(_assertion(path, "p", i))
    for j in range(FAN):
        for i in range(3):
            put(_assertion("audit/wide", f"p{j:03d}", j * 3 + i))
            put(_assertion(f"audit/tree/c{j:03d}", "p", j * 3 + i))
    if batch:
        store.put_batch(batch)
    return small


def queries(small: list[str], hot: int) -> list[tuple[str, dict]]:
    """(type, query arguments) in the order they are run."""
    out: list[tuple[str, dict]] = []
    for lens in LENSES:
        for limit in (1, 100):
            out.append((f"hot key, {hot:,} candidates, limit={limit}",
                        {"concept_path": "audit/hot", "predicate": "p", "lens": lens,
                         "limit": limit}))
        for path in small:
            n = path.split("/")[-1][1:].split("k")[0]
            out.append((f"one key, {n} candidates",
                        {"concept_path": path, "predicate": "p", "lens": lens}))
        for limit in (1, 100, 1000):
            out.append((f"no predicate, {FAN} keys, limit={limit}",
                        {"concept_path": "audit/wide", "lens": lens, "limit": limit}))
            out.append((f"include_descendants, {FAN} keys, limit={limit}",
                        {"concept_path": "audit/tree", "include_descendants": True,
                         "lens": lens, "limit": limit}))
    return out


def measure(args) -> dict:
    tmp = tempfile.mkdtemp(prefix="stemedb-audit-size-")
    try:
        path = os.path.join(tmp, "data")
        store = open_store(path, durability="batch", audit=True)
        ran: list[tuple[str, dict]] = []
        try:
            t = time.monotonic()
            small = load(store, args.hot, args.small_keys)
            load_s = time.monotonic() - t
            t = time.monotonic()
            for kind, q in queries(small, args.hot):
                store.query(agent=AGENT, **q)
                ran.append((kind, q))
            # a second page: each lens's wide query of limit=100 again, then its next page
            for lens in LENSES:
                first = {"concept_path": "audit/wide", "lens": lens, "limit": 100}
                r = store.query(agent=AGENT, **first)
                ran.append((f"no predicate, {FAN} keys, limit=100", first))
                if r.next_cursor is None:
                    raise SystemExit(f"no next_cursor for {first}")
                nxt = dict(first, cursor=r.next_cursor)
                store.query(agent=AGENT, **nxt)
                ran.append(("no predicate, second page (cursor), limit=100", nxt))
            query_s = time.monotonic() - t
        finally:
            store.close()
        audit_dir = os.path.join(path, "audit")
        lines: list[bytes] = []
        for number in file_numbers(audit_dir):
            with open(os.path.join(audit_dir, f"queries-{number:06d}.log"), "rb") as f:
                lines += f.read().splitlines(keepends=True)
        return summarize(ran, lines, load_s, query_s, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def summarize(ran, lines, load_s, query_s, args) -> dict:
    """Check that line i is query i's entry; sizes by query type."""
    if len(lines) != len(ran):
        raise SystemExit(f"the audit has {len(lines)} lines; {len(ran)} queries ran")
    by_type: dict[str, list[int]] = {}
    worst: dict[str, dict] = {}
    for (kind, q), raw in zip(ran, lines):
        e = orjson.loads(raw)
        p = e["params"]
        for k, v in q.items():
            if p.get(k) != v:
                raise SystemExit(f"audit entry params {p} are not the query {q}")
        if e.get("agent") != AGENT:
            raise SystemExit(f"audit entry names agent {e.get('agent')!r}")
        by_type.setdefault(kind, []).append(len(raw))
        if len(raw) >= max(by_type[kind]):
            worst[kind] = {"bytes": len(raw), "lens": p.get("lens"),
                           "result_hashes": len(e["result_hashes"]),
                           "result_hashes_more": e["result_hashes_more"],
                           "contributing": len(e["contributing"]),
                           "contributing_more": e["contributing_more"]}
    sizes = [len(x) for x in lines]
    return {"queries": len(lines), "hot": args.hot, "small_keys": args.small_keys,
            "load_s": load_s, "query_s": query_s, "all": _stats(sizes),
            "types": {t: _stats(v) | {"worst": worst[t]} for t, v in by_type.items()}}


def _stats(v: list[int]) -> dict:
    return {"n": len(v), "min": min(v), "median": statistics.median(v), "max": max(v)}


def _commit() -> str:
    try:
        c = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True, timeout=10, cwd=os.path.dirname(__file__)).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "stemedb"], capture_output=True,
                               text=True, timeout=10,
                               cwd=os.path.dirname(os.path.dirname(__file__))).stdout.strip()
        return c + (" (stemedb/ has uncommitted changes)" if dirty else "")
    except OSError:
        return "?"


def report(doc: dict) -> str:
    a = doc["all"]
    lines = ["# Query audit: bytes per entry", "",
             "- command: `.venv/bin/python -m bench.audit_size`",
             f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; commit {_commit()}; "
             f"Python {sys.version.split()[0]}; "
             f"implementation {'pure' if os.environ.get('STEMEDB_PURE_PYTHON') else 'default'}",
             f"- data: one key of {doc['hot']:,} candidates; {doc['small_keys']} keys each of "
             f"{', '.join(map(str, SMALL_SIZES))} candidates; a path with {FAN} predicates and a "
             f"tree of {FAN} children, 3 candidates each; every lens ({', '.join(LENSES)})",
             f"- {doc['queries']:,} queries, agent a 16-character id; sizes are the lines of "
             f"`audit/queries-*.log` read back after close (one line per query, checked), "
             f"newline included",
             "", f"All entries: min {a['min']:,} B, median {a['median']:,.0f} B, max {a['max']:,} B.",
             "", "| query | entries | min B | median B | max B | largest: lens, result_hashes "
             "(+more), contributing (+more) |", "|---|---:|---:|---:|---:|---|"]
    for t, s in doc["types"].items():
        w = s["worst"]
        lines.append(f"| {t} | {s['n']} | {s['min']:,} | {s['median']:,.0f} | {s['max']:,} | "
                     f"{w['lens']}, {w['result_hashes']} (+{w['result_hashes_more']}), "
                     f"{w['contributing']} (+{w['contributing_more']}) |")
    one = [s for t, s in doc["types"].items() if t.startswith(("hot key", "one key"))]
    many = [s for t, s in doc["types"].items() if not t.startswith(("hot key", "one key"))]
    lines += ["", f"Reading it: a query of one key writes at most {max(s['max'] for s in one):,} B "
              f"whatever its candidates (the entry lists {AUDIT_CONTRIBUTORS} contributors and "
              f"counts the rest); a query answering many keys (no `predicate`, or "
              f"`include_descendants`) lists up to {AUDIT_RESULTS} winners' hashes too: "
              f"{min(s['min'] for s in many):,}-{max(s['max'] for s in many):,} B here with "
              f"{FAN} keys. Sizes do not depend on the machine's load."]
    lines += ["", f"Load {doc['load_s']:.1f} s, queries {doc['query_s']:.1f} s (not figures: "
              f"the machine is shared).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hot", type=int, default=10_000, help="candidates of the hot key")
    ap.add_argument("--small-keys", type=int, default=3, help="keys of each small size")
    ap.add_argument("--out", help="write the markdown report here too")
    args = ap.parse_args(argv)
    text = report(measure(args))
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
