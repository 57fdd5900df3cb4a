"""``stemedb backup``: a consistent backup of a running store, no pause, no LOCK.

    stemedb backup [--data-dir DIR] [--backup-dir DIR] [--open-check]

Order of work, and why it is consistent:

1. ``db/`` (the index snapshot) is copied first.  The snapshot is replaced
   atomically by rename, so one open descriptor reads one whole snapshot;
   copied before the WAL, its anchor record is always inside the WAL copy,
   so a restored store loads it instead of rebuilding.  (Were it newer, the
   engine's anchor check would reject it and rebuild: slower, still safe.)
2. The WAL segments are listed, sealed ones copied whole (each CRC checked
   on the way), the last one up to the end of its last complete atomic group
   (:mod:`stemedb.ops.walcut`).  Records appended meanwhile are simply not in
   this backup.
3. ``metadata.json`` records ``version``, ``timestamp``, ``assertion_count``
   (REC_ASSERT records in the copied WAL), ``wal_segment_count``,
   ``backup_type`` (``full``), ``last_seq`` and a sha256 per file.
4. The result is verified (checksums re-read from disk, then
   ``python -m stemedb.core.verify`` on the backup; ``--open-check`` also
   opens a scratch copy with the engine), fsynced, and only then renamed
   from ``.stemedb-backup-*.partial`` to ``stemedb-backup-YYYYMMDD-HHMMSS``
   (UTC): a directory with the final name is always a complete backup.

``<data_dir>/backup-state.json`` is updated either way (metrics).  The
backup's path is the last line of stdout; progress goes to stderr.  Exit 0
on success, 1 on failure, 2 on bad usage.
"""
from __future__ import annotations

import argparse
import fcntl
import io
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..core import snapshot
from ..core.format import FORMAT_MAJOR, FORMAT_MINOR
from ..core.scan import Floor, durable_floor
from ..core.segment import read_header
from ..errors import StemeError
from ..progress import Progress
from . import backupstate
from .files import (
    BACKUP_PREFIX, copy_durable, fsync_dir, read_json, rfc3339, sha256_file, utc_stamp,
    write_durable, write_json_atomic,
)
from .walcut import cut_segment, read_all, segment_paths

BACKUP_TYPE = "full"


class BackupError(StemeError, RuntimeError):
    code = "backup_failed"


@dataclass
class BackupResult:
    path: str
    metadata: dict
    seconds: float


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _copy_db(data_dir: str, dest: str, files: dict, progress: Progress | None = None) -> bool:
    """Copy ``db/`` (skipping temp files of an in-progress snapshot); True if a snapshot came."""
    src_db = os.path.join(data_dir, "db")
    os.makedirs(os.path.join(dest, "db"))
    found = False
    if not os.path.isdir(src_db):
        return False
    for root, dirs, names in os.walk(src_db):
        rel_root = os.path.relpath(root, data_dir)
        for d in dirs:
            os.makedirs(os.path.join(dest, rel_root, d), exist_ok=True)
        for n in sorted(names):
            if ".tmp" in n:
                continue
            rel = os.path.join(rel_root, n)
            try:
                files[rel] = "sha256:" + copy_durable(os.path.join(root, n), os.path.join(dest, rel))
            except FileNotFoundError:   # replaced between listing and opening: harmless
                continue
            if progress is not None:
                progress.update(bytes=os.path.getsize(os.path.join(dest, rel)))
            found = found or n == "snapshot.idx"
    for root, _dirs, _names in os.walk(os.path.join(dest, "db"), topdown=False):
        fsync_dir(root)
    return found


def _copy_wal(data_dir: str, dest: str, files: dict, progress: Progress | None = None) -> dict:
    src = os.path.join(data_dir, "wal")
    paths = segment_paths(src)
    if not paths:
        raise BackupError(f"{src} holds no WAL segments: is {data_dir} a StemeDB data "
                          f"directory? (set STEMEDB_DATA_DIR or pass --data-dir)")
    floor = _floor(data_dir, dest, paths[0])
    out = os.path.join(dest, "wal")
    os.makedirs(out)
    info: dict[str, Any] = {"segments": 0, "records": 0, "assertions": 0, "last_seq": 0,
            "last_recorded_at": 0, "log_id": None, "end": None}
    for i, path in enumerate(paths):
        buf = read_all(path)
        cut = cut_segment(path, buf, active=(i == len(paths) - 1), after_seq=info["last_seq"],
                          floor=floor)
        for note in cut.notes:
            _say(f"backup: {note}")
        if info["log_id"] is None:
            info["log_id"] = cut.log_id
        elif cut.log_id != info["log_id"]:
            raise BackupError(f"WAL segment {path} belongs to another store (log id differs)")
        name = os.path.basename(path)
        files[f"wal/{name}"] = "sha256:" + write_durable(os.path.join(out, name),
                                                         bytes(buf[:cut.end]))
        if progress is not None:
            progress.update(records=cut.records, bytes=cut.end)
        info["segments"] += 1
        info["records"] += cut.records
        info["assertions"] += cut.assertions
        if cut.records:
            info["last_seq"] = cut.last_seq
            info["last_recorded_at"] = cut.last_recorded_at
        info["end"] = {"segment": cut.number, "offset": cut.end}
    fsync_dir(out)
    return info


