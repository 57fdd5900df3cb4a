"""Offline check of a stopped store or a backup.

    python -m stemedb.core.verify DATA_DIR

Checks segment headers, every record checksum and seq order (through the
same scanner as recovery, so both give one verdict on the same bytes), the index
snapshot against the WAL, and the counts against ``metadata.json`` (and the
per-file checksums of a backup's metadata).  Never writes anything.  One
line per finding on stdout.  Exit 0 when consistent (a torn tail at the end
of the last segment, or an index snapshot from an older version, which the
store rebuilds from the WAL at its next start, is a ``warning:`` line, still
0), 1 on any corruption or mismatch, 2 when it cannot run (for example
``LOCK`` is held).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import sys
from typing import Any

import orjson

from ..errors import CorruptionError
from ..progress import Progress
from . import snapshot
from .format import FRAME, REC_ASSERT
from .scan import durable_floor, scan_segment
from .segment import read_header


class Report:
    def __init__(self, out=sys.stdout):
        self.out = out
        self.errors = 0
        self.warnings = 0

    def error(self, msg: str) -> None:
        self.errors += 1
        print(f"error: {msg}", file=self.out)

    def warn(self, msg: str) -> None:
        self.warnings += 1
        print(f"warning: {msg}", file=self.out)

    def ok(self, msg: str) -> None:
        print(f"ok: {msg}", file=self.out)


class CannotRun(Exception):
    pass


def _check_lock(data_dir: str) -> None:
    path = os.path.join(data_dir, "LOCK")
    if not os.path.exists(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
        raise CannotRun(f"Store is locked by PID {pid}: stop the server first, or verify "
                        f"a backup instead") from None
    finally:
        os.close(fd)


def check_wal(wal_dir: str, rep: Report, floor_of=lambda log_id: None) -> dict:
    """Scan every segment through the one scanner; returns counts and the frame index.

    ``floor_of(log_id)`` gives what the snapshot and metadata.json prove
    durable (:func:`stemedb.core.scan.durable_floor`), so that a log cut
    below it gets the same verdict here as at start.
    """
    names = sorted(n for n in os.listdir(wal_dir) if n.startswith("segment-") and n.endswith(".log")) \
        if os.path.isdir(wal_dir) else []
    info: dict[str, Any] = {"segments": len(names), "assertions": 0, "records": 0, "last_seq": 0,
            "frames": {}, "asserts_before": []}
    prev_number = None
    log_id = None
    # progress on stderr, after 2 s: the findings on ``out`` stay as they are
    progress = Progress(total_bytes=sum(os.path.getsize(os.path.join(wal_dir, n)) for n in names),
                        what="verify")
    for i, name in enumerate(names):
        path = os.path.join(wal_dir, name)
        last = i == len(names) - 1
        try:
            number, _first, lid = read_header(path)
        except CorruptionError as exc:
            rep.error(str(exc))
            continue
        if log_id is None:
            log_id = lid
        elif lid != log_id:
            rep.error(f"WAL segment {path} belongs to another store (log id differs)")
        if prev_number is not None and number != prev_number + 1:
            rep.error(f"WAL segment {path} follows segment {prev_number}: segments are missing")
        prev_number = number
        with open(path, "rb") as f:
            buf = f.read()
        try:
            v = scan_segment(buf, path, number, last=last, prev_seq=info["last_seq"],
                             floor=floor_of(log_id) if last else None)
        except CorruptionError as exc:
            rep.error(str(exc))
            progress.update(bytes=len(buf))
            continue
        progress.update(records=len(v.offsets), bytes=len(buf))
        if v.torn:
            rep.warn(f"torn write at end of WAL segment {path}: {v.torn_bytes} bytes after "
                     f"offset {v.end} will be cut off and quarantined at the next start")
        for off, rtype, seq in zip(v.offsets, v.types, v.seqs):
            info["records"] += 1
            if rtype == REC_ASSERT:
                info["assertions"] += 1
            info["frames"][(number, off)] = (seq, FRAME.unpack_from(buf, off)[1], info["assertions"])
        info["last_seq"] = v.last_seq
        info["log_id"] = log_id
    progress.done()
    return info


def load_snapshot(data_dir: str):
    """``(state, position, error)`` of the index snapshot, read once: all None
    when there is none; ``error`` is why it could not be read."""
    path = snapshot.snapshot_path(os.path.join(data_dir, "db"))
    if not os.path.exists(path):
        return None, None, None
    try:
        state, pos = snapshot.read(path)
    except (CorruptionError, ValueError, KeyError) as exc:
        return None, None, exc
    return state, pos, None


def snapshot_position(data_dir: str) -> dict | None:
    """The position block of the index snapshot, when it can be read."""
    return load_snapshot(data_dir)[1]


def check_snapshot(data_dir: str, wal: dict, rep: Report, loaded=None) -> None:
    """Findings on the snapshot against the WAL; ``loaded`` is what
    :func:`load_snapshot` gave, when the caller has read it already."""
    path = snapshot.snapshot_path(os.path.join(data_dir, "db"))
    state, pos, error = loaded if loaded is not None else load_snapshot(data_dir)
    if isinstance(error, snapshot.StaleSnapshot):
        # recoverable, like a torn tail: the store ignores it and rebuilds its
        # indexes from the WAL at the next start (recovery._load_snapshot)
        rep.warn(f"{error}; it is from an older version of StemeDB and will be rebuilt "
                 f"from the WAL at the next start")
        return
    if error is not None:
        rep.error(f"index snapshot {path} cannot be read: {error}")
        return
    if state is None:
        rep.warn(f"no index snapshot at {path}; the store rebuilds its indexes from the WAL at start")
        return
    if wal.get("log_id") is not None and bytes(pos.get("log_id", b"")) != wal["log_id"]:
        rep.error(f"index snapshot {path} belongs to another WAL (log id differs); "
                  f"the store will rebuild it")
        return
    last = pos.get("last_record")
    covered = 0
    if last is not None:
        seg, off, seq, crc = last
        got = wal["frames"].get((seg, off))
        if got is None or got[0] != seq or got[1] != crc:
            rep.error(f"index snapshot {path} does not match the WAL (its last record, seq {seq} "
                      f"in segment {seg} at offset {off}, is not there); the store will rebuild it")
            return
        covered = got[2]
    if state.count != covered:
        rep.error(f"index snapshot {path} holds {state.count} assertions but the WAL has "
                  f"{covered} up to its position")
    for finding in state.check():
        rep.error(f"index snapshot {path}: {finding}")
    if not rep.errors:
        rep.ok(f"index snapshot matches the WAL ({state.count} assertions, seq {state.last_seq})")


def check_metadata(data_dir: str, wal: dict, rep: Report) -> None:
    path = os.path.join(data_dir, "metadata.json")
    if not os.path.exists(path):
        rep.warn(f"no {path}; it is written at the first snapshot or clean shutdown")
        return
    try:
        with open(path, "rb") as f:
            meta = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError) as exc:
        rep.error(f"{path} is not valid JSON: {exc}")
        return
    count = meta.get("assertion_count")
    if count is not None:
        if count > wal["assertions"]:
            rep.error(f"metadata.json says {count} assertions but the WAL holds only "
                      f"{wal['assertions']}: data is missing")
        elif count < wal["assertions"]:
            rep.warn(f"metadata.json says {count} assertions, the WAL holds {wal['assertions']}: "
                     f"metadata was last written before the latest writes (no clean shutdown "
                     f"since); the store replays them at start")
    if meta.get("last_seq") is not None and meta["last_seq"] > wal["last_seq"]:
        rep.error(f"metadata.json says last seq {meta['last_seq']} but the WAL ends at "
                  f"{wal['last_seq']}")
    segs = meta.get("wal_segment_count")
    if segs is not None and segs > wal["segments"]:
        rep.error(f"metadata.json counts {segs} WAL segments but {wal['segments']} are present")
    files = meta.get("files") or meta.get("checksums")
    if isinstance(files, dict):
        for rel, digest in sorted(files.items()):
            fpath = os.path.join(data_dir, rel)
            if not os.path.exists(fpath):
                rep.error(f"backup file {rel} listed in metadata.json is missing")
                continue
            h = hashlib.sha256()
            with open(fpath, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            want = digest.split(":", 1)[-1] if isinstance(digest, str) else digest.get("sha256")
            if h.hexdigest() != want:
                rep.error(f"backup file {rel} fails its sha256 checksum")


def verify(data_dir: str, out=sys.stdout) -> int:
    rep = Report(out)
    if not os.path.isdir(data_dir):
        print(f"error: {data_dir} is not a directory", file=out)
        return 2
    try:
        _check_lock(data_dir)
    except CannotRun as exc:
        print(f"error: {exc}", file=out)
        return 2
    wal_dir = os.path.join(data_dir, "wal")
    if not os.path.isdir(wal_dir):
        print(f"error: {wal_dir} does not exist; is {data_dir} a StemeDB data directory?", file=out)
        return 2
    loaded = load_snapshot(data_dir)       # read once: for the floor, then checked
    pos = loaded[1]
    wal = check_wal(wal_dir, rep, lambda log_id: durable_floor(data_dir, log_id, pos))
    if not rep.errors:
        rep.ok(f"WAL: {wal['segments']} segments, {wal['records']} records, "
               f"{wal['assertions']} assertions, last seq {wal['last_seq']}, every checksum valid")
    check_snapshot(data_dir, wal, rep, loaded)
    check_metadata(data_dir, wal, rep)
    status = "consistent" if not rep.errors else f"{rep.errors} problem(s) found"
    print(f"{'ok' if not rep.errors else 'error'}: {data_dir}: {status}", file=out)
    return 1 if rep.errors else 0


def main(argv=None) -> int:
    """``--help`` prints the usage and this module's description (exit 0);
    anything but one DATA_DIR is a usage error (exit 2, as "cannot run")."""
    argv = sys.argv[1:] if argv is None else argv
    usage = "usage: python -m stemedb.core.verify DATA_DIR"
    if argv in (["-h"], ["--help"]):
        print(usage)
        print(__doc__.split("\n\n", 2)[-1].strip() if __doc__ else "")
        return 0
    if len(argv) != 1 or argv[0].startswith("-"):
        print(usage, file=sys.stderr)
        return 2
    return verify(argv[0])


if __name__ == "__main__":
    sys.exit(main())
