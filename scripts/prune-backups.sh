#!/usr/bin/env bash
# Delete old backups from STEMEDB_BACKUP_DIR, only behind a newer verified one.
#
#   scripts/prune-backups.sh [--keep 7] [--max-age-days D] [--dry-run]
#
# The newest backup that verifies (checksums + stemedb verify)
# and the --keep newest are never deleted; with no verified backup nothing is
# deleted and the exit code is 1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_stemedb-cli.sh"
exec "${STEMEDB[@]}" retention "$@"
