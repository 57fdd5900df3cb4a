"""A node with an empty data directory bootstraps from the S3 WAL archive
(SeaweedFS on loopback) and consumes only the stream's tail; without an
archive it replays the stream; an archive of another history refuses.
Three NATS servers, nodes in this process; every wait is bounded."""
from __future__ import annotations

import json
import logging
import os

import pytest

from stemedb import open_store
from stemedb.cluster.bootstrap import MARKER, bootstrap
from stemedb.cluster.errors import ClusterMismatch
from stemedb.cluster.node import ClusterNode
from stemedb.cluster.stream import ClusterSettings
from stemedb.ops import archive

from .seaweed import BUCKET
from .test_cluster import claim, init_stream

pytestmark = pytest.mark.slow

SEGMENT = 16 * 1024     # small segments: the archive holds several sealed ones


@pytest.fixture(scope="module")
def streams(nats_cluster):
    for name in ("boot", "other"):
        init_stream(nats_cluster.urls, name)
    return nats_cluster.urls.split(",")


@pytest.fixture
def node(streams, tmp_path):
    made = []

    def make(name, stream="boot", path=None):
        store = open_store(path or str(tmp_path / name), durability="fsync",
                           segment_size=SEGMENT)
        cs = ClusterSettings(urls=streams, stream=stream, node_id=name, read_wait_ms=20_000)
        try:
            n = ClusterNode(store, cs).start()
        except BaseException:
            store.close()
            raise
        made.append(store)
        return store, n
    yield make
    for s in made:
        s.close()


def write(store, start: int, n: int) -> None:
    """``n`` claims: batches of 5, and every 20th a single put and a vote."""
    i = start
    while i < start + n:
        if i % 20 == 0:
            r = store.put(claim(i))
            store.vote(r.hash, 0.8)
            i += 1
        else:
            store.put_batch([claim(k) for k in range(i, i + 5)])
            i += 5


def answers(store) -> list:
    from stemedb.core.lens import LENSES
    out = [store.count, store.last_seq]
    for lens in LENSES:
        q = store.query("c", include_descendants=True, lens=lens, limit=1000)
        out.append([(a.hash, a.value) for a in q.assertions])
    return out


def test_an_empty_node_bootstraps_from_s3_and_consumes_only_the_tail(node, s3, tmp_path,
                                                                     caplog):
    target = f"{BUCKET}/cluster-boot"
    a, na = node("a")
    write(a, 0, 200)
    a.snapshot()                     # a snapshot in the active segment ...
    archive.push(a.path, target, s3=s3.client)
    write(a, 200, 200)               # ... sealed by these: the second push covers it
    a.snapshot()
    state = archive.push(a.path, target, s3=s3.client)
    assert state["last_archived_segment"] >= 2
    write(a, 400, 60)                # the tail: only in the stream
    a.create_epoch("after-archive")
    archived_stream_seq = state["last_archived_seq"]
    assert 0 < archived_stream_seq < na.applied

    path = str(tmp_path / "b")
    caplog.set_level(logging.INFO, logger="stemedb.cluster")
    info = bootstrap(path, target, endpoint_url=s3.endpoint)
    assert info is not None and info["last_seq"] == state["last_archived_seq"]
    assert info["snapshot"] and info["snapshot"].endswith(".idx")      # the covered one
    assert any("bootstrapped" in r.getMessage() and "cluster-boot" in r.getMessage()
               for r in caplog.records)
    b, nb = node("b", path=path)
    assert nb.resumed_from == archived_stream_seq + 1
    nb.wait_for(a.last_seq)
    # only the tail came from the stream
    assert nb.messages_applied == na.applied - archived_stream_seq
    assert answers(b) == answers(a)
    with open(os.path.join(path, "cluster.json")) as f:
        ident = json.load(f)
    assert ident["stream"] == "boot" and ident["bootstrapped_from"]["root"] == info["root"]
    assert not os.path.exists(os.path.join(path, MARKER))
    # and it goes on like any node: a write on b reaches a
    r = b.put(claim(5000))
    na.wait_for(r.seq)
    assert a.get(r.hash) is not None and answers(b) == answers(a)
    # a non-empty data directory is never bootstrapped over
    assert bootstrap(path, target, endpoint_url=s3.endpoint) is None


def test_without_an_archive_the_node_replays_the_stream(node, s3, tmp_path):
    a, na = node("a")
    write(a, 0, 10)
    path = str(tmp_path / "c")
    assert bootstrap(path, f"{BUCKET}/nothing-here", endpoint_url=s3.endpoint) is None
    assert bootstrap(path, None) is None
    c, nc = node("c", path=path)
    assert nc.resumed_from == 1
    nc.wait_for(a.last_seq)
    assert nc.messages_applied == na.applied and answers(c) == answers(a)


