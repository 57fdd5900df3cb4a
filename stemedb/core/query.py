"""The read side: gather candidates, filter them (time travel, lifecycle,
epochs, revisions, retractions), resolve them through a lens; skeptic
reports, traces and retraction target sets.

Everything here reads through a :class:`stemedb.core.reader.Reader` (its
``state`` under its ``lock``, and records by ordinal), never the store.
Filters read only the numpy columns and sparse dicts under the index lock;
records are decoded afterwards, and only for the candidates that survive.
"""
from __future__ import annotations

import base64
from functools import partial
from dataclasses import dataclass, field
from typing import Sequence

from ..errors import NotFound, UnknownReference, ValidationError
from ..model import (
    LIFECYCLE_RANK, LIFECYCLES, Assertion, check_concept_path, check_hash, check_name,
)
from ..timeutil import FIRST_US, LAST_US, format_time, parse_filter_time
from .fast import str64
from .index import PRED_BITS
from . import qfast
from .lens import _HALF_LIFE_US, LensContext, Resolution, conflict_analysis, get_lens, trust_rank
from .qcolumns import (  # noqa: F401 (column_rows, _hashed_values_agree: re-exported)
    _hashed_values_agree, column_rows, columns_resolution, rank_rows,
)
from .audit import query_id
from .reader import Answer
from .state import GEN_MASK, GEN_MIX

DEFAULT_LIFECYCLES = tuple(LIFECYCLE_RANK[n] for n in ("proposed", "under_review", "approved"))
TRACE_LIMIT = 100
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


@dataclass
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


@dataclass
class Filters:
    as_of: int | None = None
    known_at: int | None = None
    since: int | None = None
    lifecycles: tuple | None = DEFAULT_LIFECYCLES   # None = any
    epoch: str | None = None
    decay: bool = False
    include_retracted: bool = False
    # The pinned view (a query's first page, carried by its cursor): records
    # with a higher seq are not seen; trust outcomes, which carry no seq in
    # memory, are pinned by recorded_at; at_us is the "now" decay and trust
    # are measured at when there is no as_of.
    seq_bound: int | None = None
    rec_bound: int | None = None
    at_us: int | None = None

    @property
    def retraction_cut(self) -> int | None:
        """Retractions recorded after this are not seen (known_at, and as_of)."""
        if self.as_of is None:
            return self.known_at
        return self.as_of if self.known_at is None else min(self.as_of, self.known_at)


def _bool(v, name):
    if type(v) is not bool:
        raise ValidationError(f"{name} must be true or false", field=name)
    return v


def parse_filters(as_of=None, known_at=None, since=None, lifecycle=None, epoch=None,
                  decay=False, include_retracted=False) -> Filters:
    f = Filters()
    f.as_of = parse_filter_time(as_of, "as_of") if as_of is not None else None
    f.known_at = parse_filter_time(known_at, "known_at") if known_at is not None else None
    f.since = parse_filter_time(since, "since") if since is not None else None
    if lifecycle is not None:
        if lifecycle == "any":
            f.lifecycles = None
        elif lifecycle in LIFECYCLE_RANK:
            f.lifecycles = (LIFECYCLE_RANK[lifecycle],)
        else:
            raise ValidationError(f"lifecycle must be one of {', '.join(LIFECYCLES)} or any, "
                                  f"got {lifecycle!r}", field="lifecycle")
    if epoch is not None:
        check_name(epoch, "epoch", "epoch name")
    f.epoch = epoch
    f.decay = _bool(decay, "decay")
    f.include_retracted = _bool(include_retracted, "include_retracted")
    return f


def _retraction_visible(r, f: Filters) -> bool:
    cut = f.retraction_cut
    return ((cut is None or r.recorded_at <= cut)
            and (f.seq_bound is None or r.seq <= f.seq_bound))


def shown(reader, o: int, f: Filters) -> Assertion:
    """The assertion at ordinal ``o`` as the view ``f`` sees it: its status
    and retraction as of the time cut and the pinned seq."""
    return reader.assertion(o, known_at=f.retraction_cut, seq_bound=f.seq_bound)


def shown_many(reader, ords: list[int], f: Filters) -> list[Assertion]:
    """:func:`shown` for many ordinals, their records read as one batch."""
    return reader.assertions(ords, known_at=f.retraction_cut, seq_bound=f.seq_bound)


