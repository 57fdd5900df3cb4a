"""Where a full rebuild's time goes: the stages of opening a store whose
``db/indexes/`` was deleted, each in CPU and wall seconds.

    python -m bench.rebuild_stages DATA_DIR [--reps 3]

DATA_DIR is a closed store (``bench.million --dir`` leaves one; so does
``bench.run --keep``).  Each rep deletes ``db/indexes/`` and opens the store
in this process with every stage wrapped: the scan (CRC and seq order,
``scan.scan_segment``), ``fast.index_records`` (columns, value id), the
rest of ``State.apply_group``, the map builds (``State.end_replay``), the
snapshot encode and write (``snapshot.encode``, ``snapshot.write``) and
the open as a whole (what bench.suite's REC rebuild figure times, less its
one probe query).  Medians over the reps.  Wrapping costs ~1 us per call,
a few hundred calls per open: noise.

The open writes its new snapshot in a background thread once the store
answers (``opening.open_parts``); the tool waits for that thread before it
reads the stage rows, so they include the snapshot, and "open (all)" is
the open alone.  ``--snapshot-in-open`` makes the open write the snapshot
before it returns, as it did before session 18, to compare.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from statistics import median


def _wrap(owner, name: str, stage: str, acc: dict) -> None:
    fn = getattr(owner, name)

    def timed(*a, **kw):
        c0, w0 = time.process_time(), time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            cpu, wall = acc.setdefault(stage, [0.0, 0.0])
            acc[stage] = [cpu + time.process_time() - c0, wall + time.perf_counter() - w0]
    setattr(owner, name, timed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--snapshot-in-open", action="store_true",
                    help="write the snapshot before the open returns (the open before session 18)")
    args = ap.parse_args(argv)
    from stemedb import open_store
    from stemedb.core import fast, recovery, snapshot, state
    acc: dict = {}
    _wrap(recovery, "scan_segment", "scan (CRC, seq order)", acc)
    _wrap(fast, "index_records", "index_records (columns, value id)", acc)
    _wrap(state.State, "apply_group", "apply_group (incl. index_records)", acc)
    _wrap(state.State, "end_replay", "end_replay (map builds)", acc)
    _wrap(snapshot, "encode", "snapshot encode", acc)
    _wrap(snapshot, "write", "snapshot write (+fsync)", acc)
    from stemedb.core.checkpoint import Checkpoints
    soon = Checkpoints.write_soon

    def now(self):
        self.write()
    runs: list[dict] = []
    count = 0
    for _ in range(args.reps):
        shutil.rmtree(os.path.join(args.data_dir, "db", "indexes"), ignore_errors=True)
        acc.clear()
        if args.snapshot_in_open:
            Checkpoints.write_soon = now      # type: ignore[method-assign]
        c0, w0 = time.process_time(), time.perf_counter()
        s = open_store(args.data_dir, audit=False)
        acc["open (all)"] = [time.process_time() - c0, time.perf_counter() - w0]
        Checkpoints.write_soon = soon         # type: ignore[method-assign]
        s.checkpoints.settle(60)            # the background snapshot, into the rows
        runs.append(dict(acc))          # before close, which writes a snapshot of its own
        assert s.rebuilt, "the open did not rebuild"
        count = s.replayed
        s.close()                       # waits for a background snapshot (its lock)
    print(f"implementation: {s.implementation}; {count:,} records; {args.reps} reps (median)")
    print(f"| stage | CPU s | wall s | records/s (wall) |\n|---|---|---|---|")
    for stage in runs[-1]:
        cpu = median(r.get(stage, [0, 0])[0] for r in runs)
        wall = median(r.get(stage, [0, 0])[1] for r in runs)
        print(f"| {stage} | {cpu:.3f} | {wall:.3f} | {count / wall:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
