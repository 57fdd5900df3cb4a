"""What ``stemedb archive`` records next to the store, and the store's timeline.

``<data_dir>/archive-state.json`` (written by ``stemedb archive push`` after
every segment and at the end of every pass, replaced atomically)::

    {"timeline": "<id or "">", "last_archived_segment": N, "last_archived_seq": N,
     "last_archived_recorded_at_us": N, "log_id": "<hex>", "last_success_ts": <unix s>,
     "failures": N, "lag_segments": N, "lag_seconds": S, ...}

It feeds the server's ``stemedb_archive_last_success_timestamp_seconds`` and
``stemedb_archive_lag_seconds`` (the way ``backup-state.json`` feeds the
backup metrics, :mod:`stemedb.ops.backupstate`).

**Archive lag** is the age of the oldest sealed WAL segment that is not yet
archived: now minus the segment file's modification time (a sealed segment
is never written again, so that is when it was sealed), 0 when every sealed
segment is archived.  This rather than "now minus the newest archived
record": an idle store then shows no lag (nothing is waiting), while a stuck
archiver shows a lag that grows from the moment a segment is waiting.  The
active segment is never archived (the archive's RPO is one segment plus the
push interval) and does not count.

**Timelines.**  ``<data_dir>/timeline.json`` (``{"timeline", "parent",
"created_at", "reason", "source"}``) is written by ``stemedb restore`` (a
backup or a point in time): a restored store starts a new timeline, because
from then on its history differs from what the old store wrote under the
same log id.  The archiver writes the original timeline (no file,
``timeline`` "") under ``<prefix>/<log id>/`` and timeline ``T`` under
``<prefix>/<log id>/timelines/T/``, each self-contained (segments from 1),
so two histories never share a prefix and the old timeline's archive stays
as it was.  The timeline lives in its own file because the store rewrites
``metadata.json`` at every snapshot.
"""
from __future__ import annotations

import os
import secrets
import time

from .files import read_json, write_json_atomic

STATE_NAME = "archive-state.json"
TIMELINE_NAME = "timeline.json"


def load_state(data_dir: str) -> dict:
    try:
        st = read_json(os.path.join(data_dir, STATE_NAME))
        return st if isinstance(st, dict) else {}
    except (OSError, ValueError):
        return {}


def timeline(data_dir: str) -> str:
    """The store's timeline id: "" for the original history (no timeline.json)."""
    try:
        doc = read_json(os.path.join(data_dir, TIMELINE_NAME))
    except FileNotFoundError:
        return ""
    except (OSError, ValueError) as exc:
        raise ValueError(f"{os.path.join(data_dir, TIMELINE_NAME)} is unreadable ({exc}); "
                         f"it names the archive timeline this store writes to") from None
    tl = doc.get("timeline") if isinstance(doc, dict) else None
    if not isinstance(tl, str) or not tl.isalnum():
        raise ValueError(f"{os.path.join(data_dir, TIMELINE_NAME)} holds no valid "
                         f"\"timeline\" id")
    return tl


_CURRENT = object()


def new_timeline(data_dir: str, reason: str, source: str | None = None,
                 parent=_CURRENT) -> dict:
    """Start a new timeline for ``data_dir`` (called by restore, under LOCK).
    ``parent`` defaults to the directory's current timeline."""
    if parent is _CURRENT:
        try:
            parent = timeline(data_dir)
        except ValueError:
            parent = None
    doc = {"timeline": time.strftime("%Y%m%d%H%M%S", time.gmtime()) + secrets.token_hex(4),
           "parent": parent, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "reason": reason, "source": source}
    write_json_atomic(os.path.join(data_dir, TIMELINE_NAME), doc)
    return doc


def archive_root(prefix: str, log_id: str, tl: str) -> str:
    """The key prefix of one timeline's archive."""
    root = f"{log_id}/timelines/{tl}" if tl else log_id
    return f"{prefix}/{root}" if prefix else root


def segment_number(path: str) -> int:
    return int(os.path.basename(path)[8:13])


def archived_through(state: dict, tl: str) -> int:
    """The last segment archived for timeline ``tl`` (0 when the state is another timeline's)."""
    if str(state.get("timeline") or "") != tl:
        return 0
    try:
        return int(state.get("last_archived_segment") or 0)
    except (TypeError, ValueError):
        return 0


def lag(sealed: list[str], done: int, now: float) -> tuple[int, float]:
    """``(segments waiting, seconds the oldest has waited)`` for the sealed
    segment paths ``sealed`` when segments up to ``done`` are archived."""
    pending = [p for p in sealed if segment_number(p) > done]
    if not pending:
        return 0, 0.0
    try:
        sealed_at = os.stat(pending[0]).st_mtime
    except OSError:
        return len(pending), 0.0
    return len(pending), max(0.0, now - sealed_at)


def wal_segments(data_dir: str) -> list[str]:
    """The WAL's segment files, oldest first (without reading them)."""
    wal = os.path.join(data_dir, "wal")
    try:
        names = os.listdir(wal)
    except OSError:
        return []
    return [os.path.join(wal, n) for n in sorted(names)
            if n.startswith("segment-") and n.endswith(".log") and n[8:13].isdigit()]


def current_lag(data_dir: str, now: float | None = None) -> dict:
    """What the metrics report, read at scrape time from the state file and
    the WAL directory (no segment is read)."""
    now = time.time() if now is None else now
    state = load_state(data_dir)
    try:
        tl = timeline(data_dir)
    except ValueError:
        tl = ""
    segs = wal_segments(data_dir)
    waiting, seconds = lag(segs[:-1], archived_through(state, tl), now)
    try:
        last = float(state.get("last_success_ts") or 0.0)
    except (TypeError, ValueError):
        last = 0.0
    return {"state_exists": bool(state), "last_success_ts": last, "lag_segments": waiting,
            "lag_seconds": seconds, "timeline": tl}
