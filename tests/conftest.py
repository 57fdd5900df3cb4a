"""Small helpers shared by the engine tests (import them from ``tests.conftest``).

``body(i)`` makes a distinct valid assertion dict; ``NoFsyncFS`` is the real
file layer without the physical flush, for tests that never lose power: the
engine runs every code path (it still calls ``sync``), but a test does not pay
the disk's ~7 ms per fdatasync.  Durability against a crash is tested through
``tests/stress/crashfs.py`` and the kill -9 test, not here.
"""
from __future__ import annotations

import os
import socket

from stemedb.core import codec
from stemedb.core.fileio import File, FileSystem
from stemedb.core.format import SEGMENT_HEADER_SIZE

T0 = 1_709_294_400                    # 2024-03-01T12:00:00Z, in Unix seconds


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def body(i: int = 0, **over) -> dict:
    """A valid assertion body, distinct for each ``i``; ``over`` replaces fields
    (``None`` drops a field, except ``value``, where null is a value)."""
    b = {"concept_path": f"drugs/d{i % 7}/risk", "predicate": f"p{i % 3}",
         "value": {"i": i}, "confidence": 0.5, "timestamp": T0 + i}
    b.update(over)
    return {k: v for k, v in b.items() if v is not None or k == "value"}


def log_end(path) -> int:
    """Offset just past the last whole record of a segment file; an open or
    crashed store's active segment has its preallocated zeros after it."""
    with open(path, "rb") as f:
        buf = f.read()
    return codec.scan_frames(buf, SEGMENT_HEADER_SIZE, len(buf))[4]


def append_to_log(path, data: bytes) -> None:
    """Write ``data`` just past the last whole record of a segment, where the
    next write would go: over the preallocated zeros when the file has them
    (as a crash leaves a write there), else at its end."""
    end = log_end(path)
    with open(path, "r+b") as f:
        f.seek(end)
        f.write(data)


class _CountingFile(File):
    def sync(self) -> None:
        self.fs.syncs += 1


class NoFsyncFS(FileSystem):
    """The real file layer minus fdatasync/fsync; counts the syncs asked for."""

    file_class = _CountingFile

    def __init__(self):
        self.syncs = 0
        self.dir_syncs = 0

    def fsync_dir(self, path: str) -> None:
        assert os.path.isdir(path), f"fsync_dir of a missing directory {path}"
        self.dir_syncs += 1


def tree_bytes(root) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


def abandon(store) -> None:
    """Drop an open store the way a crash would: no sync, no snapshot, no
    metadata.json; only this process's descriptors (and the LOCK) are freed."""
    wal = store.wal
    if wal._file is not None:
        wal._file.close()          # File.close only closes the descriptor
        wal._file = None
    for seg in wal.segments:
        seg.close()
    if store.audit is not None:
        store.audit.close()
    os.close(store._lock_fd)
    store._closed = True
