"""Checkpoints: the log position the state covers, and the snapshots of it.

The state and its position move together, under the index lock, after every
durable group (:meth:`Checkpoints.applied`), so a snapshot, which reads both
under that lock, is a consistent cut.  Every ``interval`` records a snapshot
is written in the background; :meth:`Checkpoints.write` writes one now: the
index snapshot (``snapshot.py``), then ``metadata.json``, each atomically and
fsynced (docs/design.md says what a crash at each step leaves).
"""
from __future__ import annotations

import logging
import os
import threading

import orjson

from . import datadir, snapshot

log = logging.getLogger("stemedb")


class Checkpoints:
    """The position of ``reader.state`` in ``wal``, and its snapshots."""

    def __init__(self, path: str, fs, wal, reader, clock, interval: int):
        self.path = path
        self.fs = fs
        self.wal = wal
        self.reader = reader
        self.clock = clock
        self.interval = interval
        segno, size = wal.position
        # the log position the state covers, moved with it under the index lock
        self.anchor = {"segment": segno, "offset": size, "last_record": wal.last_frame}
        self._since = 0
        self._lock = threading.Lock()
        self._stopped = False       # set by stop(): no background write after it
        self._thread: threading.Thread | None = None    # the last write_soon's

    def applied(self, anchor: dict, n: int) -> None:
        """A durable group of ``n`` records ending at ``anchor`` was applied
        (``anchor`` set under the index lock by the caller, with the state).
        Starts a background snapshot every ``interval`` records."""
        self._since += n
        if self._since >= self.interval > 0:
            self._since = 0
            self.write_soon()

    def write_soon(self) -> threading.Thread:
        """Write a snapshot in a background thread (the periodic one, and the
        one after a rebuild from the WAL, which then need not hold up the
        open: the WAL holds everything the snapshot would, so a crash before
        it is written leaves what a crash during the open's write left, and
        the next start rebuilds again).  A failure is logged, not raised."""
        t = threading.Thread(target=self._background, daemon=True, name="stemedb-snapshot")
        self._thread = t
        t.start()
        return t

    def settle(self, timeout: float | None = None) -> None:
        """Wait for the last background snapshot to end (written, failed and
        logged, or skipped after :meth:`stop`): for tools and tests that
        read what it writes."""
        t = self._thread
        if t is not None:
            t.join(timeout)

    def stop(self) -> None:
        """No background write after this returns (the store's close, after
        its own snapshot, before the WAL and LOCK are let go): one already
        writing is waited for, one not yet started writes nothing."""
        with self._lock:
            self._stopped = True

    def _background(self) -> None:
        try:
            self.write(background=True)
        except Exception:
            log.exception("background snapshot failed (the WAL still holds everything)")

    def position(self) -> dict:
        """The log position the state covers (call under ``reader.lock``)."""
        return {**self.anchor, "last_seq": self.reader.state.last_seq,
                "log_id": self.wal.log_id}

    def metadata(self) -> dict:
        """What ``metadata.json`` would say now."""
        with self.reader.lock:
            return datadir.metadata(self.reader.state, self.wal, self.clock())

    def write(self, *, background: bool = False) -> None:
        """Write the index snapshot and metadata.json (atomically, fsynced);
        ``background``: nothing once :meth:`stop` was called."""
        with self._lock:
            if background and self._stopped:
                return
            with self.reader.lock:
                data = snapshot.encode(self.reader.state, self.position())
                meta = datadir.metadata(self.reader.state, self.wal, self.clock())
            # durability=none: the records the snapshot counts reach the disk first
            self.wal.flush()
            snapshot.write(self.fs, os.path.join(self.path, "db"), data)
            self.fs.write_atomic(os.path.join(self.path, "metadata.json"),
                                 orjson.dumps(meta, option=orjson.OPT_INDENT_2))