def test_an_archive_of_another_history_refuses(node, s3, tmp_path):
    target = f"{BUCKET}/cluster-other"
    a, na = node("a")
    write(a, 0, 200)
    state = archive.push(a.path, target, s3=s3.client)
    assert state["last_archived_seq"] > 0
    # stream "other" does not reach the archive's seqs
    path = str(tmp_path / "d")
    assert bootstrap(path, target, endpoint_url=s3.endpoint) is not None
    with pytest.raises(ClusterMismatch, match="not this stream's history"):
        node("d", stream="other", path=path)
    with pytest.raises(ClusterMismatch):          # still refused at the next start
        node("d", stream="other", path=path)
    # stream "other" reaches them, with other messages
    o, no = node("o", stream="other")
    while no.applied <= state["last_archived_seq"]:
        o.put(claim(10_000 + no.applied))
    path = str(tmp_path / "e")
    assert bootstrap(path, target, endpoint_url=s3.endpoint) is not None
    with pytest.raises(ClusterMismatch, match="is not what stream other holds"):
        node("e", stream="other", path=path)


def _delete_stream(urls: list[str], name: str) -> None:
    import asyncio

    import nats

    async def go():
        nc = await nats.connect(servers=urls)
        try:
            await nc.jetstream(timeout=10).delete_stream(name)
        finally:
            await nc.close()
    asyncio.run(go())


def _cluster_init(urls: list[str], stream: str, *args: str, env: dict | None = None):
    import subprocess
    import sys
    e = dict(os.environ, STEMEDB_CLUSTER_NATS=",".join(urls), STEMEDB_CLUSTER_STREAM=stream,
             **(env or {}))
    return subprocess.run([sys.executable, "-m", "stemedb", "cluster", "init", "--timeout", "30",
                           *args], env=e, capture_output=True, text=True, timeout=120)


def test_a_lost_stream_is_restored_from_the_archive(node, streams, s3, tmp_path):
    """docs/operations/cluster.md, "Restore the whole cluster": the stream and
    every node are lost; the archive is all there is."""
    target = f"{BUCKET}/cluster-lost"
    _cluster_init(streams, "lost")
    a, na = node("a", stream="lost")
    write(a, 0, 200)
    state = archive.push(a.path, target, s3=s3.client)
    archived = state["last_archived_seq"]
    assert 0 < archived <= a.last_seq

    def held(store):
        q = store.query("c", include_descendants=True, limit=1000, include_retracted=True)
        return sorted((x.seq, x.hash) for x in q.assertions)
    kept = [x for x in held(a) if x[0] <= archived]
    write(a, 200, 20)                        # acknowledged after the archive: these are lost
    a.close()
    _delete_stream(streams, "lost")          # every NATS server lost its JetStream data

    env = {"STEMEDB_S3_ENDPOINT_URL": s3.endpoint}
    r = _cluster_init(streams, "lost", "--from-archive", target, env=env)
    assert r.returncode == 0, r.stderr
    assert "created" in r.stdout and f"after seq {archived}" in r.stdout
    r = _cluster_init(streams, "lost", "--from-archive", target, env=env)   # idempotent
    assert r.returncode == 0 and "checked" in r.stdout, r.stderr

    # two nodes from empty data directories bootstrap from the archive
    restored = []
    for name in ("b", "c"):
        path = str(tmp_path / name)
        assert bootstrap(path, target, endpoint_url=s3.endpoint)["last_seq"] == archived
        store, n = node(name, stream="lost", path=path)
        assert store.last_seq == archived and n.resumed_from == archived + 1
        restored.append((store, n))
    (b, nb), (c, nc) = restored
    assert held(b) == kept                   # exactly the archived history
    # seqs go on after the archive's, and the nodes agree
    w = b.put(claim(9000))
    assert w.created and w.seq == archived + 1
    nc.wait_for(w.seq)
    assert answers(b) == answers(c)

    # the old node's own directory (another stream's history) is refused
    with pytest.raises(ClusterMismatch):
        node("a2", stream="lost", path=a.path)
    # a plain init never writes over the restored stream; another archive is refused
    r = _cluster_init(streams, "lost", env=env)
    assert r.returncode == 0 and "checked" in r.stdout, r.stderr
    other = f"{BUCKET}/cluster-lost-other"
    o, _no = node("o", stream="other")
    write(o, 3000, 200)
    assert archive.push(o.path, other, s3=s3.client)["last_archived_seq"] > 0
    r = _cluster_init(streams, "lost", "--from-archive", other, env=env)
    assert r.returncode == 1 and "never writes over" in r.stderr
