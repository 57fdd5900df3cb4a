"""A query's view and its candidates: the filters (time travel, lifecycle,
epochs, revisions, retractions) as :class:`Filters`, :func:`gather` of the
ordinals that pass them, :func:`shown` / :func:`shown_many` of the
Assertions as that view sees them, the lens context and the page cursor.

Split out of ``query.py`` (which re-exports every name here): filters read
only the numpy columns and sparse dicts under the index lock; records are
decoded afterwards, and only for the candidates that survive.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass

from ..errors import UnknownReference, ValidationError
from ..model import LIFECYCLE_RANK, LIFECYCLES, Assertion, check_name
from ..timeutil import FIRST_US, LAST_US, parse_filter_time
from . import qfast
from .index import PRED_BITS
from .lens import LensContext, trust_rank

DEFAULT_LIFECYCLES = tuple(LIFECYCLE_RANK[n] for n in ("proposed", "under_review", "approved"))


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
    lcs = f.lifecycles
    lc_ok = None if lcs is None else (_LC_TABLES.get(lcs) or _lifecycle_table(lcs))
    ep_ok = None
    if f.epoch is not None:
        e = st.epochs.get(f.epoch)
        if e is None:
            raise UnknownReference(f"epoch {f.epoch!r} does not exist", field="epoch")
        ep_ok = [False] * len(st.epoch_names)
        ep_ok[e.id] = True
    elif st.epochs:         # (none: none superseded)
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
