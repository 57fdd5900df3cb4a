"""Durable file operations for the ops tools: copy, hash, atomic JSON, names.

Every file the tools create is fsynced, and so is the directory holding it,
before the tools report success (STYLE principle 5): a backup that was
announced must survive a power cut.
"""
from __future__ import annotations

import hashlib
import json
import os
import time

BACKUP_PREFIX = "stemedb-backup-"
STAMP_FORMAT = "%Y%m%d-%H%M%S"


def utc_stamp(t: float | None = None) -> str:
    """``YYYYMMDD-HHMMSS`` in UTC, the suffix of backup and renamed directories."""
    return time.strftime(STAMP_FORMAT, time.gmtime(time.time() if t is None else t))


def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1e6) % 1_000_000:06d}Z"


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: str, data: bytes) -> str:
    """Write ``data`` to a new file, fsync it; returns its sha256 hex."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return hashlib.sha256(data).hexdigest()


def copy_durable(src: str, dst: str, chunk: int = 1 << 20) -> str:
    """Copy ``src`` to a new ``dst`` in chunks, fsync; returns the sha256 hex of the copy."""
    h = hashlib.sha256()
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        for block in iter(lambda: fi.read(chunk), b""):
            fo.write(block)
            h.update(block)
        fo.flush()
        os.fsync(fo.fileno())
    return h.hexdigest()


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: str) -> dict:
    with open(path, "rb") as f:
        return json.loads(f.read())


def write_json_atomic(path: str, obj) -> None:
    """Replace ``path`` with ``obj`` as JSON: temp file, fsync, rename, dir fsync.

    A reader (the server's metrics) sees the old file or the new one, never half.
    """
    tmp = f"{path}.tmp.{os.getpid()}"
    write_durable(tmp, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def list_backups(backup_dir: str) -> list[str]:
    """Completed backup directories, oldest first (names sort by time)."""
    if not os.path.isdir(backup_dir):
        return []
    names = sorted(n for n in os.listdir(backup_dir)
                   if n.startswith(BACKUP_PREFIX) and os.path.isdir(os.path.join(backup_dir, n)))
    return [os.path.join(backup_dir, n) for n in names]
