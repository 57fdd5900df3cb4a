"""The errors cluster mode adds (HTTP 503, with ``Retry-After``)."""
from __future__ import annotations

from ..errors import StemeError


class ClusterUnavailable(StemeError):
    """The stream cannot take writes now (no NATS quorum, no connection).
    Nothing was acknowledged; retrying the same write later is safe (the
    stream drops a publish whose message id it has seen)."""

    code = "degraded"
    status = 503


class NotCaughtUp(StemeError):
    """A read's ``min_seq`` is beyond what this node has applied, after
    waiting ``STEMEDB_READ_WAIT_MS``."""

    code = "not_caught_up"
    status = 503


class ClusterMismatch(StemeError):
    """The data directory's log is not a prefix of the stream's history."""

    code = "cluster_mismatch"
    status = 503
