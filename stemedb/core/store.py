"""Store: the facade the server, the tools and embedded users import.

A store is five parts, each in its own module: the WAL (``wal.py``, group
commit and fail-stop), recovery (``recovery.py``, which returns the state it
built), the :class:`~stemedb.core.writer.Writer` (every write's critical
section), the :class:`~stemedb.core.reader.Reader` (what queries read) and
the :class:`~stemedb.core.checkpoint.Checkpoints` (the log position the
state covers, snapshots and ``metadata.json``).  ``opening.py`` takes
``LOCK`` and wires them, applying each durable group through
``State.apply_group``; this module is the API over them, and close.

Threading: the writer's mutex serializes the short critical section of a write;
the fsync happens outside it through the WAL's group commit.  The reader's
``lock`` guards the in-memory state: the group-commit leader takes it to apply
a durable group, readers take it to gather candidates, then decode records outside it.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable

from ..config import DEFAULT_READ_CACHE_BYTES
from ..model import Assertion, check_hash
from ..timeutil import now_us
from . import auditview, fast, qfast, query as _query
from .audit import MAX_BYTES as AUDIT_MAX_BYTES
from .fileio import FileSystem
from .lens import trust_rank
from .opening import open_parts
from .query import QueryResult, run_query, run_skeptic, run_trace
from .writer import PutResult, RetractResult

log = logging.getLogger("stemedb")


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
        self.path = os.path.abspath(path)
        self.fs = fs or FileSystem()
        self.clock = clock
        self.snapshot_interval = snapshot_interval
        self._closed = True
        self._started = time.monotonic()
        p = open_parts(self.path, self.fs, clock, durability=durability,
                       segment_size=segment_size, batch_delay_ms=batch_delay_ms,
                       snapshot_interval=snapshot_interval, lock_timeout=lock_timeout,
                       audit=audit, audit_max_bytes=audit_max_bytes,
                       read_cache_bytes=read_cache_bytes)
        self._lock_fd, self.wal, self.audit, self.reader = p.lock_fd, p.wal, p.audit, p.reader
        self.writer, self.checkpoints = p.writer, p.checkpoints
        self.rebuilt, self.replayed = p.rebuilt, p.replayed
        self._closed = False

    # ------------------------------------------------------------ writing
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

    def query(self, concept_path: str, *, predicate=None, include_descendants=False,
              lens="recency", limit=100, cursor=None, agent=None, **filters):
        """Resolve claims at ``concept_path`` through a lens (see docs/semantics);
        ``filters``: run_query's other keywords. The plain shape is one call."""
        out = None if filters or cursor is not None else _query.first_page(
            self.reader, concept_path, predicate, include_descendants, lens, limit, agent)
        return out if out is not None else run_query(
            self.reader, concept_path, predicate=predicate, lens=lens, limit=limit,
            include_descendants=include_descendants, cursor=cursor, agent=agent, **filters)
    query = qfast.store_query(query, _query)    # compiled: the plain shape without this frame

    def skeptic(self, concept_path: str, predicate: str, **filters) -> dict:
        return run_skeptic(self.reader, concept_path, predicate, **filters)

    def trace(self, hash: str) -> dict | None:
        return run_trace(self.reader, hash)

    def trust_rank(self, agent_id: str) -> float:
        with self.reader.lock:
            outcomes = list(self.state.outcomes.get(agent_id, ()))
        return trust_rank(outcomes, self.clock())

    def audit_queries(self, *, limit: int = 100, agent: str | None = None,
                      from_=None, to=None) -> list[dict]:
        return auditview.entries(self.audit, limit=limit, agent=agent, from_=from_, to=to)

    def audit_query(self, id: str) -> dict | None:
        return auditview.entry(self.audit, id)

    def audit_stats(self) -> dict:
        """``{"bytes", "dropped"}``: see auditview.stats."""
        return auditview.stats(self.audit, os.path.join(self.path, "audit"))

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
        return "compiled" if fast.COMPILED else "pure"

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
        return self.checkpoints.metadata()

    def snapshot(self) -> None:
        """Write the index snapshot and metadata.json (atomically, fsynced)."""
        self.checkpoints.write()

    def _position(self) -> dict:
        """The log position the state covers (call under ``reader.lock``)."""
        return self.checkpoints.position()

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
            self.checkpoints.stop()     # no background snapshot after LOCK is let go
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


# QueryResult is re-exported: part of the store's interface
__all__ = ["Store", "open_store", "PutResult", "RetractResult", "QueryResult"]
