"""Paired before/after of the write path on a shared machine.

    python -m bench.write_ab --off <rev> --on <rev> [--reps 6] [--modes w1n,w2n,w3n,w1,w2,w3]

Exports two trees (``git archive``) into a scratch directory, builds each
one's extensions, then runs each workload in a fresh process per tree,
alternating the order (off/on, on/off, ...) so both see the same machine
load; the median of ``--reps`` runs is reported per tree.  On a machine
other work shares, this is the comparison to trust: two ``bench.run``
passes minutes apart saw sqlite's W1 move from 10,082 to 1,988 commits/s.

Workloads (``n``: ``durability="none"``, the write path's own CPU without
the fsync's; otherwise ``durability="fsync"``):

* ``w1``: one writer, 2,000 puts;
* ``w2``: 8 threads, 500 puts each;
* ``w2s``: the same 4,000 puts in ``bench.run``'s W2 shape: ten slices of
  8 threads x 50 puts, new threads per slice released at a barrier, the
  time the sum of the slices' (a slice's start and its last stragglers
  count; CPU includes the threads' start);
* ``w3``: ``put_batch`` of 1,000, 50,000 assertions;
* ``w3l``: the same, 200,000 assertions (``bench.run``'s W3: past 65,536
  records each group goes to the maps' recent dicts, and the heap holds the
  200,000 bodies the garbage collector's full passes walk);
* ``stages``: ``model.prepare_batch`` and ``model.prepare_one`` CPU, the
  least of 7 runs.

Per tree and workload: records/s, wall and CPU (``process_time``, every
thread and the kernel's share) per record, p50/p99 latency per call,
records per fsync.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def one(mode: str, offset: int) -> dict:
    """One measurement in the tree this process runs in."""
    from bench.workload import generate
    from stemedb import model, open_store

    if mode == "stages":
        items = generate(20000).assertions
        best_b = best_1 = float("inf")
        for _ in range(7):
            c0 = time.process_time()
            for i in range(0, 20000, 1000):
                model.prepare_batch(items[i:i + 1000], default_time_us=1)
            best_b = min(best_b, (time.process_time() - c0) / 20000 * 1e6)
            c0 = time.process_time()
            for b in items[:5000]:
                model.prepare_one(b, default_time_us=1)
            best_1 = min(best_1, (time.process_time() - c0) / 5000 * 1e6)
        return {"prepare_batch_us": best_b, "prepare_one_us": best_1}
    items_all = generate(200000 if mode.startswith("w3l") else 60000).assertions
    durability = "none" if mode.endswith("n") else "fsync"
    kind = mode.rstrip("n")
    d = tempfile.mkdtemp(prefix="stemedb-write-ab-")
    s = open_store(d, durability=durability, audit=False)
    commits: list[int] = []
    s.set_commit_observer(lambda k, sec: commits.append(k))
    lats: list[float] = []
    perf = time.perf_counter
    gc.collect()
    if kind == "w1":
        items = items_all[offset:offset + 2000]
        t0, c0 = perf(), time.process_time()
        for b in items:
            t = perf()
            s.put(b)
            lats.append(perf() - t)
    elif kind == "w2s":
        # bench.run's W2 as it runs there: slices of 8 x 50 puts, each slice
        # new threads released at a barrier (bench.suite.w2_threads), the
        # time the sum of the slices' (so a slice's start and its last
        # stragglers count, as they do in bench.run)
        from bench.suite import w2_threads

        class Adapter:
            put = s.put
        items = items_all[offset:offset + 4000]
        wall = 0.0
        c0 = time.process_time()
        for i in range(0, len(items), 400):
            r = w2_threads(Adapter, items[i:i + 400], threads=8)
            wall += r["seconds"]
            lats.extend(r["latencies"])
        t0 = perf() - wall
    elif kind == "w2":
        items = items_all[offset:offset + 4000]

        def work(part):
            mine = []
            for b in part:
                t = perf()
                s.put(b)
                mine.append(perf() - t)
            lats.extend(mine)
        threads = [threading.Thread(target=work, args=(items[i::8],)) for i in range(8)]
        t0, c0 = perf(), time.process_time()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    else:
        items = items_all if kind == "w3l" else items_all[:50000]
        t0, c0 = perf(), time.process_time()
        for i in range(0, len(items), 1000):
            t = perf()
            s.put_batch(items[i:i + 1000])
            lats.append(perf() - t)
    t1, c1 = perf(), time.process_time()
    n = len(items)
    if s.count != n or s.check():
        raise RuntimeError(f"bench.write_ab: the store holds {s.count} of {n} records")
    s.close()
    shutil.rmtree(d)
    lats.sort()
    return {"rps": n / (t1 - t0), "wall_us": (t1 - t0) / n * 1e6, "cpu_us": (c1 - c0) / n * 1e6,
            "p50_ms": lats[len(lats) // 2] * 1e3, "p99_ms": lats[int(0.99 * len(lats))] * 1e3,
            "per_fsync": n / len(commits)}


def export(rev: str, dest: str) -> None:
    os.makedirs(dest)
    archive = subprocess.run(["git", "archive", rev], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", dest], input=archive.stdout, check=True)
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=dest,
                   capture_output=True, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--off", help="the revision before")
    ap.add_argument("--on", default="HEAD", help="the revision after (default HEAD)")
    ap.add_argument("--trees", help="use these two built trees (off,on) instead of exporting")
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--modes", default="stages,w1n,w2n,w3n,w1,w2,w3")
    ap.add_argument("--json", help="write every run here")
    ap.add_argument("--one", nargs=2, metavar=("MODE", "OFFSET"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], int(a.one[1]))))
        return
    if a.trees:
        trees = dict(zip(("off", "on"), a.trees.split(",")))
    else:
        if not a.off:
            ap.error("give --off <rev> (or --trees off_dir,on_dir)")
        root = tempfile.mkdtemp(prefix="stemedb-write-ab-trees-")
        trees = {"off": os.path.join(root, "off"), "on": os.path.join(root, "on")}
        for name, rev in (("off", a.off), ("on", a.on)):
            export(rev, trees[name])
    runs: dict[str, dict[str, list]] = {}
    for mode in a.modes.split(","):
        for r in range(a.reps):
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            for tree in order:
                p = subprocess.run([sys.executable, "-m", "bench.write_ab", "--one", mode,
                                    str(r * 4000 % 50000)], cwd=trees[tree],
                                   capture_output=True, text=True, timeout=900)
                if p.returncode:
                    sys.exit(f"{mode} in {trees[tree]} failed:\n{p.stderr[-3000:]}")
                runs.setdefault(mode, {}).setdefault(tree, []).append(json.loads(p.stdout))
        for tree in ("off", "on"):
            rs = runs[mode][tree]
            med = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
            print(f"{mode:6s} {tree:3s} " + "  ".join(f"{k} {v:,.2f}" for k, v in med.items()),
                  flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"trees": trees, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
