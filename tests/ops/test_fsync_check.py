"""stemedb fsync-check: measures, reads back, and flags settings that lose data."""
from __future__ import annotations

import json
import os

import pytest

from stemedb.ops import fsync_check

from .conftest import run

CHECK = 'stemedb fsync-check "$STEMEDB_DATA_DIR"'


def test_fsync_check_on_the_data_dir(dirs):
    os.makedirs(dirs["data"])  # fsync-check never creates it
    r = run(CHECK + " --count 50 --seconds 2", dirs["env"])
    assert r.returncode in (0, 1), r.stderr
    assert "verdict:" in r.stdout and "fdatasync" in r.stdout and "read-back:  ok" in r.stdout
    assert not [n for n in os.listdir(dirs["data"]) if "fsync-check" in n], "scratch file removed"


def test_fsync_check_json(dirs):
    os.makedirs(dirs["data"])  # fsync-check never creates it
    r = run(CHECK + " --json --count 20 --seconds 1", dirs["env"])
    out = json.loads(r.stdout)
    assert out["verdict"] in ("ok", "warning", "problem")
    assert (r.returncode == 1) == (out["verdict"] == "problem")
    for k in ("p50_ms", "p99_ms", "max_ms", "per_second"):
        assert out["fdatasync"][k] >= 0
    assert out["fdatasync"]["count"] >= 1 and out["read_back_ok"] is True


@pytest.mark.skipif(not (fsync_check.find_mount("/dev/shm") or {}).get("fstype") == "tmpfs",
                    reason="/dev/shm is not tmpfs here")
def test_tmpfs_is_a_problem(tmp_path):
    d = "/dev/shm/stemedb-fsync-test-%d" % os.getpid()
    os.makedirs(d)  # fsync-check never creates the directory it tests
    try:
        r = run(f"stemedb fsync-check {d} --count 10 --seconds 1", {})
        assert r.returncode == 1 and "tmpfs" in r.stdout and "verdict: problem" in r.stdout
    finally:
        os.rmdir(d)


def test_mount_options_that_lose_data(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw,relatime 0 0\n"
        "/dev/sdb1 /srv/a ext4 rw,nobarrier 0 0\n"
        "/dev/sdc1 /srv/b ext4 rw,data=writeback 0 0\n"
        "nas:/x /srv/c nfs4 rw,async 0 0\n")
    m = fsync_check.find_mount("/srv/a/data", str(mounts))
    assert m["mount_point"] == "/srv/a"
    problems, _ = fsync_check.mount_findings(m)
    assert any("nobarrier" in p for p in problems)
    _, warnings = fsync_check.mount_findings(fsync_check.find_mount("/srv/b/x", str(mounts)))
    assert any("data=writeback" in w for w in warnings)
    problems, _ = fsync_check.mount_findings(fsync_check.find_mount("/srv/c", str(mounts)))
    assert any("NFS" in p for p in problems)
    assert fsync_check.mount_findings(fsync_check.find_mount("/home", str(mounts))) == ([], [])
