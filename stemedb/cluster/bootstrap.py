"""Bootstrap a node with an empty data directory from the S3 WAL archive.

Before the store opens (:func:`stemedb.http.app.open_store_for`), a cluster
node whose data directory holds no WAL, with ``STEMEDB_ARCHIVE_S3`` set,
fetches the archive through :func:`stemedb.ops.archive.fetch_until`: every
archived segment (sha256 checked, then judged by the one scanner as recovery
and ``verify`` judge them) and the newest archived snapshot those segments
cover.  They are staged in ``<data_dir>/.bootstrap-*`` and renamed into
place, with ``bootstrap.json`` naming where they came from; the store then
opens them as its own (recovery checks them again), and
:class:`~stemedb.cluster.node.ClusterNode` checks them against the stream
before it consumes anything: the stream must reach the archive's last seq
(a record's seq is its stream sequence) and hold the archive's last
assertion in the message of that seq; otherwise the node refuses to start
with :class:`~stemedb.cluster.errors.ClusterMismatch`.  Accepted, the node
records the stream in ``cluster.json`` and consumes from the next stream seq.

No archive under the prefix (nothing pushed yet), or ``STEMEDB_ARCHIVE_S3``
unset: nothing is installed and the node replays the stream from seq 1.
An archive that cannot be read (S3 down, a checksum that fails, a gap, two
histories under the prefix) stops the start with the reason: replaying the
stream instead would hide it.
"""
from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import orjson

from .errors import ClusterMismatch

log = logging.getLogger("stemedb.cluster")

MARKER = "bootstrap.json"


def marker(data_dir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(data_dir, MARKER), "rb") as f:
            doc: dict[str, Any] = orjson.loads(f.read())
            return doc
    except FileNotFoundError:
        return None


def clear_marker(data_dir: str) -> None:
    from ..ops.files import fsync_dir
    os.unlink(os.path.join(data_dir, MARKER))
    fsync_dir(data_dir)


def is_empty(data_dir: str) -> bool:
    """No WAL segment and no snapshot: nothing a store would open."""
    wal = os.path.join(data_dir, "wal")
    segs = [n for n in os.listdir(wal) if n.startswith("segment-")] if os.path.isdir(wal) else []
    return not segs and not os.path.exists(os.path.join(data_dir, "db", "indexes",
                                                        "snapshot.idx"))


def bootstrap(data_dir: str, target: str | None, *, endpoint_url: str | None = None,
              s3: Any = None) -> dict[str, Any] | None:
    """Install the archive at ``target`` in the empty ``data_dir``; its info, or
    None when nothing was installed (not empty, no target, no archive)."""
    from ..ops import archive, archivestate
    from ..ops.files import fsync_dir, write_json_atomic
    if not target or not is_empty(data_dir):
        if not target and is_empty(data_dir):
            log.info("cluster: empty data directory and no STEMEDB_ARCHIVE_S3: replaying the "
                     "stream from the start")
        return None
    os.makedirs(data_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bootstrap-", dir=data_dir) as tmp:
        try:
            info = archive.fetch_until(
                target, os.path.join(tmp, "wal"), s3=s3, endpoint_url=endpoint_url,
                snapshot_dest=os.path.join(tmp, "db", "indexes", "snapshot.idx"))
        except archive.NoArchive as exc:
            log.info("cluster: %s: replaying the stream from the start", exc)
            return None
        except archive.ArchiveError as exc:
            raise ClusterMismatch(
                f"cannot bootstrap {data_dir} from STEMEDB_ARCHIVE_S3={target}: {exc}. Fix "
                f"the archive or point STEMEDB_ARCHIVE_S3 at one history "
                f"(BUCKET/PREFIX/<log id>), or unset it to replay the stream") from None
        boot = {"root": info["root"], "snapshot": info["snapshot"], "last_seq": info["last_seq"],
                "segments": info["segments"], "records": info["records"],
                "log_id": info["log_id"]}
        write_json_atomic(os.path.join(tmp, MARKER), boot)
        for part in ("wal", "db", MARKER):
            src = os.path.join(tmp, part)
            if os.path.exists(src):
                dst = os.path.join(data_dir, part)
                if os.path.isdir(dst) and not os.listdir(dst):
                    os.rmdir(dst)
                elif os.path.lexists(dst):    # no segment or snapshot, but not empty: kept
                    os.rename(dst, f"{dst}.before-bootstrap.{os.getpid()}")
                os.rename(src, dst)
        fsync_dir(data_dir)
    # from here on this node writes its own history of the log: archived, it
    # goes under a timeline of its own, never over the segments it came from
    archivestate.new_timeline(data_dir, reason="cluster_bootstrap", source=info["root"],
                              parent=info["timeline"] or None)
    log.info("cluster: bootstrapped %s from the archive %s: %d segments, %d records up to "
             "seq %d, snapshot %s; the stream is consumed from seq %d",
             data_dir, info["root"], info["segments"], info["records"], info["last_seq"],
             info["snapshot"] or "none (indexes rebuilt)", info["last_seq"] + 1)
    return boot
