"""Retention: old backups go only behind a newer verified one."""
from __future__ import annotations

import os

from stemedb import open_store

from .conftest import body, run

PRUNE = "./scripts/prune-backups.sh --keep 2"


def _backups(dirs, n):
    paths = []
    for k in range(n):
        with open_store(dirs["data"], durability="none") as s:
            s.put(body(k))
        r = run("./scripts/backup-stemedb.sh", dirs["env"], check=True)
        paths.append(r.stdout.strip().splitlines()[-1])
    return paths


def test_prune_keeps_the_newest_verified_and_deletes_older(dirs):
    paths = _backups(dirs, 4)
    r = run(PRUNE, dirs["env"], check=True)
    assert [os.path.exists(p) for p in paths] == [False, False, True, True], r.stdout


def test_prune_deletes_nothing_without_a_verified_backup(dirs):
    paths = _backups(dirs, 3)
    for p in paths[1:]:        # damage the two newest
        seg = os.path.join(p, "wal", "segment-00001.log")
        with open(seg, "ab") as f:
            f.write(b"junk")
    r = run(PRUNE, dirs["env"])
    # the oldest verifies, so it is the anchor; the damaged newer ones are kept
    assert r.returncode == 0 and all(os.path.exists(p) for p in paths)
    seg = os.path.join(paths[0], "wal", "segment-00001.log")
    with open(seg, "ab") as f:
        f.write(b"junk")
    r = run(PRUNE, dirs["env"])
    assert r.returncode == 1 and "nothing deleted" in r.stderr
    assert all(os.path.exists(p) for p in paths)
