"""The write-ahead log: segments, rotation, group commit, fail-stop, replay.

Group commit (leader/follower): a writer enqueues its framed records, in seq
order, under the store's write mutex, then waits.  The first waiter with no
leader in office becomes the leader: it takes every pending request, writes
them with one ``write`` and one ``fdatasync``, lets the store apply them to
the indexes in seq order, and wakes the writers of that group.  So N
concurrent writers cost one fsync, and a writer returns only after its
records are durable.

Wake-ups are targeted: a follower sleeps on a lock of its own, and the
leader, once its group is durable and applied, releases the followers whose
requests are done.  The next group is led by whoever finds the office vacant:
nearly always the old leader, which holds the GIL and comes back with its
next put.  If the group released nobody, the leader wakes one follower whose
request is still queued (it takes everything queued meanwhile); else each
released follower, once it runs, does so if the office is still vacant (a
leader whose thread does not come back strands nobody).  Waking the queued
follower at every group's end, as before, paid two thread switches a group
for a follower that found the office taken
(bench/results/write-2026-11-27-session13.md).  A condition's
``notify_all`` would wake every follower to find, most of them, that their
records are in the next group and go back to sleep: with 8 writers that was
several thread switches per record, for nothing.  (A leader committing the
group queued meanwhile itself, instead of waking a follower for it, was
measured and not kept: bench/results/write-lead-more-2026-11-27-session8.txt.)

The leader writes and syncs a group in one compiled call
(``fast.write_sync``) that lets go of the GIL once: after ``os.write`` and
again after ``os.fdatasync`` the leader had to take the GIL back from a
writer preparing its next put, which cost a group ~20-40 us with 8 writers
(bench/group_trace.py; bench/results/write-path-2026-11-26-session6.md).

Preallocation: the active segment's file runs ``PREALLOC`` bytes ahead of
its records, zeros written and synced before any group lands on them, so a
group's fdatasync flushes its data only: appending to a growing file also
made the new file size durable every time, an ext4 journal commit (a second
device flush, in another kernel thread).  Measured: bench.write_ab w2s and
bench.run W2 (bench/results/write-2026-11-27-session11.md).  When a group
would pass the zeroed end, the leader zeros the next ``PREALLOC`` bytes and
syncs them first (~4 ms, once a MiB).  Sealing, close and recovery's cut
truncate the file to its records; the scanner reads an all-zero tail of the
last segment as its clean end (scan.py, the zero tail).  Not with
``durability="none"``, which syncs nothing per group.

Fail-stop: if a write or fsync raises, the whole group fails (nothing in it
is acknowledged), the log records the fault and refuses every later write.
A failed fsync is never retried: after it the kernel may have dropped the
dirty pages and a retry could report success for data that is gone
(PostgreSQL's "fsyncgate").  Reopening the store recovers from what is on
disk.  So does any other exception that cuts a leader's commit short (a
KeyboardInterrupt raised when the write returns): the rest of its group fails,
writes stop, and the leader sees the exception (``_abandon``).
"""
from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import time
from typing import Any, Callable

import msgspec

from ..errors import CorruptionError, StoreFaulted
from . import fast
from .fileio import File, FileSystem
from .format import FRAME_CRC_OFF, FRAME_SEQ_OFF, SEGMENT_HEADER_SIZE
from .segment import Segment, new_log_id, read_header

log = logging.getLogger("stemedb")
_new_lock = threading.Lock
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
# bytes of zeros kept ahead of the active segment's records (docs/design.md)
PREALLOC = 1 << 20


class Request(msgspec.Struct):
    """One atomic group of records on its way to disk.

    What the state needs to apply it (``records.group_frames``) comes as
    ``frames``, ``(offsets, types, seqs)`` of its records within ``data``,
    when the writer has them at hand (assertions: one sequence each per
    batch, no per-record loop after the fsync), or else as ``apply_arg``,
    ``(type, seq, body)`` per record.  ``locs`` is set when the group is
    written: ``[(segment, offset)]`` of its first record (the rest follow
    contiguously).  A msgspec Struct, not a class with ``__slots__`` and an
    ``__init__``: every put builds one, and the Struct's construction costs
    ~0.26 us against ~0.40 (the same fields, read and set as fast).
    """

    data: bytes                 # concatenated frames
    sizes: list                 # frame sizes, to compute each record's offset
    apply_arg: Any = None
    frames: Any = None          # (offsets, types, seqs) or None
    done: bool = False
    error: Any = None           # the BaseException of a failed group
    locs: Any = ()              # [(segment, offset)] once written