def gather(reader, paths: list[str], predicate: str | None, f: Filters):
    """Ordinals that pass every filter, split (active, retracted).  Call under _ilock."""
    st = reader.state
    ords: list[int] = []
    pid_pred = st.pred_ids.get(predicate) if predicate is not None else None
    if predicate is not None and pid_pred is None:
        return [], []
    for p in paths:
        pid = st.path_ids.get(p)
        if pid is None:
            continue
        if predicate is None:
            ords.extend(st.by_path.get(pid))
        else:
            # by_key.get, one binary search in C (compiled) instead of two
            # numpy searchsorted calls
            m = st.by_key
            ords.extend(qfast.key_ordinals(m.keys, m.vals, m.recent, (pid << PRED_BITS) | pid_pred))
    if not ords:
        return [], []
    c = st.cols
    # Allowed lifecycles and epochs as lookup tables: one index per candidate
    # instead of np.isin, which costs ~100 us even on two elements.
    lc_ok = None if f.lifecycles is None else _lifecycle_table(f.lifecycles)
    ep_ok = None
    if f.epoch is not None:
        e = st.epochs.get(f.epoch)
        if e is None:
            raise UnknownReference(f"epoch {f.epoch!r} does not exist", field="epoch")
        ep_ok = [False] * len(st.epoch_names)
        ep_ok[e.id] = True
    else:
        gone = st.superseded_epoch_ids(f.known_at, f.seq_bound)
        if gone:
            ep_ok = [i not in gone for i in range(len(st.epoch_names))]
    kept = qfast.filter_ords(ords, c.ts, c.rec, c.seq, c.lc, c.epoch, f.as_of, f.known_at,
                             f.since, f.seq_bound, lc_ok, ep_ok)
    rmap, rlist, revisions = st.retracted, st.retractions, st.revisions
    if not rmap and not revisions:      # nothing retracted or revised in the store
        return kept, []
    active, retracted = [], []
    for o in kept:
        ridx = rmap.get(o)
        if ridx is not None and _retraction_visible(rlist[ridx], f):
            retracted.append(o)
            continue
        revs = revisions.get(o)
        if revs and any(_revision_visible(st, r, f) for r in revs):
            continue
        active.append(o)
    return active, retracted


_LC_TABLES: dict[tuple, list[bool]] = {}


def _lifecycle_table(lifecycles: tuple) -> list[bool]:
    """Allowed lifecycle ranks as a lookup table, one per distinct tuple
    (there are at most a few: the default, each single lifecycle)."""
    t = _LC_TABLES.get(lifecycles)
    if t is None:
        t = [False] * len(LIFECYCLES)
        for x in lifecycles:
            t[x] = True
        if len(_LC_TABLES) < 64:
            _LC_TABLES[lifecycles] = t
    return t


def _revision_visible(st, o: int, f: Filters) -> bool:
    c = st.cols
    if f.as_of is not None and c.ts[o] > f.as_of:
        return False
    if f.known_at is not None and c.rec[o] > f.known_at:
        return False
    if f.seq_bound is not None and c.seq[o] > f.seq_bound:
        return False
    ridx = st.retracted.get(o)
    return ridx is None or not _retraction_visible(st.retractions[ridx], f)


def _context(reader, f: Filters, cands: list[Assertion], ords: list[int], need_votes=True):
    st = reader.state
    at = f.as_of if f.as_of is not None else f.at_us if f.at_us is not None else reader.clock()
    votes = {}
    for a, o in zip(cands, ords) if need_votes and st.votes else ():
        vs = st.votes.get(o)
        if not vs:
            continue
        latest: dict = {}
        for agent, weight, rec, seq, *_ts in vs:   # apply_vote keeps only newer agent votes
            if f.known_at is not None and rec > f.known_at:
                continue
            if f.seq_bound is not None and seq > f.seq_bound:
                continue
            latest[agent if agent is not None else ("anon", seq)] = weight
        if latest:
            votes[a.hash] = sum(sorted(latest.values()))
    outcomes = st.outcomes
    ranks: dict = {}

    def trust(agent):
        if agent is None:
            return 0.5
        r = ranks.get(agent)
        if r is None:
            hist = outcomes.get(agent, ())
            bound = min((b for b in (f.known_at, f.rec_bound) if b is not None), default=None)
            if bound is not None:
                hist = [h for h in hist if h[0] <= bound]
            r = ranks[agent] = trust_rank(list(hist), at)
        return r
    return LensContext(at_us=at, decay=f.decay, votes=votes, trust=trust)


