"""R1's warm queries alone, as ``bench.run`` asks them, for instruction
counts (callgrind) or CPU time that a shared machine's load does not move.

``bench.run``'s R1 median is a warm run: every key's answer is already in
the read cache, so a query is ``StemeAdapter.candidates`` (``store.query``
with ``limit=1000``, paging) and ``settle()`` (the query audit's flush) after
each slice of 250.  This runs the same calls over the same 5,000 keys of
the 200,000-assertion workload: one untimed pass, then ``--reps`` passes.

    python -m bench.r1_warm --store /tmp/r1store            # builds it once, then CPU us/query
    # instructions a warm query, on the query thread alone:
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=cg.2 \\
        python -m bench.r1_warm --store /tmp/r1store --reps 2
    valgrind ... --callgrind-out-file=cg.4 python -m bench.r1_warm --store /tmp/r1store --reps 4
    # (summary of cg.4-01 minus cg.2-01) / 10,000

The difference of two runs leaves out the start, the open and the first
two passes (which make the answers and what they keep).

``--passes N`` times every pass from the open instead, the first ones
included: pass 1 makes the answers (cold), pass 2 is each answer's first
hit (what ``bench.run``'s R1 run 2 mostly is: its warm-up covers a fifth of
the keys), pass 3 on the steady warm hit.  ``--twice`` asks each key twice
in pass 1 (its first hit done there), so pass 2 against pass 3 shows what
warms up after an answer's first hit::

    python -m bench.r1_warm --store /tmp/r1store --passes 6 [--twice]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import time

from .peers import StemeAdapter

KEYS = 5_000
SLICE = 250


def build(path: str, n: int) -> None:
    """The workload's store (W3's batches of 1,000) and its R1 keys."""
    from .workload import generate
    w = generate(n)
    eng = StemeAdapter(path)
    try:
        for chunk in w.batches(1000):
            eng.put_batch(chunk)
    finally:
        eng.close()
    with open(os.path.join(path, "r1-keys.json"), "w") as f:
        json.dump(w.r1_keys(KEYS), f)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="the store (built here if missing)")
    ap.add_argument("--n", type=int, default=200_000, help="assertions, when building")
    ap.add_argument("--reps", type=int, default=10, help="timed passes over the keys")
    ap.add_argument("--passes", type=int, default=0,
                    help="time each of this many passes from the open, the cold one included")
    ap.add_argument("--twice", action="store_true",
                    help="with --passes: pass 1 asks each key twice (its first hit done)")
    a = ap.parse_args(argv)
    if not os.path.exists(os.path.join(a.store, "r1-keys.json")):
        build(a.store, a.n)
    with open(os.path.join(a.store, "r1-keys.json")) as f:
        keys = [tuple(k) for k in json.load(f)]
    gc.collect()
    gc.freeze()                 # as bench.run does after generating its workload
    eng = StemeAdapter(a.store)
    cand, settle = eng.candidates, eng.settle

    def one_pass(twice: bool = False) -> None:
        for i in range(0, len(keys), SLICE):
            for k in keys[i:i + SLICE]:
                cand(*k)
                if twice:
                    cand(*k)
            settle()
    try:
        if a.passes > 0:
            per = []
            for p in range(a.passes):
                c0 = time.process_time()
                one_pass(a.twice and p == 0)
                per.append((time.process_time() - c0) / len(keys) * 1e6)
            what = ("1: answers made and hit once, 2: second hits" if a.twice
                    else "1: answers made, 2: first hits")
            print(f"{eng.implementation}: CPU us per query by pass from the open ({what}; "
                  f"{len(keys):,} keys): "
                  + "  ".join(f"{i + 1}: {v:.2f}" for i, v in enumerate(per)))
            return
        one_pass()
        cpu = []
        for _ in range(a.reps):
            c0 = time.process_time()
            one_pass()
            cpu.append(time.process_time() - c0)
        if cpu:
            print(f"{eng.implementation}: CPU per warm query, best {min(cpu) / len(keys) * 1e6:.2f} "
                  f"us, median {sorted(cpu)[len(cpu) // 2] / len(keys) * 1e6:.2f} us "
                  f"({a.reps} passes of {len(keys):,} keys)")
    finally:
        eng.close()


if __name__ == "__main__":
    main()
