"""The query audit log: who asked what, and what answered.

Entries are queued by the query path and written by a background thread to
``<data>/audit/queries-NNNNNN.log`` (JSON lines), at least once a second.

Bounded three ways, so read-only traffic can never fill the disk or the
memory (issue 8, items 8 and 15):

* an entry is small: the query path queues only the winners' hashes and the
  lens's top ``TOP_CONTRIBUTORS`` candidates with a count of the rest
  (see ``query._audit``), never every candidate;
* the trail is capped: past ``max_bytes`` (``STEMEDB_AUDIT_MAX_BYTES``) the
  oldest whole files are deleted.  A file is closed and a new one started at
  ``rotate_at`` bytes, at most an eighth of the cap, so the trail keeps
  between 7/8 of the cap and the cap;
* the queue is capped at ``max_queue`` entries: when the writer cannot keep
  up, new entries are dropped (and counted) instead of piling up in memory;
  and a backlog of ``WAKE_AT`` entries wakes the writer before its second is
  up, so a busy server holds a few hundred queued entries, not a second's.

The writer survives a full disk or any other ``OSError``: the entries it
could not write are dropped and counted (``dropped``, the metric
``stemedb_audit_dropped_entries_total``), one log line says so at most every
``LOG_EVERY`` seconds, and the next write tries again.  A failed write is cut
back off the file, so no torn line is left between two good ones.

It is not fsynced per query (a crash may lose the last second of audit
entries, never an assertion); it is fsynced at rotation and at close.  The
compiled query path queues the entry's finished JSON line (``qaudit._LINE``),
or, for a warm hit on a held answer, the line's pieces (``_query.KeptLine``:
the id's number, the time, the agent and the answer's kept parameters' JSON
and end, referenced, not copied: no more memory than the line), and the
writer writes a chunk's lines into one bytes object in C
(``_query.audit_take``), all it finds at once.  The pure path queues the
entry's pieces and the writer builds them in chunks of half the backlog (at
least ``CHUNK``), yielding the GIL between chunks, so a busy reader never
waits for a whole backlog to be serialized.  Reads go newest file first and
stop at the limit, so they cost what they return, not the whole history.
"""
from __future__ import annotations

import collections
import itertools
import logging
import os
import re
import struct
import threading
import time
from typing import Any

import orjson

from . import qfast
from .fileio import File, FileSystem

log = logging.getLogger("stemedb")

FLUSH_EVERY = 1.0
CHUNK = 64
ROTATE_AT = 64 * 1024 * 1024
MAX_BYTES = 1024 * 1024 * 1024          # STEMEDB_AUDIT_MAX_BYTES default
MIN_ROTATE = 4096
MAX_QUEUE = 2_000                       # entries waiting for the writer (~12 KB each)
WAKE_AT = 256                           # a backlog this long wakes the writer early
LOG_EVERY = 60.0                        # seconds between two "dropped" log lines
_NAME = re.compile(r"queries-(\d{6})\.log\Z")


def query_id(at_us: int, number: int) -> str:
    """An entry's id: its query's time and the low bits of its sequence number."""
    return f"q{at_us:x}{number % 0x10000:04x}"


class Pending(tuple):
    """A query's entry as queued: ``(build, *args)``, built on the writer's
    thread as ``build(number, *args)`` with the entry's sequence number (no
    closure to make and no id to format on the query's path).  Calling it
    builds it with number 0, for a tool that times the builder alone."""

    __slots__ = ()

    def __call__(self):
        return self[0](0, *self[1:])


def take_lines(q, budget: int, ids) -> tuple[list[bytes], int, Exception | None]:
    """Entries taken off the queue ``q`` for one chunk (AuditLog._chunk),
    in order, while it has some and ``budget`` is left: a finished line
    (``bytes``) at no cost, anything else 1, built with its sequence
    number from ``ids``.  ``(lines, failed, error)``: the lines, the
    entries that could not be built, the last one's exception.  Compiled:
    ``_query.audit_take`` (its lines in one bytes object; a warm query's
    KeptLine is a line at no cost too), held to this by
    tests/unit/test_audit_take.py."""
    lines, failed, error = [], 0, None
    while q and budget:
        fn = q.popleft()
        if type(fn) is bytes:
            lines.append(fn)
            continue
        budget -= 1
        try:
            e = fn[0](next(ids), *fn[1:]) if type(fn) is Pending else fn()
            lines.append(orjson.dumps(e) + b"\n")
        except Exception as e:  # noqa: BLE001 - an audit entry must never break the store
            failed, error = failed + 1, e
    return lines, failed, error


