"""The read side: resolve a query's candidates through a lens (``run_query``,
with its materialized answers), skeptic reports, traces and retraction
target sets.

Everything here reads through a :class:`stemedb.core.reader.Reader` (its
``state`` under its ``lock``, and records by ordinal), never the store.
The filters and the candidates' gathering are in ``qfilters.py``, the
audit entry in ``qaudit.py``, the column path in ``qcolumns.py``; their
names are re-exported here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ..errors import NotFound, ValidationError
from ..model import Assertion, check_concept_path, check_hash, check_name
from ..timeutil import now_us
from .fast import str64
from . import qfast
from .lens import LENSES, LensContext, Resolution, conflict_analysis, get_lens
from .qaudit import (  # noqa: F401 (re-exported: the audit entry's pieces)
    _AUDIT_PARAMS, AUDIT_CONTRIBUTORS, AUDIT_RESULTS, _audit, _audit_decayed, _audit_params,
    _contributing, _entry, _Moment, _tail,
)
from .qcolumns import (  # noqa: F401 (column_rows, _hashed_values_agree: re-exported)
    _hashed_values_agree, column_rows, columns_resolution, rank_rows, ranked_columns,
)
from .qfilters import (  # noqa: F401 (re-exported: the filters, gather, shown, cursors)
    DEFAULT_LIFECYCLES, Filters, _bool, _context, _cursor, _uncursor, gather, parse_filters,
    shown, shown_many,
)
from .audit import AuditLog
from .readcache import HELD_MAX, RAW_FROM, Answer, raw_records, raw_seqs
from .state import GEN_MASK, GEN_MIX

TRACE_LIMIT = 100
# "now" read without now_us's Python frame when compiled (qfast.read_clock)
_CLOCK = qfast.read_clock if qfast.COMPILED else None
# From this many candidates a rows_only lens is resolved from the index
# columns (rows_answer: no candidate decoded but the winners, the page and
# the audit's top); below it every candidate is decoded (the page shows
# them all) and, compiled, still ranked from the columns
# (_shown_resolution), without rows_answer's bookkeeping (measured:
# bench/results/query-columns-2026-11-26-session4.md)
ROWS_FROM = 16
# The pure build's column rows cost about what decoding costs, so there the
# columns path pays only once it decodes at most half the candidates (the
# page and the audit's top), as before the compiled lenses
PURE_ROWS_FROM = 48


class Result(dict):
    """One resolved (concept_path, predicate): a dict with the JSON keys,
    readable as attributes too (``r["winner"]`` or ``r.winner``)."""

    __slots__ = ()

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# __slots__ (no instance __dict__): the compiled first page sets the six
# fields at their slots (_query.FirstPage); a __weakref__ slot keeps the
# instances weak-referenceable, as a plain class's are
@dataclass(slots=True, weakref_slot=True)
class QueryResult:
    concept_path: str
    lens: str
    results: list[dict]
    assertions: list[Assertion]
    next_cursor: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The JSON answer of POST /v1/query."""
        return {
            "concept_path": self.concept_path, "lens": self.lens,
            "results": [_jsonable(r) for r in self.results],
            "assertions": [a.to_dict() for a in self.assertions],
            "next_cursor": self.next_cursor,
        }


def _jsonable(v):
    if isinstance(v, Assertion):
        return v.to_dict()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _time_bound(f: Filters, lens_name: str) -> bool:
    """Whether the answer depends on "now": decay, or the trust lens (trust
    ranks decay toward 0.5), measured at the clock because there is no as_of."""
    return f.as_of is None and (f.decay or lens_name == "trust")


