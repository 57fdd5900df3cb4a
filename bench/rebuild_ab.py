"""Paired full rebuilds of one store by two or more source trees, alternated.

    python -m bench.rebuild_ab DATA_DIR TREE [TREE ...] [--rounds 6]

DATA_DIR is a closed store (``bench.million --dir`` leaves one).  Each
TREE is a checkout with its extensions built (``git worktree add /tmp/x
REV --detach``, then ``setup.py build_ext --inplace`` inside it).  Every
round deletes ``db/indexes/`` and opens the store once per tree, each in a
fresh process importing that tree (bench.million's probe: the open's wall
time, snapshot write included, and its CPU of all threads), the trees'
order reversed every other round so that neither always runs first on a
shared machine.  Prints each open and per tree the median records/s.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

PROBE = r"""
import json, resource, sys, time
import numpy, sortedcontainers, msgspec, orjson, blake3, google_crc32c  # noqa: F401
import stemedb
from stemedb import open_store
import stemedb.core.store, stemedb.core.lens, stemedb.core.query  # noqa: F401
r0 = resource.getrusage(resource.RUSAGE_SELF)
t = time.perf_counter(); s = open_store(sys.argv[1], audit=False); el = time.perf_counter() - t
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"open_s": el, "cpu_s": r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime,
                  "rebuilt": s.rebuilt, "records": s.replayed, "impl": s.implementation,
                  "file": stemedb.__file__}))
s.close()
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir")
    ap.add_argument("trees", nargs="+")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args(argv)
    trees = [os.path.abspath(t) for t in args.trees]
    res: dict[str, list[dict]] = {t: [] for t in trees}
    for r in range(args.rounds):
        for t in (trees if r % 2 == 0 else trees[::-1]):
            shutil.rmtree(os.path.join(args.data_dir, "db", "indexes"), ignore_errors=True)
            out = subprocess.run([sys.executable, "-c", PROBE, args.data_dir], cwd=t,
                                 env=dict(os.environ, PYTHONPATH=t), capture_output=True,
                                 text=True, check=True)
            p = json.loads(out.stdout.strip().splitlines()[-1])
            if not p["rebuilt"] or not p["file"].startswith(t + os.sep):
                raise SystemExit(f"{t}: the open did not rebuild with this tree's code: {p}")
            res[t].append(p)
            print(f"round {r} {t}: {p['records'] / p['open_s']:,.0f} records/s "
                  f"({p['open_s']:.3f} s wall, {p['cpu_s']:.3f} s CPU) "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
    for t in trees:
        rates = [p["records"] / p["open_s"] for p in res[t]]
        print(f"{t}: median {statistics.median(rates):,.0f} records/s "
              f"(min {min(rates):,.0f}, max {max(rates):,.0f}); CPU median "
              f"{statistics.median(p['cpu_s'] for p in res[t]):.3f} s; {len(rates)} opens, "
              f"{res[t][0]['impl']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
