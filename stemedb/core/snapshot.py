"""Index snapshots: the in-memory state written at a known log position.

File ``db/indexes/snapshot.idx`` (docs/format.md): a 52-byte header (magic,
version, meta length, BLAKE3 of everything after the header), a msgpack meta
block (log position, the sparse state, the array directory), then the raw
numpy arrays.  Written to a temp file, fsynced, renamed, directory fsynced,
so a crash leaves the old snapshot or the new one, never a mix.

A snapshot is trusted only if its minor version is
``format.SNAPSHOT_MINOR`` or later (an older one lacks the lens columns:
:class:`StaleSnapshot`), its checksum holds, its log id equals the WAL's, and the last record it covers is still in the WAL at the same place
with the same seq and CRC; otherwise the store rebuilds from the WAL.

Reading maps the file (``mmap``, private and copy-on-write): the columns
and the maps' sorted runs are numpy views over the mapping, not copies in
the heap, so an open costs what it touches and the pages are the page
cache's, shared with every process that reads the file.  The views are
never written in place: a column grows by copying into a new heap array
(``Columns._grow``), a sorted run by ``np.insert`` (``MultiMap.merge`` /
``extend``), and rows below ``Columns.n`` are never rewritten; the mapping
being private, even a stray write would change only this process's copy
of a page, never the file.  A later snapshot replaces the file by
rename while this one is still mapped: on Linux (POSIX) the mapping keeps
the old inode alive and valid until it is unmapped (when the last array
viewing it goes, at the latest when the store closes), so the disk holds
the old snapshot's blocks until then.  Writers replace the file, never
rewrite it in place, which the mapping relies on.

The checksum covers the whole body, so checking it reads every page of
the file once (from the page cache after a recent write); it is computed
over the mapping, without a copy into the heap, and the pages are then
dropped from this process (``MADV_DONTNEED``: nothing was written to them,
so they are read back from the page cache when touched).  Measured in
bench/results/snapshot-mmap-2026-11-26.md.
"""
from __future__ import annotations

import mmap
import os
from typing import Any, cast

import blake3
import msgspec
import numpy as np
from sortedcontainers import SortedList

from ..errors import CorruptionError, UnsupportedFormat
from .fileio import FileSystem
from .format import FORMAT_MAJOR, SNAPSHOT_HEADER, SNAPSHOT_MAGIC, SNAPSHOT_MINOR, SNAPSHOT_NAME
from .index import Columns, MultiMap
from .state import Epoch, Retraction, State

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder()
_MAPS = ("by_hash", "by_key", "by_path", "by_source")
ALIGN = 64                  # every array starts on a 64-byte boundary of the file


class StaleSnapshot(UnsupportedFormat):
    """A snapshot of an older minor version (format.SNAPSHOT_MINOR): sound,
    but without columns this version keeps.  Recovery rebuilds from the WAL
    (it catches CorruptionError, of which this is one) and writes a new one."""


def snapshot_path(db_dir: str) -> str:
    return os.path.join(db_dir, "indexes", SNAPSHOT_NAME)


