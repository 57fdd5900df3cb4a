"""``stemedb fsync-check [DIR] [--json]``: does the file system under DIR keep what fsync promised?

Measures, on a scratch file in DIR (removed afterwards):

- ``fsync`` and ``fdatasync`` latency (p50, p99, max: no mean) and rate for
  4 KiB appends, the WAL's own pattern;
- read-back: bytes written and fsynced are dropped from the page cache
  (``posix_fadvise(DONTNEED)``) and read again through a fresh descriptor.

And looks at what can be seen from here: the mount options in
``/proc/mounts`` (``tmpfs``/``ramfs`` keep nothing across a reboot;
``nobarrier``/``barrier=0`` let the disk reorder or drop flushed writes;
``data=writeback`` and NFS ``async`` weaken ordering), the device's
``/sys/block/*/queue/write_cache`` (``write back`` is safe only when the
device honours flushes), ``LD_PRELOAD`` of libeatmydata (fsync becomes a
no-op), and fsync latencies too small for real stable storage.

No tool can prove from software that a disk honours flushes: a pull-the-plug
test can (``docs/operations/deployment.md``).  Exit 0 when nothing is wrong
(warnings are printed), 1 when a problem was found, 2 when it cannot run.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time

BLOCK = 4096
# fsync on stable storage takes at least tens of microseconds; below this it
# almost certainly reached no device (tmpfs, eatmydata, a lying controller)
SUSPICIOUSLY_FAST = 20e-6
SLOW_P99 = 0.050


def _percentile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return 0.0
    k = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def measure(path: str, sync, count: int, seconds: float) -> dict:
    """Append 4 KiB and ``sync(fd)``, up to ``count`` times or ``seconds``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    lat = []
    data = secrets.token_bytes(BLOCK)
    t_end = time.monotonic() + seconds
    try:
        t_all = time.perf_counter()
        for _ in range(count):
            os.write(fd, data)
            t0 = time.perf_counter()
            sync(fd)
            lat.append(time.perf_counter() - t0)
            if time.monotonic() > t_end:
                break
        total = time.perf_counter() - t_all
    finally:
        os.close(fd)
    lat.sort()
    return {"count": len(lat), "p50_ms": _percentile(lat, 0.5) * 1e3,
            "p99_ms": _percentile(lat, 0.99) * 1e3, "max_ms": (lat[-1] if lat else 0) * 1e3,
            "per_second": len(lat) / total if total > 0 else 0.0}


def read_back(path: str) -> bool:
    data = secrets.token_bytes(BLOCK * 16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        got = b""
        while len(got) < len(data):
            chunk = os.read(fd, len(data) - len(got))
            if not chunk:
                break
            got += chunk
    finally:
        os.close(fd)
    return got == data


def find_mount(path: str, mounts_file: str = "/proc/mounts") -> dict | None:
    """The /proc/mounts entry holding ``path`` (longest mount point prefix)."""
    real = os.path.realpath(path)
    best = None
    try:
        with open(mounts_file) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) < 4:
            continue
        dev, mnt, fstype, opts = parts[:4]
        mnt = mnt.replace("\\040", " ")
        inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
        if inside and (best is None or len(mnt) >= len(best["mount_point"])):
            best = {"device": dev, "mount_point": mnt, "fstype": fstype,
                    "options": opts.split(",")}
    return best


def mount_findings(m: dict | None) -> tuple[list[str], list[str]]:
    """(problems, warnings) from a mount entry."""
    problems: list[str] = []
    warnings: list[str] = []
    if m is None:
        warnings.append("the mount holding the directory is not visible (/proc/mounts)")
        return problems, warnings
    fstype, opts = m["fstype"], m["options"]
    if fstype in ("tmpfs", "ramfs"):
        problems.append(f"{m['mount_point']} is {fstype}: memory, not storage; everything is "
                        f"lost at reboot. Put STEMEDB_DATA_DIR on a disk file system")
    if "nobarrier" in opts or "barrier=0" in opts:
        problems.append(f"{m['mount_point']} is mounted with "
                        f"{'nobarrier' if 'nobarrier' in opts else 'barrier=0'}: the disk may "
                        f"reorder or lose flushed writes at power loss; remount without it")
    if "data=writeback" in opts:
        warnings.append(f"{m['mount_point']} uses data=writeback: file data is not ordered "
                        f"with metadata; StemeDB's CRCs catch the damage but a crash can lose "
                        f"more than the last write; data=ordered is the safe default")
    if fstype.startswith("nfs") and "async" in opts:
        problems.append(f"{m['mount_point']} is NFS mounted async: the client acknowledges "
                        f"writes before the server stores them; mount with sync")
    if fstype in ("overlay", "aufs"):
        warnings.append(f"{m['mount_point']} is {fstype} (a container layer): put the data "
                        f"directory on a volume")
    return problems, warnings


