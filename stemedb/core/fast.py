"""Chooses the compiled twin (``_fast``) or the pure-Python reference.

``STEMEDB_PURE_PYTHON=1`` forces the pure path; ``STEMEDB_REQUIRE_FAST=1``
makes a missing compiled build fatal (CI runs the suite both ways).  Both
paths give the same answers (tests/unit/test_fast_parity.py).

The hash path's twin, ``_canon`` (RFC 8785 canonical form, the hashed object,
the concept path and source checks), is chosen the same way, by
``stemedb.canonical`` itself: ``model`` needs it and ``codec`` imports
``model``, so choosing it here would close an import cycle.
``CANON_COMPILED`` says which one runs (tests/unit/test_canon.py).
"""
from __future__ import annotations

import os
from itertools import repeat
from operator import attrgetter
from typing import Any

import msgspec

from .. import canonical as _canonical
from . import codec, records
from . import index as _index


def _flag(name: str) -> bool:
    """A 0|1 setting read the way Settings reads booleans (false/no/off are off)."""
    return os.environ.get(name, "0").strip().lower() not in ("", "0", "false", "no", "off")


_pure = _flag("STEMEDB_PURE_PYTHON")
_require = _flag("STEMEDB_REQUIRE_FAST")
if _pure and _require:
    raise ImportError("STEMEDB_PURE_PYTHON=1 and STEMEDB_REQUIRE_FAST=1 contradict each other")

_fast: Any = None       # the compiled module, or None
if not _pure:
    try:
        # a Cython extension: no stubs, so its attributes are typed Any
        from . import _fast  # type: ignore[attr-defined, no-redef]
    except ImportError as exc:
        if _require:
            raise ImportError(
                "STEMEDB_REQUIRE_FAST=1 but the compiled extension stemedb.core._fast is "
                "missing; build it with `pip install -e .` (needs Cython and a C compiler)"
            ) from exc
        _fast = None

COMPILED = _fast is not None
CANON_COMPILED = _canonical.COMPILED
scan_frames = _fast.scan_frames if COMPILED else codec.scan_frames
index_records = _fast.index_records if COMPILED else records.index_records
# the older one-segment interface over index_records (bench/costs.py's extract stage)
extract_segment = _fast.extract_segment if COMPILED else records.extract_with(index_records)
decode_assert = _fast.decode_assert if COMPILED else codec.decode_assert


def encode_assert_frames_py(records, seqs, recorded_at=None) -> tuple[bytes, list[int]]:
    """``codec.encode_assert_frames`` with the compiled twin's ``recorded_at``:
    when given (an int64), every record is framed with it as its recorded_at
    (the writer's stamp) instead of its own.  The pure twin of
    ``_fast.encode_assert_frames``."""
    if recorded_at is not None:
        if type(recorded_at) is not int or not -(1 << 63) <= recorded_at < (1 << 63):
            raise ValueError(f"recorded_at must be an int64 microsecond time, not {recorded_at!r}")
        records = [_replace(r, recorded_at=recorded_at) for r in records]
    return codec.encode_assert_frames(records, seqs)


def pending_add_py(pending: dict, recs: list, seqs: list, req) -> None:
    """``pending[recs[i].hash] = (seqs[i], req)`` for every ``i``: the pure
    twin of ``_fast.pending_add`` (whose tuples are not tracked by the
    garbage collector)."""
    if len(seqs) != len(recs):
        raise ValueError("pending_add: one seq per record")
    pending.update(zip(map(_hash_of, recs), zip(seqs, repeat(req))))


def no_refs_py(records: list) -> bool:
    """Whether no record names a parent, a source assertion or an epoch
    (``parent_hash``, ``derived_from`` and ``epoch`` all None): the pure
    twin of ``_fast.no_refs`` (a batch's check before its per-batch path,
    writer._put_many).  O(len(records))."""
    if type(records) is not list:
        raise TypeError("no_refs: records must be a list")
    n = len(records)
    return (list(map(_parent_of, records)).count(None) == n
            and list(map(_derived_of, records)).count(None) == n
            and list(map(_epoch_of, records)).count(None) == n)


_hash_of = attrgetter("hash")
_parent_of = attrgetter("parent_hash")
_derived_of = attrgetter("derived_from")
_epoch_of = attrgetter("epoch")
_replace = msgspec.structs.replace
encode_assert_frames = _fast.encode_assert_frames if COMPILED else encode_assert_frames_py
bump_gens = _fast.bump_gens if COMPILED else records.bump_gens
# one applied assertion's map entries and generations (State._apply_one, compiled build)
add_one = _fast.add_one if COMPILED else records.add_one
# the WAL's write + fdatasync in one release of the GIL; None: File.write, File.sync
write_sync = _fast.write_sync if COMPILED else None
index_one = _fast.index_one if COMPILED else records.index_one
# a durable group of single puts, applied in one call (the on-durable step, W1/W2)
apply_puts = _fast.apply_puts if COMPILED else records.apply_puts
# MultiMap.add / add_many; compiled, a new key's list is not tracked by the GC
map_add = _fast.map_add if COMPILED else _index.MultiMap.add
map_add_many = _fast.map_add_many if COMPILED else _index.MultiMap.add_many
pending_add = _fast.pending_add if COMPILED else pending_add_py
no_refs = _fast.no_refs if COMPILED else no_refs_py
find_hash = _fast.find_hash if COMPILED else _index.find_hash
find_hashes = _fast.find_hashes if COMPILED else _index.find_hashes
add_recent = _fast.add_recent if COMPILED else _index.add_recent
if COMPILED:
    str64 = _fast.fnv1a64
else:
    from .index import str64  # noqa: F401

if COMPILED:
    # encode_assert_frames reads a record's fields at their slot offsets
    # (checked on this probe; refused, it looks each attribute up)
    from ..model import AssertionRecord as _Rec
    _fast.use_record_type(_Rec, _Rec(b"h" * 32, 1, 2, 0.5, 3, 4, "p", "q", b"1", "s", "e",
                                     b"a" * 32, [b"d" * 32], b"g" * 32, b"s" * 64))
    _index.use_compiled_merge(_fast.recent_items, _fast.merge_runs)
    from .. import timeutil as _timeutil
    _timeutil.use_compiled_formatter(_fast.format_time)