class WAL:
    def __init__(self, wal_dir: str, *, fs: FileSystem | None = None,
                 segment_size: int = 64 * 1024 * 1024, durability: str = "fsync",
                 batch_delay: float = 0.002, prealloc: int = PREALLOC,
                 clock: Callable[[], float] = time.perf_counter,
                 on_durable: Callable[[list, dict], None] = lambda group, anchor: None):
        self.dir = wal_dir
        self.fs = fs or FileSystem()
        self.segment_size = segment_size
        self.durability = durability
        self.batch_delay = batch_delay
        self.clock = clock
        self.segments: list[Segment] = []
        self.log_id: bytes | None = None
        self.fault: str | None = None
        self._file: File | None = None    # the active segment's append handle
        # zeros kept ahead of the records (none when groups are not synced)
        self.prealloc = prealloc if durability != "none" else 0
        # the active segment's file size: [size, _zero_end) is zeros (synced
        # when this WAL wrote them), which the next groups overwrite
        self._zero_end = 0
        # set by recovery: the zero tail the scanner found after the last record
        self.tail_zeros = 0
        # the condition's lock, taken directly where nothing waits on or
        # notifies the condition (enqueue): Condition.__enter__ is a Python call
        self._mu = threading.Lock()
        self._cv = threading.Condition(self._mu)
        self._queue: list[Request] = []
        self._leader = False
        # followers asleep in wait(): (their wake lock, the request they wait for)
        self._sleepers: list[tuple] = []
        # a follower was woken to lead and has not taken the office yet
        self._called = False
        self._flushers = 0          # flush() calls waiting on the condition for the office
        # Run by the leader after each durable group, in seq order, with the log
        # position just past it: the caller applies the group and takes the
        # position together, so a snapshot never claims a group it lacks.
        self.on_durable = on_durable
        self.observer: Callable[[int, float], None] | None = None
        self.quarantined: list[str] = []
        # [segment, offset, seq, crc] of the last record recovery found
        self.last_frame: list[int] | None = None
        # a group's write + fdatasync in one compiled call that lets go of the
        # GIL once (fast.write_sync), unless the file layer's class does its
        # own writes or syncs (the tests' injected faults and crash model)
        fc = self.fs.file_class
        self._write_sync = fast.write_sync if (
            fc.write is File.write and fc.sync is File.sync) else None

    # ------------------------------------------------------------ opening
    def segment_files(self) -> list[str]:
        names = sorted(n for n in os.listdir(self.dir)
                       if n.startswith("segment-") and n.endswith(".log"))
        return [os.path.join(self.dir, n) for n in names]

    def open(self) -> None:
        """Read every segment header (nothing is changed on error)."""
        self.fs.makedirs(self.dir)
        paths = self.segment_files()
        prev = None
        for path in paths:
            number, first_seq, log_id = read_header(path)
            if self.log_id is None:
                self.log_id = log_id
            elif log_id != self.log_id:
                raise CorruptionError(
                    f"WAL segment {path} belongs to another store (log id differs); "
                    f"a WAL directory must hold one store's segments only", file=path)
            if prev is not None and number != prev + 1:
                raise CorruptionError(
                    f"WAL segment {path} follows segment {prev}: segments are missing",
                    file=path)
            prev = number
            seg = Segment(path, number, first_seq, log_id, os.path.getsize(path))
            self.segments.append(seg)

    def create_first(self, log_id: bytes | None = None) -> None:
        self.log_id = log_id or new_log_id()
        self.segments.append(Segment.create(self.fs, self.dir, 1, 1, self.log_id))

    def segment_bytes(self, seg: Segment, *, last: bool):
        """Every byte of ``seg`` for the scanner: the last segment read (it may
        be cut), a sealed one mapped."""
        if last:
            return seg.read(0, os.path.getsize(seg.path))
        seg.size = os.path.getsize(seg.path)
        seg.seal()
        return seg.buffer()

    def cut_tail(self, seg: Segment, buf, cut: int, end: int | None = None) -> None:
        """Move the torn bytes ``buf[cut:end]`` aside (durably) and truncate the
        segment at ``cut`` (zeros after ``end`` go with the cut; the WAL
        preallocates again).  Only recovery calls this, on the scanner's verdict."""
        end = len(buf) if end is None else end
        qdir = os.path.join(self.dir, "quarantine")
        self.fs.makedirs(qdir)
        qpath = os.path.join(qdir, f"{seg.name}.{cut}.torn")
        f = self.fs.open_append(qpath)
        try:
            f.truncate(0)
            f.write(bytes(buf[cut:end]))
            f.sync()
        finally:
            f.close()
        self.fs.fsync_dir(qdir)
        f = self.fs.open_append(seg.path)
        try:
            f.truncate(cut)
            f.sync_all()
        finally:
            f.close()
        self.quarantined.append(qpath)
        log.warning("Truncated torn write at end of WAL segment %s: %d bytes moved to %s",
                    seg.path, end - cut, qpath)

    def start_appending(self) -> None:
        """After recovery: seal all but the last segment and open it for appends."""
        for seg in self.segments[:-1]:
            if not seg.sealed:
                seg.size = os.path.getsize(seg.path)
                seg.seal()
        active = self.segments[-1]
        self._file = f = self.fs.open_append(active.path)
        size = f.size()
        if self.tail_zeros and size == active.size + self.tail_zeros:
            f.seek(active.size)     # reuse the zeros the scanner read as the clean end
            self._zero_end = size
            return
        if size != active.size:
            f.truncate(active.size)
        self._zero_end = active.size
        self._preallocate(active, 0)

    def _preallocate(self, seg: Segment, need: int) -> None:
        """Zero the active segment's file ``PREALLOC`` bytes past the ``need``
        bytes about to be written (no further than ``segment_size``), and
        sync the zeros, so that the groups written over them are data-only
        fdatasyncs.  No space for the zeros: go on without them (the group's
        own write then succeeds or fails on its own; no more preallocation
        until the store is reopened).  A failed sync raises
        (the caller stops writes: a failed fsync is never retried)."""
        if not self.prealloc:
            return
        want = seg.size + need
        target = min(want + self.prealloc, self.segment_size)
        if target < want or target <= self._zero_end:
            return                  # a group larger than a segment: plain append
        f = self._file
        assert f is not None, "start_appending() opened the active segment"
        start = max(self._zero_end, seg.size)
        try:
            f.zero_fill(start, target)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            f.truncate(start)
            f.seek(seg.size)
            self.prealloc = 0       # not again until the store is reopened
            log.warning("No space to preallocate %d bytes of WAL segment %s; appending "
                        "without preallocation until the store is reopened",
                        target - start, seg.path)
            return
        f.sync()
        self._zero_end = target

    # ------------------------------------------------------------ writing
    @property
    def position(self) -> tuple[int, int]:
        """(segment number, byte offset) just past the last durable record."""
        seg = self.segments[-1]
        return seg.number, seg.size

    def enqueue(self, req: Request) -> None:
        """Queue a request; call in seq order (the store's write mutex)."""
        with self._mu:
            if self.fault:
                raise StoreFaulted(f"writes are stopped after a storage fault: {self.fault}")
            self._queue.append(req)

    def wait(self, req: Request) -> None:
        """Return once ``req`` is durable and applied; raise if its group failed.

        Several threads may wait for one request (a put of a hash another
        put has queued); each sleeps on its own lock until the leader that
        made the request durable releases it, or picks it to lead next.
        """
        cv = self._cv
        cv.acquire()
        held = True
        try:
            while not req.done:
                if self._leader:
                    wake = _new_lock()
                    wake.acquire()
                    entry = (wake, req)
                    self._sleepers.append(entry)
                    cv.release()
                    held = False
                    try:
                        wake.acquire()    # released by a leader: done, or lead next
                    except BaseException:
                        self._leave(entry)
                        raise
                    if req.done:          # done and error are set before the release
                        if not self._leader and not self._called and self._sleepers:
                            self._hand_on()     # the office is vacant: see _wake
                        break
                    cv.acquire()
                    held = True
                    continue
                self._leader = True
                self._called = False
                group = None
                try:
                    if self.durability == "batch" and self.batch_delay > 0:
                        cv.wait(self.batch_delay)   # let more writers join this group
                    group, self._queue = self._queue, []
                    cv.release()
                    held = False
                    self._commit(group)
                except BaseException as exc:
                    if group:
                        self._abandon(group, exc)
                    raise
                finally:
                    if not held:
                        cv.acquire()
                        held = True
                    self._leader = False
                    if self._sleepers or self._flushers:
                        self._wake()
        finally:
            if held:
                cv.release()
        if req.error is not None:
            raise req.error

    def _leave(self, entry: tuple) -> None:
        """A follower interrupted in its sleep: take it off the list, and if a
        leader had already picked it to lead next, pass that on."""
        with self._cv:
            try:
                self._sleepers.remove(entry)
            except ValueError:      # released meanwhile: to lead, or to pass the office on
                if not self._leader:
                    self._called = False
                    self._call_heir()

    def _wake(self) -> None:
        """After a group (under the mutex): release every follower whose
        request is done; if none is, release the first one whose request is
        still queued, who leads next.  ``flush`` waits on the condition itself.

        With followers released, none still queued is woken: the leader, who
        holds the GIL, almost always comes back with its next put and takes
        the office again before a woken follower gets the GIL, and such a
        follower only found the office taken and slept again (two thread
        switches, and a GIL waiter that took the CPU from the leader as it
        let go of the GIL to write the next group).  Instead each released
        follower, once it runs, hands the office on if it is still vacant
        with followers queued (``_hand_on``): one of them runs after the
        leader let go of the GIL, so a writer that does not come back leaves
        nobody stranded."""
        sleepers = self._sleepers
        if sleepers:
            keep = []
            done = []
            for item in sleepers:
                if item[1].done:
                    done.append(item[0])
                else:
                    keep.append(item)
            self._sleepers = keep
            if done:
                for wake in done:
                    wake.release()
            elif keep:
                self._call_heir()
        if self._flushers:
            self._cv.notify_all()   # flush() waits for the office on the condition

    def _call_heir(self) -> None:
        """Release the first follower still queued, to lead (under the mutex)."""
        sleepers = self._sleepers
        if sleepers:
            self._called = True
            sleepers.pop(0)[0].release()

    def _hand_on(self) -> None:
        """A released follower's last step: call a leader if the office is
        vacant while followers wait (see ``_wake``)."""
        with self._cv:
            if not self._leader and not self._called:
                self._call_heir()

    def _commit(self, group: list[Request]) -> None:
        if not group:
            return
        if self.fault:
            self._fail(group, StoreFaulted(f"writes are stopped after a storage fault: {self.fault}"))
            return
        data = b"".join(r.data for r in group) if len(group) > 1 else group[0].data
        try:
            seg = self.segments[-1]
            if seg.size > SEGMENT_HEADER_SIZE and seg.size + len(data) > self.segment_size:
                seg = self._rotate(group[0])
            if seg.size + len(data) > self._zero_end:
                self._preallocate(seg, len(data))
            observer = self.observer
            t0 = self.clock() if observer is not None else 0.0
            f = self._file
            assert f is not None, "start_appending() opened the active segment"
            if self._write_sync is not None:
                self._write_sync(f.fd, data, self.durability != "none")
            else:
                f.write(data)
                if self.durability != "none":
                    f.sync()
            elapsed = self.clock() - t0 if observer is not None else 0.0
        except OSError as exc:
            self.fault = f"{type(exc).__name__}: {exc}"
            log.error("WAL write failed, writes stopped: %s", self.fault)
            self._fail(group, StoreFaulted(
                f"the outcome of this write is unknown: the log failed ({self.fault}) while "
                f"writing it, so it may or may not be on disk. Writes are stopped until the "
                f"store is reopened; then retrying is safe (an assertion already stored "
                f"answers with the same hash and status exists)"))
            return
        pos = seg.size
        number = seg.number
        for r in group:             # each request's first record (group_frames reads it)
            r.locs = [(number, pos)]
            pos += len(r.data)
        seg.size = pos
        if pos > self._zero_end:
            self._zero_end = pos
        tail = group[-1]
        last = tail.sizes[-1]
        k = len(tail.data) - last
        fr = tail.frames
        anchor = {"segment": number, "offset": pos, "last_record": [
            number, pos - last,
            fr[2][-1] if fr is not None else _U64.unpack_from(tail.data, k + FRAME_SEQ_OFF)[0],
            _U32.unpack_from(tail.data, k + FRAME_CRC_OFF)[0]]}
        try:
            self.on_durable(group, anchor)
        except BaseException as exc:  # an apply bug must not strand the waiters
            self.fault = f"index update failed: {exc!r}"
            log.exception("index update failed; writes stopped")
            self._fail(group, StoreFaulted(self.fault))
            return
        for r in group:
            r.done = True
        if observer is not None:
            observer(sum(len(r.sizes) for r in group), elapsed)

    def _abandon(self, group: list[Request], exc: BaseException) -> None:
        """The leader's commit of ``group`` was cut short by an exception that
        is not a failed write or apply (``_commit`` handles those): an
        interrupt (a signal handler's KeyboardInterrupt, raised in the leader
        when ``write_sync`` returns), or a bug.  The group's outcome is
        unknown (it may be on disk, not applied), so it fails as a failed
        write does: every request of it not done yet fails, and writes stop
        until the store is reopened.  Its other writers must not sleep for
        ever, nor a later group land behind records the state lacks."""
        if all(r.done for r in group):
            return
        if not self.fault:
            self.fault = f"{type(exc).__name__} while committing a group: {exc}"
            log.error("WAL commit interrupted, writes stopped: %s", self.fault)
        error = StoreFaulted(
            f"the outcome of this write is unknown: its commit was interrupted "
            f"({self.fault}), so it may or may not be on disk. Writes are stopped until "
            f"the store is reopened; then retrying is safe (an assertion already stored "
            f"answers with the same hash and status exists)")
        for r in group:
            if not r.done:
                r.error = error
                r.done = True

    def _fail(self, group, error) -> None:
        for r in group:
            r.error = error
            r.done = True

    def _rotate(self, first: Request) -> Segment:
        """Seal the active segment and start the next one."""
        old = self.segments[-1]
        f = self._file
        assert f is not None and self.log_id is not None, "rotating needs an open log"
        if self.durability == "none":
            # Groups were not synced; a sealed segment must never end torn
            # (recovery would call that corruption), so flush it once, here.
            f.sync()
        if self._zero_end > old.size:
            # sealed at the exact size of its records: only the last segment
            # may end in zeros; and the new size durable before the next
            # segment exists
            f.truncate(old.size)
            f.sync_all()
        f.close()
        first_seq = int.from_bytes(first.data[12:20], "little")
        new = Segment.create(self.fs, self.dir, old.number + 1, first_seq, self.log_id)
        old.seal()
        self.segments.append(new)
        self._file = self.fs.open_append(new.path)
        self._zero_end = new.size
        return new

    def read(self, segment_number: int, offset: int, length: int):
        seg = self.segments[segment_number - self.segments[0].number]
        return seg.read(offset, length)

    def segment(self, number: int) -> Segment:
        return self.segments[number - self.segments[0].number]

    def flush(self) -> None:
        """Make every record written so far durable.

        A no-op unless ``durability=none``, whose groups are not synced one
        by one: a snapshot calls this before it records a log position as
        durable (recovery refuses a log shorter than that position).  Takes
        the leader's office so that no group is being written meanwhile.
        """
        if self.durability != "none":
            return
        with self._cv:
            while self._leader:
                self._flushers += 1
                try:
                    self._cv.wait()
                finally:
                    self._flushers -= 1
            self._leader = True
            self._called = False    # the office is taken: a called follower sleeps again
        try:
            if self._file is not None and not self.fault:
                try:
                    self._file.sync()
                except OSError as exc:
                    self.fault = f"{type(exc).__name__}: {exc}"
                    log.error("WAL sync failed, writes stopped: %s", self.fault)
                    raise StoreFaulted(f"writes are stopped after a storage fault: "
                                       f"{self.fault}") from exc
        finally:
            with self._cv:
                self._leader = False
                self._wake()

    def close(self) -> None:
        if self._file is not None:
            try:
                size = self.segments[-1].size
                if self.fault:
                    pass            # nothing more is written to a faulted log
                elif self._zero_end > size:
                    self._file.truncate(size)   # a closed log ends at its last record
                    self._file.sync_all()
                elif self.durability != "none":
                    self._file.sync()
            finally:
                self._file.close()
                self._file = None
        for seg in self.segments:
            seg.close()