def _answer_key(concept_path, predicate, include_descendants, lens_name, f: Filters,
                pinned: bool) -> tuple:
    """What a materialized answer is filed under: every parameter the answer
    depends on.  A first page's view (its seq, recorded_at and "now" bounds)
    is left out: while the generations of ``_token`` stand still nothing the
    answer reads has changed, so the view at any later moment gives the same
    answer (time-bound queries, whose "now" does matter, are not kept
    unpinned).  A cursor's page is filed under its pin.  The default view's
    first page (every filter at its default, as qfast.first_page asks it) is
    filed under the first four alone: a key of another length never equals
    it, and a short key is hashed and compared in a third of the work (it
    is hashed twice and compared twice on every answer hit)."""
    if (not pinned and f.as_of is None and f.known_at is None and f.since is None
            and f.lifecycles == DEFAULT_LIFECYCLES and f.epoch is None and f.decay is False
            and f.include_retracted is False):
        return (concept_path, predicate, include_descendants, lens_name)
    pin = (f.seq_bound, f.rec_bound, f.at_us) if pinned else None
    return (concept_path, predicate, include_descendants, lens_name, f.as_of, f.known_at,
            f.since, f.lifecycles, f.epoch, f.decay, f.include_retracted, pin)


def _token(st, paths: list[str], predicate: str | None, include_descendants: bool) -> tuple:
    """The generations an answer over ``paths`` (and ``predicate``) reads
    (call under the lock; see stemedb.core.state, GEN_SLOTS, and
    qpure.answer_token)."""
    return qfast.answer_token(st, paths, predicate, include_descendants, GEN_MASK, GEN_MIX)


def run_query(reader, concept_path, *, predicate=None, include_descendants=False,
              lens="recency", as_of=None, known_at=None, since=None, lifecycle=None,
              epoch=None, decay=False, include_retracted=False, limit=100, cursor=None,
              agent=None) -> QueryResult:
    if (cursor is None and as_of is None and known_at is None and since is None
            and lifecycle is None and epoch is None and decay is False
            and include_retracted is False):
        # a first page of the default view: one call (qfast.first_page)
        # serves it, from a held answer when the cache has one; None when
        # the arguments are not its plain form (the checks below raise or
        # pass them)
        out = first_page(reader, concept_path, predicate, include_descendants, lens, limit,
                         agent)
        if out is not None:
            return out
    # A stored path or predicate passed these checks when it was written
    # (a dict lookup instead of ~3 us of checks for a small key's query)
    st = reader.state
    if type(concept_path) is not str or concept_path not in st.path_ids:
        check_concept_path(concept_path)
    if predicate is not None and (type(predicate) is not str or predicate not in st.pred_ids):
        check_name(predicate, "predicate", "predicate")
    if include_descendants is not False and include_descendants is not True:
        _bool(include_descendants, "include_descendants")
    lens_obj = LENSES.get(lens) if type(lens) is str else None
    if lens_obj is None:
        if type(lens) is not str:
            raise ValidationError("lens must be a string", field="lens")
        lens_obj = get_lens(lens)
    if type(limit) is not int or not 1 <= limit <= 1000:
        raise ValidationError("limit must be an integer from 1 to 1000", field="limit")
    if (as_of is None and known_at is None and since is None and lifecycle is None
            and epoch is None and include_retracted is False
            and (decay is False or decay is True)):
        # the defaults (or decay alone): nothing to parse
        if decay is False:
            f = Filters()
        else:
            f = Filters(decay=True)
            if (_DECAYED_LENSES and cursor is None and predicate is not None
                    and include_descendants is False and lens_obj.name in _DECAYED_LENSES):
                # decay against "now", one key, a column lens: never kept
                # (time-bound), so always computed; one function does it
                return _decayed_page(reader, concept_path, predicate, lens, lens_obj, f,
                                     limit, agent)
    else:
        f = parse_filters(as_of, known_at, since, lifecycle, epoch, decay, include_retracted)
    offset = 0
    with reader.lock:
        if cursor is not None:
            if type(cursor) is not str:
                raise ValidationError("cursor must be a string", field="cursor")
            offset = _uncursor(cursor, f)
        else:
            f.seq_bound = reader.state.last_seq
            f.rec_bound = reader.state.last_recorded_at
            f.at_us = reader.clock() if _CLOCK is None else _CLOCK(reader.clock, now_us)
        paths = [concept_path]
        if include_descendants:
            paths += reader.state.descendant_paths(concept_path)
        cache, ans, akey, token = reader.cache, None, None, None
        if cache is not None and (cursor is not None or not (
                f.decay or lens_obj.name == "trust") or f.as_of is not None):
            # (not _time_bound, inline)
            akey = _answer_key(concept_path, predicate, include_descendants, lens_obj.name, f,
                               cursor is not None)
            token = _token(reader.state, paths, predicate, include_descendants)
            ans = cache.answer(akey, token)
        got = _resolve(reader, concept_path, predicate, include_descendants, lens_obj, f, paths,
                       akey, token, ans, offset, limit)
    # the parameters in _AUDIT_PARAMS order (_audit_params, inline)
    return _finish(reader, got, (concept_path, predicate, include_descendants, lens, as_of,
                                 known_at, since, lifecycle, epoch, decay, include_retracted,
                                 limit, cursor),
                   lens_obj, f, akey, token, offset, agent)


