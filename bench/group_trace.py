"""Where W2's wall time goes: a timeline of the WAL's group commit.

    python -m bench.group_trace [--threads 8] [--puts 500] [--reps 3] [--durability fsync]

Runs W2's shape (``--threads`` writers, ``--puts`` durable ``put`` calls
each, the benchmark workload, audit off) in a fresh store per run, timing
each group's write and sync (the WAL's compiled write + fdatasync call where
it has one, else through a :class:`~stemedb.core.fileio.FileSystem` whose
append files note the time of each ``write`` and ``sync``) and, through a
wrapper of the WAL's ``on_durable`` step, the apply.  Per run it prints:

* records/s, records per fsync (mean and histogram), CPU per record
  (``process_time``: every thread, the kernel's share included) and context
  switches per record (``getrusage``, voluntary + involuntary);
* the share of the wall time during which some ``fdatasync`` of the log was
  running ("disk busy"), and the sum of the syncs' times over that
  ("overlap": 1.0 when they never overlap, up to 2 with two groups syncing
  at once): with gaps, the gaps are the cost;
* one group commit, median over the groups, in microseconds: its ``write``
  + ``fdatasync``; from the sync's return to the start of the apply
  (``on_durable``: the group's turn and the GIL); the apply; from the end of
  the apply to the next group's ``write`` (negative when the next group was
  written before this one was applied).

With ``--slice K`` the puts are made as ``bench.run``'s W2 makes them:
slices of ``K`` puts per thread, new threads per slice released at a
barrier, the time the sum of the slices'.  Per run it adds the spread of the
threads' end times within a slice (median over the slices: a thread that
leads group after group puts once a cycle, the others once every two, so
it finishes first and the slice ends with fewer writers and smaller
groups) and the fdatasync's median by tenth of a slice's groups (on the
shared VM a sync after an idle gap is slower: bench/results/
write-2026-11-27-session10.md).

A diagnostic, not a benchmark with a target: its figures are wall-clock on a
shared machine; compare runs made one after the other (``--reps``).
"""
from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter

from stemedb.core.fileio import File, FileSystem

_now = time.perf_counter


class TracedFile(File):
    fs: "TracedFS"

    def write(self, data) -> None:
        t = _now()
        super().write(data)
        self.fs.events.append(("write", t, _now()))

    def sync(self) -> None:
        t = _now()
        super().sync()
        self.fs.events.append(("sync", t, _now()))


class TracedFS(FileSystem):
    file_class = TracedFile

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, float, float]] = []


class SleepSyncFile(TracedFile):
    fs: "SleepSyncFS"

    def sync(self) -> None:
        t = _now()
        time.sleep(self.fs.sync_s)
        self.fs.events.append(("sync", t, _now()))


class SleepSyncFS(TracedFS):
    """``--sleep-sync-us``: a sync that sleeps (the GIL let go, as in
    fdatasync) instead of syncing: the group commit's structure measured
    without the shared disk's noise (nothing is durable)."""

    file_class = SleepSyncFile

    def __init__(self, sync_s: float) -> None:
        super().__init__()
        self.sync_s = sync_s


