"""Crash safety through the injectable file layer (tests/stress/crashfs.py).

* Every crash point of a scripted workload (store creation, puts, batches,
  rotation, retraction, epoch, snapshot, close), each with and without a
  random prefix of the unsynced bytes kept: recovery never fails, every
  acknowledged write survives, a batch is whole or absent.
* Crashes during recovery itself (the torn-tail cut, the rebuild snapshot).
* Seeded crashes under concurrent writer threads.
* fsync failure (EIO) and write failure (ENOSPC): fail-stop.
"""
from __future__ import annotations

import errno
import os
import random
import shutil
import threading

import pytest

from stemedb.errors import StoreFaulted
from tests.conftest import body, log_end
from tests.stress.crashfs import CrashFile, CrashFS
from tests.stress.harness import (
    Ledger, abandon, check_recovered, crash, hash_of, open_crashable, open_on)

SEG = 4096


def script(root: str, crash_after: int | None, seed: int = 0):
    """The scripted workload; stops at the first error (the crash point)."""
    ledger = Ledger()
    store = None
    fs = CrashFS(root, seed, crash_after=crash_after)
    try:
        store = open_on(fs, segment_size=SEG)
        ledger.put(store, [body(0)], batch=False)
        ledger.put(store, [body(1)], batch=False)
        b2 = body(2)
        ledger.put(store, [b2, body(3, parent_hash=hash_of(b2)), body(4)], batch=True)
        for i in range(5, 25):                       # about two segments' worth
            ledger.put(store, [body(i, value="v" * 150)], batch=False)
        ledger.retract(store, hash_of(body(1)))
        store.snapshot()
        ledger.put(store, [body(i, value="w" * 300) for i in range(30, 45)], batch=True)
        ledger.epoch(store, "e1")
        ledger.put(store, [body(50, epoch="e1")], batch=False)
        store.close()
    except (OSError, StoreFaulted):
        pass
    return ledger, store, fs


def recover_and_check(root: str, ledger: Ledger, what: str) -> None:
    store, fs = open_crashable(root, 1, segment_size=SEG)   # must not raise
    try:
        check_recovered(store, ledger, what)
        r = store.put(body(9999))
        assert store.get(r.hash) is not None, f"{what}: the recovered store takes writes"
    finally:
        store.close()
        fs.close()


def _total_ops(root) -> int:
    ledger, store, fs = script(root, None)
    assert all(g.acked for g in ledger.groups), "the dry run completes"
    n = fs.ops
    fs.close()
    shutil.rmtree(root)
    return n


def test_every_crash_point_of_a_workload(fast_tmp):
    root = str(fast_tmp / "data")
    total = _total_ops(root)
    assert total > 60, "the workload reaches creation, writes, rotation, snapshot and close"
    for n in range(1, total + 1):
        for keep in (False, True):
            what = f"crash at operation {n}/{total}, unsynced bytes {'kept' if keep else 'lost'}"
            ledger, store, fs = script(root, n, seed=n)
            assert fs.dead, f"{what}: the crash point was reached"
            crash(store, fs, keep)
            recover_and_check(root, ledger, what)
            shutil.rmtree(root)


def test_crash_points_land_inside_the_preallocated_zeros(fast_tmp):
    """The crash points above cover the active segment's zero tail: states
    where the log ends in zeros (the clean end), and states where a group's
    write reached the disk in part over them (a torn tail), both recovered."""
    root = str(fast_tmp / "data")
    total = _total_ops(root)
    shapes = {"zero tail": 0, "torn over zeros": 0}
    for n in range(1, total + 1):
        ledger, store, fs = script(root, n, seed=n)
        crash(store, fs, keep_unsynced=True)
        wal = os.path.join(root, "wal")
        segs = sorted(x for x in os.listdir(wal) if x.startswith("segment-")) \
            if os.path.isdir(wal) else []
        if segs:
            with open(os.path.join(wal, segs[-1]), "rb") as f:
                buf = f.read()
            end = log_end(os.path.join(wal, segs[-1]))
            tail = buf[end:]
            if tail and not any(tail):
                shapes["zero tail"] += 1
            elif tail and tail.endswith(b"\0") and any(tail):
                shapes["torn over zeros"] += 1
        recover_and_check(root, ledger, f"crash at operation {n}/{total}")
        shutil.rmtree(root)
    assert shapes["zero tail"] > 20 and shapes["torn over zeros"] > 0, shapes


