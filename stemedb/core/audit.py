"""The query audit log: who asked what, and what answered.

Entries are queued by the query path and written by a background thread in
batches to ``<data>/audit/queries.log`` (JSON lines), flushed every second
or every 1,000 entries.  It is not fsynced per query (a crash may lose the
last second of audit entries; it never loses assertions); it is fsynced at
close.  Reads scan the file newest first.
"""
from __future__ import annotations

import collections
import itertools
import os
import threading

import orjson

FLUSH_EVERY = 1.0
FLUSH_AT = 1000


class AuditLog:
    def __init__(self, directory: str):
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, "queries.log")
        self._queue: collections.deque = collections.deque()
        self._cv = threading.Condition()
        self._closed = False
        self._ids = itertools.count(1)
        self._file = open(self.path, "ab")
        self._thread = threading.Thread(target=self._run, name="stemedb-audit", daemon=True)
        self._thread.start()

    def new_id(self, at_us: int) -> str:
        # itertools.count is atomic under the GIL: no lock on the query path
        return f"q{at_us:x}{next(self._ids) % 0x10000:04x}"

    def add(self, entry_fn) -> None:
        """Queue ``entry_fn`` (called later, off the query path, to build the entry)."""
        self._queue.append(entry_fn)
        if len(self._queue) >= FLUSH_AT:
            with self._cv:
                self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._closed:
                    self._cv.wait(FLUSH_EVERY)
                closed = self._closed
            self._drain()
            if closed:
                return

    def _drain(self) -> None:
        lines = []
        q = self._queue
        while q:
            fn = q.popleft()
            try:
                lines.append(orjson.dumps(fn()) + b"\n")
            except Exception:  # an audit entry must never break the store
                continue
        if lines:
            self._file.write(b"".join(lines))
            self._file.flush()

    def flush(self) -> None:
        self._drain()

    def read(self, *, limit: int = 100, agent: str | None = None,
             from_us: int | None = None, to_us: int | None = None) -> list[dict]:
        """Entries newest first, filtered by agent and time (``at_us``)."""
        self.flush()
        out = []
        with open(self.path, "rb") as f:
            lines = f.read().splitlines()
        for line in reversed(lines):
            try:
                e = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a torn last line after a crash
            if agent is not None and e.get("agent") != agent:
                continue
            if from_us is not None and e["at_us"] < from_us:
                continue
            if to_us is not None and e["at_us"] > to_us:
                continue
            out.append(e)
            if len(out) >= limit:
                break
        return out

    def get(self, id: str) -> dict | None:
        self.flush()
        with open(self.path, "rb") as f:
            for line in f:
                if id.encode() in line:
                    try:
                        e = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue
                    if e.get("id") == id:
                        return e
        return None

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=5)
        self._drain()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
