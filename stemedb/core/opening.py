"""Opening a data directory: the parts of a store, wired, or nothing.

:func:`open_parts` takes ``LOCK``, runs recovery (which returns the state it
built), and wires the WAL, the audit trail, the reader, the writer and the
checkpoints; the WAL's "on durable" step (:func:`on_durable`) applies each
group and moves the checkpoint position with it.  A failure on the way frees
everything taken, writing nothing (no sync, no snapshot), so that a retry in
this process does not find ``LOCK`` held by itself.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import partial
from typing import Any

from . import datadir, records, recovery
from .audit import AuditLog, audit_enabled
from .checkpoint import Checkpoints
from .fast import apply_puts
from .implementation import log_startup
from .reader import Reader
from .state import GEN_MIX, PRED_BITS, PUT_GROUP
from .wal import WAL
from .writer import Writer

log = logging.getLogger("stemedb")

@dataclass
class Parts:
    lock_fd: int
    wal: WAL
    audit: AuditLog | None
    reader: Reader
    writer: Writer
    checkpoints: Checkpoints
    rebuilt: bool
    replayed: int


def on_durable(parts: list[Any], group: list, anchor: dict) -> None:
    """The WAL's step after each durable group, in seq order: apply it
    (State.apply_group) and move the position it covers with it, both under
    the index lock, so a snapshot is a consistent cut.  ``parts`` holds the
    Parts once the open has wired them (no group is durable before).
    A group of single puts is applied as it is, request by request, in one
    call (``fast.apply_puts``: up to ``PUT_GROUP`` requests), without
    ``records.group_frames`` joining their bytes for apply_group to take
    apart again; any other group goes through group_frames and apply_group."""
    p: Parts = parts[0]
    st = p.reader.state
    with p.reader.lock:
        n = apply_puts(st, group, PUT_GROUP, GEN_MIX, PRED_BITS)
        if not n:
            args = records.group_frames(group)
            st.apply_group(*args)
            n = len(args[1])
        p.checkpoints.anchor = anchor
    p.checkpoints.applied(anchor, n)


def open_parts(path: str, fs, clock, *, durability: str, segment_size: int,
               batch_delay_ms: float, snapshot_interval: int, lock_timeout: float,
               audit: bool | str, audit_max_bytes: int, read_cache_bytes: int) -> Parts:
    """Check the options, create ``path`` if needed, lock, recover and wire;
    logs ``Startup complete`` when the store is ready."""
    from ..config import Settings  # validates the values the same way as the server
    Settings(durability=durability, segment_size=segment_size, batch_delay_ms=batch_delay_ms,
             snapshot_interval=snapshot_interval, lock_timeout=lock_timeout,
             read_cache_bytes=read_cache_bytes)
    audit = audit_enabled(audit, audit_max_bytes)
    fs.makedirs(path)
    lock_fd = datadir.acquire_lock(os.path.join(path, "LOCK"), lock_timeout)
    wal: WAL | None = None
    trail: AuditLog | None = None
    try:
        datadir.note_segment_size(path, segment_size)
        box: list[Any] = []
        wal = WAL(os.path.join(path, "wal"), fs=fs, segment_size=segment_size,
                  durability=durability, batch_delay=batch_delay_ms / 1000.0,
                  on_durable=partial(on_durable, box))
        got = recovery.recover(wal, path)
        wal.start_appending()
        trail = AuditLog(os.path.join(path, "audit"), max_bytes=audit_max_bytes,
                         fs=fs) if audit else None
        reader = Reader(got.state, wal, Reader.new_lock(), clock, trail, read_cache_bytes)
        parts = Parts(lock_fd, wal, trail, reader, Writer(wal, reader, clock),
                      Checkpoints(path, fs, wal, reader, clock, snapshot_interval),
                      got.rebuilt, got.replayed)
        box.append(parts)
        if not os.path.exists(os.path.join(path, "metadata.json")):
            parts.checkpoints.write()       # a new store: its metadata.json before it answers
        elif got.rebuilt:
            # The WAL holds everything this snapshot would: it is written in
            # the background, as the periodic ones are, and the store
            # answers meanwhile (a crash first leaves what a crash during
            # the write left: the next start rebuilds again).
            parts.checkpoints.write_soon()
    except BaseException:
        abandon(lock_fd, wal, trail)
        raise
    log_startup(log)
    log.info("Startup complete")
    return parts


def abandon(lock_fd: int, wal: WAL | None, trail: AuditLog | None) -> None:
    """Free what an open holds, writing nothing (no sync, no snapshot)."""
    if wal is not None:
        if wal._file is not None:
            wal._file.close()
            wal._file = None
        for seg in wal.segments:
            seg.close()
    if trail is not None:
        trail.close()
    os.close(lock_fd)
