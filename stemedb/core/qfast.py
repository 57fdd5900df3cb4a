"""Chooses the compiled query loops (``_query``) or the pure-Python reference
(``qpure``), as ``stemedb.core.fast`` chooses ``_fast``.

``STEMEDB_PURE_PYTHON=1`` forces the pure path; ``STEMEDB_REQUIRE_FAST=1``
makes a missing compiled build fatal.  Both give the same answers
(tests/unit/test_query_parity.py).  ``COMPILED`` says which one runs.
"""
from __future__ import annotations

from typing import Any

from . import qpure
from .fast import _flag

_query: Any = None      # the compiled module, or None
if not _flag("STEMEDB_PURE_PYTHON"):
    try:
        # a Cython extension: no stubs, so its attributes are typed Any
        from . import _query  # type: ignore[attr-defined, no-redef]
    except ImportError as exc:
        if _flag("STEMEDB_REQUIRE_FAST"):
            raise ImportError(
                "STEMEDB_REQUIRE_FAST=1 but the compiled extension stemedb.core._query is "
                "missing; build it with `pip install -e .` (needs Cython and a C compiler)"
            ) from exc
        _query = None

COMPILED = _query is not None
filter_ords = _query.filter_ords if COMPILED else qpure.filter_ords
column_rows = _query.column_rows if COMPILED else qpure.column_rows
resolve_columns = _query.resolve_columns if COMPILED else qpure.resolve_columns
COLUMN_LENSES = qpure.COLUMN_LENSES
cache_take = _query.cache_take if COMPILED else qpure.cache_take
key_ordinals = _query.key_ordinals if COMPILED else qpure.key_ordinals
hashed_pairs = _query.hashed_pairs if COMPILED else qpure.hashed_pairs
read_frames = _query.read_frames if COMPILED else qpure.read_frames
answer_token = _query.answer_token if COMPILED else qpure.answer_token
first_page = _query.first_page if COMPILED else qpure.first_page
new_assertions = _query.new_assertions if COMPILED else qpure.new_assertions
read_clock = _query.read_clock if COMPILED else qpure.read_clock
store_query = _query.store_query if COMPILED else qpure.store_query
CacheLock = _query.CacheLock if COMPILED else qpure.CacheLock
ReaderLock = _query.ReaderLock if COMPILED else qpure.ReaderLock
raw_records = _query.raw_records if COMPILED else qpure.raw_records
raw_seqs = _query.raw_seqs if COMPILED else qpure.raw_seqs
if COMPILED:    # (the pure build sums readcache.record_size itself: its twin)
    held_size = _query.held_size
    # (the pure build runs reader.Reader._fill's own loop: its twin)
    missed_entries = _query.missed_entries
