"""R1 as bench.run asks it, in one process, for diagnosis (session 13):
where a warm query's wall time goes when it does not follow instructions.

Generates the 200,000-assertion workload, ``gc.collect(); gc.freeze()`` as
bench.run does, loads a fresh StemeDB store (and, with ``PEERS=sqlite,lmdb,
rocksdb``, those peers) with W3's batches, then runs ``bench.suite.
r1_candidates`` over the 5,000 R1 keys in slices of 250 (``settle()``
timed in), once untimed, then ``reps`` times per variant, alternating:

* ``plain``  as bench.run, StemeDB alone;
* ``gcoff``  the same with the GC disabled (a diagnostic only);
* ``hot``    the first slice's 250 keys over and over: the same work on
  data that stays in the CPU's caches;
* ``inter``  each slice after the peers' slices of the same keys.

Per run: wall, process and main-thread CPU (us a query), records/s,
voluntary/involuntary context switches (getrusage) and GC collections.

    python -m bench.r1_diag plain,hot 3
    STEMEDB_PURE_PYTHON=1 python -m bench.r1_diag plain,gcoff 3
    PEERS=sqlite,lmdb,rocksdb python -m bench.r1_diag plain,inter 3
"""
import gc
import os
import resource
import shutil
import sys
import tempfile
import time

from bench.peers import open_engine
from bench.suite import r1_candidates
from bench.workload import generate


def main() -> None:
    variants = (sys.argv[1] if len(sys.argv) > 1 else "plain").split(",")
    reps = min(int(sys.argv[2]) if len(sys.argv) > 2 else 3, 20)
    base = tempfile.mkdtemp(prefix="r1-diag-")
    path = os.path.join(base, "stemedb")
    w = generate(200_000)
    gc.collect()
    gc.freeze()
    eng = open_engine("stemedb", path)
    for chunk in w.batches(1000):
        eng.put_batch(chunk)
    peers = {}
    for name in os.environ.get("PEERS", "").split(","):
        if name:
            p = open_engine(name, os.path.join(base, name))
            for chunk in w.batches(1000):
                p.put_batch(chunk)
            peers[name] = p
    keys = w.r1_keys(5000)
    slices = [keys[i:i + 250] for i in range(0, len(keys), 250)]
    ncoll = [0]
    gc.callbacks.append(lambda ph, info: ph == "start" and ncoll.__setitem__(0, ncoll[0] + 1))

    def one(variant: str) -> dict:
        if variant == "gcoff":
            gc.disable()
        r0s, r0t = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_THREAD)
        c0, p0, t0 = ncoll[0], time.process_time(), time.thread_time()
        wall, n, rec = 0.0, 0, 0
        for s in (slices if variant != "hot" else [slices[0]] * len(slices)):
            if variant == "inter":
                for p in peers.values():
                    r1_candidates(p, s, budget_s=60)
            r = r1_candidates(eng, s, budget_s=60)
            wall += r["seconds"]
            n += r["ops"]
            rec += r["records"]
        p1, t1 = time.process_time(), time.thread_time()
        r1s, r1t = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_THREAD)
        gc.enable()
        return dict(v=variant, us_wall=wall / n * 1e6, us_cpu=(p1 - p0) / n * 1e6,
                    us_main=(t1 - t0) / n * 1e6, rec_s=rec / wall,
                    vcs=r1s.ru_nvcsw - r0s.ru_nvcsw, ivcs=r1s.ru_nivcsw - r0s.ru_nivcsw,
                    vcs_main=r1t.ru_nvcsw - r0t.ru_nvcsw, gcs=ncoll[0] - c0)
    try:
        one("plain")        # every answer made and cached
        for _ in range(reps):
            for v in variants:
                d = one(v)
                print(" ".join(f"{k}={x:.2f}" if isinstance(x, float) else f"{k}={x}"
                               for k, x in d.items()), flush=True)
    finally:
        eng.close()
        for p in peers.values():
            p.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
