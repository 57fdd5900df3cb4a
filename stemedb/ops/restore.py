"""``stemedb restore``: put a verified backup in place of a store's data, deleting nothing.

    stemedb restore BACKUP_DIR [--data-dir DIR] [--yes] [--wal-only]
    stemedb restore --from-s3 BUCKET/PREFIX [--until TIME|SEQ] [--data-dir DIR] [--yes]

1. The backup is verified first (metadata, every sha256, the engine's
   offline verifier): a damaged backup is refused before anything changes.
2. ``LOCK`` is tried without blocking.  If a server holds it: under systemd
   (``systemctl is-active stemedb-api``) the service is stopped, and started
   again at the end; otherwise the restore refuses and says how to stop the
   server.  The restore then holds ``LOCK`` itself until it is done, so no
   server can start on a half-restored directory.
3. The backup is copied into a staging directory inside the data directory
   (same file system, so the swap is a rename), fsynced.
4. The current ``wal/``, ``db/``, ``metadata.json`` and ``timeline.json``
   are renamed to ``*.backup.YYYYMMDD-HHMMSS`` (UTC) -- never deleted -- and
   the staged copies renamed into place; the data directory is fsynced.
5. The store starts a new timeline (``timeline.json``,
   :mod:`stemedb.ops.archivestate`): the WAL archiver then writes it under a
   prefix of its own and never mixes it with the history archived before.

``--wal-only`` replaces ``wal/`` and keeps ``db/``, but renames the index
snapshot in it aside (``snapshot.idx.backup.<time>``): a snapshot newer than
the restored WAL would tell the engine that acknowledged records are
missing, and it would rightly refuse to start.  The engine rebuilds the
indexes from the restored WAL (``Rebuilding indexes...``).  Confirmation is asked only when stdin is a
terminal.  Exit 0 on success, 1 on failure or refusal, 2 on bad usage.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from ..core import snapshot
from ..errors import StemeError
from ..progress import Progress
from . import archivestate
from .archive import client, fetch_until
from .backup import tree_size, verify_backup
from .files import copy_durable, fsync_dir, read_json, utc_stamp, write_json_atomic

SERVICE = "stemedb-api"
LOCK_WAIT_SECONDS = 60


class RestoreError(StemeError, RuntimeError):
    code = "restore_failed"


def _say(msg: str) -> None:
    print(msg, flush=True)


class Systemd:
    """The few systemctl calls restore needs; ``command`` is injectable for tests."""

    def __init__(self, command: str | None = "systemctl", service: str = SERVICE):
        self.command = command
        self.service = service

    def available(self) -> bool:
        return bool(self.command and shutil.which(self.command) is not None)

    def is_active(self) -> bool:
        if self.command is None or not self.available():
            return False
        try:
            return subprocess.run([self.command, "is-active", "--quiet", self.service],
                                  timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def run(self, verb: str) -> None:
        assert self.command is not None, "run() follows is_active(), which needs a command"
        r = subprocess.run([self.command, verb, self.service], timeout=120,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RestoreError(f"`{self.command} {verb} {self.service}` failed: "
                               f"{(r.stderr or r.stdout).strip()}")


def _lock_holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    except OSError:
        return "?"


def take_lock(data_dir: str, systemd: Systemd) -> tuple[int, bool]:
    """Hold ``data_dir/LOCK``; returns (fd, whether systemd's service was stopped)."""
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, "LOCK")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            stopped = False
        except BlockingIOError:
            pid = _lock_holder(fd)
            if not systemd.is_active():
                raise RestoreError(
                    f"Store is locked by PID {pid}: a server is running on {data_dir}. Stop it "
                    f"first -- `sudo systemctl stop {systemd.service}` under systemd, otherwise "
                    f"`kill -TERM {pid}` (it finishes in-flight writes and exits within 30 s) -- "
                    f"then run the restore again. Nothing was changed.") from None
            _say(f"Stopping {systemd.service} (it holds {path}, PID {pid})...")
            systemd.run("stop")
            stopped = True
            deadline = time.monotonic() + LOCK_WAIT_SECONDS
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise RestoreError(
                            f"{systemd.service} was stopped but PID {_lock_holder(fd)} still "
                            f"holds {path} after {LOCK_WAIT_SECONDS}s; find it with "
                            f"`fuser {path}` and stop it. Nothing was changed.") from None
                    time.sleep(0.2)
        # a server that tries to start now learns who holds the store
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd, stopped
    except BaseException:
        os.close(fd)
        raise


