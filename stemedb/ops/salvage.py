"""``stemedb salvage DATA_DIR``: accept the loss of a damaged log's end, on request.

A store whose log is damaged before its tail (or shorter than its snapshot
and ``metadata.json`` say) refuses to start, because cutting acknowledged
records silently would be worse.  The operator then has two ways out: a
restore from backup, or this command, which keeps every record before the
first bad one and sets the rest aside:

- the damaged segment is cut at the first bad record; its bytes from there
  on, and every later segment, move to ``wal/quarantine/`` (nothing is
  deleted);
- the index snapshot and ``metadata.json`` move there too, since they count
  records that are gone; the next start rebuilds the indexes from the log;
- the store starts a new archive timeline (``timeline.json``), as after a
  restore, so WAL archival never adds the cut log to the old history;
- it says exactly how many records, and which seqs, were cut (records found
  in the cut bytes by their checksums; bytes too damaged to hold a valid
  record are counted as bytes).

It judges the log with the same scanner as start-up and ``verify``.  Exit
0 when it salvaged or found nothing to do, 1 with ``--dry-run`` when it
would cut something, 2 when it cannot run (``LOCK`` held, not a store).
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

from ..core import fast, snapshot
from ..core.format import FLAG_MORE, SEGMENT_HEADER_SIZE
from ..core.scan import durable_floor, scan_segment, valid_frames
from ..core.segment import read_header
from ..core.verify import CannotRun, _check_lock, snapshot_position
from ..errors import CorruptionError
from . import archivestate
from .files import fsync_dir, utc_stamp


@dataclass
class Plan:
    """Where the log goes bad, and what a salvage moves aside."""

    segment: str | None = None        # the damaged segment, cut at ``offset``
    offset: int = 0
    reason: str = ""
    later: list[str] = field(default_factory=list)   # later segments, moved whole
    cut_seqs: list[int] = field(default_factory=list)
    cut_bytes: int = 0
    kept_records: int = 0
    kept_last_seq: int = 0
    stale: list[str] = field(default_factory=list)   # snapshot / metadata.json to set aside
    short_by: str = ""                # the floor the log fails to reach, when that is all

    @property
    def needed(self) -> bool:
        return self.segment is not None or bool(self.stale)


def plan(data_dir: str) -> Plan:
    """Scan the log as recovery does and find the first bad record (changes nothing)."""
    wal_dir = os.path.join(data_dir, "wal")
    names = sorted(n for n in os.listdir(wal_dir) if n.startswith("segment-") and n.endswith(".log"))
    paths = [os.path.join(wal_dir, n) for n in names]
    p = Plan()
    prev = 0
    log_id = None
    for i, path in enumerate(paths):
        last = i == len(paths) - 1
        with open(path, "rb") as f:
            buf = f.read()
        try:
            number, _first, lid = read_header(path)
            if log_id is None:
                log_id = lid
            elif lid != log_id:
                raise CorruptionError(f"WAL segment {path} belongs to another store")
            v = scan_segment(buf, path, number, last=last, prev_seq=prev)
        except CorruptionError as exc:
            bad = exc.offset if exc.offset is not None and exc.offset >= SEGMENT_HEADER_SIZE \
                else 0
            if bad:
                # the records before the bad one stay, less an atomic group it leaves open
                offs, _t, flags, seqs, _stop, _r = fast.scan_frames(buf, SEGMENT_HEADER_SIZE, bad)
                k = len(offs)
                while k and flags[k - 1] & FLAG_MORE:
                    k -= 1
                if k < len(offs):
                    bad = offs[k]
                p.kept_records += k
                prev = seqs[k - 1] if k else prev
            p.segment, p.offset, p.reason = path, bad, str(exc)
            start = max(bad, SEGMENT_HEADER_SIZE)
            p.cut_seqs += [s for _o, s in valid_frames(buf, start, len(buf), prev)] \
                if bad else _all_seqs(buf)
            p.cut_bytes += len(buf) - bad
            for later in paths[i + 1:]:
                p.later.append(later)
                with open(later, "rb") as f:
                    lbuf = f.read()
                p.cut_seqs += _all_seqs(lbuf)
                p.cut_bytes += len(lbuf)
            break
        p.kept_records += len(v.offsets)
        prev = v.last_seq
    p.kept_last_seq = prev
    pos = snapshot_position(data_dir)
    floor = durable_floor(data_dir, log_id, pos)
    if p.segment is not None or floor.seq > prev:
        if floor.seq > prev and p.segment is None:
            p.short_by = (f"the log ends at seq {prev} but seq {floor.seq} is durable "
                          f"according to {floor.source}: seqs {prev + 1}-{floor.seq} are not "
                          f"in this directory (set aside: the files that count them)")
        for path in (snapshot.snapshot_path(os.path.join(data_dir, "db")),
                     os.path.join(data_dir, "metadata.json")):
            if os.path.exists(path):
                p.stale.append(path)
    return p


def _all_seqs(buf) -> list[int]:
    """Seqs of the valid records anywhere in a segment's bytes."""
    return [s for _o, s in valid_frames(buf, SEGMENT_HEADER_SIZE, len(buf), 0)]


