"""The embedded store: put/get/put_batch, duplicates, references, retraction
records, epochs and votes, LOCK, metadata.json, segment rotation, threads."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from stemedb import open_store
from stemedb.core.fileio import File
from stemedb.core.format import SEGMENT_HEADER_SIZE
from stemedb.errors import (
    ConfigError, Conflict, NotFound, StoreClosed, StoreLocked, UnknownReference, ValidationError)
from stemedb.model import prepare_assertion
from tests.conftest import T0, NoFsyncFS, body

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ------------------------------------------------------------------ put / get

def test_put_then_get_returns_every_field(opener):
    s = opener()
    b = body(1, source="fda://label/2024-03", lifecycle="approved", value=[1, "x", None])
    r = s.put(b)
    assert r.created and r.seq == 1 and r.status == "created" and len(r.hash) == 64
    assert r.to_dict() == {"hash": r.hash, "status": "created", "seq": 1}
    a = s.get(r.hash)
    assert (a.concept_path, a.predicate, a.value, a.confidence) == (
        b["concept_path"], b["predicate"], [1, "x", None], 0.5)
    assert a.source == "fda://label/2024-03" and a.source_class == "regulatory"
    assert a.lifecycle == "approved" and a.status == "active" and a.retraction is None
    assert a.hash == r.hash and a.seq == 1
    assert a.timestamp == "2024-03-01T12:00:01.000000Z", "times come back RFC 3339 UTC with µs"
    assert a.to_dict()["recorded_at"].endswith("Z")


def test_get_unknown_is_none_and_bad_hash_is_refused(opener):
    s = opener()
    assert s.get("00" * 32) is None
    with pytest.raises(ValidationError) as exc:
        s.get("XYZ")
    assert exc.value.field == "hash"


def test_writes_survive_close_and_reopen(opener):
    s = opener()
    hs = [s.put(body(i)).hash for i in range(20)]
    s.close()
    s = opener()
    assert s.count == 20 and s.last_seq == 20
    for i, h in enumerate(hs):
        assert s.get(h).value == {"i": i}, "every write is readable after reopen"


def test_seqs_increase_and_recorded_at_never_goes_backwards(opener):
    now = [0]
    s = opener(clock=lambda: now[0])
    rs = []
    for i, t in enumerate([5_000_000, 4_000_000, 9_000_000, 1_000_000, 9_500_000]):
        now[0] = t
        rs.append(s.put(body(i)))
    assert [r.seq for r in rs] == [1, 2, 3, 4, 5], "seq is the position in the log"
    recs = [s.get(r.hash).recorded_at_us for r in rs]
    assert recs == [5_000_000, 5_000_000, 9_000_000, 9_000_000, 9_500_000], \
        "recorded_at is made non-decreasing even when the clock steps back"


def test_absent_timestamp_is_the_stores_receive_time(opener):
    s = opener(clock=lambda: 1_700_000_000_123_456)
    r = s.put(body(1, timestamp=None))
    assert s.get(r.hash).timestamp_us == 1_700_000_000_123_456, \
        "without a timestamp the claim is timed by the store's clock (injectable)"


# ------------------------------------------------------------------ duplicates

def test_duplicate_put_is_exists_with_the_stored_seq(opener):
    s = opener()
    first = s.put(body(1))
    s.put(body(2))
    again = s.put(body(1))
    assert (again.created, again.status, again.seq, again.hash) == (False, "exists", first.seq,
                                                                     first.hash)
    assert s.count == 2, "a duplicate stores nothing"
    s.close()
    s = opener()
    assert s.put(body(1)).seq == first.seq, "still exists with its seq after reopen"


def test_batch_duplicates_inside_and_against_the_store(opener):
    s = opener()
    old = s.put(body(0))
    res = s.put_batch([body(1), body(0), body(1), body(2)])
    assert [r.status for r in res] == ["created", "exists", "exists", "created"]
    assert res[1].seq == old.seq, "an already stored item keeps its stored seq"
    assert res[2].seq == res[0].seq, "a repeat inside the batch gets the first one's seq"
    assert s.count == 3


def test_equal_instants_are_one_assertion(opener):
    s = opener()
    a = s.put(body(1, timestamp=1709294400))
    b = s.put(body(1, timestamp="2024-03-01T12:00:00Z"))
    assert b.hash == a.hash and not b.created


# ------------------------------------------------------------------ batches

def test_batch_results_in_request_order_with_consecutive_seqs(opener):
    s = opener()
    res = s.put_batch([body(i) for i in range(50)])
    assert [r.seq for r in res] == list(range(1, 51))
    assert all(s.get(r.hash).value == {"i": i} for i, r in enumerate(res))


def test_batch_with_a_bad_item_stores_nothing(opener):
    s = opener()
    s.put(body(100))
    items = [body(i) for i in range(5)]
    items[3]["confidence"] = 2
    with pytest.raises(ValidationError) as exc:
        s.put_batch(items)
    assert exc.value.field == "assertions[3].confidence", "the field names the item and field"
    assert s.count == 1 and s.last_seq == 1, "a failed batch stores nothing"
    for b in items[:3]:
        assert s.get(prepare_assertion(b).hash.hex()) is None, "earlier items are not stored"


@pytest.mark.parametrize("items", [[], "x", [{}] * 10_001])
def test_batch_size_is_1_to_10000(opener, items):
    s = opener()
    with pytest.raises(ValidationError) as exc:
        s.put_batch(items)
    assert exc.value.field == "assertions"


# ------------------------------------------------------------------ references

def test_unknown_parent_derived_and_epoch_are_unknown_reference(opener):
    s = opener()
    known = s.put(body(0)).hash
    cases = [({"parent_hash": "ee" * 32}, "parent_hash"),
             ({"derived_from": [known, "ee" * 32]}, "derived_from[1]"),
             ({"epoch": "nope"}, "epoch")]
    for over, field in cases:
        with pytest.raises(UnknownReference) as exc:
            s.put(body(1, **over))
        assert exc.value.field == field and exc.value.code == "unknown_reference"
        assert isinstance(exc.value, ValidationError), "unknown_reference is a 400"
    assert s.count == 1


def test_known_references_are_accepted(opener):
    s = opener()
    a = s.put(body(0)).hash
    s.create_epoch("e1")
    r = s.put(body(1, parent_hash=a, derived_from=[a], epoch="e1"))
    got = s.get(r.hash)
    assert got.parent_hash == a and got.derived_from == [a] and got.epoch == "e1"


def test_earlier_items_of_the_same_batch_count_as_references(opener):
    s = opener()
    h0 = prepare_assertion(body(0)).hash.hex()
    res = s.put_batch([body(0), body(1, parent_hash=h0), body(2, derived_from=[h0])])
    assert all(r.created for r in res)
    h_later = prepare_assertion(body(9)).hash.hex()
    with pytest.raises(UnknownReference) as exc:
        s.put_batch([body(5, parent_hash=h_later), body(9)])
    assert exc.value.field == "assertions[0].parent_hash", "later items do not count"
    assert s.count == 3


# ------------------------------------------------------------------ retraction records, epochs, votes

def test_retract_by_hash_marks_the_assertion_and_survives_reopen(opener):
    s = opener(clock=lambda: T0 * 1_000_000)
    r = s.put(body(1))
    other = s.put(body(2))
    rr = s.retract(hash=r.hash, reason="wrong dose")
    assert rr.retracted == 1 and rr.hashes == [r.hash] and rr.seq == 3
    a = s.get(r.hash)
    assert a.status == "retracted"
    assert a.retraction == {"reason": "wrong dose", "retracted_at": "2024-03-01T12:00:00.000000Z",
                            "seq": 3, "by": None}
    assert s.get(other.hash).status == "active"
    assert s.retract(hash=r.hash, reason="again").retracted == 0, \
        "an already retracted assertion is not counted again"
    assert s.count == 2, "count includes retracted assertions"
    s.close()
    s = opener()
    assert s.get(r.hash).status == "retracted" and s.get(r.hash).retraction["seq"] == 3


def test_retract_targets(opener):
    s = opener()
    with pytest.raises(NotFound):
        s.retract(hash="ee" * 32, reason="x")
    with pytest.raises(ValidationError):
        s.retract(hash="ee" * 32, concept_path="a/b", reason="x")
    with pytest.raises(ValidationError) as exc:
        s.retract(concept_path="a/b", reason="")
    assert exc.value.field == "reason"
    a = s.put(body(0, concept_path="x/y")).hash
    b = s.put(body(1, concept_path="x/y/z")).hash
    rr = s.retract(concept_path="x/y", reason="bad")
    assert rr.hashes == [a], "a concept_path retraction takes the path, not below it"
    assert s.get(b).status == "active"


def test_epochs_and_votes_are_stored(opener):
    s = opener()
    h = s.put(body(0)).hash
    s.create_epoch("e1", description="first")
    s.create_epoch("e2", supersedes=["e1"])
    with pytest.raises(Conflict):
        s.create_epoch("e1")
    with pytest.raises(UnknownReference) as exc:
        s.create_epoch("e3", supersedes=["zz"])
    assert exc.value.field == "supersedes[0]"
    seq = s.vote(h, 0.7)
    with pytest.raises(NotFound):
        s.vote("ee" * 32, 0.5)
    s.close()
    s = opener()
    assert set(s.state.epochs) == {"e1", "e2"} and s.state.epochs["e2"].supersedes == ["e1"]
    o = s.state.ordinal(bytes.fromhex(h))
    assert [(w, q) for _a, w, _r, q, *_ in s.state.votes[o]] == [(0.7, seq)], "votes survive reopen"


# ------------------------------------------------------------------ lifecycle of the store

def test_closed_store_refuses_writes_and_close_is_idempotent(opener):
    s = opener()
    s.close()
    s.close()
    with pytest.raises(StoreClosed):
        s.put(body(1))


def test_context_manager_closes_and_releases_the_lock(data):
    with open_store(data, fs=NoFsyncFS(), audit=False) as s:
        s.put(body(1))
    with open_store(data, fs=NoFsyncFS(), audit=False) as s:
        assert s.count == 1, "the lock is released on exit, so a reopen works"


def test_bad_settings_are_refused(data):
    with pytest.raises(ConfigError) as exc:
        open_store(data, durability="sometimes")
    assert exc.value.field == "durability"
    with pytest.raises(ConfigError):
        open_store(data, segment_size=100)


# ------------------------------------------------------------------ LOCK

def test_second_open_in_process_names_the_holder(opener, data):
    opener()
    with pytest.raises(StoreLocked) as exc:
        open_store(data, fs=NoFsyncFS(), audit=False)
    assert str(exc.value).startswith(f"Store is locked by PID {os.getpid()}")
    assert exc.value.pid == os.getpid()


def test_second_process_is_refused_with_the_holders_pid(opener, data):
    opener()
    code = ("import sys\nfrom stemedb import open_store\n"
            "try:\n    open_store(sys.argv[1])\nexcept Exception as e:\n"
            "    print(type(e).__name__, e, flush=True)\n    sys.exit(3)\n")
    p = subprocess.run([sys.executable, "-c", code, data], capture_output=True, text=True,
                       timeout=120, cwd=REPO)
    assert p.returncode == 3, p.stderr
    assert p.stdout.startswith(f"StoreLocked Store is locked by PID {os.getpid()}"), \
        f"a second process learns who holds the store: {p.stdout!r}"


def test_lock_timeout_waits_for_the_holder(opener, data):
    s = opener()
    t0 = time.monotonic()
    with pytest.raises(StoreLocked):
        open_store(data, fs=NoFsyncFS(), audit=False, lock_timeout=0.3)
    assert time.monotonic() - t0 >= 0.3, "lock_timeout waits before giving up"
    threading.Timer(0.2, s.close).start()
    s2 = opener(lock_timeout=5)
    assert s2.count == 0, "a waiting opener gets the store once the holder closes"


# ------------------------------------------------------------------ metadata.json

def test_metadata_json_fields(opener, data):
    import stemedb
    s = opener(segment_size=4096)
    with open(os.path.join(data, "metadata.json")) as f:
        m0 = json.load(f)
    assert m0["assertion_count"] == 0 and m0["last_seq"] == 0, "written when a store is created"
    for i in range(60):
        s.put(body(i, value="v" * 100))
    s.close()
    with open(os.path.join(data, "metadata.json")) as f:
        m = json.load(f)
    segs = [n for n in os.listdir(os.path.join(data, "wal")) if n.endswith(".log")]
    assert len(segs) > 1
    assert m["version"] == stemedb.__version__ and m["format_version"] == "1.0"
    assert m["assertion_count"] == 60 and m["last_seq"] == 60
    assert m["wal_segment_count"] == len(segs), "wal_segment_count is the number of segment files"
    assert m["segment_size"] == 4096 and len(m["log_id"]) == 16 and m["updated_at"].endswith("Z")


def test_snapshot_rewrites_metadata(opener, data):
    s = opener()
    s.put(body(1))
    s.snapshot()
    with open(os.path.join(data, "metadata.json")) as f:
        assert json.load(f)["assertion_count"] == 1, "metadata.json is rewritten at every snapshot"


# ------------------------------------------------------------------ rotation

def _segments(data):
    return sorted(n for n in os.listdir(os.path.join(data, "wal")) if n.endswith(".log"))


def test_rotation_and_reads_across_segments(opener, data):
    s = opener(segment_size=4096)
    hs = [s.put(body(i, value="v" * 200)).hash for i in range(120)]
    segs = _segments(data)
    assert segs[0] == "segment-00001.log" and len(segs) >= 6
    assert segs == [f"segment-{i:05d}.log" for i in range(1, len(segs) + 1)], "numbered, no gaps"
    assert s.wal_segments == len(segs)
    for name in segs[:-1]:
        assert os.path.getsize(os.path.join(data, "wal", name)) <= 4096, \
            "a segment is sealed before it passes segment_size"
    assert all(s.get(h).value == "v" * 200 for h in hs), "reads work across sealed segments"
    res = s.query("drugs/d3/risk", predicate="p0")
    assert res.assertions, "queries gather candidates from every segment"
    s.close()
    s = opener(segment_size=4096)
    assert s.count == 120 and all(s.get(h) is not None for h in hs), "after reopen (snapshot)"
    s.put(body(999))
    assert s.count == 121


def test_a_batch_never_spans_two_segments(opener, data):
    s = opener(segment_size=4096)
    s.put(body(0))
    s.put_batch([body(i, value="w" * 200) for i in range(1, 60)])
    segs = _segments(data)
    assert len(segs) == 2, "a batch larger than segment_size goes whole into a new segment"
    assert os.path.getsize(os.path.join(data, "wal", segs[1])) > 4096
    s.put(body(100))
    assert len(_segments(data)) == 3, "and the next write starts another"


def test_segment_header_only_file_is_valid(opener, data):
    s = opener()
    s.close()
    assert os.path.getsize(os.path.join(data, "wal", "segment-00001.log")) == SEGMENT_HEADER_SIZE
    assert opener().count == 0


# ------------------------------------------------------------------ threads and group commit

class SlowSyncFS(NoFsyncFS):
    """sync takes 5 ms, like a disk, so concurrent writers pile up behind it."""

    class file_class(File):
        def sync(self):
            self.fs.syncs += 1
            time.sleep(0.005)


@pytest.mark.parametrize("durability", ["fsync", "batch"])
def test_many_writer_threads_share_fsyncs(opener, durability):
    fs = SlowSyncFS()
    s = opener(fs=fs, durability=durability)
    base_syncs = fs.syncs
    results, errors = [], []

    def worker(t):
        try:
            for i in range(25):
                results.append(s.put(body(t * 1000 + i)))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(r.seq for r in results) == list(range(1, 201)), "every put gets its own seq"
    assert s.count == 200 and s.check() == []
    used = fs.syncs - base_syncs
    assert used <= 120, f"group commit: 200 concurrent puts must share fsyncs (used {used})"


def test_concurrent_readers_and_writers(opener):
    s = opener(segment_size=8192)
    done = threading.Event()
    bad = []

    def reader():
        while not done.is_set():
            for a in s.query("drugs/d1/risk", predicate="p1").assertions:
                if a.concept_path != "drugs/d1/risk":
                    bad.append(a)
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    hs = [r.hash for r in s.put_batch([body(i) for i in range(1, 200)])]
    for i in range(200, 300):
        hs.append(s.put(body(i)).hash)
    done.set()
    for t in readers:
        t.join()
    assert not bad and s.check() == [] and all(s.get(h) for h in hs)


class _FailingDirSyncFS(NoFsyncFS):
    """fsync of a directory fails once armed: the start-up snapshot cannot finish."""

    armed = False

    def fsync_dir(self, path):
        if self.armed and path.endswith("indexes"):
            raise OSError(5, "injected EIO on directory fsync")
        super().fsync_dir(path)


def test_a_failed_open_releases_the_lock(data):
    s = open_store(data, fs=NoFsyncFS(), audit=False)
    s.put(body(1))
    s.close()
    # without its snapshot and metadata.json the open rebuilds and writes its
    # first snapshot before it answers: the injected failure lands in the open
    os.remove(os.path.join(data, "db", "indexes", "snapshot.idx"))
    os.remove(os.path.join(data, "metadata.json"))
    fs = _FailingDirSyncFS()
    fs.armed = True
    with pytest.raises(OSError):
        open_store(data, fs=fs, audit=False)
    with open_store(data, fs=NoFsyncFS(), audit=False) as s:
        assert s.count == 1, "after a failed open the same process can open the store again"


def test_a_refused_write_uses_no_seq(opener):
    s = opener()
    s.put(body(0))
    s.create_epoch("e1")
    with pytest.raises(Conflict):
        s.create_epoch("e1")
    later = prepare_assertion(body(9)).hash.hex()
    with pytest.raises(UnknownReference):
        s.put_batch([body(1), body(2), body(3, parent_hash=later)])
    assert s.put(body(4)).seq == 3, "seqs stay consecutive: refused writes leave no gaps"
    s.close()
    s = opener()
    assert s.put(body(5)).seq == 4


def test_snapshots_are_taken_periodically(opener, data):
    s = opener(snapshot_interval=10)
    meta = os.path.join(data, "metadata.json")
    for i in range(25):
        s.put(body(i))
    deadline = time.monotonic() + 10
    count = 0
    while time.monotonic() < deadline:
        with open(meta) as f:
            count = json.load(f)["assertion_count"]
        if count >= 20:
            break
        time.sleep(0.02)
    assert count >= 20, "a snapshot (and metadata.json) follows every snapshot_interval records"
    s.close()
