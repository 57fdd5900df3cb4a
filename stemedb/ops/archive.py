"""WAL archival to S3-compatible storage, and point-in-time restore from it.

    python -m stemedb.ops.archive push [--to BUCKET/PREFIX] [--once] [--interval 60]
    stemedb restore --from-s3 BUCKET/PREFIX [--until TIME|seq:N]

Layout: ``<root>/wal/segment-NNNNN.log`` (sealed segments, byte for byte)
and ``<root>/snapshots/<sha256>.idx``, where ``<root>`` is
``<prefix>/<log id hex>`` for a store's original timeline and
``<prefix>/<log id hex>/timelines/<timeline>`` after a restore (a restored
store starts a new timeline, :mod:`stemedb.ops.archivestate`), each root
self-contained from segment 1.  Every object carries ``x-amz-meta-sha256``
and its seq range.

Only sealed segments are archived (the active one is still growing): the
archive's RPO is at most one segment (``STEMEDB_SEGMENT_SIZE``) plus the
push interval; backups cover the rest.  Uploads use ``If-None-Match: *`` so
nothing is ever overwritten: an object that exists with the same sha256 is
already archived (idempotent retry); with another sha256 it belongs to a
diverged history (a store whose history was changed outside ``stemedb
restore``, which starts a new timeline) and the push stops with an error.
Transient errors are retried with exponential backoff and jitter.
``<data_dir>/archive-state.json`` holds the timeline, the progress, the lag
(``lag_segments``, ``lag_seconds``), the last success and the failure count
(:mod:`stemedb.ops.archivestate`).

A point-in-time restore reads one root: ``--from-s3 BUCKET/PREFIX`` when the
prefix holds one history, otherwise ``--timeline ID`` (``original`` for the
first) or the root itself as ``--from-s3 BUCKET/PREFIX/<log id>/timelines/ID``.

Settings: ``STEMEDB_ARCHIVE_S3`` (bucket/prefix), ``STEMEDB_S3_ENDPOINT_URL``
(non-AWS storage), credentials the usual boto3 way.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
from typing import Any

from ..errors import StemeError
from . import archivestate
from .archivestate import STATE_NAME, archive_root
from .files import fsync_dir, read_json, write_durable, write_json_atomic
from .walcut import cut_segment, read_all, segment_paths

RETRYABLE = {"RequestTimeout", "SlowDown", "InternalError", "ServiceUnavailable", "Throttling",
             "ThrottlingException", "RequestTimeTooSkewed", "503", "500", "502", "504"}


class ArchiveError(StemeError, RuntimeError):
    code = "archive_failed"


def split_target(spec: str) -> tuple[str, str]:
    spec = spec.removeprefix("s3://").strip("/")
    bucket, _, prefix = spec.partition("/")
    if not bucket:
        raise ArchiveError(f"S3 target {spec!r} must be BUCKET or BUCKET/PREFIX")
    return bucket, prefix


S3_EXTRA_HINT = "pip install 'stemedb[s3]'"


class NoArchive(ArchiveError):
    """The prefix holds no archived history at all (nothing was pushed there yet)."""

    code = "no_archive"


class S3Unavailable(ArchiveError):
    """boto3, the S3 client, is an optional extra that is not installed."""

    code = "s3_unavailable"


def client(endpoint_url: str | None = None):
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise S3Unavailable(
            f"the S3 archive needs boto3, which is not installed ({exc}); install it with "
            f"{S3_EXTRA_HINT}") from None
    return boto3.client("s3", endpoint_url=endpoint_url or None,
                        config=Config(retries={"mode": "standard", "max_attempts": 3},
                                      connect_timeout=10, read_timeout=60,
                                      s3={"addressing_style": "path"}))


def _code(exc) -> str:
    resp = getattr(exc, "response", None) or {}
    return str(resp.get("Error", {}).get("Code") or resp.get("ResponseMetadata", {})
               .get("HTTPStatusCode", ""))


def with_retries(fn, *, attempts: int = 6, base: float = 0.5, cap: float = 30.0,
                 sleep=time.sleep):
    """Call ``fn``; retry transient failures with exponential backoff and full jitter."""
    from botocore.exceptions import BotoCoreError, ClientError
    for i in range(attempts):
        try:
            return fn()
        except ClientError as exc:
            if _code(exc) not in RETRYABLE or i == attempts - 1:
                raise
        except BotoCoreError:    # connection refused/reset, timeouts
            if i == attempts - 1:
                raise
        sleep(random.uniform(0, min(cap, base * 2 ** i)))
    raise AssertionError("unreachable")


def put_once(s3, bucket: str, key: str, data: bytes, meta: dict) -> str:
    """Upload unless present; returns ``uploaded`` or ``present``; raises on a different object."""
    from botocore.exceptions import ClientError
    digest = meta["sha256"]
    try:
        with_retries(lambda: s3.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*",
                                           Metadata={k: str(v) for k, v in meta.items()}))
    except ClientError as exc:
        if _code(exc) not in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
            raise
        head = with_retries(lambda: s3.head_object(Bucket=bucket, Key=key))
        if head.get("Metadata", {}).get("sha256") != digest:
            raise ArchiveError(
                f"s3://{bucket}/{key} exists with different content: this store's history "
                f"diverged from the archive (restored to an earlier point?). Nothing was "
                f"overwritten; archive to a new prefix (STEMEDB_ARCHIVE_S3)") from None
        return "present"
    head = with_retries(lambda: s3.head_object(Bucket=bucket, Key=key))
    if head["ContentLength"] != len(data) or head.get("Metadata", {}).get("sha256") != digest:
        raise ArchiveError(f"s3://{bucket}/{key} does not read back as uploaded")
    return "uploaded"


def push(data_dir: str, target: str, *, s3=None, endpoint_url: str | None = None,
         now=time.time) -> dict:
    """Archive every sealed segment not yet archived, and the current snapshot."""
    s3 = s3 or client(endpoint_url)
    bucket, prefix = split_target(target)
    state_path = os.path.join(data_dir, STATE_NAME)
    try:
        state = read_json(state_path)
    except (OSError, ValueError):
        state = {}
    try:
        tl = archivestate.timeline(data_dir)
    except ValueError as exc:
        raise ArchiveError(str(exc)) from None
    paths = segment_paths(os.path.join(data_dir, "wal"))
    sealed = paths[:-1]
    done = archivestate.archived_through(state, tl)
    if str(state.get("timeline") or "") != tl:
        # A restore started a new timeline: archive it from segment 1 under
        # its own root; the old timeline's progress is kept for the record.
        previous = {k: state.pop(k) for k in ("timeline", "last_archived_segment",
                                               "last_archived_seq", "last_archived_recorded_at_us",
                                               "last_snapshot_sha256") if k in state}
        if previous:
            state["previous_timeline"] = previous
        state["timeline"] = tl
    uploaded = 0
    prev_seq = 0
    try:
        for path in sealed:
            buf = read_all(path)
            cut = cut_segment(path, buf, active=False, after_seq=prev_seq)
            prev_seq = cut.last_seq or prev_seq
            if cut.number <= done:
                continue
            root = archive_root(prefix, cut.log_id.hex(), tl)
            meta = {"sha256": hashlib.sha256(buf).hexdigest(), "first-seq": cut.first_seq_kept,
                    "last-seq": cut.last_seq, "records": cut.records,
                    "assertions": cut.assertions, "last-recorded-at-us": cut.last_recorded_at}
            if put_once(s3, bucket, f"{root}/wal/{os.path.basename(path)}", buf, meta) == "uploaded":
                uploaded += 1
            done = cut.number
            state.update({"last_archived_segment": done, "last_archived_seq": cut.last_seq,
                          "last_archived_recorded_at_us": cut.last_recorded_at,
                          "log_id": cut.log_id.hex()})
            write_json_atomic(state_path, state)
        snap = os.path.join(data_dir, "db", "indexes", "snapshot.idx")
        if os.path.exists(snap) and state.get("log_id"):
            data = read_all(snap)
            digest = hashlib.sha256(data).hexdigest()
            if digest != state.get("last_snapshot_sha256"):
                root = archive_root(prefix, state["log_id"], tl)
                put_once(s3, bucket, f"{root}/snapshots/{digest}.idx", data, {"sha256": digest})
                state["last_snapshot_sha256"] = digest
        state["last_success_ts"] = now()
    except Exception as exc:
        state["failures"] = int(state.get("failures", 0)) + 1
        state["last_error"] = str(exc)[:1000]
        raise
    finally:
        # the same definition as the server's stemedb_archive_lag_seconds
        state["lag_segments"], state["lag_seconds"] = archivestate.lag(sealed, done, now())
        state["updated_ts"] = now()
        try:
            write_json_atomic(state_path, state)
        except OSError:
            pass
    state["uploaded"] = uploaded
    return state


# ---------------------------------------------------------------- point in time
def parse_until(text: str | None) -> tuple[int | None, int | None]:
    """``(until_seq, until_us)`` from ``seq:N``, a bare integer (a seq), RFC 3339 or ``unix:S``."""
    from ..timeutil import parse_time
    if text is None:
        return None, None
    t = text.strip()
    if t.startswith("seq:"):
        return int(t[4:]), None
    if t.isdigit():
        return int(t), None
    if t.startswith("unix:"):
        return None, parse_time(float(t[5:]), "until")
    try:
        return None, parse_time(float(t), "until")
    except ValueError:
        return None, parse_time(t, "until")


def archive_roots(keys: list[str], base: str) -> list[str]:
    """The histories (roots holding ``wal/segment-*``) among ``keys``, relative
    to ``base``: ``<log id>``, ``<log id>/timelines/<id>``, or "" when ``base``
    is itself a root."""
    roots = set()
    for k in keys:
        rel = "/" + k[len(base):]
        i = rel.rfind("/wal/segment-")
        if i >= 0:
            roots.add(rel[1:i])
    return sorted(roots)


def _root_timeline(root: str) -> str:
    parts = root.split("/")
    return parts[-1] if len(parts) >= 2 and parts[-2] == "timelines" else ""


def fetch_until(target: str, dest_wal: str, *, until: str | None = None, s3=None,
                endpoint_url: str | None = None, log_id: str | None = None,
                timeline: str | None = None, snapshot_dest: str | None = None) -> dict:
    """Download archived segments into ``dest_wal``, cut at ``until``; returns counts.

    ``target`` holds one history, or ``timeline`` (``original`` for the
    first) and ``log_id`` pick one of several.  With ``snapshot_dest`` the
    newest archived snapshot that the fetched segments cover (its log id,
    segment and last seq within them; sha256 and its own checksum checked)
    is written there too (``info["snapshot"]`` its key, else None).
    """
    s3 = s3 or client(endpoint_url)
    bucket, prefix = split_target(target)
    until_seq, until_us = parse_until(until)
    base = f"{prefix}/" if prefix else ""
    keys = []
    modified: dict[str, Any] = {}
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=base):
        keys += [o["Key"] for o in page.get("Contents", [])]
        modified.update((o["Key"], o.get("LastModified")) for o in page.get("Contents", []))
    found = archive_roots(keys, base)
    if not found:
        raise NoArchive(f"s3://{bucket}/{base} holds no archived history (no wal/segment-* "
                        f"objects)")
    roots = found
    if log_id:
        roots = [r for r in roots if r.split("/")[0] == log_id or r == ""]
    if timeline:
        want = "" if timeline == "original" else timeline
        roots = [r for r in roots if _root_timeline(r) == want and (want or "/" not in r)]
    if len(roots) != 1:
        listed = ", ".join(r or "(the prefix itself)" for r in found) or "none"
        pick = (" Pick one with --timeline ID (original for the first timeline) or give its "
                "root as --from-s3 BUCKET/PREFIX/<root>." if len(roots) > 1 else "")
        raise ArchiveError(f"s3://{bucket}/{base} holds {len(found)} archived histories "
                           f"({listed}); {len(roots)} match"
                           f"{' timeline ' + timeline if timeline else ''}, expected one.{pick}")
    root = roots[0]
    rbase = f"{base}{root}/" if root else base
    seg_keys = sorted(k for k in keys if k.startswith(f"{rbase}wal/segment-"))
    os.makedirs(dest_wal, exist_ok=True)
    info: dict[str, Any] = {
            "segments": 0, "records": 0, "assertions": 0, "last_seq": 0,
            "last_recorded_at_us": 0, "log_id": root.split("/")[0] or None,
            "timeline": _root_timeline(root), "root": f"s3://{bucket}/{rbase}"}
    expect = 1
    for key in seg_keys:
        name = key.rsplit("/", 1)[1]
        number = int(name[8:13])
        if number != expect:
            raise ArchiveError(f"the archive lacks segment {expect} (next is {key}); cannot "
                               f"restore past the gap")
        obj = with_retries(lambda: s3.get_object(Bucket=bucket, Key=key))
        data = obj["Body"].read()
        want = obj.get("Metadata", {}).get("sha256")
        if hashlib.sha256(data).hexdigest() != want:
            raise ArchiveError(f"s3://{bucket}/{key} fails its sha256 checksum")
        path = os.path.join(dest_wal, name)
        with open(path, "wb") as f:   # cut_segment reads the header from the file
            f.write(data)
        cut = cut_segment(path, data, active=False, until_seq=until_seq, until_us=until_us,
                          after_seq=info["last_seq"])
        if cut.records == 0 and number > 1 and cut.reached_limit:
            os.unlink(path)           # nothing of this segment is wanted
            break
        write_durable(path, data[:cut.end])
        info["log_id"] = info["log_id"] or cut.log_id.hex()
        info["segments"] += 1
        info["records"] += cut.records
        info["assertions"] += cut.assertions
        if cut.records:
            info["last_seq"] = cut.last_seq
            info["last_recorded_at_us"] = cut.last_recorded_at
        expect += 1
        if cut.reached_limit:
            break
    if not info["segments"]:
        raise ArchiveError(f"no archived segments under s3://{bucket}/{rbase}wal/")
    fsync_dir(dest_wal)
    info["snapshot"] = None
    if snapshot_dest is not None:
        snaps = [k for k in keys if k.startswith(f"{rbase}snapshots/") and k.endswith(".idx")]
        snaps.sort(key=lambda k: (modified.get(k) is not None, modified.get(k) or 0, k),
                   reverse=True)
        for key in snaps:
            if _fetch_snapshot(s3, bucket, key, snapshot_dest, info, expect - 1):
                info["snapshot"] = f"s3://{bucket}/{key}"
                break
    return info


def _fetch_snapshot(s3, bucket: str, key: str, dest: str, info: dict, last_segment: int) -> bool:
    """Write the snapshot at ``key`` to ``dest`` if it is whole and the fetched
    segments cover it (recovery would otherwise take it as proof of records
    the WAL lacks and refuse to start)."""
    from ..core import snapshot
    obj = with_retries(lambda: s3.get_object(Bucket=bucket, Key=key))
    data = obj["Body"].read()
    if hashlib.sha256(data).hexdigest() != obj.get("Metadata", {}).get("sha256"):
        raise ArchiveError(f"s3://{bucket}/{key} fails its sha256 checksum")
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    write_durable(dest, data)
    try:
        _state, pos = snapshot.read(dest)
        ok = (bytes(pos.get("log_id", b"")).hex() == info["log_id"]
              and int(pos["segment"]) <= last_segment
              and int(pos["last_seq"]) <= info["last_seq"])
    except Exception:  # noqa: BLE001 - an unreadable snapshot is not used (indexes rebuilt)
        ok = False
    if not ok:
        os.unlink(dest)
    return ok


def main(argv: list[str] | None = None) -> int:
    from ..config import Settings
    p = argparse.ArgumentParser(prog="stemedb archive", description="WAL archival to "
                                "S3-compatible storage (restore from it: stemedb restore --from-s3).")
    sub = p.add_subparsers(dest="cmd", required=True)
    ps = sub.add_parser("push", help="archive sealed segments and the snapshot")
    ps.add_argument("--to", default=os.environ.get("STEMEDB_ARCHIVE_S3"),
                    help="BUCKET/PREFIX (default STEMEDB_ARCHIVE_S3)")
    ps.add_argument("--data-dir")
    ps.add_argument("--endpoint-url", default=os.environ.get("STEMEDB_S3_ENDPOINT_URL"))
    ps.add_argument("--once", action="store_true", help="one pass, then exit")
    ps.add_argument("--interval", type=float, default=60.0, help="seconds between passes")
    args = p.parse_args(argv)
    if not args.to:
        print("archive: no target: set STEMEDB_ARCHIVE_S3=bucket/prefix or pass --to", file=sys.stderr)
        return 2
    data_dir = args.data_dir or Settings.from_env().data_dir
    try:
        s3 = client(args.endpoint_url)
    except S3Unavailable as exc:
        print(f"archive: {exc}", file=sys.stderr)
        return 2
    while True:
        try:
            st = push(data_dir, args.to, s3=s3)
            print(f"archive: {st['uploaded']} segment(s) uploaded, archived through segment "
                  f"{st.get('last_archived_segment', 0)} (seq {st.get('last_archived_seq', 0)}), "
                  f"lag {st['lag_segments']} segment(s)", flush=True)
            rc = 0
        except Exception as exc:  # noqa: BLE001 -- a daemon logs and tries again
            print(f"archive: FAILED: {exc}", file=sys.stderr, flush=True)
            rc = 1
        if args.once:
            return rc
        time.sleep(max(1.0, args.interval))


if __name__ == "__main__":
    sys.exit(main())
