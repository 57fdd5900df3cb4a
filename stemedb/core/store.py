"""Store: the only thing the server, the tools and embedded users import.

SKELETON: signatures and contracts are fixed; bodies are being written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..model import Assertion


@dataclass(frozen=True)
class PutResult:
    hash: str
    seq: int
    created: bool          # False when the hash was already stored (seq is the stored one)

    @property
    def status(self) -> str:
        return "created" if self.created else "exists"


@dataclass(frozen=True)
class RetractResult:
    retracted: int         # newly retracted assertions (already-retracted ones not counted)
    hashes: list[str]
    seq: int               # seq of the retraction record (0 when nothing was retracted)


@dataclass
class QueryResult:
    concept_path: str
    lens: str
    results: list[dict]    # [{"concept_path","predicate","winner": Assertion|None,"confidence","conflict_score","candidates_count", ...}]
    assertions: list[Assertion]
    next_cursor: str | None = None

    def to_dict(self) -> dict:
        """The JSON answer of POST /v1/query."""
        raise NotImplementedError


class Store:
    """A StemeDB data directory, owned by this process while open.

    Thread-safe: many reader and writer threads.  Writes return after their
    records are durable (per the durability mode).
    """

    # --- writes (durable on return) -----------------------------------
    def put(self, assertion: dict, *, require_signatures: bool = False) -> PutResult: ...
    def put_batch(self, assertions: list[dict], *, require_signatures: bool = False) -> list[PutResult]:
        """Atomic. A bad item raises ValidationError with field 'assertions[i].<field>'."""
    def retract(self, *, hash: str | None = None, concept_path: str | None = None,
                source: str | None = None, reason: str, cascade: bool = False,
                by: str | None = None) -> RetractResult: ...
    def vote(self, assertion_hash: str, weight: float, *, agent_id: str | None = None,
             signature: str | None = None) -> int:
        """Returns the vote record's seq. NotFound for an unknown assertion."""
    def create_epoch(self, name: str, *, supersedes: list[str] | None = None,
                     description: str | None = None) -> int:
        """Returns the seq. Conflict when the name exists; UnknownReference for supersedes."""
    def record_outcome(self, agent_id: str, accurate: bool) -> float:
        """Records a trust outcome; returns the agent's trust rank now."""

    # --- reads ----------------------------------------------------------
    def get(self, hash: str) -> Assertion | None: ...
    def query(self, concept_path: str, *, predicate: str | None = None,
              include_descendants: bool = False, lens: str = "recency", as_of=None,
              known_at=None, since=None, lifecycle: str | None = None, epoch: str | None = None,
              decay: bool = False, include_retracted: bool = False, limit: int = 100,
              cursor: str | None = None, agent: str | None = None) -> QueryResult:
        """Times are RFC 3339 strings or Unix seconds. ``agent`` is who asked (audit)."""
    def skeptic(self, concept_path: str, predicate: str, **filters) -> dict:
        """{"status","conflict_score","claims":[{"value","weight","share","support","hashes"}]}"""
    def trace(self, hash: str) -> dict | None: ...
    def trust_rank(self, agent_id: str) -> float: ...
    def audit_queries(self, *, limit: int = 100, agent: str | None = None,
                      from_=None, to=None) -> list[dict]: ...
    def audit_query(self, id: str) -> dict | None: ...

    # --- state ----------------------------------------------------------
    count: int             # stored assertions, retracted included
    last_seq: int
    wal_segments: int
    implementation: str    # "compiled" or "pure"
    fault: str | None      # reason writes stopped, or None
    def set_commit_observer(self, fn: Callable[[int, float], None]) -> None:
        """fn(records_in_group, fsync_seconds) after each durable group commit."""
    def snapshot(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self): return self
    def __exit__(self, *exc): self.close()


def open_store(path: str, *, durability: str = "fsync", segment_size: int = 64 * 1024 * 1024,
               lock_timeout: float = 0.0, **settings) -> Store:
    raise NotImplementedError
