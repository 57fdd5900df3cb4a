"""``<data_dir>/backup-state.json``: what the server's metrics report about backups.

``{"last_success_ts": <unix seconds>, "failures": <int>, ...}`` feeds
``stemedb_last_backup_timestamp_seconds`` and ``stemedb_backup_failures_total``.
``failures`` only grows (it is a counter: Prometheus alerts on its increase).
The file is replaced atomically, so the server never reads half of it.
"""
from __future__ import annotations

import os
import time

from .files import read_json, write_json_atomic

STATE_NAME = "backup-state.json"


def state_path(data_dir: str) -> str:
    return os.path.join(data_dir, STATE_NAME)


def load(data_dir: str) -> dict:
    try:
        st = read_json(state_path(data_dir))
        return st if isinstance(st, dict) else {}
    except (OSError, ValueError):
        return {}


def record_success(data_dir: str, backup_path: str, assertion_count: int,
                   last_seq: int, now: float | None = None) -> dict:
    st = load(data_dir)
    st.update({"last_success_ts": time.time() if now is None else now,
               "failures": int(st.get("failures", 0)),
               "last_backup": os.path.abspath(backup_path),
               "last_assertion_count": assertion_count,
               "last_seq": last_seq})
    write_json_atomic(state_path(data_dir), st)
    return st


def record_failure(data_dir: str, error: str, now: float | None = None) -> dict | None:
    """Count a failed backup; returns None when the state file cannot be written."""
    st = load(data_dir)
    st["failures"] = int(st.get("failures", 0)) + 1
    st["last_failure_ts"] = time.time() if now is None else now
    st["last_error"] = error[:1000]
    st.setdefault("last_success_ts", 0.0)
    try:
        write_json_atomic(state_path(data_dir), st)
    except OSError:
        return None
    return st
