"""Backup retention: prune old backups, only ever behind a newer verified one.

    python -m stemedb.ops.retention [--backup-dir DIR] [--keep N] [--max-age-days D] [--dry-run]

The newest backup that passes :func:`stemedb.ops.backup.verify_backup` is
the anchor.  Nothing newer than it, nor the anchor itself, is touched, and
of the older ones the newest ``--keep`` (counting the anchor) are kept; the
rest -- further limited to those older than ``--max-age-days`` when given --
are deleted.  With no verified backup nothing is deleted and the exit code
is 1 (the backups are the problem to look at, not the disk).  Exit 0 when
fine.
"""
from __future__ import annotations

import argparse
import calendar
import os
import shutil
import sys
import time

from .backup import verify_backup
from .files import BACKUP_PREFIX, STAMP_FORMAT, list_backups


def backup_time(path: str) -> float | None:
    stamp = os.path.basename(path)[len(BACKUP_PREFIX):]
    try:
        return float(calendar.timegm(time.strptime(stamp, STAMP_FORMAT)))
    except ValueError:
        return None


def plan(backup_dir: str, keep: int, max_age_days: float | None = None,
         now: float | None = None, verify=verify_backup) -> tuple[str | None, list[str]]:
    """``(anchor, to_delete)``; verifies backups newest first until one passes."""
    backups = list_backups(backup_dir)
    anchor_i = None
    for i in range(len(backups) - 1, -1, -1):
        if not verify(backups[i]):
            anchor_i = i
            break
        print(f"prune: {backups[i]} does not verify; it is kept and not counted",
              file=sys.stderr)
    if anchor_i is None:
        return None, []
    older = backups[:anchor_i]
    # the anchor counts as one of the `keep` newest
    doomed = older[:max(0, len(older) - max(0, keep - 1))]
    if max_age_days is not None:
        now = time.time() if now is None else now
        doomed = [p for p in doomed
                  if (t := backup_time(p)) is not None and now - t > max_age_days * 86400]
    return backups[anchor_i], doomed


def main(argv: list[str] | None = None) -> int:
    from ..config import Settings
    p = argparse.ArgumentParser(prog="stemedb retention", description=__doc__.split("\n")[0])
    p.add_argument("--backup-dir", help="default STEMEDB_BACKUP_DIR (./backups)")
    p.add_argument("--keep", type=int, default=7, help="backups to keep, the verified anchor "
                   "included (default 7)")
    p.add_argument("--max-age-days", type=float, help="delete only backups older than this")
    p.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing")
    args = p.parse_args(argv)
    if args.keep < 1:
        print("prune: --keep must be at least 1", file=sys.stderr)
        return 2
    backup_dir = args.backup_dir or Settings.from_env().backup_dir
    if not os.path.isdir(backup_dir):
        print(f"prune: {backup_dir} is not a directory; give --backup-dir or set "
              f"STEMEDB_BACKUP_DIR", file=sys.stderr)
        return 2
    anchor, doomed = plan(backup_dir, args.keep, args.max_age_days)
    if anchor is None:
        print(f"prune: no verified backup in {backup_dir}; nothing deleted. Take one with "
              f"stemedb backup and look at why the others fail to verify.",
              file=sys.stderr)
        return 1
    print(f"prune: newest verified backup: {anchor}")
    for path in doomed:
        print(f"prune: {'would delete' if args.dry_run else 'deleting'} {path}")
        if not args.dry_run:
            shutil.rmtree(path)
    print(f"prune: {len(doomed)} backup(s) {'to delete' if args.dry_run else 'deleted'}, "
          f"{len(list_backups(backup_dir))} kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