def test_crashfs_tears_an_unsynced_overwrite_in_order(tmp_path):
    """The model itself: an overwrite inside the file after its last sync
    comes back lost, whole or torn at any point (zeros after the tear)."""
    seen = set()
    for seed in range(300):
        root = tmp_path / f"r{seed}"
        fs = CrashFS(str(root), seed)
        f = fs.open_append(str(root / "f"))
        fs.fsync_dir(str(root))
        f.write(b"A" * 10)
        f.zero_fill(10, 110)
        f.sync()
        f.write(b"B" * 50)              # at the append position: over the zeros
        files = fs.crash(keep_unsynced=True)
        got = files["f"]
        assert len(got) == 110 and got[:10] == b"A" * 10
        k = len(got[10:].rstrip(b"\0"))
        assert got[10:10 + k] == b"B" * k and not any(got[10 + k:])
        seen.add("lost" if k == 0 else "whole" if k == 50 else "torn")
        files = None
    assert seen == {"lost", "whole", "torn"}, seen
    fs = CrashFS(str(tmp_path / "x"), 0)
    f = fs.open_append(str(tmp_path / "x" / "f"))
    fs.fsync_dir(str(tmp_path / "x"))
    f.zero_fill(0, 64)
    f.sync()
    f.write(b"C" * 8)
    assert fs.crash(keep_unsynced=False)["f"] == bytes(64), "nothing unsynced kept"


def test_crashes_during_recovery(fast_tmp):
    """A crash while recovery cuts a torn tail, or while it writes the snapshot
    of a rebuild (the index snapshot lost too), leaves a state the next
    recovery handles."""
    root = str(fast_tmp / "data")
    saved = str(fast_tmp / "saved")
    total = _total_ops(root)
    rnd = random.Random(7)
    cases = 0
    for n in sorted(rnd.sample(range(30, total + 1), 10)):
        for lose_snapshot in (False, True):
            ledger, store, fs = script(root, n, seed=n)
            crash(store, fs, keep_unsynced=True)
            if lose_snapshot:
                shutil.rmtree(os.path.join(root, "db"), ignore_errors=True)
            shutil.copytree(root, saved)
            s, rfs = open_crashable(root, 2, segment_size=SEG)   # how many operations?
            s.checkpoints.settle(60)    # a rebuild's snapshot, written in the background
            rec_ops = rfs.ops
            s.close()
            rfs.close()
            for m in range(1, rec_ops + 1):
                for keep in (False, True):
                    shutil.rmtree(root)
                    shutil.copytree(saved, root)
                    what = f"crash at {n}, then at recovery operation {m}/{rec_ops} ({keep=})"
                    rfs = CrashFS(root, m, crash_after=m)
                    s = None
                    try:
                        s = open_on(rfs, segment_size=SEG)
                        s.checkpoints.settle(60)    # its crash points too
                    except (OSError, StoreFaulted):
                        pass
                    crash(s, rfs, keep)
                    recover_and_check(root, ledger, what)
                    cases += 1
            shutil.rmtree(root)
            shutil.rmtree(saved)
    assert cases > 100, "recovery writes (a cut, a rebuild snapshot) in these states"


@pytest.mark.parametrize("seed", range(10))
def test_crash_under_concurrent_writers(fast_tmp, seed):
    root = str(fast_tmp / "data")
    rnd = random.Random(seed)
    store, fs = open_crashable(root, seed, segment_size=SEG,
                               durability="batch" if seed % 2 else "fsync")
    ledger = Ledger()
    stop = threading.Event()

    def writer(t):
        i = 0
        while not stop.is_set():
            i += 1
            k = 100_000 * (t + 1) + i
            try:
                if i % 4 == 0:
                    bodies = [body(k * 10 + j, value="b" * 80) for j in range(rnd.randint(2, 6))]
                    ledger.put(store, bodies, batch=True)
                else:
                    ledger.put(store, [body(k, value="s" * 60)], batch=False)
            except (OSError, StoreFaulted):
                return
    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    target = rnd.randint(20, 150)
    while sum(g.acked for g in ledger.groups) < target:
        threading.Event().wait(0.002)
    fs.crash(keep_unsynced=bool(seed % 3))
    stop.set()
    for t in threads:
        t.join(timeout=30)
    abandon(store)
    assert sum(g.acked for g in ledger.groups) >= target
    recover_and_check(root, ledger, f"seed {seed}")


# ------------------------------------------------------------------ fail-stop