def tree_size(top: str, parts: tuple[str, ...]) -> int:
    """Bytes under ``top/part`` for each part (files that vanish meanwhile count 0)."""
    total = 0
    for part in parts:
        for root, _dirs, names in os.walk(os.path.join(top, part)):
            for n in names:
                try:
                    total += os.path.getsize(os.path.join(root, n))
                except OSError:
                    pass
    return total


def _floor(data_dir: str, dest: str, first_segment: str) -> Floor:
    """What the copied snapshot and the live metadata.json prove durable.

    Both were written after the records they count reached the log, and
    both are read before the log is, so the copy of the log must reach
    them; a shorter log has lost acknowledged writes and is refused.
    """
    try:
        log_id = read_header(first_segment)[2]
    except StemeError:
        return Floor()   # the scan of that segment reports the bad header
    pos = None
    path = snapshot.snapshot_path(os.path.join(dest, "db"))
    if os.path.exists(path):
        try:
            pos = snapshot.read(path)[1]
        except (StemeError, ValueError, KeyError):
            pos = None
    return durable_floor(data_dir, log_id, pos)


def check_files(path: str, meta: dict) -> list[str]:
    """Problems with the per-file checksums of the backup at ``path`` (empty when fine)."""
    problems = []
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        return [f"{path}/metadata.json lists no file checksums"]
    for rel, digest in sorted(files.items()):
        fpath = os.path.join(path, rel)
        if not os.path.isfile(fpath):
            problems.append(f"{rel} is listed in metadata.json but missing")
        elif "sha256:" + sha256_file(fpath) != digest:
            problems.append(f"{rel} fails its sha256 checksum (the backup is damaged)")
    for sub in ("wal", "db"):
        for root, _d, names in os.walk(os.path.join(path, sub)):
            for n in names:
                rel = os.path.relpath(os.path.join(root, n), path)
                if rel not in files:
                    problems.append(f"{rel} is in the backup but not in metadata.json")
    return problems


def verify_backup(path: str, *, open_check: bool = False) -> list[str]:
    """Every problem found in the backup at ``path``; empty means restorable.

    Checks metadata.json, every file's sha256, then the engine's offline
    verifier (headers, every record CRC, snapshot against WAL, counts).
    With ``open_check`` a scratch copy is opened with the engine and its
    count compared.  Reads only; O(backup size).
    """
    mpath = os.path.join(path, "metadata.json")
    try:
        meta = read_json(mpath)
    except (OSError, ValueError) as exc:
        return [f"{mpath} cannot be read: {exc}"]
    problems = []
    for key in ("version", "timestamp", "assertion_count", "wal_segment_count", "backup_type"):
        if key not in meta:
            problems.append(f"{mpath} has no {key!r}")
    if meta.get("backup_type") not in (BACKUP_TYPE, None):
        problems.append(f"{mpath}: backup_type {meta.get('backup_type')!r} is not {BACKUP_TYPE!r}")
    fmt = str(meta.get("format_version", f"{FORMAT_MAJOR}.0"))
    if fmt.split(".")[0] != str(FORMAT_MAJOR):
        problems.append(f"backup format {fmt} cannot be read by this StemeDB (format "
                        f"{FORMAT_MAJOR}.{FORMAT_MINOR}); restore it with the version that made it "
                        f"({meta.get('version')})")
    if problems:
        return problems
    problems += check_files(path, meta)
    if problems:
        return problems
    from ..core.verify import verify
    out = io.StringIO()
    if verify(path, out=out) != 0:
        problems += [line[len("error: "):] for line in out.getvalue().splitlines()
                     if line.startswith("error: ")]
    if meta.get("wal_segment_count") != len(segment_paths(os.path.join(path, "wal"))):
        problems.append(f"metadata.json counts {meta.get('wal_segment_count')} segments, "
                        f"the backup holds {len(segment_paths(os.path.join(path, 'wal')))}")
    if not problems and open_check:
        problems += _open_check(path, meta)
    return problems


def _open_check(path: str, meta: dict) -> list[str]:
    from ..core.store import open_store
    with tempfile.TemporaryDirectory(prefix="stemedb-open-check-",
                                     dir=os.path.dirname(os.path.abspath(path))) as tmp:
        scratch = os.path.join(tmp, "data")
        os.makedirs(scratch)
        for sub in ("wal", "db"):
            shutil.copytree(os.path.join(path, sub), os.path.join(scratch, sub))
        try:
            with open_store(scratch, durability="none", audit=False) as s:
                count, last = s.count, s.last_seq
        except StemeError as exc:
            return [f"the engine cannot open a copy of the backup: {exc}"]
    if count != meta["assertion_count"]:
        return [f"the engine counts {count} assertions in the backup, metadata.json says "
                f"{meta['assertion_count']}"]
    if last != meta.get("last_seq", last):
        return [f"the engine's last seq is {last}, metadata.json says {meta['last_seq']}"]
    return []