def encode(state: State, position: dict) -> memoryview:
    """Serialize ``state`` (call with the index lock held; merges the maps).

    The file's bytes are laid out in one buffer and each array is copied
    into it once (joining per-array ``tobytes`` copies, then prefixing the
    header, moved every byte three times: 0.1 us per record of a rebuild's
    snapshot); the checksum is computed over the buffer in place.  The
    buffer is not zero-filled first (``bytearray(n)`` wrote and faulted in
    every page before the copies did: 73 of ~130 ms at 1,000,000 records);
    only the header, the meta and the alignment gaps are written besides the
    arrays.  Returned as a read-only byte memoryview of it (any buffer does
    for :func:`write`)."""
    arrays: list[tuple[str, np.ndarray]] = []
    for name, arr in state.cols.arrays().items():
        arrays.append(("col." + name, arr))
    for name in _MAPS:
        m: MultiMap = getattr(state, name)
        m.merge()
        arrays.append((name + ".keys", m.keys))
        arrays.append((name + ".vals", m.vals))
    directory, placed, off = [], [], 0
    for name, arr in arrays:
        off += -off % ALIGN
        directory.append([name, arr.dtype.str, list(arr.shape), off, arr.nbytes])
        placed.append((off, arr))
        off += arr.nbytes
    sparse = {
        "path_names": state.path_names,
        "pred_names": state.pred_names,
        "epochs": [[e.id, e.name, e.seq, e.recorded_at, e.supersedes, e.description]
                   for e in state.epochs.values()],
        "dependents": [[k, v] for k, v in state.dependents.items()],
        "revisions": [[k, v] for k, v in state.revisions.items()],
        "retracted": [[k, v] for k, v in state.retracted.items()],
        "retractions": [[r.seq, r.recorded_at, r.reason, r.by, r.target, r.count]
                        for r in state.retractions],
        "votes": [[k, [list(v) for v in vs]] for k, vs in state.votes.items()],
        "outcomes": [[k, [list(v) for v in vs]] for k, vs in state.outcomes.items()],
        "last_seq": state.last_seq,
        "last_recorded_at": state.last_recorded_at,
        "records": state.records,
    }
    meta = _aligned_meta({"position": position, "arrays": directory, "sparse": sparse})
    hs = SNAPSHOT_HEADER.size
    base = hs + len(meta)
    out = _buffer(base + off)            # uninitialized: every byte is written below
    out[hs:base] = np.frombuffer(meta, np.uint8)
    end = 0
    for at, arr in placed:
        out[base + end:base + at] = 0    # the alignment gap before this array
        if arr.nbytes:
            dst = out[base + at:base + at + arr.nbytes].view(arr.dtype)
            dst[:] = arr.reshape(-1)
        end = at + arr.nbytes
    raw = out.data                       # the array's bytes as a memoryview
    digest = blake3.blake3(raw[hs:], max_threads=blake3.blake3.AUTO).digest()
    SNAPSHOT_HEADER.pack_into(raw, 0, SNAPSHOT_MAGIC, FORMAT_MAJOR, SNAPSHOT_MINOR, len(meta),
                              digest)
    return raw.toreadonly()


def _buffer(n: int) -> np.ndarray:
    """``n`` bytes, not initialized (encode writes each one)."""
    return np.empty(n, dtype=np.uint8)


def _aligned_meta(fields: dict) -> bytes:
    """The meta map plus a ``pad`` entry (zero bytes) that makes the arrays
    begin on an ``ALIGN`` boundary of the file, so the views over the
    mapping are aligned (numpy copies an unaligned array in searchsorted
    and friends).  Built from the encoded entries, so the padding costs no
    second encoding of the sparse state; readers ignore ``pad``."""
    parts = [bytes([0x80 | (len(fields) + 1)])]   # msgpack fixmap: the fields and pad
    for k, v in fields.items():
        parts += [_enc.encode(k), _enc.encode(v)]
    n = SNAPSHOT_HEADER.size + sum(map(len, parts)) + len(_enc.encode("pad")) + 2
    pad = -n % ALIGN                           # bin 8: 0xc4, length, bytes
    parts += [_enc.encode("pad"), bytes([0xC4, pad]), bytes(pad)]
    return b"".join(parts)


def write(fs: FileSystem, db_dir: str, data: bytes | bytearray | memoryview) -> str:
    idx_dir = os.path.join(db_dir, "indexes")
    fs.makedirs(db_dir)
    fs.makedirs(idx_dir)
    path = snapshot_path(db_dir)
    # write_atomic writes any buffer (File.write takes a memoryview of it)
    fs.write_atomic(path, cast(bytes, data))
    return path