def decayed_query(run, reader, concept_path, predicate, include_descendants, lens, limit,
                  agent) -> QueryResult:
    """Store.query(concept_path, <its own keywords>, decay=True) as the
    compiled Store.query (_query.store_query) hands it over, without
    Store.query's and run_query's argument binding: ``run``, the run_query
    Store.query calls, called as Store.query calls it, unless it is this
    module's and the arguments are ones it takes without a word (a stored
    path and predicate, one key, a lens of _DECAYED_LENSES, a limit in
    range), whose answer is :func:`_decayed_page`'s, as run_query's own is.
    So every error is run_query's, word for word."""
    if (run is run_query and type(concept_path) is str and type(predicate) is str
            and include_descendants is False and type(lens) is str and type(limit) is int
            and 1 <= limit <= 1000 and lens in _DECAYED_LENSES):
        st = reader.state
        if concept_path in st.path_ids and predicate in st.pred_ids:
            return _decayed_page(reader, concept_path, predicate, lens, LENSES[lens],
                                 Filters(decay=True), limit, agent)
    return run(reader, concept_path, predicate=predicate, lens=lens, limit=limit,
               include_descendants=include_descendants, cursor=None, agent=agent, decay=True)


def _decayed_page(reader, concept_path: str, predicate: str, lens, lens_obj, f: Filters,
                  limit: int, agent) -> QueryResult:
    """run_query's first page of a decayed query of one key under a column
    lens (``f``: Filters(decay=True), every other filter at its default;
    compiled only, see _DECAYED_LENSES), in one frame.  Its answer
    depends on "now", so it is never kept and every call computes it: below
    ROWS_FROM candidates every one is decoded (the page) and ranked from
    the columns in C, as _resolve's small-key branch does, without its
    Resolution, _shown_resolution's frame and the tuples between _resolve
    and _finish; the same results, page, cursor and audit line
    (tests/unit/test_query_decayed.py).  Anything else (no candidate, a
    larger key, a column ranking declined) goes the general way, from the
    candidates gathered here."""
    params = (concept_path, predicate, False, lens, None, None, None, None, None, True, False,
              limit, None)
    with reader.lock:
        st = reader.state
        f.seq_bound = st.last_seq
        f.rec_bound = st.last_recorded_at
        at = f.at_us = reader.clock() if _CLOCK is None else _CLOCK(reader.clock, now_us)
        paths = [concept_path]
        active, retracted = gather(reader, paths, predicate, f)
        got = None
        n = len(active)
        if 0 < n < _DECAYED_FROM:
            got = ranked_columns(reader, lens_obj.name, active, at, True)
        if got is None or got[0] is None:
            got = None
            rest = _resolve(reader, concept_path, predicate, False, lens_obj, f, paths, None,
                            None, None, 0, limit, (active, retracted))
        else:
            # (shown_many, inline: no retraction cut, the view's seq bound)
            cands = reader.assertions(active, None, f.seq_bound)
    if got is None:
        return _finish(reader, rest, params, lens_obj, f, None, None, 0, agent)
    of = dict(zip(active, cands))
    results: list[dict] = [Result(concept_path=concept_path, predicate=predicate,
                                  winner=of[got[0]], confidence=got[1],
                                  conflict_score=got[2], candidates_count=n)]
    ordered = list(map(of.__getitem__, got[3]))
    out = QueryResult(concept_path, lens, results, ordered[:limit],
                      _cursor(limit, f) if limit < n else None)
    if reader.audit is not None:
        # (_audit's line: the top is every candidate, n < AUDIT_CONTRIBUTORS)
        _audit_decayed(reader, agent, params, results[0]["winner"], ordered, at, n)
    return out