def seq_ranges(seqs: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    if not seqs:
        return "none"
    seqs = sorted(set(seqs))
    out, lo, hi = [], seqs[0], seqs[0]
    for s in seqs[1:]:
        if s == hi + 1:
            hi = s
            continue
        out.append(f"{lo}-{hi}" if hi > lo else f"{lo}")
        lo = hi = s
    out.append(f"{lo}-{hi}" if hi > lo else f"{lo}")
    return ", ".join(out)


def apply(data_dir: str, p: Plan, out=sys.stdout) -> None:
    """Carry out the plan: quarantine, truncate, move aside; every step fsynced."""
    qdir = os.path.join(data_dir, "wal", "quarantine")
    os.makedirs(qdir, exist_ok=True)
    stamp = utc_stamp()
    if p.segment is not None:
        name = os.path.basename(p.segment)
        if p.offset >= SEGMENT_HEADER_SIZE:
            q = os.path.join(qdir, f"{name}.{p.offset}.salvaged-{stamp}")
            with open(p.segment, "rb") as f:
                f.seek(p.offset)
                rest = f.read()
            _write_synced(q, rest)
            fsync_dir(qdir)
            with open(p.segment, "r+b") as f:
                f.truncate(p.offset)
                os.fsync(f.fileno())
            print(f"salvage: {len(rest)} bytes of {name} from offset {p.offset} moved to {q}",
                  file=out)
        else:   # the header itself is bad: the whole file goes
            q = os.path.join(qdir, f"{name}.salvaged-{stamp}")
            os.rename(p.segment, q)
            print(f"salvage: {name} (bad header) moved to {q}", file=out)
        for later in p.later:
            q = os.path.join(qdir, f"{os.path.basename(later)}.salvaged-{stamp}")
            os.rename(later, q)
            print(f"salvage: {os.path.basename(later)} moved to {q}", file=out)
        fsync_dir(os.path.join(data_dir, "wal"))
        fsync_dir(qdir)
    if p.segment is not None:
        # the history changed: archival must not add this log to the old one
        tl = archivestate.new_timeline(data_dir, reason="salvage")
        print(f"salvage: new timeline {tl['timeline']} (parent {tl['parent'] or 'original'}): "
              f"WAL archival continues under a prefix of its own", file=out)
    for stale in p.stale:
        q = os.path.join(qdir, f"{os.path.basename(stale)}.salvaged-{stamp}")
        os.rename(stale, q)
        fsync_dir(os.path.dirname(stale))
        print(f"salvage: {stale} moved to {q} (it counts records the log no longer holds; "
              f"the next start rebuilds it)", file=out)
    fsync_dir(qdir)


def _write_synced(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def describe(p: Plan) -> list[str]:
    lines = []
    if p.segment is not None:
        lines.append(f"first bad record: {p.reason}")
        lines.append(f"cut: {p.cut_bytes} bytes from {os.path.basename(p.segment)} at offset "
                     f"{p.offset}" + (f" and {len(p.later)} later segment(s)" if p.later else "")
                     + f": the damaged bytes, and {len(p.cut_seqs)} valid records after them "
                       f"(seqs {seq_ranges(p.cut_seqs)})")
    if p.short_by:
        lines.append(p.short_by)
    lines.append(f"kept: {p.kept_records} records, up to seq {p.kept_last_seq}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="stemedb salvage",
        description="Cut a damaged WAL at its first bad record, moving the rest to "
                    "wal/quarantine, so that the store can start with what precedes it. "
                    "Nothing is deleted. Run it only on a stopped store, after taking a copy.")
    ap.add_argument("data_dir", metavar="DATA_DIR")
    ap.add_argument("--dry-run", action="store_true",
                    help="say what would be cut and change nothing (exit 1 if anything would)")
    args = ap.parse_args(argv)
    data_dir = args.data_dir
    if not os.path.isdir(os.path.join(data_dir, "wal")):
        print(f"error: {data_dir} has no wal/ directory; is it a StemeDB data directory?",
              file=sys.stderr)
        return 2
    try:
        _check_lock(data_dir)
    except CannotRun as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    p = plan(data_dir)
    if not p.needed:
        print(f"ok: {data_dir}: the log has no damage before its tail; nothing to salvage")
        return 0
    for line in describe(p):
        print(("would " if args.dry_run and line.startswith("cut") else "") + line)
    if args.dry_run:
        return 1
    apply(data_dir, p)
    print(f"ok: {data_dir}: salvaged; start the store to rebuild its indexes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
