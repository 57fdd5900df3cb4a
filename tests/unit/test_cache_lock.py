"""The read cache's lock: the compiled _query.CacheLock against its pure twin,
threading.Lock (qpure.CacheLock), for everything the cache and the query
path ask of it, plus what threading.Lock promises besides (release of an
unlocked lock, timeouts, contention across threads)."""
from __future__ import annotations

import threading
import time

import pytest

from stemedb.core import qfast, qpure
from stemedb.core.readcache import ReadCache

try:
    from stemedb.core import _query  # type: ignore[attr-defined]
except ImportError:         # the pure-only install: nothing compiled to hold
    _query = None

IMPLS = [qpure.CacheLock] + ([_query.CacheLock] if _query is not None else [])


def test_the_cache_takes_the_builds_lock():
    assert qfast.CacheLock is (_query.CacheLock if qfast.COMPILED else qpure.CacheLock)
    assert type(ReadCache(1 << 20)._lock) is type(qfast.CacheLock())


@pytest.mark.parametrize("cls", IMPLS)
def test_acquire_release_locked(cls):
    lock = cls()
    assert not lock.locked()
    assert lock.acquire() is True
    assert lock.locked()
    assert lock.acquire(False) is False                 # not reentrant
    assert lock.acquire(blocking=False) is False
    assert lock.acquire(timeout=0) is False
    assert lock.acquire(True, 0.01) is False
    lock.release()
    assert not lock.locked()
    assert lock.acquire(blocking=False) is True
    lock.release()
    assert lock.acquire(timeout=0) is True
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()
    assert not lock.locked()


# (the reader's lock, test_reader_lock.py, refuses them the same way)
@pytest.mark.parametrize("cls", IMPLS + [qpure.ReaderLock] + (
    [_query.ReaderLock] if _query is not None else []))
def test_bad_timeouts_are_refused_as_threading_refuses_them(cls):
    lock = cls()
    with pytest.raises(ValueError):
        lock.acquire(False, 1.0)
    with pytest.raises(ValueError):
        lock.acquire(True, -2)
    with pytest.raises(OverflowError):
        lock.acquire(True, 1e300)
    got = []
    t = threading.Thread(target=lambda: got.append(lock.acquire(blocking=False)))
    t.start()
    t.join()
    assert got == [True]                # none of them took it


@pytest.mark.parametrize("cls", IMPLS)
def test_with_block_releases_on_error(cls):
    lock = cls()
    with lock as got:
        assert got is True
        assert lock.locked()
    assert not lock.locked()
    with pytest.raises(KeyError):
        with lock:
            raise KeyError("x")
    assert not lock.locked()


@pytest.mark.parametrize("cls", IMPLS)
def test_a_waiter_blocks_until_release_and_others_run_meanwhile(cls):
    lock = cls()
    lock.acquire()
    got = []
    t = threading.Thread(target=lambda: (lock.acquire(), got.append(1), lock.release()))
    t.start()
    spins = 0
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:     # the waiter holds no GIL while it waits
        spins += 1
    assert got == [] and spins > 0
    lock.release()                          # released by another thread than the waiter's
    t.join(5)
    assert got == [1] and not lock.locked()


@pytest.mark.parametrize("cls", IMPLS)
def test_mutual_exclusion_under_contention(cls):
    lock = cls()
    box = {"n": 0}

    def work():
        for _ in range(2000):
            with lock:
                v = box["n"]
                time.sleep(0) if v % 97 == 0 else None
                box["n"] = v + 1
    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert box["n"] == 8000 and not lock.locked()


@pytest.mark.parametrize("cls", IMPLS)
def test_a_timed_acquire_gets_a_lock_released_meanwhile(cls):
    lock = cls()
    lock.acquire()
    threading.Timer(0.05, lock.release).start()
    assert lock.acquire(True, 5.0) is True
    lock.release()


@pytest.mark.parametrize("cls", IMPLS)
def test_answers_from_the_cache_the_same_under_either_lock(tmp_path, cls):
    """The compiled first page takes a CacheLock from C and any other lock
    through its methods: the same answers, counters and lock left free."""
    from stemedb import open_store
    store = open_store(str(tmp_path / "s"), durability="none")
    try:
        store.put_batch([{"concept_path": "d/e", "predicate": "p", "value": i,
                          "confidence": 0.5} for i in range(5)])
        cache = store.reader.cache
        cache._lock = cls()
        first = store.query("d/e", predicate="p")
        again = store.query("d/e", predicate="p")
        assert [a.hash for a in again.assertions] == [a.hash for a in first.assertions]
        assert again.results[0]["winner"].hash == first.results[0]["winner"].hash
        assert cache.answer_hits >= 1 and not cache._lock.locked()
    finally:
        store.close()