def _resolve(reader, concept_path, predicate, include_descendants, lens_obj, f: Filters,
             paths: list[str], akey, token, ans, offset: int, limit: int,
             gathered: tuple | None = None) -> tuple:
    """run_query's part under the lock once the answer cache was asked
    (``ans``: what it gave, or None; ``akey``: the answer's key, None when
    it is not kept; ``token``: the generations it is valid under): the
    candidates gathered (``gathered``: gather's answer when already asked),
    decoded and, on the columns' branches, ranked, or the page (and the
    audit's top) of a materialized answer.  What :func:`_finish` takes, as
    one tuple (qpure.first_page calls both)."""
    shown_of = colres = None
    cands = rcands = ctx = page = top = active = retracted = None
    ntop = AUDIT_CONTRIBUTORS if reader.audit is not None else -1
    if ans is None:
        active, retracted = (gather(reader, paths, predicate, f) if gathered is None
                             else gathered)
        if lens_obj.rows_only and _rows_pay(len(active), limit, reader.audit is not None):
            # resolved from the index columns, candidates as ordinals: only
            # the winners, the page and the audit's top are decoded, as one
            # batch (shown_of: ordinal -> Assertion)
            want = [(offset, offset + limit)]
            if ntop >= 0:
                want.append((0, min(ntop, len(active))))
            ans, shown_of = rows_answer(reader, lens_obj, f, active, retracted,
                                        concept_path, predicate, include_descendants,
                                        token, want)
            if akey is not None:
                reader.cache.add_answer(akey, ans)
        else:
            cands = shown_many(reader, active, f)
            rcands = shown_many(reader, retracted, f) if f.include_retracted else []
            if (qfast.COMPILED and active and predicate is not None
                    and not include_descendants and lens_obj.name in qfast.COLUMN_LENSES):
                # a small key: every candidate is decoded for the page anyway,
                # but ranked from the columns in C (lens.py over these
                # Assertions costs ~3x as much: bench.lens_bench); "now" as
                # _context takes it, and, ranked, no LensContext is built
                # (its votes and trust are not read by these lenses)
                at = (f.as_of if f.as_of is not None else f.at_us if f.at_us is not None
                      else reader.clock())
                colres = columns_resolution(reader, lens_obj, active, at, f.decay)
                if colres is not None:
                    ctx = _Moment(at, f.decay)
            if ctx is None:
                ctx = _context(reader, f, cands, active, need_votes=lens_obj.name == "vote")
    if ans is not None:
        # a materialized answer (cached, or just resolved over rows): what
        # a fresh computation gives (see _answer_key); only the page (and
        # the audit's top) is decoded; a first page and the top overlap,
        # so they are decoded as one batch
        ords = ans.ords
        ntop = min(ntop, ans.active)
        if shown_of is not None:
            page = [shown_of[o] for o in ords[offset:offset + limit]]
            if ntop >= 0:
                top = [shown_of[o] for o in ords[:ntop]]
        elif offset == 0 and ntop >= 0:
            both = _answer_shown(reader, ans, 0, max(limit, ntop), f)
            page, top = both[:limit], both[:ntop]
        else:
            page = _answer_shown(reader, ans, offset, offset + limit, f)
            top = _answer_shown(reader, ans, 0, ntop, f) if ntop >= 0 else None
    return ans, page, top, cands, rcands, ctx, colres, active, retracted


