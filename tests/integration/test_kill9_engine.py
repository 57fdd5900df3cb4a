"""kill -9: a child process writes from several threads (single puts and
batches) to a real store with fsync durability, printing each acknowledgement;
the parent SIGKILLs it mid-stream, reopens the store and finds every
acknowledged assertion, and every batch whole or absent.  Three rounds, so
later rounds also recover a store a previous kill left behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from stemedb import open_store

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROUNDS = 3
WRITE_SECONDS = 1.5        # after the child reports READY
STARTUP_TIMEOUT = 60

CHILD = r"""
import sys, threading
from stemedb import open_store
from stemedb.model import prepare_assertion

path, run = sys.argv[1], int(sys.argv[2])
store = open_store(path, segment_size=65536)      # durability fsync, real file layer
out = threading.Lock()

def say(line):
    with out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

def body(k):
    return {"concept_path": f"kill9/c{k % 13}", "predicate": f"p{k % 5}",
            "value": {"k": k, "pad": "x" * 120}, "confidence": 0.5,
            "timestamp": 1_700_000_000 + k}

def worker(t):
    i = 0
    while True:
        i += 1
        k = ((run * 16 + t) * 10_000_000 + i) * 10
        if i % 5 == 0:
            bodies = [body(k + j) for j in range(4)]
            hs = ",".join(prepare_assertion(b).hash.hex() for b in bodies)
            say("T " + hs)                       # intended, not yet acknowledged
            store.put_batch(bodies)
            say("A " + hs)
        else:
            say("A " + store.put(body(k)).hash)

say("READY")
for t in range(4):
    threading.Thread(target=worker, args=(t,), daemon=True).start()
threading.Event().wait()
"""


def run_child(path: str, run: int, child: str = CHILD,
              seconds: float = WRITE_SECONDS) -> list[str]:
    """Run ``child`` (a script printing ``READY`` then acknowledgements) on
    ``path``, SIGKILL it ``seconds`` after READY; its complete output lines."""
    p = subprocess.Popen([sys.executable, "-c", child, path, str(run)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read():
        for line in p.stdout:
            if not line.endswith("\n"):
                break                       # a line cut by the kill was never acknowledged
            lines.append(line.rstrip("\n"))
            if line == "READY\n":
                ready.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(STARTUP_TIMEOUT), f"child did not start: {p.stderr.read() if p.poll() is not None else ''}"
        time.sleep(seconds)
        assert p.poll() is None, f"child died before the kill: {p.stderr.read()}"
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        reader.join(timeout=30)
        p.stdout.close()
        p.stderr.close()
    assert p.returncode == -signal.SIGKILL
    return lines


def test_every_acknowledged_write_survives_kill_9(tmp_path):
    path = str(tmp_path / "data")
    acked: list[str] = []
    intents: list[list[str]] = []
    for run in range(ROUNDS):
        lines = run_child(path, run)
        round_acks = [h for ln in lines if ln.startswith("A ") for h in ln[2:].split(",")]
        assert len(round_acks) > 20, f"round {run}: the child acknowledged writes before the kill"
        acked += round_acks
        intents += [ln[2:].split(",") for ln in lines if ln.startswith("T ")]
        with open_store(path) as s:
            assert s.check() == [], "the recovered indexes check clean"
            missing = [h for h in acked if s.get(h) is None]
            assert not missing, f"round {run}: {len(missing)} acknowledged writes lost after kill -9"
            for hs in intents:
                got = [s.get(h) is not None for h in hs]
                assert all(got) or not any(got), "a batch is whole or absent after kill -9"
            assert s.count >= len(set(acked))
