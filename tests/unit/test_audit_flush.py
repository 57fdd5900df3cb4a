"""AuditLog.flush returns only once what was queued is written, even when
another thread (the writer, or an adding thread) took it off the queue and
is still writing it: flush waits for that chunk (the drain lock) instead
of returning on an empty queue."""
from __future__ import annotations

import threading
import time

from stemedb.core.audit import AuditLog


def test_flush_waits_for_a_chunk_another_thread_is_writing(tmp_path):
    log = AuditLog(str(tmp_path))
    try:
        log.add(b'{"id":"q1","at_us":1}\n')
        log.flush()
        taken = threading.Event()
        release = threading.Event()

        def writer_mid_chunk():
            with log._drain_lock:           # as _chunk: take, then write
                lines = list(log._queue)
                log._queue.clear()
                taken.set()
                release.wait(5)
                log._write(lines)
        log.add(b'{"id":"q2","at_us":2}\n')
        t = threading.Thread(target=writer_mid_chunk)
        t.start()
        assert taken.wait(5)
        done = threading.Event()
        f = threading.Thread(target=lambda: (log.flush(), done.set()))
        f.start()
        time.sleep(0.1)
        assert not done.is_set()            # the queue is empty, the line not yet written
        release.set()
        f.join(5)
        t.join(5)
        assert done.is_set()
        assert [e["id"] for e in log.read(limit=10)] == ["q2", "q1"]
    finally:
        log.close()
