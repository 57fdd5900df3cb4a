"""What the disk gives a durable single-record commit, outside any engine.

    python -m bench.fsync_probe [--dir DIR] [--n 2000] [--reps 3]

Two measurements on 250-byte records, in a scratch file under ``--dir``
(default: the current directory, i.e. the disk the stores use):

* **append vs preallocated**: ``os.write`` + ``os.fdatasync`` per record,
  p50 and p99 microseconds, (a) appending (every sync also makes the new
  file size durable: a journal commit on ext4), (b) overwriting space
  written with zeros and synced beforehand (the size does not change: the
  sync writes the data only).  The gap is what a WAL that preallocates its
  active segment would save per commit (W1);
* **concurrent syncs**: 1 to 4 threads each appending (under one lock) and
  calling ``fdatasync`` on one descriptor, commits per second: whether the
  disk completes two syncs in flight faster than one after the other.

A probe of the machine, not of StemeDB: quote it beside ``bench.run``'s
figures of the same minutes (the shared disk's latency moves a lot).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time

RECORD = b"x" * 250


def one_by_one(path: str, n: int, prealloc: bool) -> tuple[float, float]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if prealloc:
            os.write(fd, b"\0" * (n * len(RECORD) + 4096))
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, RECORD)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    return statistics.median(lat) * 1e6, lat[int(0.99 * n)] * 1e6


def concurrent(path: str, threads: int, seconds: float = 1.5) -> float:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    lock = threading.Lock()
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def work(i: int) -> None:
        while time.perf_counter() < stop:
            with lock:
                os.write(fd, RECORD)
            os.fdatasync(fd)
            counts[i] += 1
    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    os.close(fd)
    os.unlink(path)
    return sum(counts) / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=".", help="where the scratch file goes (the disk to probe)")
    ap.add_argument("--n", type=int, default=2000, help="records per latency run")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="stemedb-fsync-probe-", dir=a.dir)
    try:
        print(f"bench.fsync_probe: {a.n} x 250 B per run in {d}, load {os.getloadavg()[0]:.2f}")
        for r in range(a.reps):
            ap50, ap99 = one_by_one(os.path.join(d, "a"), a.n, False)
            pp50, pp99 = one_by_one(os.path.join(d, "p"), a.n, True)
            conc = {k: concurrent(os.path.join(d, "c"), k) for k in (1, 2, 3, 4)}
            print(f"run {r + 1}: write+fdatasync p50/p99 us: append {ap50:.1f}/{ap99:.1f}, "
                  f"preallocated {pp50:.1f}/{pp99:.1f}; commits/s with 1-4 threads: "
                  + ", ".join(f"{k}: {v:,.0f}" for k, v in conc.items()))
    finally:
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)


if __name__ == "__main__":
    main()