def _cursor(offset: int, f: Filters) -> str:
    """The next page's cursor: its offset and the first page's view."""
    raw = f"v2:{offset}:{f.seq_bound}:{f.rec_bound}:{f.at_us}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _uncursor(cursor, f: Filters) -> int:
    """Set the pinned view in ``f`` from ``cursor``; returns the offset.

    A ``v1`` cursor (from before v1.1) pinned only the assertions' seq; it is
    still read, and the rest of its view is the present one.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        parts = raw.split(":")
        if parts[0] == "v2" and len(parts) == 5:
            off, f.seq_bound, f.rec_bound, f.at_us = (int(x) for x in parts[1:])
        elif parts[0] == "v1" and len(parts) == 3:
            off, f.seq_bound = int(parts[1]), int(parts[2])
        else:
            raise ValueError
        # An edited cursor must not reach the lenses with numbers no answer
        # holds (a huge "now" overflows the decay's float division).
        if not (0 <= off < 2**63 and 0 <= f.seq_bound < 2**63
                and (f.rec_bound is None or FIRST_US <= f.rec_bound <= LAST_US)
                and (f.at_us is None or FIRST_US <= f.at_us <= LAST_US)):
            raise ValueError
        return off
    except (ValueError, TypeError, UnicodeDecodeError, AttributeError):
        raise ValidationError("cursor is not one this server returned; pass next_cursor "
                              "from the previous page unchanged", field="cursor") from None


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
    unpinned).  A cursor's page is filed under its pin."""
    pin = (f.seq_bound, f.rec_bound, f.at_us) if pinned else None
    return (concept_path, predicate, include_descendants, lens_name, f.as_of, f.known_at,
            f.since, f.lifecycles, f.epoch, f.decay, f.include_retracted, pin)


def _token(st, paths: list[str], predicate: str | None, include_descendants: bool) -> tuple:
    """The generations an answer over ``paths`` (and ``predicate``) reads
    (call under the lock; see stemedb.core.state, GEN_SLOTS).  A path or
    predicate not stored yet contributes the count of paths or predicates,
    which its first assertion moves."""
    kg, pg = st.key_gen, st.path_gen
    qid = st.pred_ids.get(predicate) if predicate is not None else None
    npaths = len(st.path_names) if include_descendants else -1
    parts = []
    for p in paths:
        pid = st.path_ids.get(p)
        if pid is None:
            npaths = len(st.path_names)
        elif predicate is None:
            parts.append(pg[pid & GEN_MASK])
        elif qid is not None:
            parts.append(kg[(pid * GEN_MIX + qid) & GEN_MASK])
    npreds = len(st.pred_names) if predicate is not None and qid is None else -1
    return (st.gen, npaths, npreds, tuple(parts))


