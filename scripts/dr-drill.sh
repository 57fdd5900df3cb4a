#!/usr/bin/env bash
# Disaster-recovery drill in a scratch directory (never touches STEMEDB_DATA_DIR):
# backup under load, delete the data directory, restore, verify counts and
# sample reads, print the measured RTO and RPO. Exit 0 when it passed.
#
#   scripts/dr-drill.sh [--seconds 6] [--dir EMPTY_DIR --keep]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_stemedb-cli.sh"
exec "${STEMEDB[@]}" drill "$@"
