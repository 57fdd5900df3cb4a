# Sourced by the scripts in this directory: finds the stemedb command.  Each
# script is a thin wrapper: everything it does is a `stemedb` subcommand, so
# `pip install stemedb` alone can back up, restore, prune and drill.
# Order: $STEMEDB_CLI, the checkout's .venv, /opt/stemedb/venv, `stemedb` on PATH.
_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_root="$(dirname "$_here")"
if [ -n "${STEMEDB_CLI:-}" ]; then
  STEMEDB=("$STEMEDB_CLI")
elif [ -x "$_root/.venv/bin/stemedb" ]; then
  STEMEDB=("$_root/.venv/bin/stemedb")
elif [ -x /opt/stemedb/venv/bin/stemedb ]; then
  STEMEDB=(/opt/stemedb/venv/bin/stemedb)
elif command -v stemedb >/dev/null 2>&1; then
  STEMEDB=(stemedb)
else
  echo "$(basename "$0"): cannot find the stemedb command; set STEMEDB_CLI=/path/to/venv/bin/stemedb" >&2
  exit 2
fi
