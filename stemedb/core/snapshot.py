"""Index snapshots: the in-memory state written at a known log position.

File ``db/indexes/snapshot.idx`` (docs/format.md): a 52-byte header (magic,
version, meta length, BLAKE3 of everything after the header), a msgpack meta
block (log position, the sparse state, the array directory), then the raw
numpy arrays.  Written to a temp file, fsynced, renamed, directory fsynced,
so a crash leaves the old snapshot or the new one, never a mix.

A snapshot is trusted only if its checksum holds, its log id equals the
WAL's, and the last record it covers is still in the WAL at the same place
with the same seq and CRC; otherwise the store rebuilds from the WAL.
"""
from __future__ import annotations

import os

import blake3
import msgspec
import numpy as np
from sortedcontainers import SortedList

from ..errors import CorruptionError, UnsupportedFormat
from .fileio import FileSystem
from .format import FORMAT_MAJOR, FORMAT_MINOR, SNAPSHOT_HEADER, SNAPSHOT_MAGIC, SNAPSHOT_NAME
from .index import Columns, MultiMap
from .state import Epoch, Retraction, State

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder()
_MAPS = ("by_hash", "by_key", "by_path", "by_source")


def snapshot_path(db_dir: str) -> str:
    return os.path.join(db_dir, "indexes", SNAPSHOT_NAME)


def encode(state: State, position: dict) -> bytes:
    """Serialize ``state`` (call with the index lock held; merges the maps)."""
    arrays: list[tuple[str, np.ndarray]] = []
    for name, arr in state.cols.arrays().items():
        arrays.append(("col." + name, arr))
    for name in _MAPS:
        m: MultiMap = getattr(state, name)
        m.merge()
        arrays.append((name + ".keys", m.keys))
        arrays.append((name + ".vals", m.vals))
    directory, blobs, off = [], [], 0
    for name, arr in arrays:
        raw = np.ascontiguousarray(arr).tobytes()
        directory.append([name, arr.dtype.str, list(arr.shape), off, len(raw)])
        blobs.append(raw)
        off += len(raw)
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
    meta = _enc.encode({"position": position, "arrays": directory, "sparse": sparse})
    body = meta + b"".join(blobs)
    head = SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, FORMAT_MAJOR, FORMAT_MINOR, len(meta),
                                blake3.blake3(body).digest())
    return head + body


def write(fs: FileSystem, db_dir: str, data: bytes) -> str:
    idx_dir = os.path.join(db_dir, "indexes")
    fs.makedirs(db_dir)
    fs.makedirs(idx_dir)
    path = snapshot_path(db_dir)
    fs.write_atomic(path, data)
    return path


def read(path: str) -> tuple[State, dict]:
    """Load a snapshot; raises CorruptionError when it cannot be trusted."""
    with open(path, "rb") as f:
        data = f.read()
    hs = SNAPSHOT_HEADER.size
    if len(data) < hs or data[:8] != SNAPSHOT_MAGIC:
        raise CorruptionError(f"index snapshot {path} has no valid header", file=path)
    _m, major, minor, meta_len, digest = SNAPSHOT_HEADER.unpack_from(data)
    if major != FORMAT_MAJOR:
        raise UnsupportedFormat(f"index snapshot {path} is format {major}.{minor}; "
                                f"this StemeDB reads {FORMAT_MAJOR}.x", file=path)
    body = memoryview(data)[hs:]
    if blake3.blake3(body).digest() != digest:
        raise CorruptionError(f"index snapshot {path} fails its checksum", file=path)
    meta = _dec.decode(body[:meta_len])
    base = hs + meta_len
    arrays = {}
    for name, dtype, shape, off, n in meta["arrays"]:
        arrays[name] = np.frombuffer(data, dtype=np.dtype(dtype), count=n // np.dtype(dtype).itemsize,
                                     offset=base + off).reshape(shape)
    st = State()
    st.cols = Columns.from_arrays({k[4:]: v.copy() for k, v in arrays.items() if k.startswith("col.")})
    for name in _MAPS:
        m = MultiMap(getattr(st, name).dtype)
        m.keys = arrays[name + ".keys"].copy()
        m.vals = arrays[name + ".vals"].copy()
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