def read(path: str, *, verify: bool = True) -> tuple[State, dict]:
    """Load a snapshot, its arrays mapped (module doc); raises CorruptionError
    when it cannot be trusted.  ``verify=False`` skips the checksum (for
    measuring it; every caller in the store verifies)."""
    hs = SNAPSHOT_HEADER.size
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < hs:
            raise CorruptionError(f"index snapshot {path} has no valid header", file=path)
        # private and copy-on-write: the file is never written through it
        data = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    if data[:8] != SNAPSHOT_MAGIC:
        raise CorruptionError(f"index snapshot {path} has no valid header", file=path)
    _m, major, minor, meta_len, digest = SNAPSHOT_HEADER.unpack_from(data)
    if major != FORMAT_MAJOR:
        raise UnsupportedFormat(f"index snapshot {path} is format {major}.{minor}; "
                                f"this StemeDB reads {FORMAT_MAJOR}.x", file=path)
    if minor < SNAPSHOT_MINOR:
        # checked before the checksum: the columns it lacks cannot be made up
        raise StaleSnapshot(f"index snapshot {path} is version {major}.{minor}, from before "
                            f"the lens columns (this StemeDB writes {FORMAT_MAJOR}."
                            f"{SNAPSHOT_MINOR})", file=path)
    if verify:
        with memoryview(data) as whole, whole[hs:] as body:
            ok = blake3.blake3(body, max_threads=blake3.blake3.AUTO).digest() == digest
        if hasattr(data, "madvise"):
            # drop the pages the checksum touched from this process's RSS; nothing
            # was written to them, so a later touch reads them from the page cache
            data.madvise(mmap.MADV_DONTNEED)
        if not ok:
            raise CorruptionError(f"index snapshot {path} fails its checksum", file=path)
    if hs + meta_len > size:
        raise CorruptionError(f"index snapshot {path} is shorter than its meta block", file=path)
    try:
        meta = _dec.decode(data[hs:hs + meta_len])
    except msgspec.DecodeError as exc:
        raise CorruptionError(f"index snapshot {path} has an unreadable meta block: {exc}",
                              file=path) from None
    base = hs + meta_len
    arrays = {}
    for name, dtype, shape, off, n in meta["arrays"]:
        dt = np.dtype(dtype)
        if base + off + n > size:
            raise CorruptionError(f"index snapshot {path} is shorter than its array {name}",
                                  file=path)
        if n == 0:
            arr = np.empty(0, dtype=dt)
        else:
            arr = np.frombuffer(data, dtype=dt, count=n // dt.itemsize, offset=base + off)
            if not arr.flags.aligned:
                arr = arr.copy()                # a snapshot written before arrays were aligned
        arrays[name] = arr.reshape(shape)
    st = State()
    # views over the mapping: growth copies (Columns._grow, MultiMap.merge/extend)
    st.cols = Columns.from_arrays({k[4:]: v for k, v in arrays.items() if k.startswith("col.")})
    for name in _MAPS:
        m = MultiMap(getattr(st, name).dtype)
        m.keys = arrays[name + ".keys"]
        m.vals = arrays[name + ".vals"]
        setattr(st, name, m)
    sp = meta["sparse"]
    st.path_names = list(sp["path_names"])
    st.path_ids = {p: i for i, p in enumerate(st.path_names)}
    st.sorted_paths = SortedList(st.path_names)
    st.pred_names = list(sp["pred_names"])
    st.pred_ids = {p: i for i, p in enumerate(st.pred_names)}
    st.epoch_names = [None]
    for eid, name, seq, rec, sup, desc in sorted(sp["epochs"]):
        st.epochs[name] = Epoch(eid, name, seq, rec, list(sup), desc)
        st.epoch_names.append(name)
        st.epoch_ids[name] = eid
    st.dependents = {k: list(v) for k, v in sp["dependents"]}
    st.revisions = {k: list(v) for k, v in sp["revisions"]}
    st.retracted = {k: v for k, v in sp["retracted"]}
    st.retractions = [Retraction(seq, rec, reason, by, target, count)
                      for seq, rec, reason, by, target, count in sp["retractions"]]
    st.votes = {k: [tuple(v) for v in vs] for k, vs in sp["votes"]}
    st.outcomes = {k: [tuple(v) for v in vs] for k, vs in sp["outcomes"]}
    st.last_seq = sp["last_seq"]
    st.last_recorded_at = sp["last_recorded_at"]
    st.records = sp["records"]
    return st, meta["position"]


def mapping_of(arr: np.ndarray) -> mmap.mmap | None:
    """The snapshot mapping ``arr`` views, or None when it is in the heap."""
    b: Any = arr
    while b is not None:
        if isinstance(b, memoryview):
            b = b.obj                   # np.frombuffer's base is a memoryview of the map
        if isinstance(b, mmap.mmap):
            return b
        b = getattr(b, "base", None)
    return None
