"""The query audit log: who asked what, and what answered.

Entries are queued by the query path and written by a background thread to
``<data>/audit/queries-NNNNNN.log`` (JSON lines), at least once a second.
A file is closed and a new one started at ``ROTATE_AT`` bytes; nothing is
deleted (prune old files by hand or by policy: they are plain text).  It is
not fsynced per query (a crash may lose the last second of audit entries,
never an assertion); it is fsynced at rotation and at close.

The query thread only queues a closure; the writer builds entries in chunks
of ``CHUNK`` and yields the GIL between chunks, so a busy reader never waits
for a whole backlog to be serialized.  Reads go newest file first and stop
at the limit, so they cost what they return, not the whole history.
"""
from __future__ import annotations

import collections
import itertools
import os
import re
import threading
import time

import orjson

FLUSH_EVERY = 1.0
CHUNK = 64
ROTATE_AT = 64 * 1024 * 1024
_NAME = re.compile(r"queries-(\d{6})\.log\Z")


class AuditLog:
    def __init__(self, directory: str, rotate_at: int = ROTATE_AT):
        os.makedirs(directory, exist_ok=True)
        self.dir = directory
        self.rotate_at = rotate_at
        self._queue: collections.deque = collections.deque()
        self._cv = threading.Condition()
        self._write_lock = threading.Lock()
        self._closed = False
        self._ids = itertools.count(1)
        numbers = self._numbers()
        self._number = numbers[-1] if numbers else 1
        self._file = open(self._path(self._number), "ab")
        self._thread = threading.Thread(target=self._run, name="stemedb-audit", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ files
    def _path(self, number: int) -> str:
        return os.path.join(self.dir, f"queries-{number:06d}.log")

    def _numbers(self) -> list[int]:
        return sorted(int(m.group(1)) for n in os.listdir(self.dir) if (m := _NAME.match(n)))

    @property
    def path(self) -> str:
        return self._path(self._number)

    def new_id(self, at_us: int) -> str:
        # itertools.count is atomic under the GIL: no lock on the query path
        return f"q{at_us:x}{next(self._ids) % 0x10000:04x}"

    def add(self, entry_fn) -> None:
        """Queue ``entry_fn`` (called later, off the query path, to build the entry)."""
        self._queue.append(entry_fn)

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._closed:
                    self._cv.wait(FLUSH_EVERY)
                closed = self._closed
            self._drain(pause=not closed)
            if closed:
                return

    def _drain(self, pause: bool = False) -> None:
        q = self._queue
        while q:
            lines = []
            for _ in range(CHUNK):
                if not q:
                    break
                fn = q.popleft()
                try:
                    lines.append(orjson.dumps(fn()) + b"\n")
                except Exception:  # an audit entry must never break the store
                    continue
            if lines:
                self._write(b"".join(lines))
            if pause:
                time.sleep(0)  # let the query threads run between chunks

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            self._file.write(data)
            self._file.flush()
            if self._file.tell() >= self.rotate_at:
                os.fsync(self._file.fileno())
                self._file.close()
                self._number += 1
                self._file = open(self._path(self._number), "ab")

    def flush(self) -> None:
        self._drain()

    # ------------------------------------------------------------ reading
    def _entries_newest_first(self):
        for number in reversed(self._numbers()):
            with open(self._path(number), "rb") as f:
                lines = f.read().splitlines()
            for line in reversed(lines):
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # a torn last line after a crash

    def read(self, *, limit: int = 100, agent: str | None = None,
             from_us: int | None = None, to_us: int | None = None) -> list[dict]:
        """Entries newest first, filtered by agent and time (``at_us``)."""
        self.flush()
        out = []
        for e in self._entries_newest_first():
            if from_us is not None and e["at_us"] < from_us:
                continue
            if agent is not None and e.get("agent") != agent:
                continue
            if to_us is not None and e["at_us"] > to_us:
                continue
            out.append(e)
            if len(out) >= limit:
                break
        return out

    def get(self, id: str) -> dict | None:
        self.flush()
        needle = f'"id":"{id}"'.encode()
        for number in reversed(self._numbers()):
            with open(self._path(number), "rb") as f:
                for line in f:
                    if needle in line:
                        try:
                            return orjson.loads(line)
                        except orjson.JSONDecodeError:
                            continue
        return None

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=5)
        self._drain()
        with self._write_lock:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
