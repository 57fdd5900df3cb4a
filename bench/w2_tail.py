"""Where W2's tail latency comes from, in ``bench.run``'s shape.

    python -m bench.w2_tail [--reps 3] [--gap-ms 60] [--slow-sync-ms 1.0]

Runs W2 as ``bench.run`` does (``bench.suite.w2_threads``: slices of 8
threads x 50 durable puts of the first 4,000 assertions of the benchmark
workload, ``generate(200000)``, into a fresh store per rep, audit on, the
engine's defaults), with a pause between slices standing for the peer's
slice (``--gap-ms``; a sleep, so the store's disk and CPU are idle as they
are while sqlite runs its slice... except for sqlite's own I/O).  Every put
is timed; every group commit is timed through the store's commit observer
(its end and the duration of its write + fdatasync), every zeroing of the
WAL's preallocated space through a wrapper of ``WAL._preallocate``.

Each put is tagged by what its interval overlapped, first match: ``zeroing``
(a zeroing of the WAL), ``slow-sync`` (a group whose write + fdatasync took
more than ``--slow-sync-ms``), ``slice-start`` (it began within 5 ms of its
slice's first put: the disk's first syncs after a pause are slower), else
``other``.  Prints per rep the puts/s and the zeroings, then
p50/p99/p99.9 of all puts, the tags of the slowest 1% against their share of
all puts, the p99 without each tag, and per tag p50/p99/max.

A diagnostic of the engine on this machine, not a benchmark with a target.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections import Counter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gap-ms", type=float, default=60.0)
    ap.add_argument("--slow-sync-ms", type=float, default=1.0)
    ap.add_argument("--dir", default=None, help="where the stores go (default: the temp dir)")
    a = ap.parse_args()

    from bench.suite import w2_threads
    from bench.workload import generate
    from stemedb import open_store
    from stemedb.core import wal as walmod

    items = generate(200000).assertions[:4000]      # bench.run's W2: the same 4,000 each rep
    zeroings: list[tuple[float, float]] = []
    orig = walmod.WAL._preallocate

    def timed(self, seg, need):
        t, z0 = time.perf_counter(), self._zero_end
        orig(self, seg, need)
        if self._zero_end != z0:
            zeroings.append((t, time.perf_counter()))
    walmod.WAL._preallocate = timed     # type: ignore[method-assign]
    perf = time.perf_counter
    tagged: list[tuple[float, str]] = []
    wall_all = 0.0
    slow = a.slow_sync_ms / 1e3
    for rep in range(a.reps):
        d = tempfile.mkdtemp(prefix="stemedb-w2tail-", dir=a.dir)
        s = open_store(os.path.join(d, "data"), durability="fsync")
        zeroings.clear()
        groups: list[tuple[float, float]] = []      # (start, end) of slow write + fdatasync
        s.set_commit_observer(lambda n, sec: groups.append((perf() - sec, perf()))
                              if sec > slow else None)
        puts: list[tuple[float, float]] = []

        class Adapter:
            @staticmethod
            def put(x):
                t = perf()
                s.put(x)
                puts.append((t, perf()))
        starts = []
        wall = 0.0
        for i in range(0, len(items), 400):
            first = len(puts)
            wall += w2_threads(Adapter, items[i:i + 400], threads=8)["seconds"]
            starts.append(min(t0 for t0, _ in puts[first:]))    # the slice's first put
            time.sleep(a.gap_ms / 1e3)
        z, g = list(zeroings), list(groups)
        s.close()
        shutil.rmtree(d, ignore_errors=True)
        wall_all += wall
        for t0, t1 in puts:
            if any(t0 < e and t1 > b for b, e in z):
                tag = "zeroing"
            elif any(t0 < e and t1 > b for b, e in g):
                tag = "slow-sync"
            elif any(st <= t0 < st + 0.005 for st in starts):
                tag = "slice-start"
            else:
                tag = "other"
            tagged.append((t1 - t0, tag))
        print(f"rep {rep + 1}: {len(puts) / wall:,.0f} puts/s; {len(g)} groups with write + "
              f"fdatasync > {a.slow_sync_ms} ms; zeroings of the WAL in the timed puts: "
              + (", ".join(f"{(e - b) * 1e3:.2f} ms" for b, e in z) or "none"), flush=True)
    tagged.sort()
    n = len(tagged)

    def pct(xs, q):
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3
    lat = [x for x, _ in tagged]
    print(f"all {n:,} puts: {n / wall_all:,.0f}/s, p50 {pct(lat, .5):.3f} ms, p99 "
          f"{pct(lat, .99):.3f} ms, p99.9 {pct(lat, .999):.3f} ms")
    top = Counter(t for _, t in tagged[int(0.99 * n):])
    every = Counter(t for _, t in tagged)
    print("slowest 1% by tag: " + ", ".join(f"{k} {top[k]}" for k in sorted(every))
          + "   (all puts: " + ", ".join(f"{k} {every[k]}" for k in sorted(every)) + ")")
    for tag in sorted(every):
        xs = [x for x, t in tagged if t == tag]
        rest = [x for x, t in tagged if t != tag]
        print(f"  {tag:11s} n={len(xs):6,d} p50 {pct(xs, .5):.3f} p99 {pct(xs, .99):.3f} max "
              f"{xs[-1] * 1e3:.3f} ms; p99 of all without them {pct(rest, .99):.3f} ms")


if __name__ == "__main__":
    main()