def _finish(reader, got: tuple, params: tuple, lens_obj, f: Filters, akey, token, offset: int,
            agent, gslot=None, keep=False) -> QueryResult:
    """run_query's part after the lock: the results, the page, the answer
    kept (when ``akey``), and the audit entry; ``got``: :func:`_resolve`'s,
    ``params``: the query's parameters in _AUDIT_PARAMS order.  The
    compiled first page (_query.FirstPage) passes what a hit would keep in
    the answer, kept here when the answer is made so that its first hit
    costs what a later one does: ``gslot``, its one-part token's generation
    slot (FirstPage._keep_gslot's form; None: not such a token), and
    ``keep``, ``params`` are a plain first page's (the line's parameters'
    JSON kept with its end: qaudit._audit)."""
    ans, page, top, cands, rcands, ctx, colres, active, retracted = got
    concept_path, predicate, include_descendants, lens = params[:4]
    limit = params[11]
    if ans is not None:
        if gslot is not None and ans.token is token:
            ans.gslot = gslot       # (made by rows_answer under this token)
        results: list[dict] = [Result(r) for r in ans.results]
        nxt = _cursor(offset + limit, f) if offset + limit < len(ans.ords) else None
        out = QueryResult(concept_path, lens, results, page, nxt)
        if top is not None:
            # as _context: a cursor from before v1.1 carries no time
            at = f.as_of if f.as_of is not None else f.at_us if f.at_us is not None \
                else reader.clock()
            _audit(reader, agent, params, results, None, _Moment(at, f.decay), top,
                   active=ans.active, answer=ans, keep=keep)
        return out
    nactive = None
    if colres is not None:
        groups, results, ordered = _shown_resolution(colres, cands, active, concept_path,
                                                     predicate)
        nactive = len(cands)    # the one group's candidates: what _audit would count
    else:
        groups, results, ordered = resolve_groups(lens_obj, cands, ctx, concept_path, predicate,
                                                  include_descendants)
    if rcands:
        ordered = ordered + sorted(rcands, key=lambda a: (-a.timestamp_us, -a.seq))
    made = None
    cache = reader.cache
    if akey is not None and cache is not None:
        # the cache keeps its own Result dicts (a caller may change the ones
        # it gets) and the candidates as ordinals
        where = {id(a): o for a, o in zip(cands, active)}
        where.update((id(a), o) for a, o in zip(rcands, retracted))
        made = Answer(token, [Result(r) for r in results], [where[id(a)] for a in ordered],
                      len(cands), ordered)
        if gslot is not None:
            made.gslot = gslot
        cache.add_answer(akey, made)
    page = ordered[offset:offset + limit]
    nxt = _cursor(offset + limit, f) if offset + limit < len(ordered) else None
    out = QueryResult(concept_path, lens, results, page, nxt)
    if reader.audit is not None:
        _audit(reader, agent, params, results, groups, ctx, ordered, active=nactive,
               answer=made, keep=keep)
    return out


def _rows_pay(candidates: int, limit: int, audited: bool) -> bool:
    """Whether :func:`rows_answer` pays for ``candidates`` (see ROWS_FROM):
    compiled, it decodes at most the page and the audit's top and ranks in
    C, so only the smallest keys stay on the Assertion path; pure, only
    keys of at least twice what the page and the top decode go to it."""
    if qfast.COMPILED:
        return candidates >= ROWS_FROM
    decoded = limit + (AUDIT_CONTRIBUTORS if audited else 0)
    return candidates >= PURE_ROWS_FROM and candidates >= 2 * decoded


