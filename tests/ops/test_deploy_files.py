"""Deployment files, checked by the tools that will run them when they are here
(systemd-analyze, promtool, nginx -t), skipped with the reason otherwise."""
from __future__ import annotations

import configparser
import glob
import json
import os
import re
import shutil
import subprocess

import pytest

from .conftest import ROOT

OPS = os.path.join(ROOT, "ops")
UNITS = sorted(glob.glob(os.path.join(OPS, "systemd", "*.service")) +
               glob.glob(os.path.join(OPS, "systemd", "*.timer")))


def _unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read(os.path.join(OPS, "systemd", name))
    return cp


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_units_verify(tmp_path):
    # the units name the installed paths; point them at this checkout so that
    # systemd-analyze can also check that every ExecStart is executable
    for path in UNITS:
        text = open(path).read()
        text = text.replace("/opt/stemedb/venv/bin", os.path.join(ROOT, ".venv", "bin"))
        text = text.replace("/opt/stemedb/scripts", os.path.join(ROOT, "scripts"))
        (tmp_path / os.path.basename(path)).write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                        *sorted(str(p) for p in tmp_path.iterdir())],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert not re.search(r"Unknown (key|section)|Failed to parse|Invalid", out), out


def test_api_unit_stops_after_gunicorn_and_is_hardened():
    from stemedb.config import Settings
    svc = _unit("stemedb-api.service")["Service"]
    stop = int(svc["TimeoutStopSec"])
    assert stop > Settings().graceful_timeout + 5, "systemd must outwait gunicorn's graceful stop"
    assert stop <= 60
    assert svc["ExecStart"].endswith("stemedb serve")
    assert svc["ProtectSystem"] == "strict" and svc["NoNewPrivileges"] == "yes"
    assert "/var/lib/stemedb" in svc["ReadWritePaths"]
    assert svc["KillSignal"] == "SIGTERM"


def test_timers_point_at_services():
    for timer in ("stemedb-backup.timer", "stemedb-verify.timer"):
        assert os.path.exists(os.path.join(OPS, "systemd", timer.replace(".timer", ".service")))
        assert _unit(timer)["Timer"]["Persistent"] == "true"
    assert "stemedb.core.verify" in _unit("stemedb-verify.service")["Service"]["ExecStart"]
    assert "backup-stemedb.sh" in _unit("stemedb-backup.service")["Service"]["ExecStart"]
    assert "stemedb.ops.archive" in _unit("stemedb-wal-archive.service")["Service"]["ExecStart"]


def test_verify_unit_command_runs_on_the_latest_backup(dirs):
    """The shell line of stemedb-verify.service, un-escaped, on real backups."""
    from stemedb import open_store
    from .conftest import body, run
    with open_store(dirs["data"], durability="none") as s:
        s.put(body(1))
    run("./scripts/backup-stemedb.sh", dirs["env"], check=True)
    line = _unit("stemedb-verify.service")["Service"]["ExecStart"]
    cmd = re.match(r"/bin/sh -c '(.*)'$", line).group(1).replace("$$", "$")
    cmd = cmd.replace("/opt/stemedb/venv/bin/python", "python")
    r = run(cmd, dirs["env"])
    assert r.returncode == 0 and "consistent" in r.stdout, r.stdout + r.stderr
