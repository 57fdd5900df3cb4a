"""Opening a store from its index snapshot: time and RSS, in a fresh process.

    python -m bench.snapshot_open DATA_DIR [--reps 5] [--cold] [--reader FILE]

Each rep is a new subprocess that imports everything, then times
``open_store`` (the snapshot read included) and reports the RSS it added,
split into anonymous memory (the heap: what the process owns) and
file-backed pages (the snapshot's mapping: the page cache's, shared), then
the same after 1,000 queries.  Also ``snapshot.read`` alone with and without
the checksum.  ``--cold`` drops the snapshot file's pages from the page
cache first (``posix_fadvise DONTNEED``; works for clean pages without
root).  ``--reader FILE`` loads another ``snapshot.py`` (say the previous
commit's, from ``git show``) in place of the store's, to compare.
The store must have been closed cleanly (its snapshot covers the log).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

PROBE = r"""
import gc, json, os, sys, time
def mem():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("RssAnon", "RssFile", "VmRSS"):
                out[k] = int(v.split()[0]) * 1024
    return out
path, reader, cold = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
import numpy, sortedcontainers, msgspec, orjson, blake3  # noqa: F401
import stemedb.core.store, stemedb.core.lens, stemedb.core.query  # noqa: F401
from stemedb import open_store
from stemedb.core import recovery, snapshot
if reader:
    import importlib.util
    spec = importlib.util.spec_from_file_location("stemedb.core._snapshot_other", reader)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    recovery.snapshot = mod
    snapshot = mod
snap = snapshot.snapshot_path(os.path.join(path, "db"))
def drop():
    if cold:
        fd = os.open(snap, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)
out = {"snapshot_bytes": os.path.getsize(snap)}
for verify in (True, False):
    drop(); gc.collect()
    t = time.perf_counter()
    st, _ = snapshot.read(snap, verify=verify) if not reader else snapshot.read(snap)
    out["read_s" if verify else "read_noverify_s"] = time.perf_counter() - t
    del st
    if reader:
        break
drop(); gc.collect(); base = mem()
t = time.perf_counter(); s = open_store(path, audit=False); out["open_s"] = time.perf_counter() - t
assert not s.rebuilt and s.replayed == 0, "open from the snapshot expected (close the store cleanly)"
gc.collect(); m = mem()
out.update(count=s.count, implementation=s.implementation,
           anon=m["RssAnon"] - base["RssAnon"], file=m["RssFile"] - base["RssFile"])
st = s.state
keys = [(st.path_names[(i * 7919) % len(st.path_names)], st.pred_names[(i * 31) % len(st.pred_names)])
        for i in range(1000)]
t = time.perf_counter()
for cp, pr in keys:
    s.query(concept_path=cp, predicate=pr)
out["q1000_s"] = time.perf_counter() - t
gc.collect(); m = mem()
out.update(anon_q=m["RssAnon"] - base["RssAnon"], file_q=m["RssFile"] - base["RssFile"])
s.close()
print(json.dumps(out))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--reader", default="")
    a = ap.parse_args(argv)
    runs = []
    for _ in range(a.reps):
        p = subprocess.run([sys.executable, "-c", PROBE, a.path, a.reader, "1" if a.cold else "0"],
                           capture_output=True, text=True, check=True)
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    r0 = runs[0]
    med = {k: statistics.median(r[k] for r in runs) for k in r0
           if isinstance(r0[k], (int, float)) and k in runs[-1]}
    n = r0["count"]
    print(f"{a.reader or 'snapshot.py'} ({r0['implementation']}, {'cold' if a.cold else 'warm'} "
          f"page cache, median of {a.reps}): {n:,} assertions, snapshot "
          f"{r0['snapshot_bytes'] / 1e6:.1f} MB")
    print(f"  open_store {med['open_s'] * 1e3:.0f} ms; snapshot.read {med['read_s'] * 1e3:.0f} ms"
          + (f" ({med['read_noverify_s'] * 1e3:.0f} ms without the checksum)"
             if "read_noverify_s" in med else ""))
    print(f"  RSS added by the open: heap (anon) {med['anon'] / n:.0f} B/assertion "
          f"({med['anon'] / 1e6:.1f} MB), mapped file {med['file'] / 1e6:.1f} MB")
    print(f"  after 1,000 queries ({med['q1000_s'] * 1e3:.0f} ms): heap {med['anon_q'] / 1e6:.1f} MB, "
          f"mapped file {med['file_q'] / 1e6:.1f} MB")
    print("  " + json.dumps({"runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
