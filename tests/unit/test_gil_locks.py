"""The compiled CacheLock and ReaderLock are taken and released under the
GIL, a PyThread lock serving only as their waiters' signal (_query's Gate):
held here, beside threading.Lock/RLock (their twins, qpure), to mutual
exclusion and to handing the lock on under every mix of blocking, timed and
non-blocking acquires, timed waits that run out while a release is posted,
and (the reader's lock) a Condition over it; every thread done in bounded
time and the lock free at the end."""
from __future__ import annotations

import random
import threading
import time

import pytest

from stemedb.core import qpure

try:
    from stemedb.core import _query  # type: ignore[attr-defined]
except ImportError:     # a pure-Python build: only the twins
    _query = None

CACHE_LOCKS = [qpure.CacheLock] + ([_query.CacheLock] if _query is not None else [])
READER_LOCKS = [qpure.ReaderLock] + ([_query.ReaderLock] if _query is not None else [])


def _locked(lock) -> bool:
    if hasattr(lock, "locked"):
        return lock.locked()
    if lock.acquire(blocking=False):    # (an RLock: free or ours)
        lock.release()
        return False
    return True


@pytest.mark.parametrize("cls", CACHE_LOCKS + READER_LOCKS)
@pytest.mark.parametrize("seed", range(3))
def test_mixed_acquires_exclude_and_hand_on(cls, seed):
    lock = cls()
    inside = [0]
    done = [0]
    failures: list = []
    deadline = time.monotonic() + 20

    def work(i):
        r = random.Random(seed * 100 + i)
        for _ in range(300):
            if time.monotonic() > deadline:
                failures.append("slow")
                return
            how = r.random()
            if how < 0.5:
                got = lock.acquire()
            elif how < 0.8:
                got = lock.acquire(True, r.choice([0, 0.0001, 0.001, 0.01]))
            else:
                got = lock.acquire(blocking=False)
            if not got:
                continue
            try:
                inside[0] += 1
                if inside[0] != 1:
                    failures.append("two inside")
                if r.random() < 0.3:
                    time.sleep(r.choice([0, 0.0001, 0.0005]))
                inside[0] -= 1
                done[0] += 1
            finally:
                lock.release()
    ts = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not any(t.is_alive() for t in ts)
    assert failures == [] and done[0] > 0
    assert not _locked(lock)
    assert lock.acquire(blocking=False) is True     # and it is still a working lock
    lock.release()


@pytest.mark.parametrize("cls", CACHE_LOCKS + READER_LOCKS)
def test_a_timed_out_waiter_leaves_the_next_one_its_turn(cls):
    """A waiter whose time runs out about when the lock is released (the
    release's post left untaken) does not keep a later waiter from it."""
    lock = cls()

    def short():
        if lock.acquire(True, 0.001):
            lock.release()

    for _ in range(40):
        lock.acquire()
        t = threading.Thread(target=short)
        t.start()
        time.sleep(0.001)
        lock.release()
        t.join(5)
        lock.acquire()
        got = []
        long = threading.Thread(target=lambda: (got.append(lock.acquire(True, 5)),
                                                lock.release()))
        long.start()
        time.sleep(0.0005)
        lock.release()
        long.join(10)
        assert got == [True] and not long.is_alive() and not t.is_alive()
        assert not _locked(lock)


@pytest.mark.parametrize("cls", READER_LOCKS)
def test_a_condition_over_the_readers_lock_hands_on(cls):
    lock = cls()
    cond = threading.Condition(lock)
    items: list = []
    got: list = []

    def consumer():
        for _ in range(200):
            with cond:
                if not cond.wait_for(lambda: items, timeout=10):
                    got.append("timeout")
                    return
                got.append(items.pop(0))

    def producer():
        for i in range(200):
            with cond:
                with lock:              # (reentrant while notifying)
                    items.append(i)
                cond.notify()
            if i % 7 == 0:
                time.sleep(0)
    c = threading.Thread(target=consumer)
    p = threading.Thread(target=producer)
    c.start()
    p.start()
    p.join(30)
    c.join(30)
    assert got == list(range(200))
    assert not _locked(lock)
