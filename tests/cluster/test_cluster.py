"""Cluster mode on loopback: three NATS servers (one JetStream cluster) and
StemeDB nodes in this process (stemedb.cluster.node.ClusterNode), plus one
test with real ``stemedb serve`` processes.  Every wait is bounded."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from stemedb import open_store
from stemedb.cluster.errors import ClusterUnavailable, NotCaughtUp
from stemedb.cluster.node import ClusterNode
from stemedb.cluster.stream import ClusterSettings
from stemedb.errors import Conflict, UnknownReference
from stemedb.model import prepare_assertion

pytestmark = pytest.mark.slow


def init_stream(urls: str, stream: str) -> None:
    env = dict(os.environ, STEMEDB_CLUSTER_NATS=urls, STEMEDB_CLUSTER_STREAM=stream)
    r = subprocess.run([sys.executable, "-m", "stemedb", "cluster", "init", "--timeout", "30"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"stream {stream}" in r.stdout
    # idempotent: a second run checks
    r = subprocess.run([sys.executable, "-m", "stemedb", "cluster", "init"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "checked" in r.stdout, r.stderr


def claim(i, **kw):
    return {"concept_path": f"c/{i % 7}", "predicate": "p", "value": i, "confidence": 0.5,
            "timestamp": 1_700_000_000 + i, **kw}


@pytest.fixture(scope="module")
def stream(nats_cluster):
    init_stream(nats_cluster.urls, "inproc")
    return "inproc"


@pytest.fixture
def nodes(nats_cluster, stream, tmp_path):
    made = []

    def make(name, path=None):
        store = open_store(path or str(tmp_path / name), durability="fsync")
        cs = ClusterSettings(urls=nats_cluster.urls.split(","), stream=stream, node_id=name,
                             read_wait_ms=10_000)
        node = ClusterNode(store, cs).start()
        made.append(store)
        return store, node
    yield make
    for s in made:
        s.close()


def test_write_on_one_node_is_read_on_another_with_min_seq(nodes):
    a, na = nodes("a")
    b, nb = nodes("b")
    r = a.put(claim(1))
    assert r.created and r.seq == na.applied     # a record's seq is its stream sequence
    nb.wait_for(r.seq)                       # the read barrier of min_seq
    assert b.get(r.hash) is not None and b.get(r.hash).value == 1
    batch = b.put_batch([claim(i) for i in range(2, 6)] + [claim(1)])
    assert [x.created for x in batch] == [True] * 4 + [False]
    assert batch[-1].seq == r.seq                        # exists: the stored seq
    # one atomic batch: five messages at consecutive stream seqs, item i at first + i;
    # the fifth (already stored) wrote nothing locally
    first = batch[0].seq
    assert [x.seq for x in batch[:4]] == list(range(first, first + 4))
    assert nb.applied == first + 4
    na.wait_for(first + 4)
    assert a.count == b.count and a.last_seq == b.last_seq == first + 3
    assert [x.hash for x in a.query("c", include_descendants=True, limit=100).assertions] == \
        [x.hash for x in b.query("c", include_descendants=True, limit=100).assertions]
    # state-dependent refusals are decided at apply time, the same everywhere
    a.create_epoch("e1")
    with pytest.raises(Conflict):
        b.create_epoch("e1")
    with pytest.raises(UnknownReference):
        b.put(claim(99, parent_hash="ab" * 32))
    seq = b.vote(r.hash, 0.9)
    na.wait_for(seq)
    assert a.last_seq == b.last_seq == seq
    # a seq nobody wrote yet: not caught up after the bounded wait
    with pytest.raises(NotCaughtUp):
        na.wait_for(a.last_seq + 10_000_000, timeout_ms=200)
    assert nb.status()["lag"] == 0 and nb.status()["applied_seq"] == seq


def test_a_retried_publish_writes_once(nodes):
    a, na = nodes("a")
    rec = prepare_assertion(claim(1000), default_time_us=1)
    first = na.replicate("assert", ([rec], False))
    stream_before = na.status()["stream_seq"]
    count = a.count
    again = na.replicate("assert", ([rec], False))      # same message id: a client retry
    assert first[0].created and not again[0].created
    assert again[0].seq == first[0].seq and a.count == count
    time.sleep(1.2)                                     # the consumer re-reads stream info
    assert na.status()["stream_seq"] == stream_before


def test_a_retried_batch_writes_once(nodes):
    a, na = nodes("a")
    recs = [prepare_assertion(claim(1100 + i), default_time_us=1) for i in range(3)]
    first = na.replicate("assert", (recs, True))
    stream_before = na.status()["stream_seq"]
    again = na.replicate("assert", (recs, True))        # the same atomic batch, retried
    assert [x.created for x in first] == [True] * 3 and [x.created for x in again] == [False] * 3
    assert [x.seq for x in again] == [x.seq for x in first]
    time.sleep(1.2)
    assert na.status()["stream_seq"] == stream_before


def test_a_batch_of_ten_thousand_is_one_atomic_batch(nodes):
    a, na = nodes("a")
    b, nb = nodes("b")
    res = a.put_batch([claim(500_000 + i) for i in range(10_000)])
    seqs = [x.seq for x in res]
    assert seqs == list(range(seqs[0], seqs[0] + 10_000))
    nb.wait_for(seqs[-1])
    assert b.count == a.count and b.last_seq == a.last_seq == seqs[-1]


def test_restart_inside_a_batch_passes_over_what_it_applied(nodes):
    a, na = nodes("a")
    b, nb = nodes("b")
    path = b.path
    kept = b.put(claim(6000))
    # the batch's last item exists, so b's log ends one seq before the batch does
    res = b.put_batch([claim(6001), claim(6002), claim(6000)])
    assert b.last_seq == res[1].seq and nb.applied == res[1].seq + 1 and res[2].seq == kept.seq
    b.close()
    b2, nb2 = nodes("b", path)
    assert nb2.resumed_from == res[1].seq + 1          # inside the batch: passed over
    later = a.put(claim(6003))
    nb2.wait_for(later.seq)
    assert nb2.fault is None and b2.count == a.count and b2.last_seq == a.last_seq == later.seq


def test_restart_replays_locally_then_resumes_the_stream(nodes, tmp_path):
    a, na = nodes("a")
    b, nb = nodes("b")
    path = b.path
    for i in range(5):
        a.put(claim(2000 + i))
    nb.wait_for(a.last_seq)
    b.close()                                           # b is away while a writes
    for i in range(5):
        a.put(claim(3000 + i))
    b2, nb2 = nodes("b", path)
    nb2.wait_for(a.last_seq)
    assert b2.count == a.count and b2.last_seq == a.last_seq


def test_a_log_from_elsewhere_refuses_to_start(nats_cluster, stream, tmp_path):
    from stemedb.cluster.errors import ClusterMismatch
    path = str(tmp_path / "single")
    with open_store(path) as s:
        s.put(claim(1))
    store = open_store(path)
    try:
        cs = ClusterSettings(urls=nats_cluster.urls.split(","), stream=stream, node_id="x")
        with pytest.raises(ClusterMismatch, match="did not come from stream"):
            ClusterNode(store, cs).start()
    finally:
        store.close()


def test_without_quorum_writes_stop_reads_go_on_and_writes_resume(nats_cluster, nodes):
    a, na = nodes("a")
    r = a.put(claim(4000))
    count = a.count
    nats_cluster.kill(1)
    nats_cluster.kill(2)
    try:
        t0 = time.monotonic()
        with pytest.raises(ClusterUnavailable):
            a.put(claim(4001))
        assert time.monotonic() - t0 < 15
        assert a.get(r.hash) is not None                # reads answer
        assert a.count == count                         # nothing acknowledged, nothing applied
    finally:
        nats_cluster.start(1)
        nats_cluster.start(2)
    deadline = time.monotonic() + 60
    while True:                                          # writes resume without a restart
        try:
            r2 = a.put(claim(4002))
            break
        except ClusterUnavailable:
            assert time.monotonic() < deadline, "writes did not resume within 60 s"
            time.sleep(0.5)
    # an attempt that timed out while the quorum came back may have been stored:
    # its retry then answers exists, the same assertion, written once
    assert a.get(r2.hash) is not None and r2.seq > 0