def run_query(reader, concept_path, *, predicate=None, include_descendants=False,
              lens="recency", as_of=None, known_at=None, since=None, lifecycle=None,
              epoch=None, decay=False, include_retracted=False, limit=100, cursor=None,
              agent=None) -> QueryResult:
    # A stored path or predicate passed these checks when it was written
    # (a dict lookup instead of ~3 us of checks for a small key's query)
    st = reader.state
    if type(concept_path) is not str or concept_path not in st.path_ids:
        check_concept_path(concept_path)
    if predicate is not None and (type(predicate) is not str or predicate not in st.pred_ids):
        check_name(predicate, "predicate", "predicate")
    _bool(include_descendants, "include_descendants")
    if type(lens) is not str:
        raise ValidationError("lens must be a string", field="lens")
    lens_obj = get_lens(lens)
    if type(limit) is not int or not 1 <= limit <= 1000:
        raise ValidationError("limit must be an integer from 1 to 1000", field="limit")
    if (as_of is None and known_at is None and since is None and lifecycle is None
            and epoch is None and decay is False and include_retracted is False):
        f = Filters()       # the defaults: nothing to parse
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
            f.at_us = reader.clock()
        paths = [concept_path]
        if include_descendants:
            paths += reader.state.descendant_paths(concept_path)
        cache, ans, akey, token = reader.cache, None, None, None
        if cache is not None and (cursor is not None or not _time_bound(f, lens_obj.name)):
            akey = _answer_key(concept_path, predicate, include_descendants, lens_obj.name, f,
                               cursor is not None)
            token = _token(reader.state, paths, predicate, include_descendants)
            ans = cache.answer(akey, token)
        shown_of = colres = None
        ntop = AUDIT_CONTRIBUTORS if reader.audit is not None else -1
        if ans is None:
            active, retracted = gather(reader, paths, predicate, f)
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
                    cache.add_answer(akey, ans)
            else:
                cands = shown_many(reader, active, f)
                rcands = shown_many(reader, retracted, f) if f.include_retracted else []
                ctx = _context(reader, f, cands, active, need_votes=lens_obj.name == "vote")
                if (qfast.COMPILED and active and predicate is not None
                        and not include_descendants and lens_obj.name in qfast.COLUMN_LENSES):
                    # a small key: every candidate is decoded for the page anyway,
                    # but ranked from the columns in C (lens.py over these
                    # Assertions costs ~3x as much: bench.lens_bench)
                    colres = columns_resolution(reader, lens_obj, active, ctx.at_us, f.decay)
        if ans is not None:
            # a materialized answer (cached, or just resolved over rows): what
            # a fresh computation gives (see _answer_key); only the page (and
            # the audit's top) is decoded; a first page and the top overlap,
            # so they are decoded as one batch
            ords = ans.ords
            top: list[Assertion] | None = None
            ntop = min(ntop, ans.active)
            if shown_of is not None:
                page = [shown_of[o] for o in ords[offset:offset + limit]]
                if ntop >= 0:
                    top = [shown_of[o] for o in ords[:ntop]]
            elif offset == 0 and ntop >= 0:
                both = shown_many(reader, ords[:max(limit, ntop)].tolist(), f)
                page, top = both[:limit], both[:ntop]
            else:
                page = shown_many(reader, ords[offset:offset + limit].tolist(), f)
                top = shown_many(reader, ords[:ntop].tolist(), f) if ntop >= 0 else None
    if ans is not None:
        results: list[dict] = [Result(r) for r in ans.results]
        nxt = _cursor(offset + limit, f) if offset + limit < len(ans.ords) else None
        out = QueryResult(concept_path, lens, results, page, nxt)
        if top is not None:
            # as _context: a cursor from before v1.1 carries no time
            at = f.as_of if f.as_of is not None else f.at_us if f.at_us is not None \
                else reader.clock()
            _audit(reader, agent, _audit_params(concept_path, predicate, include_descendants,
                                                lens, as_of, known_at, since, lifecycle, epoch,
                                                decay, include_retracted, limit, cursor),
                   results, None, _Moment(at, f.decay), top, active=ans.active)
        return out
    if colres is not None:
        groups, results, ordered = _shown_resolution(colres, cands, active, concept_path,
                                                     predicate)
    else:
        groups, results, ordered = resolve_groups(lens_obj, cands, ctx, concept_path, predicate,
                                                  include_descendants)
    if rcands:
        ordered = ordered + sorted(rcands, key=lambda a: (-a.timestamp_us, -a.seq))
    if akey is not None:
        # the cache keeps its own Result dicts (a caller may change the ones
        # it gets) and the candidates as ordinals
        where = {id(a): o for a, o in zip(cands, active)}
        where.update((id(a), o) for a, o in zip(rcands, retracted))
        cache.add_answer(akey, Answer(token, [Result(r) for r in results],
                                      [where[id(a)] for a in ordered], len(cands)))
    page = ordered[offset:offset + limit]
    nxt = _cursor(offset + limit, f) if offset + limit < len(ordered) else None
    out = QueryResult(concept_path, lens, results, page, nxt)
    if reader.audit is not None:
        _audit(reader, agent, _audit_params(concept_path, predicate, include_descendants, lens,
                                            as_of, known_at, since, lifecycle, epoch, decay,
                                            include_retracted, limit, cursor),
               results, groups, ctx, ordered)
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
    return Answer(token, results, ordered, len(active)), shown_of


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
    entry.update(extra)
    return {(concept_path, predicate): cands}, [entry], [of[o] for o in res.ordered]


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


