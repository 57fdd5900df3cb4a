"""The stream: its configuration, and ``stemedb cluster init`` (create or check).

One stream holds the whole history: subjects ``<name>.>``, file storage,
3 replicas, limits retention with no limit (a message is never dropped: a
node that starts from an empty data directory replays it from the start, or
from the seq after the S3 archive it bootstrapped from, :mod:`.bootstrap`),
deletes and purges refused, a two-minute duplicate window for the message
ids (a client retry within it writes once), and atomic batch publishing
allowed (an assertion batch is one atomic batch of one message per record,
:mod:`.message`).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:       # nats is an extra (stemedb[cluster]), imported where used
    from nats.js.api import StreamInfo

DUPLICATE_WINDOW = 120.0        # seconds; JetStream's de-duplication window
MAX_MSG_SIZE = 32 * 1024 * 1024  # one record's message; a 16 MiB batch body bounds any item


@dataclass(frozen=True)
class ClusterSettings:
    """The cluster variables (contract: "Cluster (several nodes)")."""

    urls: list[str]
    stream: str = "stemedb"
    node_id: str = ""
    read_wait_ms: int = 5000
    replicas: int = 3

    @classmethod
    def from_env(cls, env=None) -> "ClusterSettings | None":
        from ..errors import ConfigError
        env = os.environ if env is None else env
        raw = env.get("STEMEDB_CLUSTER_NATS", "").strip()
        if not raw:
            return None
        urls = [u.strip() for u in raw.split(",") if u.strip()]
        stream = env.get("STEMEDB_CLUSTER_STREAM", "stemedb").strip() or "stemedb"
        if not all(c.isalnum() or c in "-_" for c in stream):
            raise ConfigError(f"STEMEDB_CLUSTER_STREAM must be letters, digits, - or _ "
                              f"(got {stream!r})")
        try:
            wait = int(env.get("STEMEDB_READ_WAIT_MS", "5000"))
            if wait < 0:
                raise ValueError
        except ValueError:
            raise ConfigError("STEMEDB_READ_WAIT_MS must be a whole number of milliseconds "
                              ">= 0") from None
        return cls(urls=urls, stream=stream,
                   node_id=env.get("STEMEDB_NODE_ID", "").strip() or socket.gethostname(),
                   read_wait_ms=wait)


# the stream metadata of a stream restored from the S3 archive (restore_stream)
RESTORED_FROM = "stemedb_restored_from"     # the archive's root under its prefix
RESTORED_LOG = "stemedb_restored_log_id"    # the archived history's log id
RESTORED_SEQ = "stemedb_restored_seq"       # the archive's last seq


def stream_config(name: str, replicas: int = 3, *, first_seq: int | None = None,
                  metadata: dict[str, str] | None = None):
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
    return StreamConfig(first_seq=first_seq, metadata=metadata,
        name=name, subjects=[f"{name}.>"], retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE, num_replicas=replicas, max_msgs=-1, max_bytes=-1,
        max_age=0, discard=DiscardPolicy.OLD, max_msg_size=MAX_MSG_SIZE,
        duplicate_window=DUPLICATE_WINDOW, deny_delete=True, deny_purge=True,
        allow_atomic=True, description="StemeDB replicated log (stemedb cluster init)")


async def ensure_stream(js, name: str, replicas: int = 3) -> tuple[StreamInfo, bool]:
    """``(stream info, created)``: create the stream, or check the existing one.

    Idempotent.  An existing stream with other subjects, storage or replicas
    is reported, never changed (ValueError naming the difference); the one
    setting it turns on in an existing stream is atomic batch publishing,
    which only adds a way to write.
    """
    from nats.js.api import StorageType
    from nats.js.errors import NotFoundError
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        info = await js.add_stream(stream_config(name, replicas))
        return info, True
    c = info.config
    wrong = []
    if list(c.subjects or []) != [f"{name}.>"]:
        wrong.append(f"subjects {c.subjects} (want ['{name}.>'])")
    if c.storage != StorageType.FILE:
        wrong.append(f"storage {c.storage} (want file)")
    if (c.num_replicas or 1) != replicas:
        wrong.append(f"replicas {c.num_replicas} (want {replicas})")
    if (c.max_age or 0) > 0 or (c.max_msgs or -1) > 0 or (c.max_bytes or -1) > 0:
        wrong.append("limits that drop messages (max_age/max_msgs/max_bytes must be unlimited)")
    if wrong:
        raise ValueError(f"stream {name} exists but differs: " + "; ".join(wrong))
    if not c.allow_atomic:
        c.allow_atomic = True
        info = await js.update_stream(c)
    return info, False


def restored_point(info: StreamInfo) -> tuple[str, str, int] | None:
    """``(archive root, log id, last archived seq)`` of a stream that
    :func:`restore_stream` created, else None."""
    md = info.config.metadata or {}
    if RESTORED_SEQ not in md:
        return None
    return md.get(RESTORED_FROM, ""), md.get(RESTORED_LOG, ""), int(md[RESTORED_SEQ])


async def restore_stream(js, name: str, replicas: int, root: str, log_id: str,
                         last_seq: int) -> tuple[StreamInfo, bool]:
    """``(stream info, created)``: create the lost stream anew to continue the
    archived history ``root``, which ends at ``last_seq``.

    The new stream starts at ``last_seq + 1`` (JetStream's ``first_seq``),
    so seqs go on where the archive ends, and names the archive (root, and
    the log id every archived segment carries) in its metadata: a node bootstrapped from that archive holds every seq below
    the stream's first and is accepted (:class:`.node.ClusterNode`).
    Idempotent for the same archive; a stream that exists otherwise is
    refused (ValueError), never changed.
    """
    from nats.js.errors import NotFoundError
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        cfg = stream_config(name, replicas, first_seq=last_seq + 1,
                            metadata={RESTORED_FROM: root, RESTORED_LOG: log_id,
                                      RESTORED_SEQ: str(last_seq)})
        return await js.add_stream(cfg), True
    if restored_point(info) == (root, log_id, last_seq):
        return (await ensure_stream(js, name, replicas))[0], False
    raise ValueError(f"stream {name} exists (last seq {info.state.last_seq}): restoring from "
                     f"the archive creates a stream that was lost, it never writes over one "
                     f"that is there")
