#!/usr/bin/env bash
# Restore a backup into STEMEDB_DATA_DIR, never deleting the current data.
#
#   scripts/restore-stemedb.sh BACKUP_DIR [--yes] [--wal-only]
#   scripts/restore-stemedb.sh --from-s3 BUCKET/PREFIX [--until TIME|SEQ] [--yes]
#
# Verifies the backup first; refuses while a server holds data/LOCK unless the
# server is the systemd unit stemedb-api (then it stops it and starts it again);
# renames data/wal, data/db and data/metadata.json to *.backup.YYYYMMDD-HHMMSS;
# asks for confirmation only when stdin is a terminal.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_stemedb-cli.sh"
if [ $# -eq 0 ]; then
  echo "usage: $0 BACKUP_DIR [--yes] [--wal-only]   (backups: \${STEMEDB_BACKUP_DIR:-./backups}/stemedb-backup-*)" >&2
  exit 2
fi
exec "${STEMEDB[@]}" restore "$@"
