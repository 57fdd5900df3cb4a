"""The reader's lock: the compiled _query.ReaderLock against its pure twin,
threading.RLock (qpure.ReaderLock), for what the store asks of it (``with``
blocks, nested by one thread: the writer applies under it and a query may
run inside a caller's own ``with store.reader.lock``) and what RLock
promises besides (release by a thread that does not own it, timeouts,
contention across threads, threading.Condition over it), plus the first
page taking it from C: a query inside a held lock, and a query that fails
while holding it, leave it as they found it."""
from __future__ import annotations

import signal
import threading
import time

import pytest

from stemedb.core import qfast, qpure
from stemedb.core import query as Q
from stemedb.core.reader import Reader

try:
    from stemedb.core import _query  # type: ignore[attr-defined]
except ImportError:         # the pure-only install: nothing compiled to hold
    _query = None

IMPLS = [qpure.ReaderLock] + ([_query.ReaderLock] if _query is not None else [])


def _is_owned(lock) -> bool:
    return lock._is_owned()


def _try_from_other_thread(lock, **kw):
    """acquire(**kw) from a new thread; released there when it was taken."""
    got = []

    def run():
        ok = lock.acquire(**kw)
        got.append(ok)
        if ok:
            lock.release()
    t = threading.Thread(target=run)
    t.start()
    t.join()
    return got[0]


def test_the_store_takes_the_builds_lock(opener):
    assert qfast.ReaderLock is (_query.ReaderLock if qfast.COMPILED else qpure.ReaderLock)
    assert type(Reader.new_lock()) is type(qfast.ReaderLock())
    assert type(opener().reader.lock) is type(qfast.ReaderLock())


@pytest.mark.parametrize("cls", IMPLS)
def test_reentrant_by_its_owner(cls):
    lock = cls()
    assert not _is_owned(lock)
    assert lock.acquire() is True
    assert lock.acquire() is True                   # reentrant
    assert lock.acquire(blocking=False) is True
    assert lock.acquire(timeout=0) is True
    assert _is_owned(lock)
    assert _try_from_other_thread(lock, blocking=False) is False
    assert _try_from_other_thread(lock, timeout=0.01) is False
    for _ in range(3):
        lock.release()
        assert _is_owned(lock)
        assert _try_from_other_thread(lock, blocking=False) is False
    lock.release()
    assert not _is_owned(lock)
    assert _try_from_other_thread(lock, blocking=False) is True
    with pytest.raises(RuntimeError):
        lock.release()
    with lock:
        with lock:
            assert _is_owned(lock)
        assert _try_from_other_thread(lock, blocking=False) is False
    assert _try_from_other_thread(lock, timeout=0) is True


@pytest.mark.parametrize("cls", IMPLS)
def test_only_the_owner_releases(cls):
    lock = cls()
    lock.acquire()
    err = []

    def other():
        try:
            lock.release()
        except RuntimeError as exc:
            err.append(exc)
    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert len(err) == 1
    assert _is_owned(lock)
    lock.release()


@pytest.mark.parametrize("cls", IMPLS)
def test_contention_a_waiter_gets_it_when_released(cls):
    lock = cls()
    lock.acquire()
    lock.acquire()
    order = []

    def waiter():
        with lock:
            order.append("waiter")
    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.05)
    order.append("owner")
    lock.release()
    assert t.is_alive() or order == ["owner", "waiter"]   # still held once
    time.sleep(0.02)
    assert order == ["owner"]
    lock.release()
    t.join(5)
    assert order == ["owner", "waiter"]


@pytest.mark.parametrize("cls", IMPLS)
def test_many_threads_count_under_it(cls):
    lock = cls()
    n = [0]

    def work():
        for _ in range(2000):
            with lock:
                with lock:
                    v = n[0]
                    n[0] = v + 1
    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert n[0] == 8000
    assert not _is_owned(lock)


@pytest.mark.parametrize("cls", IMPLS)
def test_a_condition_over_it(cls):
    """threading.Condition waits through _release_save/_acquire_restore:
    the lock is free while it waits, held again (as deep) after."""
    lock = cls()
    cv = threading.Condition(lock)
    ready = []
    with lock:
        with lock:
            def notifier():
                with cv:
                    ready.append(1)
                    cv.notify()
            t = threading.Thread(target=notifier)
            t.start()
            assert cv.wait_for(lambda: ready, timeout=5)
            assert _is_owned(lock)
        assert _is_owned(lock)
    assert not _is_owned(lock)
    t.join()
    with pytest.raises(RuntimeError):
        cv.notify()             # not held


def _fill(store):
    for i in range(6):
        store.put({"concept_path": f"d/e{i % 2}", "predicate": "p", "value": i,
                   "confidence": 0.5})


@pytest.mark.parametrize("audit", [False, True])
def test_the_first_page_inside_a_held_lock_and_after_a_failure(opener, audit):
    """A query in a thread that already holds the reader's lock (nested:
    the first page takes it again from C) answers and leaves it held as
    deep as before; a query whose resolve fails leaves it free."""
    s = opener(audit=audit)
    _fill(s)
    want = s.query("d/e0", predicate="p")
    lock = s.reader.lock
    with lock:
        assert s.query("d/e0", predicate="p").assertions == want.assertions   # a hit
        assert s.query("d/e1", predicate="p").results                        # a miss
        assert _is_owned(lock)
    assert not _is_owned(lock)
    assert _try_from_other_thread(lock, blocking=False) is True
    s.put({"concept_path": "d/e0", "predicate": "p", "value": 9, "confidence": 0.5})

    def boom(*_a, **_k):
        raise RuntimeError("resolve failed")
    real = Q._resolve
    env = list(Q._FIRST_ENV)
    env[10] = boom
    first = qfast.first_page(tuple(env))
    with pytest.raises(RuntimeError, match="resolve failed"):
        first(s.reader, "d/e0", "p", False, "recency", 100, None)
    assert Q._resolve is real
    assert not _is_owned(lock)
    assert _try_from_other_thread(lock, blocking=False) is True


class _Interrupted(Exception):
    pass


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
@pytest.mark.parametrize("cls", IMPLS)
def test_a_blocked_acquire_lets_a_signal_handler_raise(cls):
    """A thread waiting for the lock (no timeout) runs a signal's handler,
    and the handler's exception ends the wait, as RLock's acquire does."""
    lock = cls()
    held, done = threading.Event(), threading.Event()

    def holder():
        with lock:
            held.set()
            done.wait(10)
    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)

    def handler(*_a):
        raise _Interrupted()
    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(_Interrupted):
            lock.acquire()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        done.set()
        t.join()
    assert not _is_owned(lock)
    assert _try_from_other_thread(lock, blocking=False) is True
