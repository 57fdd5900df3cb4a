#!/usr/bin/env bash
# What serving needs from the system, checked before `make setup-serve`
# builds the virtualenv: Python 3.11 or newer with venv, and a C compiler
# with the Python headers for the compiled extension (stemedb/core/_fast.pyx).
# Installs nothing and touches no service; it says what is missing and how
# to get it. The test-only packages are scripts/setup-test-system.sh's.
set -u
PYTHON=${PYTHON:-python3}
ok=1
if ! "$PYTHON" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup-system: $PYTHON is missing, older than 3.11, or lacks venv (Debian: apt-get install python3 python3-venv)" >&2
  ok=0
fi
if ! command -v "${CC:-cc}" >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
  echo "setup-system: no C compiler: the compiled extension cannot be built (Debian: apt-get install gcc)" >&2
elif ! "$PYTHON" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
  echo "setup-system: no Python headers (Python.h) for $PYTHON: the compiled extension cannot be built (Debian: apt-get install python3-dev)" >&2
fi
[ "$ok" = 1 ]
