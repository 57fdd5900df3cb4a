"""Cluster mode measured on one machine: three loopback NATS servers (one
JetStream cluster, sync_interval: always) and three StemeDB nodes.

    .venv/bin/python -m bench.cluster [--writes N] [--out bench/results/cluster-DATE.md]

Measures (docs/scaling.md quotes them):
- write throughput and p99 latency with 8 writer threads spread over three
  in-process cluster nodes, against one single-node store with
  durability=fsync under the same 8 threads, and the largest lag a node
  showed meanwhile;
- batches of 1,000 (one JetStream atomic batch of 1,000 messages each) from
  one writer, assertions/s against the single node's ``put_batch``;
- RTO after killing (-9) the NATS server that leads the stream: time from
  the kill to the next acknowledged write;
- RPO: acknowledged writes missing on any node afterwards (must be 0);
- catch-up: a real ``stemedb serve`` node killed -9 while writes go on,
  restarted, and the time until it has applied the stream's last seq.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stemedb import open_store  # noqa: E402
from stemedb.cluster.errors import ClusterUnavailable  # noqa: E402
from stemedb.cluster.node import ClusterNode  # noqa: E402
from stemedb.cluster.stream import ClusterSettings, ensure_stream  # noqa: E402
from tests.cluster.natscluster import NatsCluster  # noqa: E402


def claim(k):
    return {"concept_path": f"bench/{k % 97}", "predicate": "p", "value": k,
            "confidence": 0.5, "timestamp": 1_700_000_000 + k}


def init_stream(urls, name):
    async def go():
        import nats
        nc = await nats.connect(servers=urls.split(","))
        try:
            for _ in range(100):
                try:
                    return (await ensure_stream(nc.jetstream(timeout=5), name))[0]
                except Exception:  # noqa: BLE001 - cluster forming
                    await asyncio.sleep(0.3)
        finally:
            await nc.close()
    return asyncio.run(go())


def leader(urls, name):
    async def go():
        import nats
        nc = await nats.connect(servers=urls.split(","))
        try:
            return (await nc.jetstream().stream_info(name)).cluster.leader
        finally:
            await nc.close()
    return asyncio.run(go())


def run_writers(puts, n_writes, threads=8, on_sample=None):
    """puts[i % len(puts)](doc) from `threads` threads; returns (seconds, latencies)."""
    lat, lock = [], threading.Lock()
    per = n_writes // threads

    def work(t):
        put = puts[t % len(puts)]
        mine = []
        for i in range(per):
            t0 = time.perf_counter()
            put(claim(t * 10_000_000 + i))
            mine.append(time.perf_counter() - t0)
        with lock:
            lat.extend(mine)
    ths = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for th in ths:
        th.start()
    while any(th.is_alive() for th in ths):
        if on_sample:
            on_sample()
        time.sleep(0.05)
    for th in ths:
        th.join()
    return time.perf_counter() - t0, lat


def run_batches(put_batch, n, size=1000):
    """``n`` batches of ``size`` from one writer: assertions/s and per-batch ms."""
    lat = []
    t0 = time.perf_counter()
    for b in range(n):
        t = time.perf_counter()
        res = put_batch([claim(900_000_000 + b * size + i) for i in range(size)])
        assert all(r.created for r in res)
        lat.append(time.perf_counter() - t)
    secs = time.perf_counter() - t0
    return {"batches": n, "size": size, "per_s": n * size / secs,
            "p50_ms": statistics.median(lat) * 1e3, "max_ms": max(lat) * 1e3}


def p99(xs):
    return statistics.quantiles(xs, n=100)[98] if len(xs) >= 100 else max(xs)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=4000)
    ap.add_argument("--batches", type=int, default=20, help="batches of 1,000 (default 20)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    root = tempfile.mkdtemp(prefix="stemedb-cluster-bench-")
    nc = NatsCluster(os.path.join(root, "nats"))
    nc.start()
    out = {}
    try:
        # single node, durability=fsync, 8 threads
        single = open_store(os.path.join(root, "single"), durability="fsync")
        secs, lat = run_writers([single.put], args.writes)
        out["single"] = {"writes": len(lat), "seconds": secs, "per_s": len(lat) / secs,
                         "p50_ms": statistics.median(lat) * 1e3, "p99_ms": p99(lat) * 1e3}
        out["single_batch"] = run_batches(single.put_batch, args.batches)
        single.close()

        init_stream(nc.urls, "bench")
        stores, nodes = [], []
        for name in "abc":
            s = open_store(os.path.join(root, name), durability="fsync")
            nodes.append(ClusterNode(s, ClusterSettings(urls=nc.urls.split(","), stream="bench",
                                                        node_id=name)).start())
            stores.append(s)
        max_lag = [0]

        def sample():
            max_lag[0] = max([max_lag[0]] + [n.status()["lag"] for n in nodes])
        secs, lat = run_writers([s.put for s in stores], args.writes, on_sample=sample)
        out["cluster"] = {"writes": len(lat), "seconds": secs, "per_s": len(lat) / secs,
                          "p50_ms": statistics.median(lat) * 1e3, "p99_ms": p99(lat) * 1e3,
                          "max_lag_msgs": max_lag[0]}
        out["cluster_batch"] = run_batches(stores[0].put_batch, args.batches)
        for n in nodes:         # every node applies every batch
            n.wait_for(stores[0].last_seq, 60_000)

        # RTO: kill the stream leader's NATS server under one writer per node
        acked, stop = [], threading.Event()
        first_after = {}
        lock = threading.Lock()
        kill_at = [None]

        def writer(t):
            k = 0
            while not stop.is_set():
                k += 1
                started = time.monotonic()
                try:
                    r = stores[t].put(claim(50_000_000 + t * 1_000_000 + k))
                except ClusterUnavailable:
                    time.sleep(0.05)
                    continue
                now = time.monotonic()
                with lock:
                    acked.append(r.hash)
                    # the first write both sent and acknowledged after the kill
                    if kill_at[0] is not None and started > kill_at[0] and "t" not in first_after:
                        first_after["t"] = now - kill_at[0]
        ths = [threading.Thread(target=writer, args=(t,)) for t in range(3)]
        for th in ths:
            th.start()
        time.sleep(1.0)
        lead = leader(nc.urls, "bench")
        idx = nc.server_of(lead)
        # acknowledged before the kill do not count toward the RTO
        with lock:
            kill_at[0] = time.monotonic()
        nc.kill(idx)
        deadline = time.monotonic() + 60
        while "t" not in first_after and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        nc.start(idx)
        stop.set()
        for th in ths:
            th.join()
        out["rto_leader_kill_s"] = first_after.get("t")
        out["rto_leader"] = lead
        last = max(s.last_seq for s in stores)
        for n in nodes:
            n.wait_for(last, 30_000)
        missing = sum(1 for s in stores for h in acked if s.get(h) is None)
        out["acked_during_kill"] = len(acked)
        out["acked_missing"] = missing
        out["nodes_agree"] = len({(s.count, s.last_seq) for s in stores}) == 1
        for s in stores:
            s.close()

        out["catch_up"] = catch_up(nc, root)
    finally:
        nc.stop()
    report(out, args)


def catch_up(nc, root):
    """A real serve node killed -9 while another takes writes; time to catch up."""
    from tests.integration.test_server import Server
    import urllib.request
    env = dict(STEMEDB_CLUSTER_NATS=nc.urls, STEMEDB_CLUSTER_STREAM="bench")
    srv = []
    for name in "xy":
        os.makedirs(os.path.join(root, name))
        srv.append(Server(os.path.join(root, name, "data"), STEMEDB_NODE_ID=name, **env))
    for s in srv:
        s.start(wait=False)
    for s in srv:
        s.wait_healthy(60)
    x, y = srv

    def post(url, doc):
        req = urllib.request.Request(url + "/v1/assert", json.dumps(doc).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def health(s):
        with urllib.request.urlopen(s.url + "/v1/health", timeout=5) as r:
            return json.loads(r.read())
    try:
        # both new nodes first replay what the earlier phases wrote
        t_end = time.monotonic() + 180
        while time.monotonic() < t_end and any(health(s)["cluster"]["lag"] for s in srv):
            time.sleep(0.1)
        replayed = {s.env["STEMEDB_NODE_ID"]: health(s)["cluster"]["applied_seq"] for s in srv}
        y.kill9()
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 5.0:          # writes go on while y is down
            post(x.url, claim(90_000_000 + n))
            n += 1
        target = health(x)["last_seq"]
        t_start = time.monotonic()
        y.start(wait=False)
        while True:
            try:
                h = health(y)
                if h.get("last_seq", 0) >= target:
                    break
            except OSError:
                pass
            if time.monotonic() - t_start > 120:
                return {"writes_while_down": n, "seconds": None}
            time.sleep(0.05)
        return {"writes_while_down": n, "seconds": time.monotonic() - t_start,
                "stream_replayed_from_empty_at_start": replayed,
                "stream_messages_behind_at_restart": h["cluster"]["stream_seq"]}
    finally:
        for s in srv:
            s.stop()


def report(out, args):
    date = time.strftime("%Y-%m-%d")
    path = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                    f"cluster-{date}.md")
    s, c = out["single"], out["cluster"]
    cu = out["catch_up"]
    lines = [
        f"# Cluster mode measured ({date})", "",
        f"Command: `.venv/bin/python -m bench.cluster --writes {args.writes} --batches "
        f"{args.batches}`", "",
        f"Machine: {platform.platform()}, {os.cpu_count()} cores (shared with other work while "
        f"measured); three nats-server 2.15 on loopback in one JetStream cluster "
        f"(`sync_interval: always`, file storage, stream replicas 3); StemeDB nodes with "
        f"`durability=fsync`.", "",
        "| what | writes | writes/s | p50 ms | p99 ms | largest node lag (messages) |",
        "|---|---|---|---|---|---|",
        f"| one node, fsync, 8 writer threads | {s['writes']} | {s['per_s']:.0f} | "
        f"{s['p50_ms']:.2f} | {s['p99_ms']:.2f} | - |",
        f"| cluster, 3 nodes in one process, 8 writer threads over them | {c['writes']} | "
        f"{c['per_s']:.0f} | {c['p50_ms']:.2f} | {c['p99_ms']:.2f} | {c['max_lag_msgs']} |",
        "",
        "| batches of 1,000, one writer | batches | assertions/s | p50 ms per batch | "
        "max ms |", "|---|---|---|---|---|",
        *[f"| {label} | {b['batches']} | {b['per_s']:.0f} | {b['p50_ms']:.1f} | "
          f"{b['max_ms']:.1f} |" for label, b in (
              ("one node, fsync", out["single_batch"]),
              ("cluster (one atomic batch of 1,000 messages each)", out["cluster_batch"]))],
        "",
        f"- RTO, stream leader's NATS server ({out['rto_leader']}) killed -9 under three "
        f"writers: the first write sent after the kill was acknowledged "
        f"{out['rto_leader_kill_s']:.2f} s after the kill."
        if out["rto_leader_kill_s"] is not None else "- RTO: no write acknowledged within 60 s",
        f"- RPO: {out['acked_during_kill']} writes acknowledged around the kill; "
        f"{out['acked_missing']} missing on any node afterwards; nodes agree on count and "
        f"last seq: {out['nodes_agree']}.",
        f"- Catch-up: a `stemedb serve` node killed -9 while {cu['writes_while_down']} writes "
        f"went to another node over 5 s, restarted: applied the stream's last seq "
        + (f"{cu['seconds']:.2f} s after the restart (recovery of its WAL, NATS connect, "
           f"then the stream from its next seq)." if cu["seconds"] is not None
           else "not within 120 s."),
        "", "Raw:", "", "```json", json.dumps(out, indent=2, default=str), "```", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
