"""The in-memory indexes, lean enough for millions of assertions.

Per assertion, by ordinal (its position in log order), numpy columns hold
what filters and the lenses need without touching the log: seq, location,
timestamp, recorded_at, lifecycle, epoch id, the full hash, and for the
lenses the confidence, the source class rank and the value id
(:func:`value_id`).  Lookups go through
:class:`MultiMap`: a sorted numpy run (binary search) plus a small dict of
recent additions, merged into the run when it grows past ``MERGE_AT``.  The
memory per entry is 12 bytes in the run instead of ~150 for a Python dict
entry with boxed ints (measured in bench/results).

Everything sparse (retractions, votes, dependents, revisions, epochs, trust
outcomes) lives in plain dicts.
"""
from __future__ import annotations

import google_crc32c
import numpy as np

from .format import VALUE_HASHED, VALUE_INLINE


MERGE_AT = 65536
PRED_BITS = 24


_recent_items = None
_merge_runs = None


def use_compiled_merge(items, merge) -> None:
    """Let ``items`` (``_fast.recent_items``) build a merge's keys and
    ordinals and ``merge`` (``_fast.merge_runs``) merge them into the run
    from now on (the same arrays as the pure twins); called by
    ``stemedb.core.fast``, so this module imports nothing of the compiled
    build (no import cycle).  None, None: the pure twins again."""
    global _recent_items, _merge_runs
    _recent_items, _merge_runs = items, merge


