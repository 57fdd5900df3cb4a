"""The DR drill as CI runs it: backup under load, destroy, restore, verify, RTO/RPO."""
from __future__ import annotations

import re

import pytest

from .conftest import run


@pytest.mark.slow
def test_dr_drill_passes_and_reports_rto_rpo():
    r = run("./scripts/dr-drill.sh --seconds 3", {}, timeout=300)
    if "stemedb serve not healthy" in r.stdout or "stemedb serve exited" in r.stdout:
        pytest.skip(f"the server cannot start here: {r.stdout[-400:]}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "DR drill: PASSED" in r.stdout
    assert re.search(r"^RTO: \d+\.\d+ s", r.stdout, re.M)
    assert re.search(r"^RPO: \d+\.\d+ s \(\d+ assertions", r.stdout, re.M)
    m = re.search(r"before the backup: (\d+)/(\d+)", r.stdout)
    assert m and m.group(1) == m.group(2) and int(m.group(2)) > 0
