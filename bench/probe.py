"""Measurements that need a fresh process: ``python -m bench.probe memory ...``.

Prints one JSON line on stdout.  RSS comes from ``/proc/self/status``:
``VmRSS`` (resident: anonymous + file-backed + shared pages), ``RssAnon``
(heap and other private memory) and ``VmHWM`` (peak resident).  The baseline
is read after every import, right before the store is opened, so what is
left is the store's own memory.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys


def proc_status() -> dict:
    """VmRSS, RssAnon, RssFile, VmHWM in bytes (Linux)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    return out


def memory(engine: str, path: str, key: tuple[str, str]) -> dict:
    from .peers import open_engine   # imports orjson, blake3, sqlite3
    if engine == "stemedb":
        import stemedb.core.store  # noqa: F401 - the engine's modules, numpy included
    elif engine == "lmdb":
        import lmdb  # noqa: F401
    elif engine == "rocksdb":
        import rocksdict  # noqa: F401
    gc.collect()
    base = proc_status()
    e = open_engine(engine, path)
    got = len(e.candidates(*key))
    gc.collect()
    after = proc_status()
    info = e.info()
    count = e.count()
    e.close()
    return {
        "engine": engine, "implementation": info.get("implementation"), "count": count,
        "probe_records": got,
        "baseline_rss": base["VmRSS"], "rss_after_open": after["VmRSS"],
        "rss_delta": after["VmRSS"] - base["VmRSS"],
        "anon_delta": after["RssAnon"] - base["RssAnon"],
        "file_delta": after["RssFile"] - base["RssFile"],
        "peak_delta": after["VmHWM"] - base["VmRSS"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.probe")
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("memory", help="RSS of a fresh process before and after opening a store")
    m.add_argument("--engine", required=True)
    m.add_argument("--path", required=True)
    m.add_argument("--key", nargs=2, required=True, metavar=("CONCEPT_PATH", "PREDICATE"))
    args = ap.parse_args(argv)
    if args.what == "memory":
        print(json.dumps(memory(args.engine, args.path, tuple(args.key))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