def rows_answer(reader, lens_obj, f: Filters, active: list[int], retracted: list[int],
                concept_path: str, predicate: str | None, include_descendants: bool,
                token, want: Sequence[tuple[int, int]] = ()) -> tuple[Answer, dict]:
    """The answer of a ``rows_only`` lens over what :func:`gather` returned
    (call under the lock): one lens row per candidate from the index
    columns (:func:`column_rows`: no record decoded), the lens over the
    rows, and Assertions for the winners only.  The same results and order
    as :func:`resolve_groups` over the decoded candidates gives
    (tests/unit/test_query_parity.py, test_query_columns.py), as an
    :class:`Answer` holding the candidates' ordinals in the lens's order,
    and, as one batch with the winners, the Assertions of the ranges
    ``want`` of that order (ordinal -> Assertion: the page and the audit's
    top)."""
    keyed, resolutions, counts, ordered = rank_rows(reader, lens_obj, f, active, retracted,
                                                    concept_path, predicate,
                                                    include_descendants)
    # the winners (and a layered lens's per-class winners) as Assertions, one batch
    layers = [layer for res in resolutions for layer in res.extra.get("layers", ())]
    show = [res.winner for res in resolutions if res.winner is not None]
    show += [layer["winner"] for layer in layers]
    for a, b in want:
        show += ordered[a:b]
    show = list(dict.fromkeys(show))
    raw = None
    if (RAW_FROM <= len(ordered) <= HELD_MAX and reader.cache is not None
            and len(show) == len(ordered) and set(show) == set(ordered)):
        # every candidate shown (the page and the top): read as frame
        # bodies the answer holds (reader.raw_pack) and decoded from them,
        # past the record cache
        got = reader.raw_frames(ordered)
        if got is not None and raw_seqs(got[0], 0, len(ordered)) != got[1]:
            got = None      # (the frames' seqs are the State's: held as theirs)
        if got is not None:
            raw, seqs = got
            recs = raw_records(raw, 0, len(ordered))
            shown_of = dict(zip(ordered, reader.assertions(
                ordered, known_at=f.retraction_cut, seq_bound=f.seq_bound, recs=recs,
                seqs=seqs)))
    if raw is None:
        shown_of = dict(zip(show, shown_many(reader, show, f))) if show else {}
    for layer in layers:
        layer["winner"] = shown_of[layer["winner"]]
    results = []
    for ((path, pred), _rows), res, n in zip(keyed, resolutions, counts):
        entry = Result(concept_path=path, predicate=pred,
                       winner=None if res.winner is None else shown_of[res.winner],
                       confidence=res.confidence, conflict_score=res.conflict_score,
                       candidates_count=n)
        entry.update(res.extra)
        results.append(entry)
    # held when every candidate was decoded
    held = ([shown_of[o] for o in ordered]
            if len(ordered) <= HELD_MAX and all(o in shown_of for o in ordered) else None)
    tail = None
    if held is not None and reader.audit is not None and not f.decay and qfast.COMPILED:
        # the end of its audit line, which this query's _audit would make
        # next (the same bytes: without decay no weight reads the time),
        # made here so that the answer's size counts its bytes rather than
        # the room for the longest end (~0.5 KB less for 20 candidates)
        try:
            tail = _tail(held[:AUDIT_CONTRIBUTORS], results, _Moment(0, False),
                         len(active)) or b""
        except Exception:  # noqa: BLE001 - as _audit: the writer's path builds it
            tail = b""
    return Answer(token, results, ordered, len(active), held, raw if held else None,
                  tail), shown_of


def _answer_shown(reader, ans: Answer, lo: int, hi: int, f: Filters) -> list[Assertion]:
    """The Assertions of ``ans.ords[lo:hi]`` as the view ``f`` sees them
    (:func:`shown_many`), from the records the answer holds when it holds
    them."""
    ords = ans.ords[lo:hi].tolist()
    if ans.held is None:
        return shown_many(reader, ords, f)
    recs, seqs = ans.held
    if type(recs) is bytes:     # raw frames: only this range decoded
        return reader.assertions(ords, known_at=f.retraction_cut, seq_bound=f.seq_bound,
                                 recs=raw_records(recs, lo, hi), seqs=raw_seqs(recs, lo, hi))
    return reader.assertions(ords, known_at=f.retraction_cut, seq_bound=f.seq_bound,
                             recs=recs[lo:hi], seqs=None if seqs is None else seqs[lo:hi])


