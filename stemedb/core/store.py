"""Store: the facade the server, the tools and embedded users import.

A store is four parts, each in its own module: the WAL (``wal.py``, group
commit and fail-stop), recovery (``recovery.py``, which returns the state it
built), the :class:`~stemedb.core.writer.Writer` (every write's critical
section) and the :class:`~stemedb.core.reader.Reader` (what queries read).
This module wires them together and owns what spans them: the ``LOCK``
file, applying each durable group (``_on_durable``), snapshots and
``metadata.json``, and close.

Threading: the writer's mutex serializes the short critical section of a
write; the fsync happens outside it through the WAL's group commit.  The
reader's ``lock`` guards the in-memory state: the group-commit leader takes
it to apply a durable group, readers take it to gather candidates, then
decode records outside it.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

import orjson

from ..model import Assertion, check_hash
from ..timeutil import now_us
from . import datadir, fast, recovery, snapshot
from .audit import MAX_BYTES as AUDIT_MAX_BYTES
from .audit import AuditLog, audit_enabled, public_entry, trail_bytes
from .fileio import FileSystem
from .reader import DEFAULT_READ_CACHE_BYTES, Reader
from .wal import WAL, Request
from .writer import PutResult, RetractResult, Writer

log = logging.getLogger("stemedb")


def implementation() -> str:
    return "compiled" if fast.COMPILED else "pure"


class Store:
    """A StemeDB data directory, owned by this process while open.

    Thread-safe for many reader and writer threads.  Writes return after
    their records are durable (``fsync`` and ``batch`` modes; ``none`` only
    hands them to the OS).  Use :func:`open_store`.
    """

    cluster = None   # the ClusterNode (stemedb/cluster) when this store is a cluster node

    def __init__(self, path: str | os.PathLike[str], *, durability: str = "fsync",
                 segment_size: int = 64 * 1024 * 1024, lock_timeout: float = 0.0,
                 batch_delay_ms: float = 2.0, snapshot_interval: int = 100_000,
                 fs: FileSystem | None = None, clock: Callable[[], int] = now_us,
                 audit: bool | str = True, audit_max_bytes: int = AUDIT_MAX_BYTES,
                 read_cache_bytes: int = DEFAULT_READ_CACHE_BYTES):
        from ..config import Settings  # validates the values the same way as the server
        Settings(durability=durability, segment_size=segment_size, batch_delay_ms=batch_delay_ms,
                 snapshot_interval=snapshot_interval, lock_timeout=lock_timeout,
                 read_cache_bytes=read_cache_bytes)
        audit = audit_enabled(audit, audit_max_bytes)
        self.path = os.path.abspath(path)
        self.fs = fs or FileSystem()
        self.clock = clock
        self.snapshot_interval = snapshot_interval
        self._closed = True
        self._snap_lock = threading.Lock()
        self._started = time.monotonic()
        self.fs.makedirs(self.path)
        self._lock_fd = datadir.acquire_lock(os.path.join(self.path, "LOCK"), lock_timeout)
        try:
            datadir.note_segment_size(self.path, segment_size)
            self.wal = WAL(os.path.join(self.path, "wal"), fs=self.fs, segment_size=segment_size,
                           durability=durability, batch_delay=batch_delay_ms / 1000.0,
                           on_durable=self._on_durable)
            got = recovery.recover(self.wal, self.path)
            self.rebuilt, self.replayed = got.rebuilt, got.replayed
            self.wal.start_appending()
            segno, size = self.wal.position
            # the log position the state covers, moved with it under the index lock
            self._anchor = {"segment": segno, "offset": size,
                            "last_record": self.wal.last_frame}
            self._since_snapshot = 0
            self.audit = AuditLog(os.path.join(self.path, "audit"), max_bytes=audit_max_bytes,
                                  fs=self.fs) if audit else None
            self.reader = Reader(got.state, self.wal, threading.RLock(), clock, self.audit,
                                 read_cache_bytes)
            self.writer = Writer(self.wal, self.reader, clock)
            if self.rebuilt or not os.path.exists(os.path.join(self.path, "metadata.json")):
                self.snapshot()
        except BaseException:
            self._abort_open()
            raise
        self._closed = False
        from .implementation import log_startup
        log_startup(log)
        log.info("Startup complete")

    def _abort_open(self) -> None:
        """Free what a failed open holds, writing nothing (no sync, no snapshot),
        so that a retry in this process does not find LOCK held by itself."""
        wal = getattr(self, "wal", None)
        if wal is not None:
            if wal._file is not None:
                wal._file.close()
                wal._file = None
            for seg in wal.segments:
                seg.close()
        audit = getattr(self, "audit", None)
        if audit is not None:
            audit.close()
        os.close(self._lock_fd)

    # ------------------------------------------------------------ writing
    def _on_durable(self, group: list[Request], anchor: dict) -> None:
        """The WAL's step after each durable group, in seq order: apply it.

        The state and the log position it covers change together under the
        index lock, so a snapshot (which reads both under it) is a
        consistent cut.
        """
        reader = self.reader
        first = group[0]
        buf = first.data if len(group) == 1 else b"".join(r.data for r in group)
        offsets, types, seqs, pos = [], [], [], 0
        for req in group:
            for size, (rtype, seq, _arg) in zip(req.sizes, req.apply_arg):
                offsets.append(pos)
                types.append(rtype)
                seqs.append(seq)
                pos += size
        segno, at = first.locs[0]        # the WAL writes a group contiguously, in one segment
        with reader.lock:
            self._anchor = anchor
            reader.state.apply_group(buf, offsets, types, seqs, (segno << 40) + at, segno)
        n = len(offsets)
        self._since_snapshot += n
        if self._since_snapshot >= self.snapshot_interval > 0:
            self._since_snapshot = 0
            threading.Thread(target=self._background_snapshot, daemon=True,
                             name="stemedb-snapshot").start()

    def _background_snapshot(self) -> None:
        try:
            self.snapshot()
        except Exception:
            log.exception("periodic snapshot failed (the WAL still holds everything)")

    def put(self, assertion: dict, *, require_signatures: bool = False) -> PutResult:
        """Store one assertion; returns after it is durable.  O(1) amortized."""
        return self.writer.put(assertion, require_signatures=require_signatures)

    def put_batch(self, assertions: list[dict], *,
                  require_signatures: bool = False) -> list[PutResult]:
        """Store assertions atomically: after any crash all or none are present.

        A bad item raises ValidationError with field ``assertions[i].<field>``.
        """
        return self.writer.put_batch(assertions, require_signatures=require_signatures)

    def retract(self, *, hash: str | None = None, concept_path: str | None = None,
                source: str | None = None, reason: str, cascade: bool = False,
                by: str | None = None) -> RetractResult:
        """Retract by exactly one target; with ``cascade``, follow dependents
        (time proportional to what it touches).  Durable on return."""
        return self.writer.retract(hash=hash, concept_path=concept_path, source=source,
                                   reason=reason, cascade=cascade, by=by)

    def vote(self, assertion_hash: str, weight: float, *, agent_id: str | None = None,
             signature: str | None = None, timestamp=None,
             require_signatures: bool = False) -> int:
        """Record a vote; returns its seq once durable (see Writer.vote: an
        older vote by the same agent is StaleVote, 409)."""
        return self.writer.vote(assertion_hash, weight, agent_id=agent_id, signature=signature,
                                timestamp=timestamp, require_signatures=require_signatures)

    def create_epoch(self, name: str, *, supersedes: list[str] | None = None,
                     description: str | None = None) -> int:
        """Create an epoch; O(len(supersedes)) whatever the epochs hold."""
        return self.writer.create_epoch(name, supersedes=supersedes, description=description)

    def record_outcome(self, agent_id: str, accurate: bool) -> float:
        """Record whether an agent's claim proved accurate; returns its trust rank."""
        self.writer.record_outcome(agent_id, accurate)
        return self.trust_rank(agent_id)

    # ------------------------------------------------------------ reading
    def get(self, hash: str) -> Assertion | None:
        """The stored assertion with this hash, or None.  O(log n)."""
        check_hash(hash, "hash")
        return self.reader.get(bytes.fromhex(hash))

    def query(self, concept_path: str, **params):
        """Resolve claims at ``concept_path`` through a lens (see docs/semantics)."""
        from .query import run_query
        return run_query(self.reader, concept_path, **params)

    def skeptic(self, concept_path: str, predicate: str, **filters) -> dict:
        from .query import run_skeptic
        return run_skeptic(self.reader, concept_path, predicate, **filters)

    def trace(self, hash: str) -> dict | None:
        from .query import run_trace
        return run_trace(self.reader, hash)

    def trust_rank(self, agent_id: str) -> float:
        from .lens import trust_rank
        with self.reader.lock:
            outcomes = list(self.state.outcomes.get(agent_id, ()))
        return trust_rank(outcomes, self.clock())

    def audit_queries(self, *, limit: int = 100, agent: str | None = None,
                      from_=None, to=None) -> list[dict]:
        from ..timeutil import parse_filter_time
        from_us = parse_filter_time(from_, "from") if from_ is not None else None
        to_us = parse_filter_time(to, "to") if to is not None else None
        if self.audit is None:
            return []
        return [public_entry(e) for e in self.audit.read(
            limit=limit, agent=agent, from_us=from_us, to_us=to_us)]

    def audit_query(self, id: str) -> dict | None:
        if self.audit is None:
            return None
        e = self.audit.get(id)
        return public_entry(e) if e else None

    def audit_stats(self) -> dict:
        """``{"bytes", "dropped"}``: the audit trail's size on disk (files an
        earlier run left count too when the audit is off) and the entries
        dropped since open (disk full, or the writer too far behind)."""
        if self.audit is None:
            return {"bytes": trail_bytes(os.path.join(self.path, "audit")), "dropped": 0}
        return {"bytes": self.audit.size_bytes, "dropped": self.audit.dropped}

    # ------------------------------------------------------------ state
    @property
    def state(self):
        """The in-memory indexes (read them under ``reader.lock``)."""
        return self.reader.state

    @property
    def count(self) -> int:
        """Stored assertions, retracted included."""
        return self.state.count

    @property
    def last_seq(self) -> int:
        return self.state.last_seq

    @property
    def wal_segments(self) -> int:
        return len(self.wal.segments)

    @property
    def implementation(self) -> str:
        return implementation()

    @property
    def fault(self) -> str | None:
        return self.wal.fault

    @property
    def uptime(self) -> float:
        return time.monotonic() - self._started

    def set_commit_observer(self, fn: Callable[[int, float], None]) -> None:
        """fn(records_in_group, fsync_seconds) after each durable group commit."""
        self.wal.observer = fn

    def metadata(self) -> dict:
        """What ``metadata.json`` would say now."""
        with self.reader.lock:
            return datadir.metadata(self.state, self.wal, self.clock())

    def snapshot(self) -> None:
        """Write the index snapshot and metadata.json (atomically, fsynced)."""
        with self._snap_lock:
            with self.reader.lock:
                data = snapshot.encode(self.state, self._position())
                meta = datadir.metadata(self.state, self.wal, self.clock())
            # durability=none: the records the snapshot counts reach the disk first
            self.wal.flush()
            snapshot.write(self.fs, os.path.join(self.path, "db"), data)
            self.fs.write_atomic(os.path.join(self.path, "metadata.json"),
                                 orjson.dumps(meta, option=orjson.OPT_INDENT_2))

    def _position(self) -> dict:
        """The log position the state covers (call under ``reader.lock``)."""
        return {**self._anchor, "last_seq": self.state.last_seq, "log_id": self.wal.log_id}

    def check(self) -> list[str]:
        with self.reader.lock:
            return self.state.check()

    def close(self) -> None:
        """Flush, snapshot, write metadata.json, release LOCK.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.cluster is not None:
            self.cluster.stop()     # stop applying the stream before the writer closes
        self.writer.close()
        try:
            if not self.wal.fault:
                self.snapshot()
        finally:
            if self.audit is not None:
                self.audit.close()
            self.wal.close()
            os.close(self._lock_fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# The Settings fields that are Store options: open_store(settings=...) passes
# every one, so the server, the tools and embedded users cannot disagree.
STORE_SETTINGS = ("durability", "segment_size", "batch_delay_ms", "snapshot_interval",
                  "lock_timeout", "audit", "audit_max_bytes", "read_cache_bytes")


def open_store(path: str | os.PathLike | None = None, *, settings=None, **options) -> Store:
    """Create or open the store at ``path`` (holds ``path/LOCK`` until closed).

    ``settings`` (a :class:`stemedb.config.Settings`, e.g. ``Settings.from_env()``)
    gives every store setting at once (``STORE_SETTINGS``) and, when ``path``
    is None, the data directory; ``stemedb serve`` opens its store this way.
    Keyword arguments set single options and win over ``settings``:
    ``open_store("data", durability="batch", segment_size=1 << 20)``.  Besides
    the store settings they take ``fs`` and ``clock`` (see Store).
    Without ``settings`` the defaults of Settings apply (path ``./data``).
    """
    from ..config import Settings
    settings = Settings() if settings is None else settings
    kwargs = {name: getattr(settings, name) for name in STORE_SETTINGS}
    kwargs.update(options)
    return Store(settings.data_dir if path is None else path, **kwargs)


__all__ = ["Store", "open_store", "PutResult", "RetractResult"]

from .query import QueryResult  # noqa: E402  (re-exported: part of the store's interface)
__all__.append("QueryResult")
