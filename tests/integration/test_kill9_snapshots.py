"""kill -9 while periodic snapshots run under writers and readers.

Issue 8 item 13: a snapshot used to record the WAL position after the group
commit leader had moved it but before that group reached the indexes, so it
claimed records it did not hold; after a crash the store refused to start
(20 of 20 embedded runs).  Here a child writes from four threads and queries
from two, with a snapshot every 25 records, and is killed at a random moment;
every restart must succeed with every acknowledged write, and ``verify`` must
find the store consistent.  Rounds, threads and time are bounded.
"""
from __future__ import annotations

import io
import os
import random

from stemedb import open_store
from stemedb.core import verify

from .test_kill9_engine import run_child

ROUNDS = 6

CHILD = r"""
import sys, threading
from stemedb import open_store

path, run = sys.argv[1], int(sys.argv[2])
store = open_store(path, snapshot_interval=25, audit=False, durability="batch",
                   batch_delay_ms=0.5)
out = threading.Lock()

def say(line):
    with out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

def body(k):
    return {"concept_path": f"snap/c{k % 7}", "predicate": f"p{k % 3}",
            "value": {"k": k}, "confidence": 0.5, "timestamp": 1_700_000_000 + k}

def writer(t):
    i = 0
    while True:
        i += 1
        k = ((run * 16 + t) * 10_000_000 + i) * 10
        if i % 4 == 0:
            rs = store.put_batch([body(k + j) for j in range(3)])
            say("A " + ",".join(r.hash for r in rs))
        else:
            say("A " + store.put(body(k)).hash)

def reader(t):
    while True:
        store.query("snap", include_descendants=True, lens="consensus", limit=5)

say("READY")
for t in range(4):
    threading.Thread(target=writer, args=(t,), daemon=True).start()
for t in range(2):
    threading.Thread(target=reader, args=(t,), daemon=True).start()
threading.Event().wait()
"""


def test_every_restart_after_kill_9_under_periodic_snapshots_succeeds(tmp_path):
    path = str(tmp_path / "data")
    rng = random.Random(1309)
    acked: list[str] = []
    snapshots_seen = 0
    for run in range(ROUNDS):
        lines = run_child(path, run, CHILD, rng.uniform(0.4, 1.6))
        acked += [h for ln in lines if ln.startswith("A ") for h in ln[2:].split(",")]
        snapshots_seen += os.path.exists(os.path.join(path, "db", "indexes", "snapshot.idx"))
        out = io.StringIO()
        assert verify.verify(path, out=out) == 0, f"round {run}: {out.getvalue()}"
        with open_store(path, audit=False) as s:      # must start, every round
            assert s.check() == []
            missing = [h for h in acked if s.get(h) is None]
            assert not missing, f"round {run}: {len(missing)} acknowledged writes lost"
    assert snapshots_seen == ROUNDS, "periodic snapshots ran in every round"
    assert len(acked) > 200