def _shown_resolution(res: Resolution, cands: list[Assertion], ords: list[int],
                      concept_path: str, predicate: str):
    """:func:`resolve_groups`' ``(groups, results, ordered)`` for one key from
    a :func:`columns_resolution` over the ordinals ``ords`` of ``cands``
    (the decoded candidates): its ordinals replaced by those Assertions."""
    of: dict = dict(zip(ords, cands))   # the Resolution holds ordinals here
    extra = res.extra
    if "layers" in extra:
        extra = {"layers": [dict(layer, winner=of[layer["winner"]])
                            for layer in extra["layers"]]}
    entry = Result(concept_path=concept_path, predicate=predicate,
                   winner=None if res.winner is None else of[res.winner],
                   confidence=res.confidence, conflict_score=res.conflict_score,
                   candidates_count=len(cands))
    if extra:
        entry.update(extra)
    return {(concept_path, predicate): cands}, [entry], list(map(of.__getitem__, res.ordered))


def resolve_groups(lens_obj, cands: list[Assertion], ctx, concept_path: str,
                   predicate: str | None, include_descendants: bool):
    """Group the candidates by (concept_path, predicate), resolve each group
    through the lens, and order all candidates: ``(groups, results, ordered)``.
    The lens stage of :func:`run_query` (``bench.costs`` times it alone)."""
    groups: dict[tuple, list[Assertion]] = {}
    if predicate is not None and not include_descendants:
        # gather read one (path, predicate) key: every candidate is of it
        groups[(concept_path, predicate)] = cands
    else:
        for a in cands:
            groups.setdefault((a.concept_path, a.predicate), []).append(a)
    results, resolutions = [], []
    for (path, pred) in sorted(groups):
        res = lens_obj.resolve(groups[(path, pred)], ctx)
        resolutions.append(res)
        entry = Result(concept_path=path, predicate=pred, winner=res.winner,
                       confidence=res.confidence, conflict_score=res.conflict_score,
                       candidates_count=len(groups[(path, pred)]))
        entry.update(res.extra)
        results.append(entry)
    if len(resolutions) == 1:
        ordered = resolutions[0].ordered
    elif resolutions:
        ordered = lens_obj.resolve(cands, ctx).ordered
    else:
        ordered = []
    return groups, results, ordered


def run_skeptic(reader, concept_path, predicate, *, include_descendants=False, as_of=None,
                known_at=None, since=None, lifecycle=None, epoch=None, decay=False,
                include_retracted=False, agent=None, **_ignored) -> dict:
    check_concept_path(concept_path)
    check_name(predicate, "predicate", "predicate")
    f = parse_filters(as_of, known_at, since, lifecycle, epoch, decay, include_retracted)
    with reader.lock:
        paths = [concept_path]
        if include_descendants:
            paths += reader.state.descendant_paths(concept_path)
        active, _ = gather(reader, paths, predicate, f)
        cands = [shown(reader, o, f) for o in active]
        ctx = _context(reader, f, cands, active)
    return conflict_analysis(cands, ctx)


def run_trace(reader, hash: str) -> dict | None:
    check_hash(hash, "hash")
    st = reader.state
    with reader.lock:
        o = st.ordinal(bytes.fromhex(hash))
        if o is None:
            return None
        a = reader.assertion(o)
        parents: list[Assertion] = []
        seen, cur = {o}, a
        while cur.parent_hash is not None and len(parents) < TRACE_LIMIT:
            po = st.ordinal(bytes.fromhex(cur.parent_hash))
            if po is None or po in seen:
                break
            seen.add(po)
            cur = reader.assertion(po)
            parents.append(cur)
        derived = []
        for h in a.derived_from or ():
            do = st.ordinal(bytes.fromhex(h))
            if do is not None:
                derived.append(reader.assertion(do))
        deps = st.dependents.get(o, [])
        dependents = [reader.assertion(d) for d in deps[-TRACE_LIMIT:][::-1]]
        source = None
        if a.source is not None:
            pid = st.path_ids.get(a.source)
            at_src = len(st.by_path.get(pid)) if pid is not None else 0
            source = {"source": a.source, "source_class": a.source_class,
                      "assertions_at_source": at_src}
    return {"assertion": a.to_dict(), "parents": [p.to_dict() for p in parents],
            "derived_from": [d.to_dict() for d in derived],
            "dependents": [d.to_dict() for d in dependents],
            "dependents_count": len(deps), "source": source, "retraction": a.retraction}