def take_backup(data_dir: str, backup_dir: str, *, open_check: bool = False,
                clock=time.time) -> BackupResult:
    """Take, verify and publish one backup; raises BackupError on any failure."""
    t0 = time.monotonic()
    data_dir = os.path.abspath(data_dir)
    if not os.path.isdir(os.path.join(data_dir, "wal")):
        raise BackupError(f"{data_dir}/wal does not exist: STEMEDB_DATA_DIR must be the data "
                          f"directory itself (the one holding LOCK, wal/ and db/)")
    os.makedirs(backup_dir, exist_ok=True)
    lock_fd = os.open(os.path.join(backup_dir, ".backup.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(f"another backup into {backup_dir} is running; wait for it "
                              f"(see its .backup.lock)") from None
        started = clock()
        name = BACKUP_PREFIX + utc_stamp(started)
        # two backups within one second: wait for the next name rather than overwrite
        for _ in range(3):
            if not os.path.exists(os.path.join(backup_dir, name)):
                break
            time.sleep(1.05 - (clock() % 1.0))
            started = clock()
            name = BACKUP_PREFIX + utc_stamp(started)
        else:
            raise BackupError(f"{os.path.join(backup_dir, name)} already exists")
        final = os.path.join(backup_dir, name)
        partial = os.path.join(backup_dir, f".{name}.partial")
        if os.path.exists(partial):
            shutil.rmtree(partial)   # our own leftover from a crashed run, never a backup
        os.makedirs(partial)
        try:
            files: dict[str, str] = {}
            progress = Progress(total_bytes=tree_size(data_dir, ("db", "wal")), what="backup")
            has_snapshot = _copy_db(data_dir, partial, files, progress)
            wal = _copy_wal(data_dir, partial, files, progress)
            progress.done()
            meta = {
                "version": __version__,
                "format_version": f"{FORMAT_MAJOR}.{FORMAT_MINOR}",
                "timestamp": rfc3339(started),
                "backup_type": BACKUP_TYPE,
                "assertion_count": wal["assertions"],
                "record_count": wal["records"],
                "last_seq": wal["last_seq"],
                "last_recorded_at_us": wal["last_recorded_at"],
                "wal_segment_count": wal["segments"],
                "wal_end": wal["end"],
                "log_id": wal["log_id"].hex(),
                "snapshot_included": has_snapshot,
                "source_data_dir": data_dir,
                "files": files,
            }
            write_json_atomic(os.path.join(partial, "metadata.json"), meta)
            problems = verify_backup(partial, open_check=open_check)
            if problems:
                raise BackupError("the backup failed its own verification: " + "; ".join(problems))
            os.rename(partial, final)
            fsync_dir(backup_dir)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    finally:
        os.close(lock_fd)
    return BackupResult(final, meta, time.monotonic() - t0)


def main(argv: list[str] | None = None) -> int:
    from ..config import Settings
    from ..errors import ConfigError
    p = argparse.ArgumentParser(prog="stemedb backup", description="A consistent backup of a "
                                "running store: no pause, no LOCK taken.")
    p.add_argument("--data-dir", help="data directory (default STEMEDB_DATA_DIR, ./data)")
    p.add_argument("--backup-dir", help="where backups go (default STEMEDB_BACKUP_DIR, ./backups)")
    p.add_argument("--open-check", action="store_true",
                   help="also open a scratch copy with the engine and compare the count")
    args = p.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"stemedb backup: {exc}", file=sys.stderr)
        return 2
    data_dir = args.data_dir or settings.data_dir
    backup_dir = args.backup_dir or settings.backup_dir
    if not os.path.isdir(data_dir):
        print(f"stemedb backup: {data_dir} is not a directory; give --data-dir or set "
              f"STEMEDB_DATA_DIR to the data directory (the one holding LOCK, wal/ and db/)",
              file=sys.stderr)
        return 2
    try:
        res = take_backup(data_dir, backup_dir, open_check=args.open_check)
    except (StemeError, OSError) as exc:
        print(f"stemedb backup: FAILED: {exc}", file=sys.stderr)
        if os.path.isdir(data_dir) and backupstate.record_failure(data_dir, str(exc)) is None:
            print(f"stemedb backup: could not record the failure in "
                  f"{backupstate.state_path(data_dir)}", file=sys.stderr)
        return 1
    m = res.metadata
    try:
        backupstate.record_success(data_dir, res.path, m["assertion_count"], m["last_seq"])
    except OSError as exc:
        print(f"stemedb backup: the backup is complete but {backupstate.state_path(data_dir)} "
              f"could not be updated ({exc}); the backup metrics will be stale", file=sys.stderr)
    _say(f"backup: {m['assertion_count']} assertions, {m['record_count']} records up to seq "
         f"{m['last_seq']}, {m['wal_segment_count']} WAL segments, verified, in "
         f"{res.seconds:.2f}s")
    print(res.path, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
