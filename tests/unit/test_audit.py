"""The query audit log: newest first, filters, rotation without loss; bounded
entries, a size cap, off switch, metrics, and a writer that survives a full
disk (issue 8, items 8 and 15)."""
import errno
import logging
import os
import time

import falcon.testing
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stemedb import open_store
from stemedb.config import Settings
from stemedb.core import audit as audit_mod
from stemedb.core.audit import AuditLog
from stemedb.core.fileio import File, FileSystem
from stemedb.core.query import AUDIT_CONTRIBUTORS, AUDIT_RESULTS
from stemedb.errors import ConfigError
from stemedb.http.app import create_app
from tests.conftest import T0, NoFsyncFS, body

NO_LIMITS = "assert=off;batch=off;query=off;retract=off;vote=off;default=off"


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


# ------------------------------------------------------------ bounded entries

def many(n, path="g/x", pred="r"):
    return [{"concept_path": path, "predicate": pred, "value": i,
             "confidence": round(0.30 + (i % 60) / 100, 2), "timestamp": T0 + i}
            for i in range(n)]


def test_an_entry_names_the_lens_top_contributors_and_counts_the_rest(tmp_path):
    """Issue 8 item 15: one limit=1 query over 10,000 candidates wrote 890 KB
    of audit, because the entry listed every candidate."""
    with open_store(tmp_path, fs=NoFsyncFS(), durability="none") as s:
        s.put_batch(many(500))
        full = s.query("g/x", predicate="r", limit=1000)     # the lens's whole order
        s.query("g/x", predicate="r", limit=1, agent="bounded")
        e = s.audit_queries(agent="bounded")[0]
        assert len(e["contributing"]) == AUDIT_CONTRIBUTORS == 20
        assert e["contributing_more"] == 500 - 20, "the rest is counted, not listed"
        assert [c["hash"] for c in e["contributing"]] == \
            [a.hash for a in full.assertions[:20]], "the lens's best-ranked candidates"
        by_hash = {a.hash: a.confidence for a in full.assertions}
        assert all(c["weight"] == by_hash[c["hash"]] for c in e["contributing"]), \
            "weight is the effective confidence (no decay: the confidence)"
        assert e["result_hashes"] == [full.results[0]["winner"].hash]
        assert e["contributing"][0]["hash"] == e["result_hashes"][0], "the winner ranks first"
        s.audit.flush()
        assert s.audit_stats()["bytes"] < 2 * 4096, "two queries cost a few KB, not 18 KB each"


def test_retracted_candidates_are_not_contributors(tmp_path):
    with open_store(tmp_path, fs=NoFsyncFS(), durability="none") as s:
        hashes = [r.hash for r in s.put_batch(many(5))]
        s.retract(hash=hashes[4], reason="withdrawn")
        s.query("g/x", predicate="r", include_retracted=True, agent="r")
        e = s.audit_queries(agent="r")[0]
        assert {c["hash"] for c in e["contributing"]} == set(hashes[:4])
        assert e["contributing_more"] == 0


def test_result_hashes_are_capped_with_a_count(tmp_path):
    n = AUDIT_RESULTS + 7
    with open_store(tmp_path, fs=NoFsyncFS(), durability="none") as s:
        s.put_batch([b for i in range(n) for b in many(1, path=f"g/x/c{i:03d}")])
        out = s.query("g/x", include_descendants=True, limit=1, agent="wide")
        assert len(out.results) == n
        e = s.audit_queries(agent="wide")[0]
        assert len(e["result_hashes"]) == AUDIT_RESULTS and e["result_hashes_more"] == 7
        assert e["result_hashes"] == [r["winner"].hash for r in out.results[:AUDIT_RESULTS]]
        assert len(e["contributing"]) == 20 and e["contributing_more"] == n - 20


# ------------------------------------------------------------ cap and off switch

def entry(i, pad=200):
    return lambda: {"id": f"q{i}", "at_us": i, "agent": "a", "pad": "x" * pad}


def files_of(d):
    return sorted(p for p in os.listdir(d) if p.startswith("queries-"))


def disk_bytes(d):
    return sum(os.path.getsize(os.path.join(d, p)) for p in files_of(d))


def test_the_trail_is_capped_by_deleting_the_oldest_whole_files(tmp_path):
    """Issue 8 item 8: 125 MB after 55,000 queries, nothing ever deleted."""
    d = str(tmp_path)
    log = AuditLog(d, max_bytes=40_000)
    assert log.rotate_at == 5000, "a file is at most an eighth of the cap"
    for i in range(1000):                      # ~250 KB of entries
        log.add(entry(i))
        if i % 10 == 9:
            log.flush()
    log.flush()
    assert disk_bytes(d) <= 40_000, "never above the cap"
    assert disk_bytes(d) > 40_000 - 5000 - 10 * 260, "keeps all but about a file's worth"
    assert log.size_bytes == disk_bytes(d), "the metric is what is on disk"
    got = [e["at_us"] for e in log.read(limit=10_000)]
    assert got[0] == 999 and got == list(range(999, 999 - len(got), -1)), \
        "the newest entries are kept, whole files of the oldest are gone"
    assert files_of(d)[0] != "queries-000001.log"
    log.close()
    # a lower cap applies at the next open
    log = AuditLog(d, max_bytes=12_000)
    assert disk_bytes(d) <= 12_000 and log.size_bytes == disk_bytes(d)
    log.close()


