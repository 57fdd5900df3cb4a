"""CPU of the index apply of small durable groups, as the store's on-durable
step runs it: ``records.group_frames`` of the group's WAL requests, then
``State.apply_group``, for requests of 1 record (a single put, W1), of 4
(about W2's group commit), and of 1,000 (W3).

    python -m bench.apply_small            # N=5000 records, least of 7 runs
    N=20000 REPS=5 python -m bench.apply_small

Per shape: us of CPU (``process_time``) per record, the least of the runs,
for the apply alone (frames prepared beforehand) and for group_frames plus
the apply; the garbage collector is paused during the runs.  Each run
starts from a fresh State, so new concept paths arrive as in
``bench.workload`` (about 4 in 5 records in the first few thousand).
"""
from __future__ import annotations

import gc
import os
import time

import msgspec

from bench.workload import generate
from stemedb.core import fast, records
from stemedb.core.format import REC_ASSERT
from stemedb.core.state import State
from stemedb.core.wal import Request
from stemedb.model import prepare_assertion


def requests(stamped, size: int) -> list:
    reqs, at = [], 40
    for i in range(0, len(stamped), size):
        rs = stamped[i:i + size]
        seqs = list(range(i + 1, i + 1 + len(rs)))
        data, sizes = fast.encode_assert_frames(rs, seqs)
        req = Request(data, sizes, [(REC_ASSERT, q, None) for q in seqs])
        req.locs = [(1, at)]
        at += len(data)
        reqs.append(req)
    return reqs


def run(reqs, n: int, reps: int) -> tuple[float, float]:
    pre = [records.group_frames([r]) for r in reqs]
    best = bestg = float("inf")
    for _ in range(reps):
        st = State()
        gc.collect()
        gc.disable()
        try:
            c = time.process_time()
            for a in pre:
                st.apply_group(*a)
            best = min(best, time.process_time() - c)
            st = State()
            c = time.process_time()
            for r in reqs:
                st.apply_group(*records.group_frames([r]))
            bestg = min(bestg, time.process_time() - c)
        finally:
            gc.enable()
    return best / n * 1e6, bestg / n * 1e6


def main() -> None:
    n, reps = int(os.environ.get("N", 5000)), int(os.environ.get("REPS", 7))
    t0 = 1_700_000_000_000_000
    bodies = generate(n).assertions[:n]
    stamped = [msgspec.structs.replace(prepare_assertion(b, default_time_us=t0), recorded_at=t0 + i)
               for i, b in enumerate(bodies)]
    print(f"implementation: {getattr(fast, 'IMPLEMENTATION', None) or fast.index_records.__module__}")
    for size in (1, 4, 1000):
        a, g = run(requests(stamped, size), n, reps)
        print(f"requests of {size}: apply {a:.2f} us/record, group_frames + apply {g:.2f} us/record")


if __name__ == "__main__":
    main()
