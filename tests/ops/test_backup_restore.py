"""Backup under load and restore, through the scripts exactly as the
runbook (docs/operations/runbooks/restore-from-backup.md) writes them."""
from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time

import pytest

from stemedb import open_store

from .conftest import ROOT, Writers, backup_meta, body, run

# The runbook's commands, verbatim (test_runbook_commands_are_documented holds them to it).
BACKUP = "./scripts/backup-stemedb.sh"
LATEST = 'BACKUP_DIR=$(ls -d "$STEMEDB_BACKUP_DIR"/stemedb-backup-* | tail -n 1)'
SHOW_META = 'jq \'{timestamp, assertion_count, last_seq, wal_segment_count}\' "$BACKUP_DIR/metadata.json"'
VERIFY = 'python -m stemedb.core.verify "$BACKUP_DIR"'
RESTORE = './scripts/restore-stemedb.sh "$BACKUP_DIR"'
WAL_ONLY = './scripts/restore-stemedb.sh "$BACKUP_DIR" --wal-only'
SALVAGE_DRY = 'stemedb salvage "$STEMEDB_DATA_DIR" --dry-run'
SALVAGE = 'stemedb salvage "$STEMEDB_DATA_DIR"'
RUNBOOK_COMMANDS = [BACKUP, LATEST, SHOW_META, VERIFY, RESTORE, WAL_ONLY, SALVAGE_DRY, SALVAGE,
                    # run by test_fsync_check.py, test_dr_drill.py, test_deploy_files.py
                    'stemedb fsync-check "$STEMEDB_DATA_DIR"', "./scripts/dr-drill.sh",
                    "promtool check rules stemedb-alerts.yml", "promtool test rules stemedb-alerts.test.yml"]


def take_backup(env: dict) -> str:
    r = run(BACKUP, env, check=True)
    path = r.stdout.strip().splitlines()[-1]
    assert os.path.isdir(path), f"the last line of the backup's stdout must be its path: {r.stdout!r}"
    return path


