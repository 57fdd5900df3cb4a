"""The data directory's own files: ``LOCK`` and ``metadata.json``.

``LOCK`` is held with flock for the store's life by the one process that
owns it, with that process's PID inside for a second opener's message.
``metadata.json`` (docs/format.md) is rewritten atomically at every snapshot
and at clean close; recovery and ``verify`` read its ``last_seq`` as proof
of what was durable (core/scan.py).
"""
from __future__ import annotations

import fcntl
import logging
import os
import time

import orjson

from .. import __version__
from ..errors import StoreLocked
from ..timeutil import format_time
from .format import FORMAT_MAJOR, FORMAT_MINOR

log = logging.getLogger("stemedb")


def read_metadata(data_dir: str) -> dict | None:
    """``metadata.json`` of ``data_dir`` as a dict, or None when it is absent
    or not a JSON object (callers treat an unreadable one as proving nothing)."""
    try:
        with open(os.path.join(data_dir, "metadata.json"), "rb") as f:
            meta = orjson.loads(f.read())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def metadata(state, wal, now_us: int) -> dict:
    """The ``metadata.json`` of a store whose state is ``state`` (call under its lock)."""
    return {
        "version": __version__,
        "format_version": f"{FORMAT_MAJOR}.{FORMAT_MINOR}",
        "assertion_count": state.count,
        "last_seq": state.last_seq,
        "wal_segment_count": len(wal.segment_files()),
        "log_id": wal.log_id.hex(),
        "segment_size": wal.segment_size,
        "updated_at": format_time(now_us),
    }


def acquire_lock(path: str, timeout: float) -> int:
    """flock LOCK for the store's life; a second opener learns the holder's PID."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                try:
                    pid = int(os.pread(fd, 32, 0).decode().strip() or 0)
                except ValueError:
                    pid = 0
                os.close(fd)
                raise StoreLocked(f"Store is locked by PID {pid}: {path} is held by another "
                                  f"process; stop it or open another data directory",
                                  pid=pid) from None
            time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def note_segment_size(path: str, segment_size: int) -> None:
    """Warn when ``segment_size`` differs from the one in ``metadata.json``.

    A change is allowed, not refused: a segment's length is not part of the
    byte format (every segment is read whole, whatever its size), so the new
    size only decides when the active segment and later ones are sealed.
    """
    # no file (a new store) or a damaged one: recovery and verify judge that
    recorded = (read_metadata(path) or {}).get("segment_size")
    if isinstance(recorded, int) and recorded != segment_size:
        log.warning(f"STEMEDB_SEGMENT_SIZE is {segment_size} bytes but this store last ran "
                    f"with {recorded} (metadata.json): sealed segments keep their size; the "
                    f"active segment and new ones are sealed at {segment_size} bytes")


