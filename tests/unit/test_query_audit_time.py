"""The audit entry of a query answered from the read cache measures decay at
the same time a fresh answer does, also for a cursor from before v1.1 (which
carries no time: the query's time is then the clock's, as in a fresh answer)."""
from __future__ import annotations

import base64

from stemedb import open_store
from tests.conftest import NoFsyncFS

NOW = 1_800_000_000 * 1_000_000
DAY_US = 86_400 * 1_000_000


def test_a_cached_answer_to_a_v1_cursor_with_decay_is_audited(tmp_path):
    s = open_store(str(tmp_path / "d"), fs=NoFsyncFS(), clock=lambda: NOW,
                   durability="none", audit=True)
    try:
        for i in range(12):
            s.put({"concept_path": "g", "predicate": "r", "value": i % 3,
                   "confidence": 0.2 + i / 20, "source": f"pubmed://{i}",
                   "timestamp": (NOW - i * 40 * DAY_US) / 1e6})
        cursor = base64.urlsafe_b64encode(f"v1:2:{s.last_seq}".encode()).decode().rstrip("=")
        kw = {"predicate": "r", "lens": "recency", "limit": 2, "decay": True, "cursor": cursor}
        fresh = s.query("g", agent="a", **kw)
        hits = s.reader.cache.answer_hits
        cached = s.query("g", agent="a", **kw)
        assert s.reader.cache.answer_hits == hits + 1, "the second query is a cache hit"
        assert cached.to_dict() == fresh.to_dict()
        entries = s.audit_queries(limit=5)
        assert len(entries) == 2, "the hit's audit entry was lost"
        same = [{k: v for k, v in e.items() if k not in ("id", "at")} for e in entries]
        assert same[0] == same[1]
        assert same[0]["contributing"], "the entry names what contributed"
    finally:
        s.close()