_AUDIT_PARAMS = ("concept_path", "predicate", "include_descendants", "lens", "as_of", "known_at",
                 "since", "lifecycle", "epoch", "decay", "include_retracted", "limit", "cursor")


def _audit_params(*args) -> tuple:
    """The query's parameters as its caller gave them, in _AUDIT_PARAMS order.
    A tuple: the entry's dict is built on the writer thread (``locals()``
    and a dict here cost run_query ~4 us)."""
    return args


class _Moment:
    """What :func:`_audit` reads of a LensContext (a materialized answer has
    no context to hand; a frozen dataclass costs ~1.3 us to build)."""

    __slots__ = ("at_us", "decay")

    def __init__(self, at_us: int, decay: bool):
        self.at_us = at_us
        self.decay = decay


AUDIT_CONTRIBUTORS = 20   # candidates an audit entry names; the rest are counted
AUDIT_RESULTS = 100       # winners an audit entry names; the rest are counted


def _contributing(top: list[Assertion], at_us: int, decay: bool) -> list[dict]:
    """The audit's ``contributing`` entries: each assertion's hash and its
    effective confidence, read off the records (the numbers
    ``effective_confidence`` gives: tests/unit/test_query_columns.py;
    the Assertion properties and a keyword call cost the writer ~1 us
    each)."""
    out = []
    for a in top:
        r = a.record
        c = r.confidence
        if decay:
            hl = _HALF_LIFE_US[r.source_class]
            age = at_us - r.timestamp
            if hl is not None and age > 0:
                c *= 2.0 ** (-age / hl)     # the same expression as effective_confidence
        out.append({"hash": r.hash.hex(), "weight": c})
    return out


def _audit(reader, agent, params, results, groups, ctx, ordered, active=None):
    """Queue the query's audit entry; O(len(results)) here, whatever the candidates.

    The entry names the winners (``result_hashes``, at most AUDIT_RESULTS,
    ``result_hashes_more`` counts the rest) and the lens's best-ranked
    candidates (``contributing``: the first AUDIT_CONTRIBUTORS of ``ordered``
    that are not retracted, each with its effective confidence as weight;
    ``contributing_more`` counts the rest).  ``active`` (the candidates that
    are not retracted) is counted from ``groups`` unless given.  Listing every candidate cost a
    ``limit=1`` query over 10,000 candidates 890 KB of audit (issue 8,
    item 15).  Only those few assertions and scalars are queued, as a
    tuple (no closure), and the writer thread builds the entry
    (:func:`_entry`), so a backlog holds no candidate lists.
    ``params``: a dict, or a tuple in ``_AUDIT_PARAMS`` order (run_query's).
    """
    audit = reader.audit
    at = reader.clock()
    if active is None:
        active = sum(map(len, groups.values()))   # ordered lists these first, then retracted
    top = ordered[:AUDIT_CONTRIBUTORS if active > AUDIT_CONTRIBUTORS else active]
    winners = [w for r in results if (w := r["winner"]) is not None]
    more = len(winners) - AUDIT_RESULTS
    if more > 0:
        winners = winners[:AUDIT_RESULTS]
    audit.add((_ENTRY, at, agent, params, winners, more, top, ctx.at_us, ctx.decay, active))


def _entry(number: int, at: int, agent, params, winners: list[Assertion], more: int,
           top: list[Assertion], at_us: int, decay: bool, active: int) -> dict:
    """The audit entry :func:`_audit` queued, built on the audit writer's
    thread (``number``: its sequence number, given by the writer)."""
    given = params.items() if type(params) is dict else zip(_AUDIT_PARAMS, params)
    return {"id": query_id(at, number), "at": format_time(at), "at_us": at, "agent": agent,
            "params": {k: v for k, v in given if v is not None},
            "result_hashes": [w.record.hash.hex() for w in winners],
            "result_hashes_more": more if more > 0 else 0,
            "contributing": _contributing(top, at_us, decay),
            "contributing_more": active - len(top)}


# The builder the writer thread calls: compiled (qfast.audit_entry, held to
# _entry by tests/unit/test_query_fastpath.py) or _entry itself
_ENTRY = (partial(qfast._query.audit_entry, _AUDIT_PARAMS, _HALF_LIFE_US, format_time)
          if qfast.COMPILED else _entry)


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