def write_cache(device: str, sys_block: str = "/sys/block") -> str | None:
    """``write back`` / ``write through`` for the disk behind ``device``, when visible."""
    if not device.startswith("/dev/"):
        return None
    name = os.path.basename(os.path.realpath(device))
    candidates = [os.path.join(sys_block, name, "queue", "write_cache")]
    cls = os.path.join("/sys/class/block", name)
    if os.path.exists(os.path.join(cls, "partition")):
        parent = os.path.basename(os.path.dirname(os.path.realpath(cls)))
        candidates.append(os.path.join(sys_block, parent, "queue", "write_cache"))
    for c in candidates:
        try:
            with open(c) as f:
                return f.read().strip()
        except OSError:
            continue
    return None


def check(directory: str, *, count: int = 200, seconds: float = 5.0) -> dict:
    problems: list[str] = []
    warnings: list[str] = []
    if not os.path.isdir(directory):  # never created here: a typo must not pass the check
        raise FileNotFoundError(f"{directory} is not a directory")
    scratch = os.path.join(directory, f".stemedb-fsync-check-{os.getpid()}")
    try:
        fsync = measure(scratch, os.fsync, count, seconds / 2)
        fdatasync = measure(scratch, getattr(os, "fdatasync", os.fsync), count, seconds / 2)
        readback_ok = read_back(scratch)
    finally:
        try:
            os.unlink(scratch)
        except FileNotFoundError:
            pass
    if not readback_ok:
        problems.append("data written and fsynced did not read back identical through a fresh "
                        "descriptor: the file system or device is corrupting data")
    m = find_mount(directory)
    p, w = mount_findings(m)
    problems += p
    warnings += w
    wc = write_cache(m["device"]) if m else None
    if m and wc == "write back":
        warnings.append(f"{m['device']} has a volatile write-back cache: durable only if the "
                        f"device honours flush/FUA (enterprise SSDs with power-loss protection "
                        f"do; check `hdparm -W` / `nvme id-ctrl` for your model)")
    if "eatmydata" in os.environ.get("LD_PRELOAD", ""):
        problems.append("LD_PRELOAD loads libeatmydata: fsync does nothing in this process")
    fast = fdatasync["p50_ms"] / 1e3 < SUSPICIOUSLY_FAST
    if fast and not (m and m["fstype"] in ("tmpfs", "ramfs")):
        warnings.append(f"fdatasync p50 is {fdatasync['p50_ms'] * 1e3:.1f} us: too fast for "
                        f"stable storage; a cache (hypervisor, controller) may acknowledge "
                        f"flushes it has not made durable")
    if fdatasync["p99_ms"] / 1e3 > SLOW_P99:
        warnings.append(f"fdatasync p99 is {fdatasync['p99_ms']:.1f} ms: write latency will be "
                        f"at least this; use STEMEDB_DURABILITY=batch or faster storage")
    verdict = "problem" if problems else ("warning" if warnings else "ok")
    return {"directory": os.path.abspath(directory), "verdict": verdict, "fsync": fsync,
            "fdatasync": fdatasync, "read_back_ok": readback_ok, "mount": m,
            "write_cache": wc, "problems": problems, "warnings": warnings}


def _print(r: dict) -> None:
    print(f"fsync-check: {r['directory']}")
    m = r["mount"]
    if m:
        print(f"  mount:      {m['mount_point']} ({m['fstype']} on {m['device']}, "
              f"{','.join(m['options'])})")
    if r["write_cache"]:
        print(f"  write cache: {r['write_cache']}")
    for name in ("fsync", "fdatasync"):
        s = r[name]
        print(f"  {name:<10}  p50 {s['p50_ms']:.3f} ms  p99 {s['p99_ms']:.3f} ms  "
              f"max {s['max_ms']:.3f} ms  {s['per_second']:.0f}/s  ({s['count']} x 4 KiB)")
    print(f"  read-back:  {'ok' if r['read_back_ok'] else 'MISMATCH'}")
    for p in r["problems"]:
        print(f"  PROBLEM: {p}")
    for w in r["warnings"]:
        print(f"  warning: {w}")
    print(f"verdict: {r['verdict']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="stemedb fsync-check", description="Does the file "
                                "system under DIR keep what fsync promised?")
    p.add_argument("dir", nargs="?", help="directory to test (default STEMEDB_DATA_DIR, ./data)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--count", type=int, default=200, help="syncs per measurement (default 200)")
    p.add_argument("--seconds", type=float, default=5.0, help="time budget (default 5)")
    args = p.parse_args(argv)
    directory = args.dir or os.environ.get("STEMEDB_DATA_DIR") or "./data"
    if not os.path.isdir(directory):
        print(f"stemedb fsync-check: {directory} does not exist or is not a directory; give "
              f"the directory the data will live in (the data directory, or its parent before "
              f"the first start). Nothing was created.", file=sys.stderr)
        return 2
    try:
        r = check(directory, count=max(1, args.count), seconds=max(0.1, args.seconds))
    except OSError as exc:
        print(f"stemedb fsync-check: cannot test {directory}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        _print(r)
    return 1 if r["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