def retraction_targets(reader, target: dict, cascade: bool) -> set[int]:
    """Ordinals a retraction reaches (call under _ilock).

    O(what it touches): the seeds come from one index lookup; the cascade
    walks level by level through the dependents index (``derived_from`` and
    ``parent_hash`` edges) and, with one vectorized source-index search per
    level, the assertions citing a reached concept path.  It follows
    already-retracted assertions too.
    """
    st = reader.state

    def citing(paths) -> list[int]:
        """Assertions whose source is one of ``paths`` (the full string is compared)."""
        paths = set(paths)
        hits = st.by_source.get_many([str64(p) for p in paths])
        return [o for o in hits if reader.read_record(o).source in paths]

    if "hash" in target:
        o = st.ordinal(bytes.fromhex(target["hash"]))
        if o is None:
            raise NotFound(f"no assertion with hash {target['hash']}", field="hash")
        seeds = [o]
    elif "concept_path" in target:
        pid = st.path_ids.get(target["concept_path"])
        seeds = st.by_path.get(pid) if pid is not None else []
    else:
        seeds = citing([target["source"]])
    reached = set(seeds)
    if not cascade:
        return reached
    frontier = list(seeds)
    seen_paths: set[str] = set()
    if "concept_path" in target:
        seen_paths.add(target["concept_path"])
        frontier += [d for d in citing(seen_paths) if d not in reached]
        reached.update(frontier)
    deps, names, path_col = st.dependents, st.path_names, st.cols.path
    while frontier:
        nxt = []
        for o in frontier:
            for d in deps.get(o, ()):
                if d not in reached:
                    reached.add(d)
                    nxt.append(d)
        paths = {names[p] for p in path_col[frontier].tolist()} - seen_paths
        if paths:
            seen_paths |= paths
            for d in citing(paths):
                if d not in reached:
                    reached.add(d)
                    nxt.append(d)
        frontier = nxt
    return reached


# run_query's first page of the default view, one call (compiled:
# _query.first_page; the reference: qpure.first_page, which documents env)
_FIRST_ENV = (LENSES, Filters, DEFAULT_LIFECYCLES, GEN_MASK, GEN_MIX, AUDIT_CONTRIBUTORS, Result,
              QueryResult, Assertion, _Moment, _resolve, _finish, _audit, AuditLog,
              _AUDIT_PARAMS, now_us, Answer)
# first_page(reader, concept_path, predicate, include_descendants, lens,
# limit, agent): run_query's answer for a first page of the default view, or
# None, having done nothing, when the arguments or the answer are not ones
# the one call serves.  run_query and Store.query (without run_query's
# keywords) both call it by this module's name.
first_page = qfast.first_page(_FIRST_ENV)
# The column lenses _decayed_page serves, compiled (the pure build ranks a
# small key over its decoded candidates, lens.py, on run_query's path);
# layered's layers are left to the general path
# Below ROWS_FROM candidates (the rows path's from there) and at most the
# audit's AUDIT_CONTRIBUTORS (its line names every one: _audit_decayed)
_DECAYED_FROM = min(ROWS_FROM, AUDIT_CONTRIBUTORS + 1)
_DECAYED_LENSES = (frozenset(qfast.COLUMN_LENSES) - {"layered"} if qfast.COMPILED
                   else frozenset())
