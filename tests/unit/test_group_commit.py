"""The WAL's group commit with targeted wake-ups (stemedb/core/wal.py).

A follower sleeps on a lock of its own; the leader releases the followers
whose requests its group made durable, and one whose request is still queued
to lead next.  These tests hold the properties that must survive that: every
writer returns (none is left asleep), several waiters on one request all
return, a failed fsync fails every writer of its group and stops writes
(never retried), a follower picked to lead that is interrupted passes the
office on, and ``flush`` (``durability="none"``) takes the office between
groups.
"""
from __future__ import annotations

import os
import threading
import time

import pytest

from stemedb.core.fileio import File
from stemedb.core.wal import Request
from stemedb.errors import StoreFaulted
from tests.conftest import NoFsyncFS


def body(i: int, **kw) -> dict:
    return {"concept_path": f"drugs/d{i % 7}/risk", "predicate": "p1", "value": i,
            "confidence": 0.5, "timestamp": 1_700_000_000 + i, **kw}


class SlowSyncFS(NoFsyncFS):
    """sync takes 2 ms, so writers pile up behind the leader."""

    fail = False

    class file_class(File):
        def sync(self):
            self.fs.syncs += 1
            time.sleep(0.002)
            if self.fs.fail:
                raise OSError(5, "injected fsync failure")


def _run(threads, timeout=20):
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a writer was left asleep"


