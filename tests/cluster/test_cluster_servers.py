"""Real `stemedb serve` processes as cluster nodes over three loopback NATS
servers: eight writers spread over the nodes while the stream leader's NATS
server and then a node are killed with -9 and restarted.  Every acknowledged
write is on every node afterwards, batches whole, and the nodes agree."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.integration.test_server import Server

pytestmark = pytest.mark.slow
STREAM = "served"


def call(url, method="GET", doc=None, timeout=10):
    data = json.dumps(doc).encode() if doc is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), dict(e.headers)


def stream_leader(urls: str) -> str:
    async def go():
        import nats
        nc = await nats.connect(servers=urls.split(","))
        try:
            return (await nc.jetstream().stream_info(STREAM)).cluster.leader
        finally:
            await nc.close()
    return asyncio.run(go())


@pytest.fixture
def cluster_nodes(nats_cluster, tmp_path):
    env = dict(os.environ, STEMEDB_CLUSTER_NATS=nats_cluster.urls, STEMEDB_CLUSTER_STREAM=STREAM)
    r = subprocess.run([sys.executable, "-m", "stemedb", "cluster", "init"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    nodes = []
    for name in ("a", "b", "c"):
        d = tmp_path / name
        d.mkdir()
        nodes.append(Server(d / "data", STEMEDB_CLUSTER_NATS=nats_cluster.urls,
                            STEMEDB_CLUSTER_STREAM=STREAM, STEMEDB_NODE_ID=name,
                            STEMEDB_READ_WAIT_MS=10000))
    for n in nodes:
        n.start(wait=False)
    for n in nodes:
        n.wait_healthy(60)
    yield nodes
    for n in nodes:
        n.stop()


class Writers:
    """Eight threads over the nodes; every 201 is recorded (hash or batch)."""

    def __init__(self, urls, threads=8, per_thread=40, seconds=40.0):
        self.urls, self.acked, self.batches = urls, [], []
        self.lock = threading.Lock()
        self.deadline = time.monotonic() + seconds
        self.threads = [threading.Thread(target=self.run, args=(t, per_thread), daemon=True)
                        for t in range(threads)]

    def run(self, t, n):
        url = self.urls[t % len(self.urls)]
        for i in range(n):
            if time.monotonic() > self.deadline:
                return
            k = t * 1000 + i
            try:
                if i % 10 == 9:
                    items = [{"concept_path": f"w/{t}", "predicate": "b", "value": [k, j],
                              "confidence": 0.5, "timestamp": 1_700_000_000 + k}
                             for j in range(3)]
                    st, doc, _ = call(url + "/v1/assert/batch", "POST", {"assertions": items})
                    if st == 201:
                        with self.lock:
                            self.batches.append([x["hash"] for x in doc["results"]])
                else:
                    st, doc, _ = call(url + "/v1/assert", "POST", {
                        "concept_path": f"w/{t}", "predicate": "p", "value": k,
                        "confidence": 0.5, "timestamp": 1_700_000_000 + k})
                    if st == 201:
                        with self.lock:
                            self.acked.append(doc["hash"])
            except OSError:
                pass                       # a killed node: not acknowledged
            time.sleep(0.02)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        for t in self.threads:
            t.join(60)


def test_nodes_survive_kills_and_agree(nats_cluster, cluster_nodes):
    a, b, c = cluster_nodes
    # read-your-writes across nodes: a write on a, read on b with min_seq
    st, doc, _ = call(a.url + "/v1/assert", "POST", {"concept_path": "ryw/x", "predicate": "p",
                                                      "value": 1, "confidence": 0.9})
    assert st == 201, doc
    st, got, _ = call(b.url + f"/v1/assertions/{doc['hash']}?min_seq={doc['seq']}")
    assert st == 200 and got["value"] == 1
    st, q, _ = call(b.url + f"/v1/query?concept_path=ryw/x&min_seq={doc['seq']}")
    assert st == 200 and q["assertions"][0]["hash"] == doc["hash"]
    st, err, headers = call(b.url + f"/v1/query?concept_path=ryw/x&min_seq=bad")
    assert st == 400 and err["error"]["field"] == "min_seq"
    h = call(c.url + "/v1/health")[1]
    assert h["cluster"]["node_id"] == "c" and set(h["cluster"]) >= {
        "applied_seq", "stream_seq", "lag"}

    leader = nats_cluster.server_of(stream_leader(nats_cluster.urls))
    with Writers([a.url, b.url, c.url]) as w:
        time.sleep(2)
        nats_cluster.kill(leader)          # the stream leader's NATS server, kill -9
        time.sleep(3)
        c.kill9()                          # then a StemeDB node
        time.sleep(2)
        nats_cluster.start(leader)
        c.start(wait=False)
    c.wait_healthy(60)
    assert w.acked and w.batches
    # every node catches up to the same last seq
    last = max(call(n.url + "/v1/health")[1]["last_seq"] for n in (a, b, c))
    for n in (a, b, c):
        st, _doc, _ = call(n.url + f"/v1/assertions/{doc['hash']}?min_seq={last}", timeout=15)
        assert st == 200
    healths = [call(n.url + "/v1/health")[1] for n in (a, b, c)]
    assert len({(x["assertion_count"], x["last_seq"]) for x in healths}) == 1, healths
    # every acknowledged write is on every node; batches whole
    for n in (a, b, c):
        for hsh in w.acked + [x for bt in w.batches for x in bt]:
            assert call(n.url + f"/v1/assertions/{hsh}")[0] == 200, (n.url, hsh)
    # the same answers under every lens
    from stemedb.http.schemas import LENS_NAMES
    for lens in LENS_NAMES:
        answers = []
        for n in (a, b, c):
            st, q, _ = call(n.url + f"/v1/query?concept_path=w&include_descendants=true"
                                    f"&lens={lens}&limit=1000")
            assert st == 200, q
            answers.append(json.dumps(q, sort_keys=True))
        assert len(set(answers)) == 1, lens
