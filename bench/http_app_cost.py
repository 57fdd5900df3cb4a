"""The HTTP layer's own cost of one ``POST /v1/query``: the whole WSGI app
(HostGuard, PortRouter, Falcon, the middleware, the resource, the answer,
the encoder) called in one process, with the engine's answers computed
beforehand and handed back by a stub, so that what is measured is the HTTP
layer alone, without sockets, threads or gunicorn.

    python -m bench.http_app_cost                      # CPU us a request (min / median of rounds)
    python -m bench.http_app_cost --app noop           # bench_http's no-op Falcon app, for scale
    valgrind --tool=callgrind --callgrind-out-file=/dev/null --collect-atstart=no \\
        --toggle-collect=deque_init python -m bench.http_app_cost --requests 1000 --rounds 1
                                                       # instructions: divide by --requests

Instruction counts do not move with a shared machine's load, which moves
CPU figures by half (bench/results/http-2026-11-27-session9.md); the
measured requests, and only they, run inside one ``deque(map(...))`` call,
which is what ``--toggle-collect=deque_init`` counts (callgrind counts a
large ``memcpy``'s ``rep movsb`` byte by byte).  The store is a small one
of bench_http's workload (``--store-size`` assertions, ``--candidates`` a
key), built in a temporary directory.
"""
from __future__ import annotations

import argparse
import collections
import io
import os
import shutil
import statistics
import sys
import tempfile
import time

import orjson

from bench.bench_http import NO_LIMITS, build_query_store, noop_app


def environ(body: bytes, path: str) -> dict:
    """What gunicorn hands the app for a POST of ``body`` to ``path``."""
    return {"REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": path,
            "QUERY_STRING": "", "RAW_URI": path, "SERVER_PROTOCOL": "HTTP/1.1",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "18180", "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": "5555", "HTTP_HOST": "127.0.0.1",
            "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr, "wsgi.version": (1, 0), "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.file_wrapper": None,
            "wsgi.input_terminated": True}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--app", choices=("query", "noop"), default="query")
    p.add_argument("--store-size", type=int, default=20_000)
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=200)
    args = p.parse_args(argv)

    from stemedb.config import Settings
    from stemedb.core.store import open_store
    from stemedb.http.app import build_wsgi
    from stemedb.http.handle import StoreHandle

    tmp = tempfile.mkdtemp(prefix="stemedb-http-app-cost-")
    try:
        data = os.path.join(tmp, "d")
        keys, _ = build_query_store(data, args.store_size, 0.1, args.candidates)
        keys = list(dict.fromkeys(keys))[:500]
        bodies = [orjson.dumps({"concept_path": c, "predicate": q, "lens": "consensus"})
                  for c, q in keys]
        with open_store(data) as store:
            if args.app == "query":
                app = build_wsgi(StoreHandle(store), Settings(
                    bind="127.0.0.1:18180", dashboard_bind="127.0.0.1:18188",
                    rate_limits=NO_LIMITS))
                path = "/v1/query"
            else:
                app, path = noop_app(), "/noop"
            answers = {(c, q): store.query(c, predicate=q, lens="consensus") for c, q in keys}
            store.query = lambda c, predicate=None, agent=None, **kw: answers[(c, predicate)]

            def call(env) -> bytes:
                return b"".join(app(env, lambda status, headers, exc_info=None: None))

            for i in range(args.warmup):
                call(environ(bodies[i % len(bodies)], path))
            per = []
            for _ in range(args.rounds):
                envs = [environ(bodies[i % len(bodies)], path) for i in range(args.requests)]
                t0 = time.thread_time()
                collections.deque(map(call, envs), 0)     # callgrind: --toggle-collect=deque_init
                per.append(1e6 * (time.thread_time() - t0) / args.requests)
        print(f"{args.app}: {args.requests:,} requests x {args.rounds}: CPU us a request "
              f"min {min(per):.1f} median {statistics.median(per):.1f} "
              f"(load {', '.join(f'{x:.2f}' for x in os.getloadavg())})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
