"""The audit trail as the store's API shows it (``/v1/audit``): entries in
their public form, one entry, the trail's size; an answer, not an error,
when the audit is off (``audit`` None)."""
from __future__ import annotations

from ..timeutil import parse_filter_time
from .audit import AuditLog, public_entry, trail_bytes


def entries(audit: AuditLog | None, *, limit: int, agent: str | None, from_, to) -> list[dict]:
    """Recorded queries, newest first, filtered by agent and time range."""
    from_us = parse_filter_time(from_, "from") if from_ is not None else None
    to_us = parse_filter_time(to, "to") if to is not None else None
    if audit is None:
        return []
    return [public_entry(e) for e in audit.read(limit=limit, agent=agent, from_us=from_us,
                                                to_us=to_us)]


def entry(audit: AuditLog | None, id: str) -> dict | None:
    e = audit.get(id) if audit is not None else None
    return public_entry(e) if e else None


def stats(audit: AuditLog | None, trail_dir: str) -> dict:
    """``{"bytes", "dropped"}``: the trail's size on disk (files an earlier
    run left count too when the audit is off) and the entries dropped since
    open (disk full, or the writer too far behind)."""
    if audit is None:
        return {"bytes": trail_bytes(trail_dir), "dropped": 0}
    return {"bytes": audit.size_bytes, "dropped": audit.dropped}
