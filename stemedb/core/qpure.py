"""The query path's per-candidate loops, pure Python: the reference twin of
``stemedb/core/_query.pyx`` (``stemedb.core.qfast`` chooses which runs;
tests/unit/test_query_parity.py holds them equal, damaged input included).

* :func:`filter_ords`: the column filters of ``query.gather`` (as_of,
  known_at, since, the pinned seq, lifecycle and epoch tables).

(A compiled twin of the lens rows built from records, ``lens.record_rows``,
was measured and dropped: no faster, the per-record attribute reads are
the cost; bench/results/query-compiled-2026-11-26.md.)
"""
from __future__ import annotations

import numpy as np

SMALL = 48   # below this many candidates, a loop beats numpy's per-call cost
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1   # the columns' range (a bound beyond: the loop)


def _table_index(table: list, v: int) -> bool:
    """``table[v]`` for an id read from a column; a negative id (a damaged
    column) is an IndexError, as one past the end is."""
    if v < 0:
        raise IndexError(f"id {v} outside its table of {len(table)}")
    return table[v]


def filter_ords(ords: list[int], ts, rec, seq, lc, ep, as_of: int | None,
                known_at: int | None, since: int | None, seq_bound: int | None,
                lc_ok: list[bool] | None, ep_ok: list[bool] | None) -> list[int]:
    """The ordinals of ``ords`` (in their order) whose columns pass: ``ts <=
    as_of``, ``rec <= known_at``, ``ts > since``, ``seq <= seq_bound`` (each
    when not None), ``lc_ok[lc]`` and ``ep_ok[epoch]`` (tables of allowed ids,
    when not None).  An ordinal outside the columns, or an id outside its
    table (of any ordinal, filtered out or not), raises IndexError.
    O(len(ords))."""
    n = len(ts)
    if len(ords) <= SMALL or not all(b is None or INT64_MIN <= b <= INT64_MAX
                                     for b in (as_of, known_at, since, seq_bound)):
        tsi, reci, seqi, lci, epi = ts.item, rec.item, seq.item, lc.item, ep.item
        kept = []
        for o in ords:
            if not 0 <= o < n:
                raise IndexError(f"ordinal {o} outside the columns ({n})")
            # the id tables first: a damaged id raises whatever the filters say
            if lc_ok is not None and not _table_index(lc_ok, lci(o)):
                continue
            if ep_ok is not None and not _table_index(ep_ok, epi(o)):
                continue
            if as_of is not None and tsi(o) > as_of:
                continue
            if known_at is not None and reci(o) > known_at:
                continue
            if since is not None and tsi(o) <= since:
                continue
            if seq_bound is not None and seqi(o) > seq_bound:
                continue
            kept.append(o)
        return kept
    arr = np.fromiter(ords, dtype=np.int64, count=len(ords))
    if int(arr.min()) < 0 or int(arr.max()) >= n:
        raise IndexError(f"an ordinal outside the columns ({n})")
    mask = np.ones(len(arr), dtype=bool)
    if as_of is not None:
        mask &= ts[arr] <= as_of
    if known_at is not None:
        mask &= rec[arr] <= known_at
    if since is not None:
        mask &= ts[arr] > since
    if seq_bound is not None:
        mask &= seq[arr] <= seq_bound
    for table, col in ((lc_ok, lc), (ep_ok, ep)):
        if table is not None:
            ids = col[arr]
            if len(ids) and int(ids.min()) < 0:
                raise IndexError(f"id {int(ids.min())} outside its table of {len(table)}")
            mask &= np.array(table, dtype=bool)[ids]
    return arr[mask].tolist()