@pytest.mark.parametrize("durability", ["fsync", "batch", "none"])
def test_every_writer_returns_and_duplicates_share_one_record(opener, durability):
    fs = SlowSyncFS()
    s = opener(fs=fs, durability=durability)
    results, errors = [], []

    def worker(t):
        try:
            for i in range(30):
                # threads t and t ^ 1 write the same bodies: one records, the
                # other waits on its request (or finds it stored)
                results.append((i + 1000 * (t // 2), s.put(body(i + 1000 * (t // 2)))))
                if i % 10 == 0:
                    s.put_batch([body(5000 + 100 * t + i + k) for k in range(3)])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    _run([threading.Thread(target=worker, args=(t,), daemon=True) for t in range(8)])
    assert not errors
    by_key: dict = {}
    for k, r in results:
        by_key.setdefault(k, set()).add((r.hash, r.seq))
    assert all(len(v) == 1 for v in by_key.values()), "a duplicate answers the stored seq"
    assert s.count == len(by_key) + 8 * 3 * 3 and s.check() == []
    wal = s.writer.wal
    assert wal._sleepers == [] and not wal._leader and wal._queue == []
    # a put's and a batch's in-flight entries go when its own wait returns
    # (durable and applied: the state has the hashes)
    s.put_batch([body(99_990), body(99_991)])
    assert s.writer._pending == {} and not s.writer._settled
    s.put(body(99_999))
    assert s.writer._pending == {} and not s.writer._settled
    s.put(body(99_998))
    assert s.writer._pending == {} and not s.writer._settled


def test_a_failed_fsync_fails_every_writer_of_its_group_and_stops_writes(opener):
    fs = SlowSyncFS()
    s = opener(fs=fs, durability="fsync")
    for i in range(3):
        s.put(body(i))
    fs.fail = True
    before = fs.syncs
    outcomes = {}
    start = threading.Barrier(8)

    def worker(t):
        start.wait()
        try:
            outcomes[t] = s.put(body(100 + t % 4))      # pairs wait on one request
        except StoreFaulted as e:
            outcomes[t] = e
    _run([threading.Thread(target=worker, args=(t,), daemon=True) for t in range(8)])
    assert all(isinstance(o, StoreFaulted) for o in outcomes.values()), \
        "no writer of a failed group is acknowledged"
    assert fs.syncs == before + 1, "one fsync attempt, never retried"
    with pytest.raises(StoreFaulted):
        s.put(body(200))
    assert s.count == 3
    assert s.writer.wal._sleepers == []


def test_a_follower_picked_to_lead_that_leaves_passes_the_office_on(opener):
    s = opener()
    wal = s.writer.wal
    a, b = Request(b"", []), Request(b"", [])
    la, lb = threading.Lock(), threading.Lock()
    la.acquire()
    lb.acquire()
    wal._queue = [a, b]
    wal._sleepers = [(la, a), (lb, b)]
    with wal._cv:
        wal._wake()            # a leader's end: a is picked to lead
    assert not la.locked(), "a is woken to lead"
    assert wal._sleepers == [(lb, b)] and lb.locked(), "b sleeps on"
    wal._leave((la, a))        # a is interrupted before it took the office
    assert not lb.locked(), "the office passes to b"
    assert wal._sleepers == []
    wal._queue = []


def test_an_interrupted_follower_still_asleep_is_taken_off_the_list(opener):
    s = opener()
    wal = s.writer.wal
    a = Request(b"", [])
    la = threading.Lock()
    la.acquire()
    wal._sleepers = [(la, a)]
    wal._leave((la, a))
    assert wal._sleepers == [] and la.locked(), "nobody else is woken"


def test_flush_waits_for_the_office_between_groups(opener):
    fs = SlowSyncFS()
    s = opener(fs=fs, durability="none")
    stop = threading.Event()
    errors = []

    def writer(t):
        i = 0
        try:
            while not stop.is_set():
                i += 1
                s.put(body(10_000 * (t + 1) + i))
        except Exception as e:  # pragma: no cover
            errors.append(e)

    def flusher():
        try:
            for _ in range(20):
                s.writer.wal.flush()
        except Exception as e:  # pragma: no cover
            errors.append(e)
    ws = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(4)]
    f = threading.Thread(target=flusher, daemon=True)
    for t in ws:
        t.start()
    f.start()
    f.join(60)
    stop.set()
    for t in ws:
        t.join(60)
    assert not f.is_alive() and not any(t.is_alive() for t in ws)
    assert not errors and s.check() == []
    assert s.writer.wal._sleepers == []


class HeldSyncFS(NoFsyncFS):
    """The first sync waits until another writer sleeps behind the leader;
    every sync notes the thread that made it."""

    wal = None

    class file_class(File):
        def sync(self):
            fs = self.fs
            fs.sync_threads.append(threading.get_ident())
            if len(fs.sync_threads) == 1 and fs.wal is not None:
                deadline = time.monotonic() + 10
                while not fs.wal._sleepers and time.monotonic() < deadline:
                    time.sleep(0.001)


def test_the_group_queued_behind_a_leader_is_led_by_its_own_writer(opener):
    fs = HeldSyncFS()
    fs.sync_threads = []
    s = opener(fs=fs, durability="fsync")
    wal = s.writer.wal
    fs.sync_threads.clear()
    fs.wal = wal
    got = {}

    def put(name, i):
        got[name] = (s.put(body(i)), threading.get_ident())
    a = threading.Thread(target=put, args=("a", 1))
    a.start()
    while not fs.sync_threads:          # a leads; its sync holds until b sleeps
        time.sleep(0.001)
    b = threading.Thread(target=put, args=("b", 2))
    b.start()
    a.join(20)
    b.join(20)
    assert not a.is_alive() and not b.is_alive()
    assert len(fs.sync_threads) == 2, "one fsync per group"
    a_id, b_id = got["a"][1], got["b"][1]
    # a leaves the office once its group is done; b, woken, leads its own
    assert fs.sync_threads == [a_id, b_id]
    assert got["a"][0].created and got["b"][0].created and s.count == 2
    assert wal._sleepers == [] and not wal._leader and wal._queue == []


def test_with_writers_released_no_follower_is_woken_to_find_the_office_taken(opener):
    # The old leader, holding the GIL, nearly always comes back with its next
    # put and leads again; a queued follower woken at the group's end only
    # found the office taken and slept again (two thread switches, and a GIL
    # waiter taking the CPU from the leader as it let go of the GIL to write).
    s = opener()
    wal = s.writer.wal
    b, c = Request(b"", []), Request(b"", [])
    b.done = True                # in the group just made durable
    lb, lc = threading.Lock(), threading.Lock()
    lb.acquire()
    lc.acquire()
    wal._queue = [c]
    wal._sleepers = [(lb, b), (lc, c)]
    with wal._cv:
        wal._wake()
    assert not lb.locked(), "the writer whose request is done returns"
    assert lc.locked() and wal._sleepers == [(lc, c)], "the queued one sleeps on"
    assert not wal._called
    # b runs once the leader let go of the GIL; the leader did not come back:
    # b hands the office on to the queued follower
    wal._hand_on()
    assert not lc.locked() and wal._sleepers == [] and wal._called
    wal._queue = []


def test_a_released_writer_does_not_call_a_second_leader(opener):
    s = opener()
    wal = s.writer.wal
    c, d = Request(b"", []), Request(b"", [])
    lc, ld = threading.Lock(), threading.Lock()
    lc.acquire()
    ld.acquire()
    wal._sleepers = [(lc, c), (ld, d)]
    wal._leader = True           # the old leader came back and leads
    wal._hand_on()
    assert lc.locked() and ld.locked(), "nobody is woken while the office is held"
    wal._leader = False
    wal._hand_on()
    assert not lc.locked() and ld.locked(), "one follower is called to lead"
    wal._hand_on()
    assert ld.locked(), "not a second one while the first is on its way"
    with wal._cv:
        wal._leader = True       # c takes the office (wait() clears the call)
        wal._called = False
    wal._leader = False
    wal._sleepers = []


def test_a_released_writer_interrupted_hands_the_office_on(opener):
    s = opener()
    wal = s.writer.wal
    b, c = Request(b"", []), Request(b"", [])
    b.done = True
    lb, lc = threading.Lock(), threading.Lock()
    lb.acquire()
    lc.acquire()
    wal._sleepers = [(lb, b), (lc, c)]
    with wal._cv:
        wal._wake()              # b released, c sleeps on
    assert lc.locked()
    wal._leave((lb, b))          # b interrupted as it woke: it passes the office on
    assert not lc.locked() and wal._sleepers == []


class LastGroupFS(NoFsyncFS):
    """Every sync takes 1 ms, so writers queue behind each group."""

    class file_class(File):
        def sync(self):
            self.fs.syncs += 1
            time.sleep(0.001)


@pytest.mark.parametrize("rounds", [1, 10])
def test_writers_that_stop_leave_nobody_asleep(opener, rounds):
    # Threads that end at different times (bench.run's W2 slices): the leader
    # of a group often makes its last put and does not come back, so the
    # writers it released must hand the office on to those still queued.
    fs = LastGroupFS()
    s = opener(fs=fs, durability="fsync")
    n = 0
    for r in range(rounds):
        start = threading.Barrier(8)

        def worker(t, r=r):
            start.wait()
            for i in range(1 + t * 3):
                s.put(body(100_000 * r + 1000 * t + i))
        _run([threading.Thread(target=worker, args=(t,), daemon=True) for t in range(8)])
        n += sum(1 + t * 3 for t in range(8))
    wal = s.writer.wal
    assert s.count == n and s.check() == []
    assert wal._sleepers == [] and not wal._leader and wal._queue == []


class StepSyncFS(NoFsyncFS):
    """Each sync first waits (up to 10 s) until ``wal`` has ``want[k]``
    followers asleep, k counting the syncs since ``wal`` was set."""

    wal = None
    want: list = []

    class file_class(File):
        def sync(self):
            fs = self.fs
            if fs.wal is None:
                return
            k = fs.syncs
            fs.syncs += 1
            need = fs.want[k] if k < len(fs.want) else 0
            deadline = time.monotonic() + 10
            while len(fs.wal._sleepers) < need and time.monotonic() < deadline:
                time.sleep(0.001)


def test_a_leader_that_does_not_come_back_strands_nobody(opener):
    # x leads alone while a and b queue; a, woken (x's group released
    # nobody), leads [a, b] while c queues; a's group releases b only and a's
    # thread ends: b, once it runs, must call c to lead (with the hand-on
    # gone, c sleeps for ever).
    fs = StepSyncFS()
    s = opener(fs=fs, durability="fsync")
    wal = s.writer.wal
    fs.syncs = 0
    fs.want = [2, 2]            # x's sync: a and b asleep; a's sync: b and c asleep
    fs.wal = wal
    done = {}

    def put(name, i):
        done[name] = s.put(body(i))

    def start(name, i):
        t = threading.Thread(target=put, args=(name, i), daemon=True)
        t.start()
        return t
    ts = [start("x", 1)]
    while fs.syncs < 1:
        time.sleep(0.001)
    ts.append(start("a", 2))
    while len(wal._sleepers) < 1:
        time.sleep(0.001)
    ts.append(start("b", 3))
    while fs.syncs < 2:         # a leads [a, b]
        time.sleep(0.001)
    ts.append(start("c", 4))
    for t in ts:
        t.join(15)
    assert not any(t.is_alive() for t in ts), "a writer was left asleep"
    assert sorted(done) == ["a", "b", "c", "x"] and fs.syncs == 3
    assert s.count == 4 and wal._sleepers == [] and not wal._leader


def test_flush_taking_the_office_clears_a_call(opener):
    # A follower called to lead that finds the office taken by a flush sleeps
    # again; the call must not stay set, or released writers would never hand
    # the office on (they do only while nobody is called).
    s = opener(durability="none")
    wal = s.writer.wal
    wal._called = True
    wal.flush()
    assert not wal._called and not wal._leader
    c = Request(b"", [])
    lc = threading.Lock()
    lc.acquire()
    wal._sleepers = [(lc, c)]
    wal._hand_on()
    assert not lc.locked() and wal._sleepers == []


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_a_leader_interrupted_in_its_write_fails_its_group_and_stops_writes(opener, exc):
    # A signal handler's KeyboardInterrupt is raised in the leader when the
    # write + fdatasync call returns (or a bug raises there): not an OSError,
    # so the group's outcome is unknown.  Every other writer of the group
    # must return (StoreFaulted), writes stop, and the leader sees its own
    # exception.  Without the guard, c slept for ever and writes went on.
    s = opener(durability="fsync")
    wal = s.writer.wal
    calls = []

    def write_sync(fd, data, sync, *rest):
        calls.append(len(data))
        if len(calls) == 1:     # a's group: held until b and c sleep behind it
            deadline = time.monotonic() + 10
            while len(wal._sleepers) < 2 and time.monotonic() < deadline:
                time.sleep(0.001)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            return
        raise exc("injected in the leader")
    wal._write_sync = write_sync
    out = {}

    def put(name, i):
        try:
            out[name] = s.put(body(i))
        except BaseException as e:  # noqa: BLE001 - the outcome is the test
            out[name] = e
    ts = [threading.Thread(target=put, args=("a", 1), daemon=True)]
    ts[0].start()
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.001)
    assert calls, f"a's group never reached the write: {out}"
    for n, (name, i) in enumerate((("b", 2), ("c", 3)), 1):
        ts.append(threading.Thread(target=put, args=(name, i), daemon=True))
        ts[-1].start()
        # c's sleep can be over (a's group done, b's failed) before this
        # thread looks again: it waited on the write, which waits for both.
        while len(wal._sleepers) < n and name not in out and time.monotonic() < deadline:
            time.sleep(0.001)
        assert len(wal._sleepers) >= n or name in out, f"{name} never slept behind a's group: {out}"
    for t in ts:
        t.join(10)
    assert not any(t.is_alive() for t in ts), "a writer of the interrupted group was left asleep"
    assert len(calls) == 2, "one group, then the interrupted one (b leads b and c)"
    assert out["a"].created
    led, other = (out["b"], out["c"]) if isinstance(out["b"], exc) else (out["c"], out["b"])
    assert isinstance(led, exc), "the leader sees its own exception"
    assert isinstance(other, StoreFaulted), "the other writer of its group fails"
    assert wal.fault and exc.__name__ in wal.fault
    with pytest.raises(StoreFaulted):
        s.put(body(4))
    assert s.count == 1 and wal._sleepers == [] and not wal._leader
