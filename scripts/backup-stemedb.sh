#!/usr/bin/env bash
# Take a consistent online backup of STEMEDB_DATA_DIR into STEMEDB_BACKUP_DIR.
#
#   scripts/backup-stemedb.sh [--open-check]
#
# Safe while the server runs and takes writes (no pause, LOCK is not taken).
# Prints the new backup's path as the last line of stdout; progress on stderr.
# Exit 0 on success, non-zero on failure (the failure is counted in
# stemedb_backup_failures_total). Cron: `0 2 * * * /opt/stemedb/scripts/backup-stemedb.sh`
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_stemedb-cli.sh"
exec "${STEMEDB[@]}" backup "$@"
