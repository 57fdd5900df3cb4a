"""The DR drill as CI runs it: backup under load, destroy, restore, verify, RTO/RPO."""
from __future__ import annotations

import re

import pytest

from .conftest import run


@pytest.mark.slow
def test_dr_drill_passes_and_reports_rto_rpo(tmp_path):
    # A scratch directory of ours, so the servers' logs outlive the drill: a
    # server that does not start is our failure, reported with its output.
    scratch = tmp_path / "drill"
    r = run(["./scripts/dr-drill.sh", "--seconds", "3", "--dir", str(scratch)], {}, timeout=300)
    logs = "".join(f"\n--- {p.name} (the server's output):\n{p.read_text(errors='replace')[-4000:]}"
                   for p in sorted(scratch.glob("serve-*.log")))
    assert r.returncode == 0, f"the DR drill failed ({r.returncode}):\n{r.stdout}\n{r.stderr}{logs}"
    assert "DR drill: PASSED" in r.stdout
    assert re.search(r"^RTO: \d+\.\d+ s", r.stdout, re.M)
    assert re.search(r"^RPO: \d+\.\d+ s \(\d+ assertions", r.stdout, re.M)
    m = re.search(r"before the backup: (\d+)/(\d+)", r.stdout)
    assert m and m.group(1) == m.group(2) and int(m.group(2)) > 0
