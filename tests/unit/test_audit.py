"""The query audit log: newest first, filters, rotation without loss."""
from stemedb import open_store
from stemedb.core.audit import AuditLog
from tests.conftest import NoFsyncFS, body


def test_queries_are_audited_newest_first_with_filters(tmp_path):
    with open_store(tmp_path, fs=NoFsyncFS()) as s:
        s.put(body(1))
        s.query("drugs/d1/risk", agent="alice")
        s.query("drugs/d2/risk", agent="bob")
        s.query("drugs/d1/risk", predicate="p1", agent="alice")
        everyone = s.audit_queries()
        assert [e["agent"] for e in everyone] == ["alice", "bob", "alice"], "newest first"
        alice = s.audit_queries(agent="alice", limit=1)
        assert len(alice) == 1 and alice[0]["params"]["predicate"] == "p1"
        one = s.audit_query(alice[0]["id"])
        assert one == alice[0], "one entry by id"
        assert one["result_hashes"] and one["contributing"][0]["hash"] == one["result_hashes"][0]
    with open_store(tmp_path, fs=NoFsyncFS()) as s:
        assert len(s.audit_queries()) == 3, "the audit log survives a reopen"


def test_rotation_keeps_every_entry(tmp_path):
    log = AuditLog(str(tmp_path), rotate_at=2000)
    for i in range(300):
        log.add(lambda i=i: {"id": f"q{i}", "at_us": i, "agent": "a" if i % 2 else "b"})
    log.flush()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) > 3 and all(f.startswith("queries-") for f in files), files
    got = log.read(limit=1000)
    assert [e["at_us"] for e in got] == list(range(299, -1, -1)), "nothing lost across files"
    assert log.get("q5")["at_us"] == 5
    assert [e["at_us"] for e in log.read(from_us=290, agent="a")] == [299, 297, 295, 293, 291]
    log.close()