def _stage(src: str, dst: str, progress: Progress | None = None) -> None:
    """Copy the tree ``src`` to a new ``dst`` with every file and directory fsynced."""
    for root, _dirs, names in os.walk(src):
        out = os.path.join(dst, os.path.relpath(root, src))
        os.makedirs(out, exist_ok=True)
        for n in names:
            copy_durable(os.path.join(root, n), os.path.join(out, n))
            if progress is not None:
                progress.update(bytes=os.path.getsize(os.path.join(out, n)))
    for root, _dirs, _names in os.walk(dst, topdown=False):
        fsync_dir(root)


def confirm(question: str) -> bool:
    """Ask on a terminal; without one (scripts, cron, systemd) the answer is yes."""
    if not sys.stdin.isatty():
        return True
    try:
        answer = input(f"{question} Type 'yes' to continue: ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def set_aside_snapshot(data_dir: str, stamp: str) -> str | None:
    """Rename ``db/indexes/snapshot.idx`` aside (never deleting); its new path."""
    cur = snapshot.snapshot_path(os.path.join(data_dir, "db"))
    if not os.path.exists(cur):
        return None
    aside = f"{cur}.backup.{stamp}"
    _say(f"Renaming the index snapshot {cur} to {aside} (it counts records the restored "
         f"WAL does not hold)")
    os.rename(cur, aside)
    fsync_dir(os.path.dirname(cur))
    return aside


def swap_in(staged: dict[str, str], data_dir: str, meta: dict, stamp: str) -> list[str]:
    """Rename the current parts aside (never deleting) and the staged ones in.

    ``staged`` maps a part name (``wal``, ``db``) to its staged directory.
    Returns the paths the old parts were renamed to.
    """
    kept = []
    if "source_timeline" in meta:      # a point in time: the archived history it came from
        parent = meta["source_timeline"]
    else:                              # a backup: taken of this store, as a rule
        try:
            parent = archivestate.timeline(data_dir)
        except ValueError:
            parent = None
    parts = list(staged) + ["metadata.json", archivestate.TIMELINE_NAME]
    for part in parts:
        cur = os.path.join(data_dir, part)
        if os.path.lexists(cur):
            aside = f"{cur}.backup.{stamp}"
            n = 1
            while os.path.lexists(aside):          # two restores in one second
                aside = f"{cur}.backup.{stamp}.{n}"
                n += 1
            _say(f"Renaming existing {cur} to {aside}")
            os.rename(cur, aside)
            kept.append(aside)
    for part, src in staged.items():
        _say(f"Moving restored {part}/ into {data_dir}")
        os.rename(src, os.path.join(data_dir, part))
    # the data directory's metadata.json describes the store, not the backup files
    store_meta = {k: v for k, v in meta.items() if k not in ("files",)}
    store_meta["restored_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json_atomic(os.path.join(data_dir, "metadata.json"), store_meta)
    tl = archivestate.new_timeline(data_dir, reason=str(meta.get("backup_type") or "full"),
                                   source=meta.get("restored_from") or meta.get("source"),
                                   parent=parent)
    meta["timeline"] = tl["timeline"]
    _say(f"New timeline {tl['timeline']} (parent {tl['parent'] or 'original'}): WAL archival "
         f"continues under a prefix of its own")
    fsync_dir(data_dir)
    return kept


def wait_healthy(bind: str, want_count: int | None, timeout: float = 60.0) -> str:
    """Poll ``/v1/health`` until it answers; returns a line for the operator."""
    host, _, port = bind.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
    url = f"http://{host}:{port}/v1/health"
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                body = json.loads(r.read())
            got = body.get("assertion_count")
            if want_count is not None and got != want_count:
                return f"WARNING: {url} reports assertion_count {got}, the backup has {want_count}"
            return f"{url}: {body.get('status')}, assertion_count {got} (matches the backup)"
        except Exception as exc:  # noqa: BLE001 -- any failure means "not up yet"
            last = str(exc)
            time.sleep(1.0)
    return f"WARNING: {url} did not answer within {timeout:.0f}s ({last}); check " \
           f"`journalctl -u {SERVICE} -n 50`"


def restore_backup(backup: str, data_dir: str, *, wal_only: bool = False,
                   systemd: Systemd | None = None, ask=confirm, bind: str | None = None,
                   health_timeout: float = 60.0) -> dict:
    """Restore the backup directory ``backup`` into ``data_dir``; returns its metadata."""
    systemd = systemd or Systemd()
    backup = os.path.abspath(backup)
    data_dir = os.path.abspath(data_dir)
    _say(f"Verifying backup {backup}...")
    problems = verify_backup(backup)
    if problems:
        raise RestoreError(f"backup {backup} is not restorable, nothing was changed: "
                           + "; ".join(problems))
    meta = read_json(os.path.join(backup, "metadata.json"))
    _say(f"Backup OK: {meta['assertion_count']} assertions, last seq {meta.get('last_seq')}, "
         f"{meta['wal_segment_count']} WAL segments, taken {meta['timestamp']}")
    return install(backup, data_dir, meta, wal_only=wal_only, systemd=systemd, ask=ask,
                   bind=bind, health_timeout=health_timeout)


def install(source: str, data_dir: str, meta: dict, *, wal_only: bool, systemd: Systemd,
            ask=confirm, bind: str | None = None, health_timeout: float = 60.0) -> dict:
    """Swap the verified tree at ``source`` (holding wal/ and db/) into ``data_dir``."""
    what = "wal/" if wal_only else "wal/ and db/"
    if not ask(f"Replace {what} of {data_dir} with {source}? The current ones are renamed to "
               f"*.backup.<time>, not deleted."):
        raise RestoreError("restore cancelled; nothing was changed")
    fd, stopped = take_lock(data_dir, systemd)
    try:
        stamp = utc_stamp()
        staging = os.path.join(data_dir, f".restore-{stamp}-{os.getpid()}")
        parts = ["wal"] if wal_only else ["wal", "db"]
        staged = {}
        if wal_only:
            set_aside_snapshot(data_dir, stamp)
        progress = Progress(total_bytes=tree_size(source, tuple(parts)), what="restore")
        try:
            for part in parts:
                src = os.path.join(source, part)
                _say(f"Copying {part}/ from {source}...")
                if os.path.isdir(src):
                    _stage(src, os.path.join(staging, part), progress)
                else:
                    os.makedirs(os.path.join(staging, part))
                staged[part] = os.path.join(staging, part)
            progress.done()
            kept = swap_in(staged, data_dir, meta, stamp)
        finally:
            shutil.rmtree(staging, ignore_errors=True)   # empty after a successful swap
    finally:
        os.close(fd)
    _say(f"Restore complete: {meta['assertion_count']} assertions (last seq "
         f"{meta.get('last_seq')}) in {data_dir}")
    if kept:
        _say("Previous data kept at: " + ", ".join(kept))
    if wal_only:
        _say("db/ was kept, its index snapshot renamed aside: the indexes are rebuilt from "
             "the restored WAL at start")
    if stopped:
        _say(f"Starting {systemd.service}...")
        systemd.run("start")
        if bind:
            _say(wait_healthy(bind, meta["assertion_count"], health_timeout))
    return meta


def restore_from_s3(target: str, data_dir: str, *, until: str | None, endpoint_url=None,
                    systemd=None, ask=None, bind=None, s3=None,
                    timeline: str | None = None) -> dict:
    """Point-in-time restore: fetch, cut, then swap in like a backup (indexes rebuilt)."""
    from .. import __version__
    from ..core.format import FORMAT_MAJOR, FORMAT_MINOR
    from ..timeutil import format_time
    s3 = s3 or client(endpoint_url)   # before touching anything: boto3 may be missing
    data_dir = os.path.abspath(data_dir)
    os.makedirs(data_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pitr-", dir=data_dir) as tmp:
        print(f"Fetching the WAL archive from s3://{target} (until {until or 'the end'})...",
              flush=True)
        info = fetch_until(target, os.path.join(tmp, "wal"), until=until, s3=s3,
                           endpoint_url=endpoint_url, timeline=timeline)
        os.makedirs(os.path.join(tmp, "db"))
        meta = {"version": __version__, "format_version": f"{FORMAT_MAJOR}.{FORMAT_MINOR}",
                "timestamp": format_time(info["last_recorded_at_us"]) if info["last_recorded_at_us"] else None,
                "backup_type": "point_in_time", "assertion_count": info["assertions"],
                "record_count": info["records"], "last_seq": info["last_seq"],
                "wal_segment_count": info["segments"], "log_id": info["log_id"],
                "restored_from": info["root"], "until": until,
                "source_timeline": info["timeline"]}
        print(f"Archive cut at seq {info['last_seq']} "
              f"({meta['timestamp']}): {info['assertions']} assertions in "
              f"{info['segments']} segments", flush=True)
        install(tmp, data_dir, meta, wal_only=False, systemd=systemd or Systemd(),
                ask=ask or confirm, bind=bind)
    print(f"The indexes are rebuilt from the WAL at the next start. The store now writes "
          f"timeline {meta.get('timeline')}: the archiver puts it under "
          f"<prefix>/{info['log_id']}/timelines/{meta.get('timeline')}/, next to the "
          f"history it came from, which stays as it is.", flush=True)
    return meta


def main(argv: list[str] | None = None) -> int:
    from ..config import Settings
    from ..errors import ConfigError
    p = argparse.ArgumentParser(prog="stemedb restore", description="Put a verified backup in "
                                "place of a store's data, deleting nothing.")
    p.add_argument("backup", nargs="?", metavar="BACKUP_DIR",
                   help="a backups/stemedb-backup-YYYYMMDD-HHMMSS directory")
    p.add_argument("--data-dir", help="data directory (default STEMEDB_DATA_DIR, ./data)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--wal-only", action="store_true",
                   help="replace wal/ only, keep db/ (the engine rebuilds stale indexes)")
    p.add_argument("--from-s3", metavar="BUCKET/PREFIX",
                   help="point-in-time restore from the WAL archive instead of a backup")
    p.add_argument("--until", metavar="TIME|SEQ",
                   help="with --from-s3: the last moment (RFC 3339 or Unix seconds) or seq "
                        "to restore, cut at a whole atomic batch (default: everything archived)")
    p.add_argument("--timeline", metavar="ID",
                   help="with --from-s3: which archived timeline to restore when the prefix "
                        "holds several (original for the first; stemedb restore starts a new "
                        "one each time)")
    p.add_argument("--endpoint-url", default=os.environ.get("STEMEDB_S3_ENDPOINT_URL"),
                   help="S3 endpoint for --from-s3 (default STEMEDB_S3_ENDPOINT_URL or AWS)")
    p.add_argument("--service", default=SERVICE, help="systemd unit to stop and start")
    p.add_argument("--systemctl", default="systemctl",
                   help="systemctl command (\"\" to never use systemd)")
    p.add_argument("--health-timeout", type=float, default=60.0,
                   help="after starting the service, seconds to wait for /v1/health")
    args = p.parse_args(argv)
    if bool(args.backup) == bool(args.from_s3):
        p.print_usage(sys.stderr)
        print("stemedb restore: give either BACKUP_DIR or --from-s3 BUCKET/PREFIX",
              file=sys.stderr)
        return 2
    if args.timeline and not args.from_s3:
        print("stemedb restore: --timeline needs --from-s3 (it picks an archived history)",
              file=sys.stderr)
        return 2
    if args.until and not args.from_s3:
        print("stemedb restore: --until needs --from-s3 (a backup restores as a whole)",
              file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"stemedb restore: {exc}", file=sys.stderr)
        return 2
    data_dir = args.data_dir or settings.data_dir
    if args.backup and not os.path.isdir(args.backup):
        print(f"stemedb restore: {args.backup} is not a directory; backups are "
              f"{settings.backup_dir}/stemedb-backup-YYYYMMDD-HHMMSS", file=sys.stderr)
        return 2
    systemd = Systemd(args.systemctl or None, args.service)
    try:
        if args.from_s3:
            restore_from_s3(args.from_s3, data_dir, until=args.until,
                            endpoint_url=args.endpoint_url, systemd=systemd,
                            timeline=args.timeline,
                            ask=(lambda q: True) if args.yes else confirm, bind=settings.bind)
        else:
            restore_backup(args.backup, data_dir, wal_only=args.wal_only, systemd=systemd,
                           ask=(lambda q: True) if args.yes else confirm, bind=settings.bind,
                           health_timeout=args.health_timeout)
    except (StemeError, OSError, subprocess.SubprocessError) as exc:
        print(f"stemedb restore: FAILED: {exc}", file=sys.stderr)
        # a running server (take_lock's refusal): cannot run, nothing was changed
        return 2 if str(exc).startswith("Store is locked by PID") else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
