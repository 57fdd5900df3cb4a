"""The column path of a query: a ``rows_only`` lens's candidates ranked from
the index columns (confidence, source class, value id, seq, timestamp)
instead of from decoded records.

``query.run_query`` takes it from ``query.ROWS_FROM`` candidates
(``query._rows_pay``); :func:`rank_rows` ranks a gathered candidate list and
``query.rows_answer`` decodes only the winners, the page and the audit's
top.  Everything here is called under the reader's lock and reads through
the :class:`stemedb.core.reader.Reader`.
"""
from __future__ import annotations

from ..model import SOURCE_CLASSES
from . import qfast
from .format import VALUE_HASHED
from .index import PRED_BITS
from .lens import _HALF_LIFE_US, _KEY, _TIER, LensContext, Resolution, record_rows
from .reader import take
from .state import _PRED_MASK


def column_rows(reader, ords: list[int], at_us: int, decay: bool) -> list[tuple]:
    """The lens rows of the candidates ``ords`` (call under the lock), read
    from the index columns (``qfast.column_rows``): no record is decoded,
    unless two candidates share a hashed value id (a canonical value longer
    than ``format.VALUE_INLINE`` bytes), whose records are then read to
    compare their values.  When two such values differ (ids of different
    values collided), the rows are built from every candidate's record
    instead (``lens.record_rows``), so grouping by value is always exact.
    The rows order, group and sum like ``record_rows``' (the value slot
    groups the same candidates: tests/unit/test_query_columns.py)."""
    c = reader.state.cols
    rows, hashed = qfast.column_rows(ords, c.seq, c.ts, c.conf, c.rank, c.va, c.vb, at_us,
                                     decay, _HALF_LIFE_US, _TIER)
    if hashed > 1 and not _hashed_values_agree(
            reader, [(row[_KEY], row[-1]) for row in rows if row[_KEY] & 0xFF == VALUE_HASHED]):
        rows = record_rows(ords, reader.read_records(ords), take(c.seq, ords), at_us, decay)
    return rows


def _hashed_values_agree(reader, pairs) -> bool:
    """Whether the candidates sharing each hashed value id hold equal values
    (``pairs``: (value id, ordinal) of the hashed ones; the records of ids
    held by two or more are read)."""
    by_id: dict[int, list[int]] = {}
    for vid, o in pairs:
        by_id.setdefault(vid, []).append(o)
    shared = [os for os in by_id.values() if len(os) > 1]
    if not shared:
        return True
    recs = iter(reader.read_records([o for os in shared for o in os]))
    for os in shared:
        if len({next(recs).value_json for _ in os}) > 1:
            return False
    return True


def ranked_columns(reader, lens: str, ords: list[int], at_us: int, decay: bool):
    """``qfast.resolve_columns``' ranking of one key's candidates ``ords``
    under the lens named ``lens`` (call under the lock): (winner, confidence,
    conflict score, ordered, layers) as ordinals, or None when it declines
    or two different values share a hashed value id."""
    c = reader.state.cols
    pairs = qfast.hashed_pairs(ords, c.va, c.vb)
    # only ids held by two or more candidates are compared (dict(pairs): one
    # entry per id, without _hashed_values_agree's Python when none repeats)
    if len(pairs) > 1 and len(dict(pairs)) < len(pairs) and not _hashed_values_agree(
            reader, pairs):
        return None
    return qfast.resolve_columns(lens, ords, c.seq, c.ts, c.conf, c.rank, c.va, c.vb,
                                 at_us, decay, _HALF_LIFE_US, _TIER)


def columns_resolution(reader, lens_obj, ords: list[int], at_us: int, decay: bool):
    """The Resolution of a ``rows_only`` lens over one key's candidates
    ``ords``, ranked from the index columns (``qfast.resolve_columns``:
    compiled, or lens.py over :func:`column_rows`), with ordinals where
    Assertions would be (call under the lock).  None when it declines (an
    effective confidence that is not finite) or two different values
    share a hashed value id: :func:`column_rows` answers then."""
    got = ranked_columns(reader, lens_obj.name, ords, at_us, decay)
    if got is None:
        return None
    winner, conf, score, ordered, layers = got
    if winner is None:
        return Resolution(None, 0.0, 0.0, [], lens_obj._empty_extra())
    if lens_obj.name != "layered":
        return Resolution(winner, conf, score, ordered)
    return Resolution(winner, conf, score, ordered, {"layers": [
        {"source_class": SOURCE_CLASSES[r], "winner": w, "confidence": share,
         "conflict_score": cs, "candidates_count": n} for r, w, share, cs, n in layers]})


def rank_rows(reader, lens_obj, f, active: list[int], retracted: list[int],
              concept_path: str, predicate: str | None, include_descendants: bool):
    """The lens over the candidates ``active`` (and, with
    ``f.include_retracted``, ``retracted`` after them), from the columns:
    ``(keyed, resolutions, counts, ordered)``: the (path, predicate) keys
    with their rows, one Resolution per key (winners as ordinals), each
    key's candidate count, and every candidate's ordinal in the lens's
    order.  ``f``: the query's Filters (``as_of``, ``at_us``, ``decay``,
    ``include_retracted``)."""
    st = reader.state
    at = f.as_of if f.as_of is not None else f.at_us if f.at_us is not None else reader.clock()
    ctx = LensContext(at_us=at, decay=f.decay)   # votes and trust: no rows_only lens reads them
    keyed: list[tuple[tuple, list]]
    single = predicate is not None and not include_descendants
    res = None
    if single and lens_obj.name in qfast.COLUMN_LENSES:
        res = columns_resolution(reader, lens_obj, active, at, f.decay)
    if res is not None:
        keyed = [((concept_path, predicate), active)]
        rows = []
    elif single:
        # gather read one (path, predicate) key: every candidate is of it
        rows = column_rows(reader, active, at, f.decay)
        keyed = [((concept_path, predicate), rows)]
    else:
        rows = column_rows(reader, active, at, f.decay)
        by_key: dict[int, list] = {}
        for row, key in zip(rows, take(st.cols.key, active)):
            by_key.setdefault(key, []).append(row)
        names, preds = st.path_names, st.pred_names
        keyed = sorted(((names[k >> PRED_BITS], preds[k & _PRED_MASK]), g)
                       for k, g in by_key.items())
    counts = [len(g) for _, g in keyed]
    resolutions = [res] if res is not None else [lens_obj.resolve_rows(g, ctx) for _, g in keyed]
    if len(resolutions) == 1:
        ordered = resolutions[0].ordered
    elif resolutions:
        ordered = lens_obj.resolve_rows(rows, ctx).ordered
    else:
        ordered = []
    if retracted and f.include_retracted:
        c = st.cols
        ordered = ordered + [o for _, _, o in sorted(
            zip([-t for t in take(c.ts, retracted)], [-s for s in take(c.seq, retracted)],
                retracted))]
    return keyed, resolutions, counts, ordered
