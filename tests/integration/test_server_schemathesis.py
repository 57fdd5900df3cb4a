"""schemathesis against /openapi.json of a real `stemedb serve`: every
operation, bounded examples, a fixed seed, and no failure of any check but
positive_data_acceptance (the schema cannot say everything the model checks:
concept path segments, references to stored hashes, signatures)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from .test_server import NO_LIMITS, servers  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("STEMEDB_SCHEMATHESIS_EXAMPLES", "8"))


def test_schemathesis_finds_no_failure(servers, tmp_path):  # noqa: F811
    exe = shutil.which("schemathesis", path=os.path.dirname(sys.executable)) or shutil.which(
        "schemathesis")
    if exe is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    keys = str(tmp_path / "keys.json")
    key = subprocess.run([sys.executable, "-m", "stemedb.cli", "keys", "add", "--id", "fuzz",
                          "--scopes", "admin", "--file", keys],
                         capture_output=True, text=True, check=True).stdout.strip()
    # Keys on, so the declared security is real (the ignored_auth check);
    # limits and the breaker off, so the generated bad requests all reach the code.
    s = servers(STEMEDB_API_KEYS_FILE=keys, STEMEDB_DURABILITY="none",
                STEMEDB_RATE_LIMITS=NO_LIMITS + ";circuit=off").start()
    r = subprocess.run(
        [exe, "run", s.url + "/openapi.json", "-H", f"Authorization: Bearer {key}",
         "--checks", "all", "--exclude-checks", "positive_data_acceptance",
         "-n", str(EXAMPLES), "--seed", "20260211",
         "--request-timeout", "10", "--no-color"],
        capture_output=True, text=True, timeout=400, cwd=str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-8000:] + "\n--- server log ---\n" + s.log()[-4000:]
    assert " 500 " not in s.log() and "Traceback" not in s.log(), s.log()[-8000:]