def merge_runs_py(keys: np.ndarray, vals: np.ndarray, ks: np.ndarray,
                  vs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted run ``keys``/``vals`` with the sorted ``ks``/``vs``
    merged in, each after the run's equal keys: recent ordinals are all
    larger than the run's, so every key's ordinals stay ascending.  New
    arrays; the pure twin of ``_fast.merge_runs``."""
    pos = keys.searchsorted(ks, "right")
    return np.insert(keys, pos, ks), np.insert(vals, pos, vs)


def recent_items_py(recent: dict, n: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """The pure twin of ``_fast.recent_items``: what :meth:`MultiMap.merge`
    builds without it."""
    ks = np.fromiter((k for k, lst in recent.items() for _ in lst), dtype=dtype, count=n)
    vs = np.fromiter((v for lst in recent.values() for v in lst), dtype=np.int32, count=n)
    return ks, vs


def h64(h: bytes) -> int:
    """The 64-bit prefix of a hash (or any bytes), as an index key."""
    return int.from_bytes(h[:8], "little")


_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_M64 = 0xFFFFFFFFFFFFFFFF


def str64(s: str) -> int:
    """FNV-1a 64 of the UTF-8 bytes: the source index key (docs/format.md).

    Not cryptographic and need not be: every lookup compares the stored
    source string.  Chosen over BLAKE3 because the compiled rebuild computes
    it inside its C loop (a Python call per record cost 2 us); the compiled
    twin is ``_fast.fnv1a64``.
    """
    return bytes64(s.encode("utf-8", "surrogatepass"))


def bytes64(b: bytes) -> int:
    """FNV-1a 64 of raw bytes: :func:`str64` of a source as its record stores it."""
    h = _FNV_OFFSET
    for c in b:
        h = ((h ^ c) * _FNV_PRIME) & _M64
    return h


def stable_order(keys: np.ndarray) -> np.ndarray:
    """``np.argsort(keys, kind="stable")``, three to eight times faster.

    numpy's stable sort of 64-bit keys is a timsort (29 ms for 200,000
    random keys here); its default sort is a vectorized introsort (6 ms),
    and sorting one int64 array, not its argsort, costs 2 ms.  So:
    non-negative keys that leave room for the index's bits (concept path
    ids, index keys) sort as one int64 array of ``key << bits | index``.
    Other 64-bit keys (hash prefixes, source keys) sort as one uint64 array
    of ``top (64 - bits) bits of the key | index`` (at 1,000,000 keys 13 ms
    against 38 for the introsort's argsort); entries whose top bits tie with
    a neighbour's (equal keys, or keys differing only in their low bits: a
    few in a million for random ones) are then put in (key, index) order by
    one sort of that small subset.  Other dtypes take the introsort and,
    only when keys repeat, one sort of ``run number << 32 | index``.  The
    rebuild sorts every index run this way (MultiMap.extend).
    """
    n = len(keys)
    if n < 2:
        return np.arange(n, dtype=np.int64)
    if n >= 2**32:                      # an index does not fit in 32 bits
        return np.argsort(keys, kind="stable")
    bits = (n - 1).bit_length()
    if keys.dtype.kind in "iu" and int(keys.min()) >= 0 and int(keys.max()) < 2**(63 - bits):
        comp = (keys.astype(np.int64) << bits) | np.arange(n, dtype=np.int64)
        comp.sort()
        return comp & np.int64((1 << bits) - 1)
    if keys.dtype in (np.uint64, np.int64):
        return _stable_order_u64(keys, bits)
    order = np.argsort(keys)
    ks = keys[order]
    new_run = ks[1:] != ks[:-1]
    if bool(new_run.all()):
        return order
    run = np.empty(n, dtype=np.int64)
    run[0] = 0
    np.cumsum(new_run, out=run[1:])
    comp = (run << 32) | order
    comp.sort()
    return comp & np.int64(0xFFFFFFFF)


def _stable_order_u64(keys: np.ndarray, bits: int) -> np.ndarray:
    """:func:`stable_order` of uint64 or int64 keys, ``n <= 2**bits``."""
    n = len(keys)
    u = np.ascontiguousarray(keys).view(np.uint64)
    if keys.dtype == np.int64:          # signed order as unsigned: flip the sign bit
        u = u ^ np.uint64(1 << 63)
    low = np.uint64((1 << bits) - 1)
    comp = u & ~low
    comp |= np.arange(n, dtype=np.uint64)
    comp.sort()
    order = (comp & low).view(np.int64)
    comp &= ~low                        # the top bits, in sorted order
    tie = comp[1:] == comp[:-1]
    if not bool(tie.any()):
        return order
    # Runs of equal top bits hold their entries in index order; sort each
    # run's entries by (full key, index): lexsort is stable, the run primary.
    in_run = np.zeros(n, dtype=bool)
    in_run[1:] = tie
    in_run[:-1] |= tie
    at = np.flatnonzero(in_run)
    run = np.empty(n, dtype=np.int64)
    run[0] = 0
    np.cumsum(~tie, out=run[1:])
    sub = order[at]
    order[at] = sub[np.lexsort((u[sub], run[at]))]
    return order


def add_recent(recent: dict, keys: np.ndarray, first: int, vals: np.ndarray | None = None) -> int:
    """Append ordinal ``first + i`` (or ``vals[i]``) under ``keys[i]`` in a
    :class:`MultiMap`'s recent dict, for every ``i``; returns how many.  The
    pure twin of ``_fast.add_recent``, which ``State`` hands to
    :meth:`MultiMap.add_run` (``fast.add_recent`` chooses): ``keys`` a 1-d
    int64 or uint64 array, ``vals`` an int32 one.  O(len(keys))."""
    if keys.ndim != 1 or keys.dtype not in (np.int64, np.uint64) \
            or not keys.flags.c_contiguous:
        raise ValueError("add_recent: keys must be a contiguous 1-d int64 or uint64 array")
    n = len(keys)
    if vals is not None and (vals.ndim != 1 or vals.dtype != np.int32
                             or not vals.flags.c_contiguous or len(vals) < n):
        raise ValueError(f"add_recent: vals must be a contiguous int32 array of {n} rows")
    ords = range(first, first + n) if vals is None else vals[:n].tolist()
    for k, o in zip(keys.tolist(), ords):
        lst = recent.get(k)
        if lst is None:
            recent[k] = [o]
        else:
            lst.append(o)
    return n


def find_hash(keys: np.ndarray, vals: np.ndarray, recent: dict, hashes: np.ndarray,
              h: bytes) -> int | None:
    """The ordinal whose full hash (a row of ``hashes``) is ``h``, or None:
    the entries of a by-hash :class:`MultiMap` (its run ``keys``/``vals``,
    then its ``recent`` dict) under ``h``'s 64-bit prefix, run first, each
    compared whole.  The pure twin of ``_fast.find_hash``
    (``fast.find_hash`` chooses; ``State.ordinal`` calls it).  O(log n)."""
    if type(h) is not bytes or len(h) != 32:
        raise ValueError("find_hash: a hash is 32 bytes")
    if keys.ndim != 1 or keys.dtype != np.uint64 or not keys.flags.c_contiguous \
            or vals.ndim != 1 or vals.dtype != np.int32 or not vals.flags.c_contiguous \
            or len(vals) < len(keys):
        raise ValueError("find_hash: keys must be a contiguous uint64 run, vals its int32 ordinals")
    if hashes.ndim != 2 or hashes.shape[1] != 32 or hashes.dtype != np.uint8 \
            or not hashes.flags.c_contiguous:
        raise ValueError("find_hash: hashes must be a contiguous array of 32-byte rows")
    k = int.from_bytes(h[:8], "little")
    rows = len(hashes)
    cands: list[int] = []
    if len(keys):
        i = int(keys.searchsorted(np.uint64(k), "left"))
        j = int(keys.searchsorted(np.uint64(k), "right"))
        cands = vals[i:j].tolist()
    for o in cands + recent.get(k, []):
        if not 0 <= o < rows:
            raise IndexError(f"find_hash: ordinal {o} is beyond the {rows} rows of hashes")
        if hashes[o].tobytes() == h:
            return o
    return None


def find_hashes(keys: np.ndarray, vals: np.ndarray, recent: dict, hashes: np.ndarray,
                hs: list[bytes]) -> list[int | None]:
    """:func:`find_hash` of each of ``hs`` (a batch's dedupe lookup); the pure
    twin of ``_fast.find_hashes``.  O(len(hs) log n)."""
    return [find_hash(keys, vals, recent, hashes, h) for h in hs]


class MultiMap:
    """int key -> ordinals in ascending order.  Sorted run + recent dict.

    ``get`` is O(log n + k); ``add`` is O(1) amortized (a merge of the recent
    dict into the run is O(n) every ``MERGE_AT`` additions).  Ordinals are
    added in ascending order, so each key's list stays sorted.
    """

    __slots__ = ("keys", "vals", "recent", "n_recent", "dtype")

    def __init__(self, dtype=np.int64):
        self.dtype = dtype
        self.keys = np.empty(0, dtype=dtype)
        self.vals = np.empty(0, dtype=np.int32)
        self.recent: dict[int, list[int]] = {}
        self.n_recent = 0

    @classmethod
    def build(cls, keys: np.ndarray, vals: np.ndarray, dtype=np.int64) -> "MultiMap":
        m = cls(dtype)
        order = np.argsort(keys, kind="stable")
        m.keys = np.ascontiguousarray(keys[order], dtype=dtype)
        m.vals = np.ascontiguousarray(vals[order], dtype=np.int32)
        return m

    def add(self, key: int, ordinal: int) -> None:
        lst = self.recent.get(key)
        if lst is None:
            self.recent[key] = [ordinal]
        else:
            lst.append(ordinal)
        self.n_recent += 1
        if self.n_recent >= MERGE_AT:
            self.merge()

    def add_many(self, keys: list[int], ordinals) -> None:
        """``add(k, o)`` for each pair, ordinals ascending: one durable group
        in one loop (no method call per pair), then at most one merge."""
        recent = self.recent
        n = 0
        for k, o in zip(keys, ordinals):
            lst = recent.get(k)
            if lst is None:
                recent[k] = [o]
            else:
                lst.append(o)
            n += 1
        self.n_recent += n
        if self.n_recent >= MERGE_AT:
            self.merge()

    def add_run(self, keys: np.ndarray, first: int, vals: np.ndarray | None = None,
                adder=add_recent) -> None:
        """Add the pairs of one applied group: ``keys[i]`` to ordinal ``first + i``
        (or to ``vals[i]``), every ordinal above the stored ones.  ``adder``
        puts a small group into the recent dict (:func:`add_recent`, or its
        compiled twin, which ``State`` passes).

        A group that is large next to the map (a replayed segment, a bulk load
        into a young store) is sorted into the run at once: ``extend``, O(run +
        k log k).  A smaller one goes to the recent dict, O(k) plus the
        amortized merge, since inserting it into a long run would copy the run
        for a few keys (a group of 1,000 into a run of 1,000,000: 12 MB moved).
        """
        k = len(keys)
        if not k:
            return
        if k >= MERGE_AT or k * 64 >= len(self.keys) + self.n_recent:
            if vals is None:
                vals = np.arange(first, first + k, dtype=np.int32)
            self.extend(keys, vals)
        else:
            self.n_recent += adder(self.recent, keys, first, vals)
            if self.n_recent >= MERGE_AT:
                self.merge()

    def get(self, key: int) -> list[int]:
        out = []
        keys = self.keys
        if len(keys):
            k = self.dtype(key)
            i = int(keys.searchsorted(k, "left"))
            if i < len(keys) and keys[i] == k:
                j = int(keys.searchsorted(k, "right"))
                out = self.vals[i:j].tolist()
        r = self.recent.get(key)
        if r:
            out = out + r if out else list(r)
        return out

    def extend(self, keys: np.ndarray, vals: np.ndarray) -> None:
        """Add many (key, ordinal) pairs whose ordinals exceed every stored one."""
        self.merge()
        order = stable_order(keys)
        ks = np.ascontiguousarray(keys[order], dtype=self.dtype)
        vs = np.ascontiguousarray(vals[order], dtype=np.int32)
        if not len(self.keys):
            self.keys, self.vals = ks, vs
            return
        pos = self.keys.searchsorted(ks, "right")
        self.keys = np.insert(self.keys, pos, ks)
        self.vals = np.insert(self.vals, pos, vs)

    def get_many(self, keys: list[int]) -> list[int]:
        """Ordinals under any of ``keys`` (unordered): one vectorized search."""
        out: list[int] = []
        if not keys:
            return out
        run = self.keys
        if len(run):
            ks = np.fromiter(keys, dtype=self.dtype, count=len(keys))
            lo = run.searchsorted(ks, "left")
            hi = run.searchsorted(ks, "right")
            for a, b in zip(lo[hi > lo].tolist(), hi[hi > lo].tolist()):
                out.extend(self.vals[a:b].tolist())
        recent = self.recent
        if recent:
            for k in keys:
                lst = recent.get(k)
                if lst:
                    out.extend(lst)
        return out

    def merge(self) -> None:
        if not self.recent:
            return
        # the compiled twin when fast.py gave it (use_compiled_merge)
        ks, vs = (_recent_items or recent_items_py)(self.recent, self.n_recent, self.dtype)
        order = stable_order(ks)        # np.argsort(ks, kind="stable"), faster
        ks, vs = ks[order], vs[order]
        self.keys, self.vals = (_merge_runs or merge_runs_py)(self.keys, self.vals, ks, vs)
        self.recent = {}
        self.n_recent = 0

    def __len__(self) -> int:
        return len(self.keys) + self.n_recent

    def check(self, name: str) -> list[str]:
        out = []
        if len(self.keys) != len(self.vals):
            out.append(f"index {name}: {len(self.keys)} keys but {len(self.vals)} values")
        if len(self.keys) > 1 and bool(np.any(self.keys[1:] < self.keys[:-1])):
            out.append(f"index {name}: sorted run out of order")
        if sum(len(v) for v in self.recent.values()) != self.n_recent:
            out.append(f"index {name}: recent count off")
        return out




def value_id(v: bytes) -> tuple[int, int]:
    """The value id ``(va, vb)`` of canonical value bytes: two uint64 (the
    ``va`` and ``vb`` columns) that the lenses group equal values by.

    A value of at most :data:`VALUE_INLINE` bytes is its own id, so ids are
    equal exactly when the values are: the 16 little-endian bytes ``[len] +
    value + zero padding``.  A longer one gets ``va = 0xFF | len << 8 |
    crc32c(value) << 32`` (the length masked to 24 bits) and ``vb`` = its
    last 8 bytes read as a little-endian uint64: equal values get equal ids,
    but two different values may too, so a lens that groups two or more
    candidates under a hashed id compares their bytes first
    (``query.column_rows``).  The compiled twin computes it inside
    ``_fast.index_records``.  O(len(v)).
    """
    n = len(v)
    if n <= VALUE_INLINE:
        b = bytes((n,)) + bytes(v) + bytes(VALUE_INLINE - n)
        return int.from_bytes(b[:8], "little"), int.from_bytes(b[8:], "little")
    return (VALUE_HASHED | (n & 0xFFFFFF) << 8 | google_crc32c.value(v) << 32,
            int.from_bytes(v[n - 8:], "little"))


class Columns:
    """Growable numpy columns, one row per assertion ordinal.

    ``conf`` (the stored confidence, exact), ``rank`` (the source class,
    0 = regulatory) and ``va``/``vb`` (:func:`value_id`) are what the
    ``rows_only`` lenses read, so a query ranks its candidates without
    decoding them (25 bytes per assertion)."""

    SPEC = {
        "seq": np.int64, "loc": np.int64, "ts": np.int64, "rec": np.int64,
        "key": np.int64, "path": np.int32, "epoch": np.int32, "lc": np.int8,
        "conf": np.float64, "rank": np.uint8, "va": np.uint64, "vb": np.uint64,
    }
    # made by __init__ from SPEC (setattr), declared here for the type checker
    seq: np.ndarray
    loc: np.ndarray
    ts: np.ndarray
    rec: np.ndarray
    key: np.ndarray
    path: np.ndarray
    epoch: np.ndarray
    lc: np.ndarray
    conf: np.ndarray
    rank: np.ndarray
    va: np.ndarray
    vb: np.ndarray
    rows: tuple

    def __init__(self, capacity: int = 1024):
        self.n = 0
        self.cap = max(16, capacity)
        for name, dt in self.SPEC.items():
            setattr(self, name, np.empty(self.cap, dtype=dt))
        self.hashes = np.empty((self.cap, 32), dtype=np.uint8)
        self._set_rows()

    def _set_rows(self) -> None:
        """``rows``: every column in ``index_records``' order, one tuple (a
        single put's apply hands it over instead of 13 attribute reads).
        Set wherever the arrays are replaced: here, ``_grow``, ``from_arrays``."""
        self.rows = (self.seq, self.loc, self.ts, self.rec, self.key, self.path, self.epoch,
                     self.lc, self.conf, self.rank, self.va, self.vb, self.hashes)

    def _grow(self, need: int) -> None:
        cap = self.cap
        while cap < need:
            cap *= 2
        for name in self.SPEC:
            old = getattr(self, name)
            new = np.empty(cap, dtype=old.dtype)
            new[:self.n] = old[:self.n]
            setattr(self, name, new)
        new = np.empty((cap, 32), dtype=np.uint8)
        new[:self.n] = self.hashes[:self.n]
        self.hashes = new
        self.cap = cap
        self._set_rows()

    def append(self, seq, loc, ts, rec, key, path, epoch, lc, h: bytes, conf=0.0, rank=0,
               va=0, vb=0) -> int:
        i = self.n
        if i >= self.cap:
            self._grow(i + 1)
        self.conf[i] = conf
        self.rank[i] = rank
        self.va[i] = va
        self.vb[i] = vb
        self.seq[i] = seq
        self.loc[i] = loc
        self.ts[i] = ts
        self.rec[i] = rec
        self.key[i] = key
        self.path[i] = path
        self.epoch[i] = epoch
        self.lc[i] = lc
        self.hashes[i] = np.frombuffer(h, dtype=np.uint8)
        self.n = i + 1
        return i

    def hash_of(self, i: int) -> bytes:
        return self.hashes[i].tobytes()

    def arrays(self) -> dict[str, np.ndarray]:
        d = {name: getattr(self, name)[:self.n] for name in self.SPEC}
        d["hashes"] = self.hashes[:self.n]
        return d

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Columns":
        n = len(arrays["seq"])
        c = cls.__new__(cls)
        c.n = n
        c.cap = max(16, n)
        for name, dt in cls.SPEC.items():
            setattr(c, name, np.ascontiguousarray(arrays[name], dtype=dt))
        c.hashes = np.ascontiguousarray(arrays["hashes"], dtype=np.uint8).reshape(n, 32)
        c._set_rows()
        if n < 16:
            c._grow(16)
        return c


def pack_loc(segment: int, offset: int) -> int:
    return (segment << 40) | offset


def unpack_loc(loc: int) -> tuple[int, int]:
    return loc >> 40, loc & ((1 << 40) - 1)