def file_numbers(directory: str) -> list[int]:
    """The numbers of the audit files in ``directory``, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := _NAME.match(n)))


def trail_bytes(directory: str) -> int:
    """Bytes of the audit files in ``directory`` (0 when there is none)."""
    total = 0
    for number in file_numbers(directory):
        try:
            total += os.path.getsize(os.path.join(directory, f"queries-{number:06d}.log"))
        except OSError:
            continue
    return total


class AuditLog:
    # The fields the compiled first page reads at their offsets
    # (_query.Fields: the line's id, the queue, its quick bound); the rest
    # in the instance dict, as before
    __slots__ = ("_ids", "_queue", "quick_below", "__dict__", "__weakref__")

    def __init__(self, directory: str, *, max_bytes: int = MAX_BYTES,
                 rotate_at: int | None = None, fs: FileSystem | None = None,
                 max_queue: int = MAX_QUEUE, clock=time.monotonic):
        self.dir = directory
        self.fs = fs or FileSystem()
        self.max_bytes = max_bytes
        self.rotate_at = rotate_at if rotate_at is not None else min(
            ROTATE_AT, max(max_bytes // 8, MIN_ROTATE))
        self.max_queue = max_queue
        # Below this backlog add() only appends (no drain, no drop, no
        # wake-up): the compiled query path appends its line itself then
        # (_query.first_page)
        self.quick_below = min(WAKE_AT, max_queue // 2)
        self._clock = clock
        self._queue: collections.deque = collections.deque()
        self._cv = threading.Condition()
        self._write_lock = threading.Lock()     # the file, the sizes, the drop counts
        self._drain_lock = threading.Lock()     # one drainer at a time keeps the order
        self._closed = False
        self._ids = itertools.count(1)
        self._dropped = 0
        self._unlogged = 0                      # drops not yet in a log line
        self._last_log = None
        self._file: File | None = None          # opened at the first write
        self._torn = False                      # the file may end in a partial line
        self._failing = False                   # the last write failed
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:                    # the writer retries at its first write
            self._note_drop(0, e)
        # Sizes of the files on disk, oldest first; the last one is appended to.
        self._sizes: dict[int, int] = {}
        for number in file_numbers(directory):
            try:
                self._sizes[number] = os.path.getsize(self._path(number))
            except OSError:
                continue
        self._number = max(self._sizes, default=1)
        self._sizes.setdefault(self._number, 0)
        with self._write_lock:
            self._prune()                       # a lowered cap applies at once
        self._thread = threading.Thread(target=self._run, name="stemedb-audit", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ files
    def _path(self, number: int) -> str:
        return os.path.join(self.dir, f"queries-{number:06d}.log")

    def _numbers(self) -> list[int]:
        return file_numbers(self.dir)

    @property
    def path(self) -> str:
        return self._path(self._number)

    @property
    def size_bytes(self) -> int:
        """Bytes of the audit trail on disk (as this writer left it)."""
        return sum(self._sizes.values())

    @property
    def dropped(self) -> int:
        """Entries dropped since open: not written (disk full, I/O error), not
        built, or not queued because the writer was ``max_queue`` behind."""
        return self._dropped

    def new_id(self, at_us: int) -> str:
        # itertools.count is atomic under the GIL: no lock on the query path
        return query_id(at_us, next(self._ids))

    def number(self) -> int:
        """The next entry's sequence number (for :func:`query_id`), for a
        caller that builds its entry's line itself."""
        return next(self._ids)

    def add(self, entry_fn) -> None:
        """Queue ``entry_fn``: the entry's JSON line (``bytes``, ending in a
        newline, written as it is), or, called later off the query path to
        build the entry, a callable of no arguments or a :class:`Pending`,
        built with the entry's sequence number (for :func:`query_id`).

        O(1), but for one query in many under overload: when the writer is
        half of ``max_queue`` behind, the adding thread writes a chunk itself
        (unless the writer is at it), since the writer gets the GIL only
        when the query threads let it go.  A warm loop that never let it go
        (no I/O, no numpy call that frees the GIL) left the writer one turn
        per switch interval (5 ms) and it fell 2,000 behind: 4,000-6,600 of
        50,000 pure-Python entries dropped.  When the writer is ``max_queue``
        entries behind all the same, the entry is dropped and counted
        instead: memory stays bounded whatever the load.
        """
        backlog = len(self._queue)
        if backlog >= self.max_queue // 2 and self._drain_lock.acquire(blocking=False):
            try:
                self._chunk()
            except Exception as e:  # noqa: BLE001 - the audit must never fail a query
                with self._write_lock:
                    self._note_drop(0, e)
            finally:
                self._drain_lock.release()
            backlog = len(self._queue)
        if backlog >= self.max_queue:
            with self._write_lock:
                self._note_drop(1, "the audit writer is more than "
                                   f"{self.max_queue} entries behind")
            return
        self._queue.append(entry_fn)
        if backlog == WAKE_AT:
            # A queued entry keeps its query's top assertions alive (~12 KB):
            # at 1,500 queries/s a second's backlog held 17 MiB of heap.
            with self._cv:
                self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._closed and len(self._queue) < WAKE_AT:
                    self._cv.wait(FLUSH_EVERY)
                closed = self._closed
            try:
                # what is queued at the wake-up, then only a backlog of CHUNK
                # or more: chasing every entry wrote a line a query when the
                # query threads often let the GIL go (a server's socket I/O),
                # a write(2) each (bench_http, strace); the rest waits for
                # WAKE_AT or the next second
                self._drain(pause=not closed, rest=0 if closed else CHUNK)
            except Exception as e:  # noqa: BLE001 - the writer thread must not die
                with self._write_lock:
                    self._note_drop(0, e)
            if closed:
                return

    def _drain(self, pause: bool = False, rest: int = 0) -> None:
        """Write the entries queued when called, then more while at least
        ``rest`` are queued (0: until the queue is empty)."""
        due = len(self._queue)
        while self._queue and (due > 0 or len(self._queue) >= max(rest, 1)):
            # The writer thread, a reader's flush() and an adding thread may
            # drain at once: each chunk is taken and written under one lock,
            # so entries stay in queue order on disk.
            with self._drain_lock:
                due -= self._chunk()
            if pause:
                time.sleep(0)  # let the query threads run between chunks

    def _chunk(self) -> int:
        """Write one chunk of the queue (call under _drain_lock); how many
        entries it took.

        Half the backlog, at least CHUNK, entries to build: after each chunk
        the writer waits for the GIL up to the interpreter's switch interval
        (5 ms), so fixed chunks of 64 drained ~12,000 entries/s and a loop of
        warm queries (~40,000/s) overran the queue: 15% of its entries were
        dropped.  Half the backlog keeps up with any rate the GIL leaves,
        holding it ~1 ms at a time.  A finished line (the compiled query's)
        costs only its append: they are taken all at once, as chunks of them
        paid a 5 ms wait each and fell behind a warm loop (8% dropped).  A
        KeptLine (a warm compiled hit's) is such a line, written here.
        """
        q = self._queue
        budget = max(CHUNK, len(q) // 2)
        taken = len(q)
        if _TAKE is not None:
            data, ends, failed, error = _TAKE(q, budget, self._ids, orjson.dumps, Pending)
        else:
            lines, failed, error = take_lines(q, budget, self._ids)
        if failed:
            with self._write_lock:
                self._note_drop(failed, f"an audit entry could not be built: {error!r}")
        taken -= len(q)
        if _TAKE is not None:
            if data:
                self._write_run(data, ends)
        elif lines:
            self._write(lines)
        return taken

    def _write_run(self, data: bytes, ends: bytes) -> None:
        """_write of the lines audit_take wrote into ``data``: one write
        when they fit in this file (as _write writes them), else _write of
        the lines themselves (split_lines)."""
        with self._write_lock:
            if self._sizes[self._number] + len(data) <= self.rotate_at:
                self._append_run(data, len(ends) // _END)
                self._prune()
                return
        self._write(_SPLIT(data, ends))

    def _write(self, lines: list[bytes]) -> None:
        """Append ``lines``, starting a new file before one would pass
        ``rotate_at`` (so no file, and no write, outgrows the cap's share)."""
        with self._write_lock:
            i = 0
            used = self._sizes[self._number]
            if lines and used + sum(map(len, lines)) <= self.rotate_at:
                # all of them fit in this file: the loop below would take
                # them as one run; their lengths summed in C (the loop's
                # Python steps were ~0.08 us a line, a warm compiled R1
                # query's line included)
                self._append_run(b"".join(lines), len(lines))
                i = len(lines)
            while i < len(lines):
                used = self._sizes[self._number]
                j, size = i, 0
                while j < len(lines) and (used + size + len(lines[j]) <= self.rotate_at
                                          or used + size == 0):
                    size += len(lines[j])
                    j += 1
                if j == i:          # the next line does not fit in this file
                    self._rotate()
                    continue
                self._append_run(b"".join(lines[i:j]), j - i)
                i = j
            self._prune()

    def _append_run(self, data: bytes, entries: int) -> None:
        """_append, then a new file once this one reached ``rotate_at``
        (call under _write_lock)."""
        self._append(data, entries)
        if self._sizes[self._number] >= self.rotate_at:
            self._rotate()

    def _append(self, data: bytes, entries: int) -> None:
        """Write ``entries`` lines to the current file (call under _write_lock)."""
        try:
            if self._file is None:
                os.makedirs(self.dir, exist_ok=True)
                self._file = self.fs.open_append(self.path)
                self._sizes[self._number] = self._file.size()
            if self._torn:
                # an earlier failed write left a partial line that could
                # not be cut off: end it, so this entry starts a line
                data = b"\n" + data
            self._file.write(data)
        except OSError as e:
            self._unwrite()
            self._note_drop(entries, e)
            self._failing = True
            return
        if self._failing:
            self._failing = False
            self._note_drop(0, "writing again after a failure")
        self._torn = False
        self._sizes[self._number] += len(data)

    def _unwrite(self) -> None:
        """Cut a failed write's partial bytes off the file (call under _write_lock)."""
        if self._file is None:
            return
        try:
            self._file.truncate(self._sizes[self._number])
            self._torn = False
        except OSError:
            self._torn = True

    def _rotate(self) -> None:
        """Seal the current file and start the next (call under _write_lock)."""
        f, self._file = self._file, None
        if f is not None:
            try:
                f.sync()
            except OSError as e:  # the entries are in the page cache; nothing to retry
                self._note_drop(0, e)
            finally:
                f.close()
        self._number += 1
        self._sizes[self._number] = 0  # opened by the next write

    def _prune(self) -> None:
        """Delete the oldest whole files while the trail is over ``max_bytes``
        (never the file being written; call under _write_lock)."""
        total = sum(self._sizes.values())
        for number in sorted(self._sizes):
            if total <= self.max_bytes or number == self._number:
                break
            try:
                os.remove(self._path(number))
            except FileNotFoundError:
                pass                    # removed by hand: it no longer counts
            except OSError as e:
                self._note_drop(0, e)
                break
            total -= self._sizes.pop(number)

    def _note_drop(self, entries: int, reason) -> None:
        """Count ``entries`` dropped entries and log at most one line every
        ``LOG_EVERY`` seconds (call under _write_lock, or in __init__)."""
        self._dropped += entries
        self._unlogged += entries
        now = self._clock()
        if self._last_log is not None and now - self._last_log < LOG_EVERY:
            return
        self._last_log = now
        log.error("query audit in %s: %s; %d entries dropped since the last report "
                  "(%d since start); the audit goes on with the next entries and the "
                  "store is unaffected; free disk space (see the disk-full runbook) or "
                  "set STEMEDB_AUDIT=off; next report in %.0f s at most",
                  self.dir, reason, self._unlogged, self._dropped, LOG_EVERY)
        self._unlogged = 0

    def flush(self) -> None:
        """Write what is queued, and return once it is written: a chunk the
        writer thread (or an adding thread) took off the queue is still
        being written while the queue looks empty, so the drain lock, held
        for a chunk's taking and writing, is waited for too (without it a
        read right after could miss that chunk's entries: seen as a rare
        test_query_fastpath failure with no entry read)."""
        self._drain()
        with self._drain_lock:
            pass

    # ------------------------------------------------------------ reading
    def _lines(self, number: int) -> list[bytes]:
        try:
            with open(self._path(number), "rb") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []           # pruned while we were reading

    def _entries_newest_first(self):
        for number in reversed(self._numbers()):
            for line in reversed(self._lines(number)):
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # a torn line after a crash or a full disk

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
            for line in self._lines(number):
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
            f, self._file = self._file, None
            if f is None:
                return
            try:
                f.sync()
            except OSError as e:
                self._note_drop(0, e)
            finally:
                f.close()


# The chunk's taking: compiled (its lines written into one bytes object,
# _query.audit_take) or take_lines
_TAKE: Any = qfast._query.audit_take if qfast.COMPILED else None
_SPLIT: Any = qfast._query.split_lines if qfast.COMPILED else None
_END = struct.calcsize("n")             # bytes of one of audit_take's line ends


def public_entry(e: dict) -> dict:
    """An entry as the API shows it (without the internal microsecond time)."""
    return {k: v for k, v in e.items() if k != "at_us"}


def audit_enabled(audit, max_bytes) -> bool:
    """``audit`` (a bool, or the setting's ``"on"``/``"off"``) as a bool,
    checked with ``max_bytes`` as the server checks STEMEDB_AUDIT*."""
    from ..config import Settings
    if type(audit) is bool:
        audit = "on" if audit else "off"
    Settings(audit=audit, audit_max_bytes=max_bytes)   # ConfigError naming the field
    return audit == "on"