def test_fsync_failure_fails_the_group_stops_writes_and_reads_go_on(fast_tmp):
    root = str(fast_tmp / "data")
    store, fs = open_crashable(root, 0, durability="batch", batch_delay_ms=300)
    ledger = Ledger()
    for i in range(5):
        ledger.put(store, [body(i)], batch=False)
    fs.fail_sync = True
    syncs_before = fs.syncs
    outcomes = {}

    def writer(t):
        try:
            outcomes[t] = ledger.put(store, [body(100 + t)], batch=False)
        except StoreFaulted as e:
            outcomes[t] = e
    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(isinstance(o, StoreFaulted) for o in outcomes.values()), \
        "every writer of the failed group gets StoreFaulted, none is acknowledged"
    assert fs.syncs == syncs_before + 1, "one group, one fsync attempt, never retried"
    assert store.fault is not None and "injected fsync failure" in store.fault, \
        "the store reports the fault that stopped it"
    with pytest.raises(StoreFaulted):
        store.put(body(200))
    with pytest.raises(StoreFaulted):
        store.put_batch([body(201)])
    with pytest.raises(StoreFaulted):
        store.retract(hash=hash_of(body(0)), reason="x")
    with pytest.raises(StoreFaulted):
        store.create_epoch("e9")
    assert store.get(hash_of(body(0))) is not None, "reads go on after a fault"
    assert store.get(hash_of(body(100))) is None, "a failed write is not visible"
    assert store.count == 5
    assert store.query("drugs/d1/risk", predicate="p1").assertions
    store.close()
    assert fs.syncs == syncs_before + 1, "close does not retry the failed fsync"
    fs.close()
    # restart without power loss: the page cache still holds the failed group
    store, fs = open_crashable(root, 1)
    check_recovered(store, ledger, "restart after EIO")
    store.put(body(300))
    store.close()
    fs.close()


def test_fsync_failure_then_power_loss(fast_tmp):
    root = str(fast_tmp / "data")
    store, fs = open_crashable(root, 0)
    ledger = Ledger()
    for i in range(5):
        ledger.put(store, [body(i)], batch=False)
    fs.fail_sync = True
    with pytest.raises(StoreFaulted):
        ledger.put(store, [body(50), body(51)], batch=True)
    crash(store, fs, keep_unsynced=True)
    store, fs = open_crashable(root, 1)
    check_recovered(store, ledger, "EIO then power loss")
    store.close()
    fs.close()


class _ShortWriteFile(CrashFile):
    def write(self, data):
        if self.fs.fail_write and len(data) > 40:
            super().write(bytes(data)[:len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        super().write(data)


class _ShortWriteFS(CrashFS):
    file_class = _ShortWriteFile
    fail_write = False


def test_a_failed_write_leaves_a_torn_tail_that_recovery_cuts(fast_tmp):
    root = str(fast_tmp / "data")
    fs = _ShortWriteFS(root, 0)
    store = open_on(fs)
    ledger = Ledger()
    for i in range(3):
        ledger.put(store, [body(i)], batch=False)
    fs.fail_write = True
    with pytest.raises(StoreFaulted):
        ledger.put(store, [body(10), body(11), body(12)], batch=True)
    fs.fail_write = False
    with pytest.raises(StoreFaulted):
        store.put(body(13))
    store.close()
    fs.close()
    store, fs = open_crashable(root, 1)
    assert os.listdir(os.path.join(root, "wal", "quarantine")), "the half-written group is kept aside"
    check_recovered(store, ledger, "after ENOSPC")
    assert all(store.get(hash_of(body(i))) is None for i in (10, 11, 12))
    store.close()
    fs.close()


@pytest.mark.parametrize("durability", ["none", "batch"])
@pytest.mark.parametrize("seed", range(4))
def test_power_loss_in_other_durability_modes(fast_tmp, durability, seed):
    """``batch`` keeps every acknowledged write; ``none`` may lose the unsynced
    tail but recovery still succeeds and batches stay whole."""
    root = str(fast_tmp / "data")
    rnd = random.Random(seed)
    store, fs = open_crashable(root, seed, durability=durability, segment_size=SEG)
    ledger = Ledger()
    for i in range(rnd.randint(10, 60)):
        if rnd.random() < 0.3:
            ledger.put(store, [body(i * 100 + j, value="q" * 90) for j in range(4)], batch=True)
        else:
            ledger.put(store, [body(i * 100, value="q" * 90)], batch=False)
        if rnd.random() < 0.05:
            store.snapshot()
    crash(store, fs, keep_unsynced=True)
    if durability == "none":
        for g in ledger.groups:
            g.acked = False           # "none" promises nothing across a power cut
    recover_and_check(root, ledger, f"{durability}, seed {seed}")