def test_the_store_passes_its_cap_to_the_audit(tmp_path):
    with open_store(tmp_path, fs=NoFsyncFS(), durability="none",
                    audit_max_bytes=65536) as s:
        assert s.audit.max_bytes == 65536
        s.put_batch(many(40))
        for _ in range(60):                  # 20 contributors: ~2 KB an entry
            s.query("g/x", predicate="r", limit=1)
        s.audit.flush()
        assert s.audit_stats()["bytes"] == disk_bytes(tmp_path / "audit") <= 65536
        assert len(files_of(tmp_path / "audit")) > 1


def test_audit_off_writes_nothing_and_lists_nothing(tmp_path):
    settings = Settings.from_env({"STEMEDB_AUDIT": "off"})
    assert settings.audit == "off"
    with open_store(tmp_path, fs=NoFsyncFS(), audit=settings.audit) as s:
        s.put(body(1))
        s.query("drugs/d1/risk", agent="alice")
        assert s.audit is None
        assert s.audit_queries() == [] and s.audit_query("q1") is None
        assert s.audit_stats() == {"bytes": 0, "dropped": 0}
    assert not (tmp_path / "audit").exists(), "no audit files at all"
    with open_store(tmp_path, fs=NoFsyncFS(), audit=False) as s:
        assert s.audit is None, "the embedded API takes a bool too"


@pytest.mark.parametrize("env,field", [
    ({"STEMEDB_AUDIT": "yes"}, "audit"),
    ({"STEMEDB_AUDIT": "1"}, "audit"),
    ({"STEMEDB_AUDIT_MAX_BYTES": "1GB"}, "audit_max_bytes"),
    ({"STEMEDB_AUDIT_MAX_BYTES": "1000"}, "audit_max_bytes"),
    ({"STEMEDB_AUDIT_MAX_BYTES": "-1"}, "audit_max_bytes"),
])
def test_bad_audit_settings_name_the_variable(env, field):
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(env)
    assert exc.value.field == field and Settings.env_name(field) in str(exc.value)


def test_a_bad_audit_option_opens_nothing(tmp_path):
    with pytest.raises(ConfigError) as exc:
        open_store(tmp_path / "d", audit="maybe")
    assert exc.value.field == "audit" and "on or off" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        open_store(tmp_path / "d", audit_max_bytes=10)
    assert exc.value.field == "audit_max_bytes"
    assert not (tmp_path / "d").exists(), "nothing created"


# ------------------------------------------------------------ a full disk

class FullDiskFS(FileSystem):
    """Audit files whose writes fail with ENOSPC (after writing part of the
    data, as a real full disk can) while ``full`` is set."""

    def __init__(self):
        self.full = False
        self.fail_open = False
        fs = self

        class AuditFile(File):
            def write(self, data):
                if fs.full and "queries-" in self.path:
                    os.write(self.fd, bytes(data[:7]))   # a partial line reaches the file
                    raise OSError(errno.ENOSPC, "No space left on device", self.path)
                super().write(data)

        self.file_class = AuditFile

    def open_append(self, path):
        if self.fail_open and "queries-" in path:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return super().open_append(path)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def audit_log_lines(caplog):
    return [r for r in caplog.records if r.name == "stemedb" and "query audit" in r.getMessage()]


def test_a_full_disk_drops_counts_logs_once_and_goes_on(tmp_path, caplog):
    """Issue 8 item 15: on a full disk the audit thread died with a traceback
    and entries were lost silently."""
    caplog.set_level(logging.ERROR, logger="stemedb")
    fs, clock = FullDiskFS(), Clock()
    log = AuditLog(str(tmp_path), fs=fs, clock=clock)
    for i in range(3):
        log.add(entry(i))
    log.flush()
    fs.full = True
    for i in range(3, 103):                   # 100 entries, written one flush at a time
        log.add(entry(i))
        log.flush()
    assert log.dropped == 100, "every entry that could not be written is counted"
    lines = audit_log_lines(caplog)
    assert len(lines) == 1, "one log line, not one per entry"
    assert "No space left" in lines[0].getMessage() and str(tmp_path) in lines[0].getMessage()
    clock.now += audit_mod.LOG_EVERY + 1
    log.add(entry(103))
    log.flush()
    assert len(audit_log_lines(caplog)) == 2 and \
        "100 entries dropped since the last report (101 since start)" in \
        audit_log_lines(caplog)[1].getMessage(), "the next report, a minute later, says how many"
    fs.full = False
    for i in range(104, 110):
        log.add(entry(i))
    log.flush()
    assert [e["at_us"] for e in log.read(limit=100)] == [109, 108, 107, 106, 105, 104, 2, 1, 0], \
        "no torn line is left between good entries: every written entry reads back"
    assert log.size_bytes == disk_bytes(tmp_path)
    log.close()


