"""Thread switches per put, and the leader's path between two fdatasyncs, in
``bench.run``'s W2 shape.

    python -m bench.w2_switches [--reps 3] [--gap-ms 60] [--no-timeline]

Runs W2 as ``bench.run`` does (slices of 8 new threads x 50 durable puts,
released at a barrier, of the first 4,000 assertions of ``generate(200000)``,
into a fresh store per rep through ``bench.peers.StemeAdapter``: the
engine's defaults), with a sleep of ``--gap-ms`` between slices standing for
the peer's slice.  Per rep it prints:

* puts/s (the slices' summed time, as bench.run), CPU per put (every
  thread, the kernel's share included), p50 / p99 per put;
* context switches per put: voluntary and involuntary, summed over the
  writer threads from ``/proc/thread-self/status`` around each thread's
  puts (so the barrier, thread start and join are not counted), and the
  process's (``getrusage``, everything).  A writer must sleep once per put
  while its group syncs (the leader sleeps in the fdatasync, ~1 per 4 puts,
  the others on their wake lock): about 1 voluntary switch a put is the
  floor of this design; the rest are waits for the GIL, wake-ups that
  find nothing to do, and wake-up preemptions;
* unless ``--no-timeline``: the leader's path from the end of one group's
  write + fdatasync call to the next group's call, median / p90 / mean in
  microseconds, from wrappers of the WAL's compiled ``write_sync`` (or its
  file's write and sync), its ``on_durable`` step, its ``_wake`` and the
  store's ``put`` (each wrapper adds ~1 us): ``sync -> apply`` (the GIL back
  and the group's bookkeeping), ``apply``, ``apply -> woken`` (marking the
  group done, the mutex, releasing the writers), ``woken -> put returns``,
  ``-> next put`` (the caller's loop), ``next put -> write`` (the old
  leader's next put up to its group's write), and the whole gap.  The
  wrappers change the timing a little; compare trees with the same flags.

A diagnostic, not a benchmark with a target: figures are wall-clock on a
shared machine; compare runs made one after the other.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import threading
import time

_now = time.perf_counter


def _switches() -> tuple[int, int]:
    vol = inv = 0
    with open("/proc/thread-self/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches"):
                vol = int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches"):
                inv = int(line.split()[1])
    return vol, inv


def _q(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def _instrument(store, events: list) -> None:
    """Wrap the WAL's write + sync, on_durable and _wake, and the store's put,
    each noting (tag, thread, time in us)."""
    wal = store.wal
    get_ident = threading.get_ident

    def mark(tag: str) -> None:
        events.append((tag, get_ident(), _now() * 1e6))
    ws = wal._write_sync
    if ws is not None:
        def write_sync(fd, data, sync):
            mark("ws0")
            ws(fd, data, sync)
            mark("ws1")
        wal._write_sync = write_sync
    else:
        f = wal._file
        fw, fsync = f.write, f.sync

        def write(data):
            mark("ws0")
            fw(data)

        def sync():
            fsync()
            mark("ws1")
        f.write, f.sync = write, sync
    od = wal.on_durable

    def on_durable(group, anchor):
        mark("ap0")
        od(group, anchor)
        mark("ap1")
    wal.on_durable = on_durable
    wk = wal._wake

    def wake():
        wk()
        mark("wk1")
    wal._wake = wake
    sp = store.put

    def put(a, **kw):
        mark("put0")
        r = sp(a, **kw)
        mark("put1")
        return r
    store.put = put


def _timeline(events: list) -> dict[str, list[float]]:
    """Per group led by a thread that led the one before: its path from the
    previous group's ws1 to this group's ws0 (same thread)."""
    steps = (("sync -> apply", "ws1", "ap0"), ("apply", "ap0", "ap1"),
             ("apply -> woken", "ap1", "wk1"), ("woken -> put returns", "wk1", "put1"),
             ("-> next put", "put1", "put0"), ("next put -> write", "put0", None))
    out: dict[str, list[float]] = {name: [] for name, _, _ in steps}
    out["gap (same leader)"] = []
    out["gap (any)"] = []
    last: dict[int, dict[str, float]] = {}
    last_ws1 = None
    for tag, tid, t in events:
        d = last.setdefault(tid, {})
        if tag == "ws0":
            if last_ws1 is not None and t - last_ws1 < 3000:
                out["gap (any)"].append(t - last_ws1)
            w1 = d.get("ws1")
            if w1 is not None and d.get("put0", 0) > w1 and t - w1 < 3000 and all(
                    k in d and d[k] >= w1 for k in ("ap0", "ap1", "wk1", "put1")):
                out["gap (same leader)"].append(t - w1)
                for name, a, b in steps:
                    out[name].append((t if b is None else d[b]) - d[a])
        elif tag == "ws1":
            last_ws1 = t
        d[tag] = t
    return out


def run_once(items: list[dict], gap_s: float, timeline: bool, where: str | None,
             threads: int = 8, per_slice: int = 50) -> dict:
    from bench.peers import StemeAdapter
    d = tempfile.mkdtemp(prefix="w2-switches-", dir=where)
    events: list = []
    try:
        ad = StemeAdapter(os.path.join(d, "data"))
        if timeline:
            _instrument(ad.store, events)
        per: list[tuple[int, int, list[float]]] = []
        total = 0.0
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        c0 = time.process_time()
        step = threads * per_slice
        for s in range(len(items) // step):
            part = items[s * step:(s + 1) * step]
            parts = [part[i::threads] for i in range(threads)]
            barrier = threading.Barrier(threads + 1)
            res: list = [None] * threads

            def work(i: int, parts=parts, barrier=barrier, res=res) -> None:
                put, lat = ad.put, []
                barrier.wait()
                a0 = _switches()
                for a in parts[i]:
                    t = _now()
                    put(a)
                    lat.append(_now() - t)
                a1 = _switches()
                res[i] = (a1[0] - a0[0], a1[1] - a0[1], lat)
            ts = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
            for t in ts:
                t.start()
            t0 = _now()
            barrier.wait()
            for t in ts:
                t.join(120)
            total += _now() - t0
            if any(r is None for r in res):
                raise RuntimeError("a writer thread did not finish")
            per.extend(res)
            time.sleep(gap_s)
        cpu = time.process_time() - c0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        ad.store.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    n = sum(len(r[2]) for r in per)
    lats = sorted(x for r in per for x in r[2])
    return {"puts_s": n / total, "cpu_us": cpu / n * 1e6,
            "p50_ms": _q(lats, 0.5) * 1e3, "p99_ms": _q(lats, 0.99) * 1e3,
            "vol": sum(r[0] for r in per) / n, "inv": sum(r[1] for r in per) / n,
            "proc_vol": (ru1.ru_nvcsw - ru0.ru_nvcsw) / n,
            "proc_inv": (ru1.ru_nivcsw - ru0.ru_nivcsw) / n,
            "timeline": _timeline(events) if timeline else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gap-ms", type=float, default=60.0)
    ap.add_argument("--no-timeline", action="store_true")
    ap.add_argument("--dir", default=None, help="where the stores go (default: the temp dir)")
    args = ap.parse_args()
    from bench.workload import generate
    from stemedb.core import fast
    items = generate(200_000).assertions[:4000]
    print(f"bench.w2_switches: 10 slices of 8 threads x 50 durable puts, "
          f"{'compiled' if fast.COMPILED else 'pure'}, load {os.getloadavg()[0]:.2f}", flush=True)
    for rep in range(args.reps):
        r = run_once(items, args.gap_ms / 1000, not args.no_timeline, args.dir)
        print(f"rep {rep + 1}: {r['puts_s']:,.0f} puts/s, CPU {r['cpu_us']:.1f} us/put, "
              f"p50 {r['p50_ms']:.3f} p99 {r['p99_ms']:.3f} ms; switches a put: writer threads "
              f"{r['vol']:.2f} voluntary + {r['inv']:.2f} involuntary, process "
              f"{r['proc_vol']:.2f} + {r['proc_inv']:.2f}", flush=True)
        tl = r["timeline"]
        if tl:
            for name, xs in tl.items():
                if xs:
                    print(f"    {name:22s} n {len(xs):5d}  p50 {_q(xs, 0.5):6.1f}  "
                          f"p90 {_q(xs, 0.9):6.1f}  mean {statistics.mean(xs):6.1f} us")


if __name__ == "__main__":
    main()
