"""``stemedb cluster init``: create the stream, or check the one there is.

Idempotent: run it once per cluster (or again, to check).  Reads
``STEMEDB_CLUSTER_NATS`` and ``STEMEDB_CLUSTER_STREAM``; ``--replicas``
(default 3) is the stream's replica count.  Prints one line naming the
stream, its replicas, leader and last seq.  Exit 0 when the stream is there
as it should be, 1 when it differs or cannot be reached in ``--timeout``
seconds, 2 on bad usage.

``--from-archive [BUCKET/PREFIX]`` (default ``STEMEDB_ARCHIVE_S3``, with
``STEMEDB_S3_ENDPOINT_URL``) is for a cluster whose stream is lost: it
fetches and checks the S3 archive (as a bootstrapping node does) and creates
the stream anew starting at the seq after the archive's last, naming the
archive in the stream's metadata.  Nodes started on empty data directories
with that ``STEMEDB_ARCHIVE_S3`` then bootstrap from it and go on.  Writes
acknowledged after the archive's last seq are not in it and are lost.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from .stream import ClusterSettings, ensure_stream, restore_stream


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="stemedb cluster", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    i = sub.add_parser("init", help="create or check the stream (idempotent)")
    i.add_argument("--replicas", type=int, default=3, help="stream replicas (default 3)")
    i.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for a NATS quorum (default 30)")
    i.add_argument("--from-archive", nargs="?", const="", default=None, metavar="BUCKET/PREFIX",
                   help="create a lost stream anew from the S3 archive (default "
                        "STEMEDB_ARCHIVE_S3)")
    args = p.parse_args(argv)
    if args.action != "init":
        p.print_help(sys.stderr)
        return 2
    from ..errors import ConfigError
    try:
        cs = ClusterSettings.from_env()
    except ConfigError as exc:
        print(f"stemedb cluster init: {exc}", file=sys.stderr)
        return 2
    if cs is None:
        print("stemedb cluster init: set STEMEDB_CLUSTER_NATS (comma-separated NATS URLs)",
              file=sys.stderr)
        return 2
    if not 1 <= args.replicas <= 5:
        print("stemedb cluster init: --replicas must be 1 to 5 (3 for a cluster that "
              "survives losing a NATS server)", file=sys.stderr)
        return 2
    restore = None
    if args.from_archive is not None:
        target = args.from_archive or os.environ.get("STEMEDB_ARCHIVE_S3", "").strip()
        if not target:
            print("stemedb cluster init: --from-archive needs BUCKET/PREFIX or "
                  "STEMEDB_ARCHIVE_S3", file=sys.stderr)
            return 2
        try:
            restore = _archive_point(target, os.environ.get("STEMEDB_S3_ENDPOINT_URL") or None)
        except Exception as exc:  # noqa: BLE001 - S3 down, no archive, a bad checksum
            print(f"stemedb cluster init: cannot restore from s3://{target}: {exc}",
                  file=sys.stderr)
            return 1
    try:
        return asyncio.run(_init(cs, args.replicas, args.timeout, restore))
    except ImportError:
        print("stemedb cluster init: the NATS client is not installed: "
              "pip install 'stemedb[cluster]'", file=sys.stderr)
        return 2


def _archive_point(target: str, endpoint_url: str | None) -> tuple[str, str, int]:
    """``(root, log id, last seq)`` of the archive at ``target``, fetched and checked
    the way a bootstrapping node fetches it (every segment's sha256, the
    scanner's verdict), into a temporary directory."""
    import tempfile

    from ..ops import archive
    with tempfile.TemporaryDirectory(prefix="stemedb-restore-") as tmp:
        info = archive.fetch_until(target, os.path.join(tmp, "wal"), endpoint_url=endpoint_url)
    if not info["last_seq"]:
        raise ValueError("the archive holds no records")
    return info["root"], str(info["log_id"]), int(info["last_seq"])


async def _init(cs: ClusterSettings, replicas: int, timeout: float,
                restore: tuple[str, str, int] | None = None) -> int:
    import nats
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    nc = None
    try:
        while time.monotonic() < deadline:
            try:
                if nc is None:
                    nc = await nats.connect(servers=cs.urls, connect_timeout=2,
                                            max_reconnect_attempts=2)
                js = nc.jetstream(timeout=5)
                if restore is None:
                    info, created = await ensure_stream(js, cs.stream, replicas)
                else:
                    info, created = await restore_stream(js, cs.stream, replicas, *restore)
                break
            except ValueError as exc:          # the stream is there but differs
                print(f"stemedb cluster init: {exc}", file=sys.stderr)
                return 1
            except Exception as exc:  # noqa: BLE001 - no quorum yet (a cluster forming): retry
                last = exc
                await asyncio.sleep(0.5)
        else:
            print(f"stemedb cluster init: no answer from JetStream at {','.join(cs.urls)} "
                  f"within {timeout:g}s ({type(last).__name__}: {last})", file=sys.stderr)
            return 1
    finally:
        if nc is not None:
            await nc.close()
    leader = info.cluster.leader if info.cluster else "-"
    print(f"stream {cs.stream} {'created' if created else 'checked'}: subjects {cs.stream}.>, "
          f"replicas {info.config.num_replicas}, file storage, leader {leader}, "
          f"last seq {info.state.last_seq}"
          + (f", continuing the archive {restore[0] or '(the prefix)'} after seq {restore[2]}"
             if restore else ""))
    return 0
