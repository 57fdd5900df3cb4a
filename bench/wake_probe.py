"""What a thread hand-off and the fdatasync's two halves cost on this machine.

    python -m bench.wake_probe [--reps 3] [--dir DIR]

W2's group commit (8 writers, one durable put each) is a chain of thread
hand-offs around each fdatasync: a leader releases its group's writers, each
released writer waits for the GIL and passes it on when it sleeps again.  So
W2's ceiling is set by two costs of the machine that no engine code shows,
measured here outside any engine:

* **release**: microseconds the releasing thread spends in ``Lock.release``
  when the release wakes a thread asleep on the lock (three sleepers, released
  in a row, as a leader releases a group of ~4), against a release nobody
  waits for;
* **round trip**: two threads waking each other in turn through two locks,
  microseconds a round trip: as the scheduler places them, pinned to one
  CPU (a hand-off that needs no inter-processor interrupt: the waker's CPU
  switches to the woken thread) and pinned to two (each wake-up crosses);
* **the fdatasync's halves**: 1 KB written into space zeroed and synced
  beforehand (as the WAL writes a group) then ``fdatasync``, against the
  same write's write-back alone (``sync_file_range`` with ``WAIT_BEFORE |
  WRITE | WAIT_AFTER``) and the ``fdatasync`` after it (the device's flush,
  the data already written), p50 microseconds, with the process CPU an
  operation;
* the CPUs' idle driver and, with ``haltpoll``, its ``guest_halt_poll_ns``:
  a virtual CPU that halts as soon as it idles (0 ns of polling) must be
  woken through the hypervisor, which is what makes a release and a
  cross-CPU round trip cost what they do.

A probe of the machine, not of StemeDB: quote it beside ``bench.run``'s
figures of the same minutes.  Linux only (``sync_file_range`` through
ctypes, ``sched_setaffinity``).
"""
from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import tempfile
import threading
import time

_SFR_ALL = 1 | 2 | 4    # SYNC_FILE_RANGE_WAIT_BEFORE | WRITE | WAIT_AFTER


def release_cost(rounds: int = 600) -> tuple[float, float]:
    """(us a release that wakes a sleeper, us a release nobody waits for)."""
    n = rounds * 3
    locks = [threading.Lock() for _ in range(n)]
    for lk in locks:
        lk.acquire()

    def sleeper(mine: list) -> None:
        for lk in mine:
            lk.acquire()
    ts = [threading.Thread(target=sleeper, args=(locks[i::3],)) for i in range(3)]
    for t in ts:
        t.start()
    costs = []
    for i in range(0, n, 3):
        time.sleep(0.0003)      # let the three fall asleep again
        t0 = time.perf_counter_ns()
        locks[i].release()
        locks[i + 1].release()
        locks[i + 2].release()
        costs.append((time.perf_counter_ns() - t0) / 3)
    for t in ts:
        t.join()
    lk = threading.Lock()
    idle = []
    for _ in range(2000):
        lk.acquire()
        t0 = time.perf_counter_ns()
        lk.release()
        idle.append(time.perf_counter_ns() - t0)
    return statistics.median(costs) / 1e3, statistics.median(idle) / 1e3


def round_trip(cpus: tuple[int, int] | None, n: int = 4000) -> float:
    """us a round trip of two threads waking each other, pinned to ``cpus``
    (this thread's, the other's) if given."""
    a, b = threading.Lock(), threading.Lock()
    a.acquire()
    b.acquire()
    old = os.sched_getaffinity(0)

    def other() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, {cpus[1]})     # this thread only
        for _ in range(n):
            a.acquire()
            b.release()
    t = threading.Thread(target=other)
    if cpus is not None:
        os.sched_setaffinity(0, {cpus[0]})
    try:
        t.start()
        time.sleep(0.01)
        t0 = time.perf_counter()
        for _ in range(n):
            a.release()
            b.acquire()
        dt = time.perf_counter() - t0
        t.join()
    finally:
        os.sched_setaffinity(0, old)
    return dt / n * 1e6


def fdatasync_halves(path: str, n: int = 1500) -> dict[str, float]:
    """p50 us of write+fdatasync, and of the write-back and flush apart; CPU us an op."""
    libc = ctypes.CDLL(None, use_errno=True)
    sfr = libc.sync_file_range
    sfr.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    rec = b"x" * 1024
    out: dict[str, float] = {}
    for split in (False, True):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"\0" * (n * len(rec) + 4096))
            os.fsync(fd)
            back, flush = [], []
            c0 = time.process_time()
            for i in range(n):
                os.pwrite(fd, rec, i * len(rec))
                t0 = time.perf_counter_ns()
                if split and sfr(fd, i * len(rec), len(rec), _SFR_ALL) != 0:
                    raise OSError(ctypes.get_errno(), "sync_file_range")
                t1 = time.perf_counter_ns()
                os.fdatasync(fd)
                t2 = time.perf_counter_ns()
                back.append(t1 - t0)
                flush.append(t2 - t1)
            cpu = (time.process_time() - c0) / n * 1e6
        finally:
            os.close(fd)
            os.unlink(path)
        if split:
            out["write-back"] = statistics.median(back) / 1e3
            out["flush"] = statistics.median(flush) / 1e3
            out["split cpu"] = cpu
        else:
            out["fdatasync"] = statistics.median(flush) / 1e3
            out["cpu"] = cpu
    return out


def idle_state() -> str:
    base = "/sys/devices/system/cpu/cpuidle"
    try:
        with open(f"{base}/current_driver") as f:
            driver = f.read().strip()
    except OSError:
        return "cpuidle: not exposed"
    poll = ""
    try:
        with open("/sys/module/haltpoll/parameters/guest_halt_poll_ns") as f:
            poll = f", guest_halt_poll_ns {f.read().strip()}"
    except OSError:
        pass
    return f"cpuidle driver {driver}{poll}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=".", help="where the scratch file goes (the disk to probe)")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    print(f"bench.wake_probe: {len(cpus)} CPUs, {idle_state()}, load {os.getloadavg()[0]:.2f}")
    d = tempfile.mkdtemp(prefix="stemedb-wake-probe-", dir=a.dir)
    try:
        for r in range(a.reps):
            woke, idle = release_cost()
            free = round_trip(None)
            one = round_trip((cpus[0], cpus[0]))
            two = f"{round_trip((cpus[0], cpus[-1])):.1f}" if len(cpus) > 1 else "n/a"
            h = fdatasync_halves(os.path.join(d, "f"))
            print(f"run {r + 1}: release waking a sleeper {woke:.1f} us (nobody waiting "
                  f"{idle:.2f}); round trip {free:.1f} us as scheduled, {one:.1f} on one CPU, "
                  f"{two} across two; write+fdatasync {h['fdatasync']:.1f} us (CPU {h['cpu']:.1f}) = "
                  f"write-back {h['write-back']:.1f} + flush {h['flush']:.1f} "
                  f"(CPU {h['split cpu']:.1f})")
    finally:
        os.rmdir(d)


if __name__ == "__main__":
    main()
