"""R1's StemeDB slices timed with the real peers' slices between them, as
``bench.run`` asks them, on stores ``bench.run --keep`` left behind.

``bench.run``'s R1 interleaves slices of 250 queries engine by engine
(stemedb, sqlite, lmdb, rocksdb, the first rotating); a warm compiled query
costs ~5 us alone but ~9 us there: what the peers' slices evict or leave
behind lands in ours.  This reopens the four stores, asks the warm-up (a
fifth of the keys) and ``--passes`` passes of the workload's 5,000 R1 keys
in that order, and prints StemeDB's query and settle (audit flush) time a
query, pass by pass, with the peers (``--peers sqlite,lmdb,rocksdb``, the
default) or without (``--peers ''``)::

    python -m bench.run --only R1 --keep --workdir /tmp/stores --out /tmp/x
    python -m bench.r1_interleave --stores /tmp/stores/main --passes 6
    python -m bench.r1_interleave --stores /tmp/stores/main --peers ''

``--marks FILE`` writes each StemeDB slice's CLOCK_MONOTONIC start and end
(ns, one pair a line) for ``perf record -k CLOCK_MONOTONIC``: keep only the
samples inside them (``--cut FILE`` reads ``perf script -F time,sym``'s
output on stdin and prints the symbols' shares inside the slices).
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections import Counter

from .peers import open_engine
from .suite import r1_candidates
from .workload import generate

KEYS = 5_000
SLICE = 250


def cut(marks: str) -> None:
    """Symbols' sample shares inside the marked slices (perf script on stdin)."""
    spans = []
    with open(marks) as f:
        for line in f:
            a, b = line.split()
            spans.append((int(a), int(b)))
    spans.sort()
    import bisect
    starts = [a for a, _ in spans]
    inside, total = Counter(), 0
    for line in sys.stdin:
        parts = line.split()
        if len(parts) < 2 or not parts[0].endswith(":"):
            continue
        t = int(round(float(parts[0][:-1]) * 1e9))
        i = bisect.bisect_right(starts, t) - 1
        if i < 0 or t > spans[i][1]:
            continue
        total += 1
        inside[" ".join(parts[1:])] += 1
    print(f"{total} samples inside {len(spans)} slices")
    for sym, n in inside.most_common(45):
        print(f"{n * 100 / total:6.2f}%  {n:6d}  {sym[:110]}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stores", help="bench.run --keep's stores of one pass (DIR/main)")
    ap.add_argument("--peers", default="sqlite,lmdb,rocksdb", help="peers between our slices")
    ap.add_argument("--passes", type=int, default=6)
    ap.add_argument("--marks", help="write our slices' CLOCK_MONOTONIC spans here")
    ap.add_argument("--cut", help="read perf script output on stdin, keep these spans' samples")
    a = ap.parse_args(argv)
    if a.cut:
        return cut(a.cut)
    w = generate(200_000)
    keys = w.r1_keys(KEYS)
    gc.collect()
    gc.freeze()
    names = ["stemedb"] + [p for p in a.peers.split(",") if p]
    engs = {n: open_engine(n, os.path.join(a.stores, n, "load-0")) for n in names}
    mono = time.CLOCK_MONOTONIC
    marks = []
    ours = engs["stemedb"]
    slices = [keys[i:i + SLICE] for i in range(0, len(keys), SLICE)]
    try:
        for p in range(a.passes + 1):
            todo = slices[: max(1, len(slices) // 5)] if p == 0 else slices
            tq = ts = 0.0
            for i, chunk in enumerate(todo):
                k = i % len(names)
                for name in names[k:] + names[:k]:
                    if name != "stemedb":
                        r1_candidates(engs[name], chunk)
                        continue
                    m0 = time.clock_gettime_ns(mono)
                    t0 = time.perf_counter()
                    for args in chunk:
                        ours.candidates(*args)
                    t1 = time.perf_counter()
                    ours.settle()
                    t2 = time.perf_counter()
                    marks.append((m0, time.clock_gettime_ns(mono)))
                    tq += t1 - t0
                    ts += t2 - t1
            n = sum(len(c) for c in todo)
            print(f"{ours.store.implementation} peers={a.peers or '-'} pass {p}: "
                  f"query {tq / n * 1e6:.2f} us + settle {ts / n * 1e6:.2f} us", flush=True)
    finally:
        for e in engs.values():
            e.close()
    if a.marks:
        with open(a.marks, "w") as f:
            for m0, m1 in marks:
                f.write(f"{m0} {m1}\n")


if __name__ == "__main__":
    main()