def run(threads: int, puts: int, durability: str, offset: int, delay_ms: float = 2.0,
        sleep_sync_us: float = 0.0, where: str | None = None, slice_puts: int = 0) -> dict:
    from bench.workload import generate
    from stemedb import open_store

    items = generate(offset + threads * puts).assertions[offset:]
    d = tempfile.mkdtemp(prefix="stemedb-group-trace-", dir=where)
    fs = TracedFS()
    # With the plain file layer the WAL writes and syncs a group in one
    # compiled call (wal.py, fast.write_sync): time that call (its write and
    # sync are one interval).  Otherwise (a tree without it, or the pure
    # build) the file layer's write and sync are timed.
    if sleep_sync_us:
        fs = SleepSyncFS(sleep_sync_us / 1e6)
        s = open_store(d, durability=durability, audit=False, fs=fs, batch_delay_ms=delay_ms)
    else:
        s = open_store(d, durability=durability, audit=False, batch_delay_ms=delay_ms)
    wal = s.wal
    native = getattr(wal, "_write_sync", None)
    if native is not None:
        def write_sync(fd, data, sync):
            t = _now()
            native(fd, data, sync)
            fs.events.append(("write", t, t))
            fs.events.append(("sync", t, _now()))
        wal._write_sync = write_sync
    elif not sleep_sync_us:
        s.close()
        shutil.rmtree(d)
        d = tempfile.mkdtemp(prefix="stemedb-group-trace-", dir=where)
        s = open_store(d, durability=durability, audit=False, fs=fs, batch_delay_ms=delay_ms)
        wal = s.wal
    inner = wal.on_durable
    applies: list[tuple[float, float, int]] = []

    def on_durable(group, anchor):
        t = _now()
        inner(group, anchor)
        applies.append((t, _now(), len(group)))
    wal.on_durable = on_durable
    fs.events.clear()
    lats: list[float] = []
    parts = [items[i::threads][:puts] for i in range(threads)]
    step = slice_puts or puts
    bounds: list[tuple[float, float]] = []   # each slice's (start, end)
    spreads: list[float] = []                # each slice's last thread end - first
    gc.collect()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0 = time.process_time()
    for k in range(0, puts, step):
        barrier = threading.Barrier(threads + 1)
        ends = [0.0] * threads

        def work(i, part, barrier=barrier, ends=ends):
            put = s.put
            mine = []
            barrier.wait()
            for b in part:
                t = _now()
                put(b)
                mine.append(_now() - t)
            ends[i] = _now()
            lats.extend(mine)

        ts = [threading.Thread(target=work, args=(i, parts[i][k:k + step]))
              for i in range(threads)]
        for th in ts:
            th.start()
        barrier.wait()
        ts0 = _now()
        for th in ts:
            th.join()
        bounds.append((ts0, _now()))
        spreads.append(max(ends) - min(ends))
    c1 = time.process_time()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = bounds[0][0]
    wall = sum(b - a for a, b in bounds)
    n = threads * puts
    events = [e for e in fs.events if e[1] >= t0]
    if s.count != n or s.check():
        raise RuntimeError(f"bench.group_trace: the store holds {s.count} of {n} records")
    s.close()
    shutil.rmtree(d)
    writes = [e for e in events if e[0] == "write"]
    syncs = [e for e in events if e[0] == "sync"][:len(applies)]
    sizes = [k for _, _, k in applies]
    cyc: dict[str, list[float]] = {"write": [], "sync": [], "write+sync": [], "sync->apply": [],
                                   "apply": [], "apply->next write": []}
    for i, (a0, a1, _) in enumerate(applies):
        if i >= len(syncs) or i >= len(writes):
            break
        cyc["write"].append(writes[i][2] - writes[i][1])
        cyc["sync"].append(syncs[i][2] - syncs[i][1])
        cyc["write+sync"].append(syncs[i][2] - writes[i][1])
        cyc["sync->apply"].append(a0 - syncs[i][2])
        cyc["apply"].append(a1 - a0)
        if i + 1 < len(writes):
            cyc["apply->next write"].append(writes[i + 1][1] - a1)
    # the time some fdatasync was running (syncs may overlap), and their sum
    busy = 0.0
    end = 0.0
    for _, s0, s1 in sorted(syncs, key=lambda e: e[1]):
        if s1 > end:
            busy += s1 - max(s0, end)
            end = s1
    total = sum(e[2] - e[1] for e in syncs)
    # fdatasync by position in its slice: tenths of the slice's groups
    tenths: dict[int, list[float]] = {}
    for a, b in bounds:
        mine = [e for e in syncs if a <= e[1] <= b]
        for j, e in enumerate(mine):
            tenths.setdefault(j * 10 // len(mine), []).append(e[2] - e[1])
    lats.sort()
    return {
        "rps": n / wall, "groups": len(applies), "per_fsync": n / max(1, len(applies)),
        "spread_ms": statistics.median(spreads) * 1e3,
        "sync_by_tenth_us": [round(statistics.median(tenths[j]) * 1e6) for j in sorted(tenths)],
        "hist": dict(sorted(Counter(sizes).items())),
        "cpu_us": (c1 - c0) / n * 1e6,
        "csw": ((r1.ru_nvcsw - r0.ru_nvcsw) + (r1.ru_nivcsw - r0.ru_nivcsw)) / n,
        "disk_busy": busy / wall, "overlap": total / busy if busy else 0.0,
        "cycle_us": {k: statistics.median(v) * 1e6 if v else 0.0 for k, v in cyc.items()},
        "p50_ms": lats[len(lats) // 2] * 1e3, "p99_ms": lats[int(0.99 * len(lats))] * 1e3,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--puts", type=int, default=500, help="puts per thread")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--durability", default="fsync", choices=("fsync", "batch", "none"))
    ap.add_argument("--batch-delay-ms", type=float, default=2.0,
                    help="durability=batch: how long a leader waits for more writers")
    ap.add_argument("--sleep-sync-us", type=float, default=0.0,
                    help="sync by sleeping this long instead of fdatasync (see SleepSyncFS)")
    ap.add_argument("--dir", help="where the stores go (default: the temp directory); a "
                                  "tmpfs such as /dev/shm takes the disk out (fdatasync "
                                  "returns at once) and leaves the code's own costs")
    ap.add_argument("--slice", type=int, default=0, metavar="K",
                    help="bench.run's shape: slices of K puts per thread, new threads "
                         "per slice (bench.run's W2: --puts 500 --slice 50)")
    a = ap.parse_args()
    from stemedb.core.implementation import describe
    print(f"bench.group_trace: {a.threads} threads x {a.puts} puts, durability={a.durability}, "
          f"{describe()[0]}, load {os.getloadavg()[0]:.2f}"
          + (f", slices of {a.slice} puts a thread" if a.slice else ""))
    for r in range(a.reps):
        x = run(a.threads, a.puts, a.durability, r * a.threads * a.puts, a.batch_delay_ms,
                a.sleep_sync_us, a.dir, a.slice)
        c = x["cycle_us"]
        print(f"run {r + 1}: {x['rps']:,.0f} records/s, {x['per_fsync']:.2f} per fsync "
              f"{x['hist']}, CPU {x['cpu_us']:.1f} us/record, {x['csw']:.2f} switches/record, "
              f"disk busy {x['disk_busy']:.0%} (overlap {x['overlap']:.2f}), p50 {x['p50_ms']:.3f} ms p99 {x['p99_ms']:.3f} ms")
        print("       cycle (median us): " + ", ".join(f"{k} {v:.1f}" for k, v in c.items()))
        if a.slice:
            print(f"       threads' end spread in a slice (median) {x['spread_ms']:.2f} ms; "
                  f"fdatasync median by tenth of a slice (us) {x['sync_by_tenth_us']}")


if __name__ == "__main__":
    main()