def test_backup_under_concurrent_writes_restores_to_its_count(dirs, store):
    """A backup taken while 4 threads write holds every write acknowledged
    before it started, whole batches only, and restores to exactly its count."""
    w = Writers(store, threads=4, per_thread=3000, seconds=30).start()
    w.wait_for(800)
    t_start = time.time()
    path = take_backup(dirs["env"])
    w.wait_for(len(w.acked) + 300)
    w.stop()
    meta = backup_meta(path)
    assert meta["backup_type"] == "full"
    assert meta["wal_segment_count"] > 1, "the test must span rotated segments"
    for key in ("version", "timestamp", "assertion_count", "wal_segment_count", "last_seq", "files"):
        assert key in meta, f"metadata.json must carry {key}"
    assert store.count > meta["assertion_count"], "writes must have continued after the backup"
    acked_before = [h for t, h in w.acked if t < t_start]

    env = dict(dirs["env"], STEMEDB_DATA_DIR=dirs["restored"], BACKUP_DIR=path)
    r = run(RESTORE, env, check=True)
    assert "Restore complete" in r.stdout
    with open_store(dirs["restored"], durability="none") as s:
        assert s.count == meta["assertion_count"], "a restored store has the backup's count"
        assert s.last_seq == meta["last_seq"]
        missing = [h for h in acked_before if s.get(h) is None]
        assert not missing, f"{len(missing)} writes acknowledged before the backup are missing"
        for batch in w.batches:
            present = [s.get(h) is not None for h in batch]
            assert all(present) or not any(present), "an atomic batch was split by the backup"
        for h in acked_before[:: max(1, len(acked_before) // 50)]:
            a, b = s.get(h), store.get(h)
            assert (a.concept_path, a.predicate, a.value, a.seq) == \
                (b.concept_path, b.predicate, b.value, b.seq), "restored assertion differs"
        assert not s.rebuilt, "the backup's index snapshot must match its WAL (no rebuild)"
        s.put(body(10**9))  # the restored store takes writes
    assert run(VERIFY, env).returncode == 0


def test_backup_metadata_state_file_and_verifier(dirs, store):
    for i in range(50):
        store.put(body(i))
    before = time.time()
    path = take_backup(dirs["env"])
    name = os.path.basename(path)
    assert name.startswith("stemedb-backup-") and len(name) == len("stemedb-backup-YYYYMMDD-HHMMSS")
    meta = backup_meta(path)
    assert meta["assertion_count"] == 50 and meta["last_seq"] == 50
    assert all(v.startswith("sha256:") for v in meta["files"].values())
    assert "db/indexes/snapshot.idx" in meta["files"]
    assert sorted(os.listdir(path)) == ["db", "metadata.json", "wal"]
    with open(os.path.join(dirs["data"], "backup-state.json")) as f:
        st = json.load(f)
    assert st["last_success_ts"] >= before - 1 and st["failures"] == 0
    env = dict(dirs["env"], BACKUP_DIR=path)
    r = run(SHOW_META, env, check=True)
    assert json.loads(r.stdout)["assertion_count"] == 50
    r = run(LATEST + " && " + VERIFY, dirs["env"])
    assert r.returncode == 0, r.stdout
    # a second backup in the same second gets its own directory
    path2 = take_backup(dirs["env"])
    assert path2 != path and os.path.isdir(path)


def test_failed_backup_exits_nonzero_and_is_counted(dirs, tmp_path):
    os.makedirs(dirs["data"])      # a data directory without wal/
    r = run(BACKUP, dirs["env"])
    assert r.returncode != 0
    assert "FAILED" in r.stderr
    with open(os.path.join(dirs["data"], "backup-state.json")) as f:
        assert json.load(f)["failures"] == 1
    r = run(BACKUP, dirs["env"])
    with open(os.path.join(dirs["data"], "backup-state.json")) as f:
        assert json.load(f)["failures"] == 2, "failures is a counter"
    assert not os.path.isdir(dirs["backups"]) or \
        not [n for n in os.listdir(dirs["backups"]) if n.startswith("stemedb-backup-")], \
        "a failed backup leaves no directory that looks like a backup"


def test_restore_refuses_while_the_store_is_open_and_changes_nothing(dirs, store):
    store.put(body(1))
    path = take_backup(dirs["env"])
    before = sorted(os.listdir(dirs["data"]))
    env = dict(dirs["env"], BACKUP_DIR=path)
    r = run(RESTORE + " --systemctl ''", env)
    assert r.returncode == 2  # cannot run
    assert f"Store is locked by PID {os.getpid()}" in r.stderr
    assert "systemctl stop stemedb-api" in r.stderr, "the refusal says how to stop the server"
    assert sorted(os.listdir(dirs["data"])) == before, "a refused restore changes nothing"


def test_restore_stops_and_starts_the_systemd_service(dirs, tmp_path):
    with open_store(dirs["data"], durability="none") as s:
        for i in range(20):
            s.put(body(i))
    path = take_backup(dirs["env"])
    # a stand-in server holding LOCK, and a systemctl that manages it
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys,time; from stemedb import open_store; "
                               f"s=open_store({dirs['data']!r}, durability='none'); "
                               "print('up', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "up"
        log = tmp_path / "systemctl.log"
        fake = tmp_path / "systemctl"
        fake.write_text(f"""#!/bin/sh
echo "$@" >> {log}
case "$1" in
  is-active) kill -0 {holder.pid} 2>/dev/null ;;
  stop) kill -TERM {holder.pid}; exit 0 ;;
  start) exit 0 ;;
esac
""")
        fake.chmod(0o755)
        env = dict(dirs["env"], BACKUP_DIR=path, STEMEDB_BIND="127.0.0.1:1")
        r = run(RESTORE + f" --systemctl {fake} --health-timeout 1", env)
        assert r.returncode == 0, r.stderr
        calls = log.read_text().split("\n")
        assert "stop stemedb-api" in calls and "start stemedb-api" in calls
        assert calls.index("stop stemedb-api") < calls.index("start stemedb-api")
        assert "Stopping stemedb-api" in r.stdout and "/v1/health" in r.stdout
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_restore_renames_the_old_data_and_never_deletes(dirs):
    with open_store(dirs["data"], durability="none") as s:
        for i in range(10):
            s.put(body(i))
    path = take_backup(dirs["env"])
    with open_store(dirs["data"], durability="none") as s:
        for i in range(10, 25):
            s.put(body(i))
        newest = s.put(body(99)).hash
    env = dict(dirs["env"], BACKUP_DIR=path)
    run(RESTORE, env, check=True)
    names = os.listdir(dirs["data"])
    kept = [n for n in names if n.startswith("wal.backup.")]
    assert kept and [n for n in names if n.startswith("db.backup.")]
    assert [n for n in names if n.startswith("metadata.json.backup.")]
    with open_store(dirs["data"], durability="none") as s:
        assert s.count == 10 and s.get(newest) is None
    # the renamed-aside data is whole: it opens with every write
    side = os.path.join(dirs["restored"])
    os.makedirs(side)
    os.rename(os.path.join(dirs["data"], kept[0]), os.path.join(side, "wal"))
    with open_store(side, durability="none") as s:
        assert s.count == 26 and s.get(newest) is not None


def test_restore_refuses_a_damaged_backup(dirs):
    with open_store(dirs["data"], durability="none") as s:
        for i in range(30):
            s.put(body(i))
    path = take_backup(dirs["env"])
    seg = os.path.join(path, "wal", "segment-00001.log")
    with open(seg, "r+b") as f:
        f.seek(200)
        b = f.read(1)
        f.seek(200)
        f.write(bytes([b[0] ^ 0xFF]))
    before = sorted(os.listdir(dirs["data"]))
    r = run(RESTORE, dict(dirs["env"], BACKUP_DIR=path))
    assert r.returncode == 1 and "sha256" in r.stderr and "nothing was changed" in r.stderr
    assert sorted(os.listdir(dirs["data"])) == before


def test_wal_only_restore_is_detected_and_indexes_rebuilt(dirs):
    with open_store(dirs["data"], durability="none") as s:
        for i in range(40):
            s.put(body(i))
    path = take_backup(dirs["env"])
    with open_store(dirs["data"], durability="none") as s:   # db/ moves past the backup
        for i in range(40, 90):
            s.put(body(i))
    run(WAL_ONLY, dict(dirs["env"], BACKUP_DIR=path), check=True)
    idx = os.path.join(dirs["data"], "db", "indexes")
    assert any(n.startswith("snapshot.idx.backup.") for n in os.listdir(idx)), \
        "--wal-only keeps db/, its snapshot renamed aside, never deleted"
    with open_store(dirs["data"], durability="none") as s:
        assert s.rebuilt, "the indexes are rebuilt from the restored WAL"
        assert s.count == 40, "never served stale: the count is the restored WAL's"
        assert s.query("drugs/d1", include_descendants=False).results is not None


def test_manual_wal_replacement_from_the_runbook_rebuilds(dirs):
    """Runbook section 2 by hand: move the WAL aside, copy the backup's WAL in."""
    with open_store(dirs["data"], durability="none") as s:
        for i in range(40):
            s.put(body(i))
    path = take_backup(dirs["env"])
    with open_store(dirs["data"], durability="none") as s:
        for i in range(40, 60):
            s.put(body(i))
    cmd = ('stamp=$(date +%Y%m%d-%H%M%S) && '
           'mv "$STEMEDB_DATA_DIR/wal" "$STEMEDB_DATA_DIR/wal.corrupted.$stamp" && '
           'mv "$STEMEDB_DATA_DIR/db" "$STEMEDB_DATA_DIR/db.stale.$stamp" && '
           'mv "$STEMEDB_DATA_DIR/metadata.json" "$STEMEDB_DATA_DIR/metadata.json.stale.$stamp" && '
           'cp -r "$BACKUP_DIR/wal" "$STEMEDB_DATA_DIR/wal"')
    assert cmd in runbook_text(), "the test runs the runbook's command verbatim"
    run(cmd, dict(dirs["env"], BACKUP_DIR=path), check=True)
    with open_store(dirs["data"], durability="none") as s:
        assert s.rebuilt and s.count == 40


def test_restore_asks_only_on_a_terminal(dirs):
    with open_store(dirs["data"], durability="none") as s:
        s.put(body(1))
    path = take_backup(dirs["env"])
    master, slave = pty.openpty()
    try:
        os.write(master, b"no\n")
        r = run(RESTORE, dict(dirs["env"], BACKUP_DIR=path), stdin=slave)
    finally:
        os.close(master)
        os.close(slave)
    assert r.returncode == 1 and "cancelled" in r.stderr
    assert not [n for n in os.listdir(dirs["data"]) if ".backup." in n]


def test_restore_usage_errors(dirs):
    assert run("./scripts/restore-stemedb.sh", dirs["env"]).returncode == 2
    r = run("./scripts/restore-stemedb.sh /nonexistent/stemedb-backup-x", dirs["env"])
    assert r.returncode == 2 and "not a directory" in r.stderr


def runbook_text() -> str:
    docs = os.path.join(ROOT, "docs", "operations")
    text = ""
    for root, _d, names in os.walk(docs):
        for n in names:
            if n.endswith(".md"):
                with open(os.path.join(root, n)) as f:
                    text += f.read()
    return text


def test_runbook_commands_are_documented():
    text = runbook_text()
    missing = [c for c in RUNBOOK_COMMANDS if c not in text]
    assert not missing, f"runbook commands the tests run are not in docs/operations: {missing}"


def test_salvage_from_the_runbook(dirs):
    """server-wont-start.md: a damaged log refuses the start; the two salvage
    commands show, then make, the cut; the store starts with what precedes it."""
    with open_store(dirs["data"], durability="none") as s:
        for i in range(30):
            s.put(body(i))
    seg = os.path.join(dirs["data"], "wal", "segment-00001.log")
    offs, pos = [], 40
    with open(seg, "rb") as f:
        raw = f.read()
    while pos + 20 <= len(raw):
        offs.append(pos)
        pos += 20 + int.from_bytes(raw[pos:pos + 4], "little")
    with open(seg, "r+b") as f:         # one flipped bit in the 3rd byte of a length field
        f.seek(offs[15] + 2)
        f.write(bytes([raw[offs[15] + 2] ^ 0x10]))
    r = run(VERIFY.replace("$BACKUP_DIR", "$STEMEDB_DATA_DIR"), dirs["env"])
    assert r.returncode == 1 and f"Checksum mismatch in WAL segment {seg} at offset {offs[15]}" \
        in r.stdout, r.stdout
    r = run(SALVAGE_DRY, dirs["env"])
    assert r.returncode == 1 and "valid records after them (seqs 17-30)" in r.stdout, r.stdout
    r = run(SALVAGE, dirs["env"], check=True)
    assert "kept: 15 records, up to seq 15" in r.stdout, r.stdout
    with open_store(dirs["data"], durability="none") as s:
        assert s.count == 15