def test_the_writer_thread_survives_a_write_error(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.ERROR, logger="stemedb")
    monkeypatch.setattr(audit_mod, "FLUSH_EVERY", 0.02)
    fs = FullDiskFS()
    fs.fail_open = True                        # even the first open fails
    log = AuditLog(str(tmp_path), fs=fs)
    log.add(entry(0))
    deadline = time.monotonic() + 5
    while log.dropped < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.dropped == 1 and log._thread.is_alive(), "dropped by the writer thread, alive"
    fs.fail_open = False
    log.add(entry(1))
    while not files_of(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    log.close()
    assert [e["at_us"] for e in log.read()] == [1], "the writer thread wrote the next entry"


def test_a_chunk_that_fails_on_an_adding_thread_does_not_reach_the_query(tmp_path, monkeypatch):
    """The adding thread's chunk (the writer lagging) may fail like the
    writer's: it is logged and counted, never raised into the query."""
    log = AuditLog(str(tmp_path), max_queue=4)

    def broken():
        raise RuntimeError("the chunk failed")
    with log._cv:
        monkeypatch.setattr(log, "_chunk", broken)
        for i in range(6):
            log.add(entry(i))           # no exception reaches the caller
    monkeypatch.undo()
    assert log.dropped == 2, "past max_queue entries are dropped and counted, as before"
    log.flush()
    assert [e["at_us"] for e in log.read(limit=10)] == [3, 2, 1, 0], "the queued ones go out"
    log.close()


def test_a_writer_far_behind_drops_new_entries(tmp_path):
    log = AuditLog(str(tmp_path), max_queue=5)
    # the writer waits on _cv: holding it keeps it from draining; holding
    # _drain_lock is a chunk being written, so no adding thread writes one
    with log._cv, log._drain_lock:
        for i in range(12):
            log.add(entry(i))
    assert log.dropped == 7, "the queue holds at most max_queue entries"
    log.flush()
    assert [e["at_us"] for e in log.read()] == [4, 3, 2, 1, 0]
    log.close()


def test_an_adding_thread_writes_a_chunk_when_the_writer_lags(tmp_path):
    """The writer gets the GIL only when query threads let it go: half of
    max_queue behind, the thread that adds writes a chunk itself, in queue
    order, so a loop that never lets the GIL go loses no entry."""
    log = AuditLog(str(tmp_path), max_queue=6)
    with log._cv:       # the writer thread cannot drain
        for i in range(20):
            log.add(entry(i))
        assert len(log._queue) < 6
    assert log.dropped == 0
    log.flush()
    assert [e["at_us"] for e in log.read(limit=50)] == list(range(19, -1, -1))
    log.close()


def test_a_backlog_wakes_the_writer_before_its_second_is_up(tmp_path, monkeypatch):
    """Each queued entry keeps its query's top assertions alive: a second's
    backlog at 1,500 queries/s held 17 MiB of heap (bench/soak.py)."""
    monkeypatch.setattr(audit_mod, "FLUSH_EVERY", 60.0)
    log = AuditLog(str(tmp_path))
    time.sleep(0.05)                           # the writer is waiting on its minute
    for i in range(audit_mod.WAKE_AT + 1):
        log.add(entry(i, pad=10))
    deadline = time.monotonic() + 5
    while log._queue and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not log._queue, "the writer drained the backlog without waiting for its timer"
    log.close()


def test_an_entry_that_cannot_be_built_is_counted(tmp_path):
    log = AuditLog(str(tmp_path))
    log.add(lambda: 1 / 0)
    log.add(entry(1))
    log.flush()
    assert log.dropped == 1 and [e["at_us"] for e in log.read()] == [1]
    log.close()


# ------------------------------------------------------------ metrics

def metrics(client):
    r = client.simulate_get("/metrics")
    assert r.status_code == 200
    return {s.name: s.value for f in text_string_to_metric_families(r.text) for s in f.samples}


def test_metrics_show_the_trail_size_and_the_dropped_entries(tmp_path):
    fs = FullDiskFS()
    store = open_store(tmp_path / "data", durability="none", fs=fs)
    try:
        client = falcon.testing.TestClient(
            create_app(store, Settings(data_dir=str(tmp_path / "data"), rate_limits=NO_LIMITS)),
            headers={"Host": "localhost"})
        store.put(body(1))
        store.query("drugs/d1/risk")
        store.audit.flush()
        m = metrics(client)
        assert m["stemedb_audit_bytes"] == disk_bytes(tmp_path / "data" / "audit") > 0
        assert m["stemedb_audit_dropped_entries_total"] == 0
        fs.full = True
        store.query("drugs/d1/risk")
        store.query("drugs/d1/risk")
        store.audit.flush()
        assert metrics(client)["stemedb_audit_dropped_entries_total"] == 2
    finally:
        fs.full = False
        store.close()

