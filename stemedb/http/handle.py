"""The store as the HTTP layer holds it: open, or still opening.

Under gunicorn the worker opens the store in a background thread, so the
worker keeps answering (``/v1/health`` says ``starting``, everything else 503
with ``Retry-After``) and keeps sending gunicorn its heartbeat while a long
recovery runs; a worker blocked in recovery past gunicorn's ``timeout`` would
be killed and restarted in a loop.  When opening fails (a held lock, a
corrupt log) ``on_failure`` decides what happens; the gunicorn entry exits
the worker with gunicorn's boot-error code so ``stemedb serve`` stops with a
non-zero status and the store's own message on stderr.
"""
from __future__ import annotations

import logging
import threading

from .errors import starting

log = logging.getLogger("stemedb.http")


class StoreHandle:
    def __init__(self, store=None):
        self._store = store
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._callbacks: list = []
        self.failure: BaseException | None = None
        if store is not None:
            self._ready.set()

    def when_ready(self, fn) -> None:
        """Call ``fn(store)`` once the store is open (now, if it is)."""
        with self._lock:
            store = self._store
            if store is None:
                self._callbacks.append(fn)
                return
        fn(store)

    @classmethod
    def open_in_background(cls, opener, on_ready=None, on_failure=None) -> "StoreHandle":
        """Call ``opener()`` in a thread; ``on_ready(store)`` / ``on_failure(exc)`` after."""
        handle = cls()

        def run():
            try:
                store = opener()
            except BaseException as exc:  # noqa: BLE001 - reported, then on_failure decides
                handle.failure = exc
                handle._ready.set()
                log.error("%s", exc)
                if on_failure is not None:
                    on_failure(exc)
                return
            with handle._lock:
                handle._store = store
                closed = handle._closed
                callbacks, handle._callbacks = handle._callbacks, []
            if closed:  # shut down while we were opening
                _close(store)
            else:
                for fn in callbacks:
                    fn(store)
                if on_ready is not None:
                    on_ready(store)
            handle._ready.set()

        threading.Thread(target=run, name="stemedb-open", daemon=True).start()
        return handle

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self._store is not None and self.failure is None

    def get(self):
        """The open store, or a 503 ``starting`` problem."""
        store = self._store
        if store is None or self._closed:
            raise starting()
        return store

    def peek(self):
        """The store when open, else None (metrics, health)."""
        return None if self._closed else self._store

    def wait(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Snapshot and close (writes metadata.json); waits for an opening store."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            store = self._store
        if store is None:
            # Still opening: the opener sees _closed and closes the store
            # itself before it signals ready.
            self._ready.wait(timeout)
            return
        _close(store)


def _close(store) -> None:
    try:
        store.snapshot()
    except Exception:  # noqa: BLE001 - close still writes metadata.json and releases LOCK
        log.exception("snapshot at shutdown failed")
    store.close()
    _log_shutdown(store)


def _log_shutdown(store) -> None:
    """The one line saying what the shutdown flushed (docs/operations/monitoring.md)."""
    try:
        seq, count = int(store.last_seq), int(store.count)
        fault = getattr(store, "fault", None)
    except Exception:  # noqa: BLE001 - nothing to report from a broken store
        log.warning("Shutdown complete: the store's state could not be read")
        return
    fields = {"last_seq": seq, "assertions": count}
    if fault:
        # Store.close writes no snapshot after a storage fault: the WAL is the truth.
        log.warning(f"Shutdown complete: no snapshot (storage fault: {fault}), metadata.json "
                    f"not rewritten; the WAL holds {count} assertions up to seq {seq} and "
                    f"recovery replays it", extra=fields)
    else:
        log.info(f"Shutdown complete: snapshot at seq {seq}, metadata.json written, "
                 f"{count} assertions", extra=fields)
