"""Lenses: how StemeDB resolves claims that disagree, at read time.

A lens takes the candidate assertions of one (concept_path, predicate) and
answers with a winner, a confidence, every candidate best-ranked first, and
a conflict score that is the same whichever lens is asked.  Lenses are pure:
no I/O, no store access.  What they need beyond the candidates (the time,
decay, votes, trust ranks) comes in a :class:`LensContext`.  Each lens is a
stateless singleton in :data:`LENSES`, safe to share between threads; a new
lens is one :class:`Lens` subclass and one entry there.

Determinism.  The same candidates in any order give the same answer, down to
the last bit of every float:

* candidates are first sorted newest first by ``(timestamp_us, seq)``, a
  total order because ``seq`` is unique (the store hands each candidate
  over once; one listed twice would count twice);
* every later sort is stable, so a tie a lens leaves open falls back to
  recency, i.e. ultimately to ``seq``;
* every sum runs over that canonical order or through ``math.fsum``, so no
  float depends on the order the caller handed the candidates over.

These classes are the reference.  The query path ranks the ``rows_only``
lenses (recency, confidence, consensus, authority, layered) of one key from
the index columns instead (``query.columns_resolution``:
``_query.resolve_columns``, in C, whose pure twin ``qpure.resolve_columns``
is these lenses over rows built from the columns), so from 16 candidates
only the page is decoded (the pure build keeps these classes on decoded
candidates below about twice the page); tests/unit/test_query_columns.py holds the two equal to the
bit on generated columns and stores (1,000 candidates, authority with
decay: ~0.4 ms a query against ~1.1 ms over decoded candidates;
bench/results/query-columns-2026-11-26-session4.md).

Cost, for n candidates in k distinct values: one pass building one tuple per
candidate (effective confidence computed once), one sort (O(n log n), linear
when the input is already in timestamp order, which Timsort detects), and one
grouping by canonical value (O(n) dict operations).  ``confidence``, ``vote``
and ``trust`` add one stable sort of the candidates; the other lenses sort
only the k groups (``authority`` and ``layered`` regroup each source class,
another O(n)).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import fsum, log
from operator import itemgetter
from typing import Callable, Iterable, Mapping, Sequence

from ..errors import ValidationError
from ..model import SOURCE_CLASSES, Assertion

__all__ = [
    "HALF_LIFE_DAYS", "TIER_MULTIPLIER", "TRUST_HALF_LIFE_DAYS", "effective_confidence",
    "trust_rank", "LensContext", "Resolution", "Lens", "LENSES", "get_lens",
    "conflict_analysis", "record_rows",
]

DAY_US = 86_400_000_000

# Days for a claim's confidence to halve with decay=true (None: never decays).
HALF_LIFE_DAYS = {"regulatory": None, "clinical": 730, "observational": 365, "expert": 180,
                  "community": 90, "anecdotal": 30}
# How much a tier's confidence counts in the conflict score.
TIER_MULTIPLIER = {"regulatory": 1.0, "clinical": 0.9, "observational": 0.7, "expert": 0.5,
                   "community": 0.3, "anecdotal": 0.1}

TRUST_DEFAULT = 0.5
TRUST_ACCURATE_STEP = 0.05
TRUST_INACCURATE_STEP = -0.1
TRUST_HALF_LIFE_DAYS = 30

# The same tables indexed by source rank (0 = regulatory): the per-candidate
# loop indexes a tuple instead of hashing a class name.  Built at import, so
# the dicts above are documentation and must not be changed at run time.
_HALF_LIFE_US = tuple(None if (days := HALF_LIFE_DAYS[c]) is None else days * DAY_US
                      for c in SOURCE_CLASSES)
_TIER = tuple(TIER_MULTIPLIER[c] for c in SOURCE_CLASSES)
_TRUST_HALF_LIFE_US = TRUST_HALF_LIFE_DAYS * DAY_US

# A candidate row: (timestamp_us, seq, effective confidence, effective
# confidence x tier multiplier, source rank, value_key, Assertion).
_TS, _SEQ, _EFF, _TEFF, _RANK, _KEY, _A = range(7)
# A group of equal values: (rows newest first, sum of effective confidence,
# sum of effective confidence x tier multiplier).
_ROWS, _WEIGHT, _TIERED = range(3)
_by_eff = itemgetter(_EFF)
_by_teff = itemgetter(_TEFF)
_by_weight = itemgetter(_WEIGHT)
_by_tiered = itemgetter(_TIERED)


# ----------------------------------------------------------------- numbers

def effective_confidence(a: Assertion, *, at_us: int, decay: bool) -> float:
    """``a.confidence``, or with ``decay`` ``confidence * 2 ** (-age / half_life)``.

    ``age = at_us - a.timestamp_us``; a timestamp at or after ``at_us`` does
    not decay (a claim about the future is not fresher than fresh), and
    regulatory claims never decay.  O(1).
    """
    c = a.confidence
    if decay:
        hl = _HALF_LIFE_US[a.source_rank]
        age = at_us - a.timestamp_us
        if hl is not None and age > 0:
            c *= 2.0 ** (-age / hl)     # int / int is correctly rounded in Python
    return c


def trust_rank(outcomes: Iterable[tuple[int, bool]], now_us: int) -> float:
    """An agent's trust rank at ``now_us`` from its recorded outcomes.

    ``outcomes`` are ``(recorded_at_us, accurate)`` pairs in time order.  The
    exact rule:

    1. the rank starts at 0.5;
    2. at each outcome, first the rank decays toward 0.5 over the time since
       the previous outcome: ``r = 0.5 + (r - 0.5) * 2 ** (-gap / 30 days)``
       (no decay for the first outcome, when r is 0.5 anyway, nor when the gap
       is zero or negative, i.e. an outcome out of order counts as
       simultaneous), then it moves ``+0.05`` (accurate) or ``-0.1`` (not),
       clamped to 0..1;
    3. finally it decays the same way from the last outcome to ``now_us``
       (not when ``now_us`` is at or before it).

    So one accurate outcome gives 0.55 at once and 0.525 thirty days later;
    one inaccurate outcome gives 0.4, then 0.45.  O(number of outcomes).
    """
    r = TRUST_DEFAULT
    last = None
    for t, accurate in outcomes:
        if last is not None and t > last:
            r = TRUST_DEFAULT + (r - TRUST_DEFAULT) * 2.0 ** ((last - t) / _TRUST_HALF_LIFE_US)
        r += TRUST_ACCURATE_STEP if accurate else TRUST_INACCURATE_STEP
        r = 0.0 if r < 0.0 else 1.0 if r > 1.0 else r
        if last is None or t > last:
            last = t
    if last is not None and now_us > last:
        r = TRUST_DEFAULT + (r - TRUST_DEFAULT) * 2.0 ** ((last - now_us) / _TRUST_HALF_LIFE_US)
    return r


def _neutral_trust(agent_id: str | None) -> float:
    return TRUST_DEFAULT


@dataclass(frozen=True)
class LensContext:
    """What a lens needs besides the candidates.

    ``at_us``: the time decay is measured at (``as_of``, or now).
    ``votes``: assertion hash -> summed vote weight (one vote per agent, as
    the store counts them); hashes that are not candidates are ignored.
    ``trust``: an agent's trust rank; never called for unsigned assertions,
    which count 0.5.
    """

    at_us: int
    decay: bool = False
    votes: Mapping[str, float] = field(default_factory=dict)
    trust: Callable[[str | None], float] = _neutral_trust


@dataclass
class Resolution:
    """A lens's answer for one (concept_path, predicate).

    ``ordered`` holds every candidate, best-ranked first by the lens, and
    ``winner`` is ``ordered[0]`` (None when there are no candidates).
    ``extra``: ``layers`` (layered), ``status`` and ``claims`` (skeptic).
    """

    winner: Assertion | None
    confidence: float
    conflict_score: float
    ordered: list[Assertion]
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------- helpers

def _rows(cands: Iterable[Assertion], at_us: int, decay: bool) -> list[tuple]:
    """One row per candidate, newest first.  O(n log n), O(n) when in order.

    Reads the record's fields directly rather than the Assertion's
    properties: measured 115 against 420 us per 1000 candidates, most of a
    small query's lens time.  tests/unit/test_lens.py pins that these
    are the same numbers as ``timestamp_us``, ``confidence``, ``source_rank``
    and ``value_key``.
    """
    cands = list(cands)
    rows = record_rows(cands, [a.record for a in cands], [a.seq for a in cands], at_us, decay)
    # Tuples compare by timestamp, then seq, which is unique: never further.
    # (A key function or a combined integer key measured slower on input
    # already in order, the common case.)
    rows.sort(reverse=True)
    return rows


def record_rows(ords: list, recs: list, seqs: list[int], at_us: int,
                decay: bool) -> list[tuple]:
    """The rows :func:`_rows` ranks, unsorted (:meth:`Lens.resolve_rows`
    sorts), from decoded records (``AssertionRecord``) and their seqs, each
    row ending with its tag from ``ords`` (a candidate's ordinal, or, from
    ``_rows``, its Assertion).  The same numbers as
    ``_rows`` reads through the Assertions (tests/unit/test_query_parity.py),
    without building one per candidate.  O(n)."""
    if not len(ords) == len(recs) == len(seqs):
        raise ValueError("ords, recs and seqs differ in length")
    rows: list[tuple] = []
    append = rows.append
    for o, r, s in zip(ords, recs, seqs):
        ts, c, rank = r.timestamp, r.confidence, r.source_class
        if decay:
            hl = _HALF_LIFE_US[rank]
            age = at_us - ts
            if hl is not None and age > 0:
                c *= 2.0 ** (-age / hl)     # the same expression as effective_confidence
        append((ts, s, c, c * _TIER[rank], rank, r.value_json, o))
    return rows


def _group(rows: list[tuple]) -> list[tuple]:
    """Rows grouped by canonical value, in order of each group's newest row.

    Each group is ``(rows newest first, sum of eff, sum of eff x tier)``;
    the sums are ``fsum``s, exact to the last bit whatever the order.  O(n).
    """
    if len(rows) == 1:      # a key's usual case; the same group the loop builds
        row = rows[0]
        return [([row], row[_EFF], row[_TEFF])]
    groups: dict[bytes, list] = {}
    get = groups.get
    for row in rows:
        g = get(row[_KEY])
        if g is None:
            groups[row[_KEY]] = [row]
        else:
            g.append(row)
    # Single-row groups skip fsum: with all-distinct values the calls
    # dominated (measured 860 against 330 us per 1000 candidates).
    return [(g, g[0][_EFF], g[0][_TEFF]) if len(g) == 1 else
            (g, fsum(map(_by_eff, g)), fsum(map(_by_teff, g))) for g in groups.values()]


def _share(part: float, total: float) -> float:
    """``part / total``; 0.0 when nothing carries any weight (as vote does)."""
    return part / total if total > 0.0 else 0.0


def _conflict(weights: Sequence[float]) -> float:
    """Normalized Shannon entropy of the claims' weights, in 0..1.  O(k).

    0 for fewer than two claims.  When every claim weighs 0 nothing tells
    them apart, so they count as equal shares: 1.0.  Rounding can push the
    quotient a hair past 1, hence the clamp.
    """
    k = len(weights)
    if k < 2:
        return 0.0
    total = fsum(weights)
    if total <= 0.0:
        return 1.0
    # lists, not generators: the same numbers in the same order, ~0.4 us less
    h = -fsum([p * log(p) for p in [w / total for w in weights] if p > 0.0])
    return min(1.0, max(0.0, h / log(k)))


def _consensus(groups: list[tuple]) -> tuple[list[tuple], float]:
    """Groups heaviest first by summed effective confidence, and the share of
    the heaviest.  A stable sort: equal weights keep newest-group-first."""
    if len(groups) == 1:    # one value: fsum of one weight is that weight
        w = groups[0][_WEIGHT]
        return [groups[0]], _share(w, w)
    ranked = sorted(groups, key=_by_weight, reverse=True)
    return ranked, _share(ranked[0][_WEIGHT], fsum([g[_WEIGHT] for g in groups]))


def _flatten(ranked_groups: list[tuple]) -> list[Assertion]:
    return [row[_A] for g in ranked_groups for row in g[_ROWS]]


def _by_class(rows: list[tuple]) -> list[tuple[int, list[tuple]]]:
    """Rows split by source rank, best class first, each still newest first."""
    classes: dict[int, list] = {}
    for row in rows:
        classes.setdefault(row[_RANK], []).append(row)
    return sorted(classes.items())


def _status(k: int, score: float) -> str:
    if k == 0:
        return "no_claims"
    if k == 1:
        return "unanimous"
    return "agreed" if score < 0.5 else "contested"


def _claims(groups: list[tuple]) -> tuple[list[tuple], list[dict]]:
    """Groups heaviest first by tier-weighted weight, and the skeptic's claims."""
    ranked = sorted(groups, key=_by_tiered, reverse=True)
    total = fsum(g[_TIERED] for g in groups)
    return ranked, [{"value": g[_ROWS][0][_A].value, "weight": g[_TIERED],
                     "share": _share(g[_TIERED], total), "support": len(g[_ROWS]),
                     "hashes": [row[_A].hash for row in g[_ROWS]]} for g in ranked]


# ------------------------------------------------------------------ lenses

class Lens:
    """A way to pick a winner among candidates that may disagree.

    Subclasses set ``name`` and implement ``_resolve``; ``resolve`` does the
    shared work (rows, groups, conflict score) and the empty case.
    """

    name = ""
    # True when ``_resolve`` reads only the rows' numbers and value keys, never
    # the candidate in a row's last slot: such a lens resolves rows that hold
    # an ordinal there (``resolve_rows``; the query path then decodes only the
    # winners and the page).
    rows_only = False

    def resolve(self, cands: Iterable[Assertion], ctx: LensContext) -> Resolution:
        """Resolve the candidates of one (concept_path, predicate).

        Empty: winner None, confidence 0.0, conflict 0.0, ordered [].
        """
        return self._resolve_sorted(_rows(cands, ctx.at_us, ctx.decay), ctx)

    def resolve_rows(self, rows: list[tuple], ctx: LensContext) -> Resolution:
        """:meth:`resolve` over rows already built as ``_rows`` builds them
        (sorted newest first here, in place).  ``winner`` and ``ordered`` hold
        what the rows' last slot holds: Assertions, or, for a ``rows_only``
        lens, whatever stands for them (the query path passes ordinals)."""
        rows.sort(reverse=True)     # as _rows sorts: by timestamp, then the unique seq
        return self._resolve_sorted(rows, ctx)

    def _resolve_sorted(self, rows: list[tuple], ctx: LensContext) -> Resolution:
        if not rows:
            return Resolution(None, 0.0, 0.0, [], self._empty_extra())
        groups = _group(rows)
        return self._resolve(rows, groups, _conflict([g[_TIERED] for g in groups]), ctx)

    def _empty_extra(self) -> dict:
        return {}

    def _resolve(self, rows, groups, score, ctx) -> Resolution:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class RecencyLens(Lens):
    """Newest ``timestamp`` wins, ties by higher ``seq``; confidence = the
    winner's effective confidence.  Ordered newest first."""

    name = "recency"
    rows_only = True

    def _resolve(self, rows, groups, score, ctx):
        return Resolution(rows[0][_A], rows[0][_EFF], score, [row[_A] for row in rows])


class ConfidenceLens(Lens):
    """Highest effective confidence wins, ties by recency; confidence = the
    winner's effective confidence.  O(n log n)."""

    name = "confidence"
    rows_only = True

    def _resolve(self, rows, groups, score, ctx):
        # Stable with reverse=True too: equal confidences stay newest first.
        ranked = sorted(rows, key=_by_eff, reverse=True)
        return Resolution(ranked[0][_A], ranked[0][_EFF], score, [row[_A] for row in ranked])


class ConsensusLens(Lens):
    """Candidates grouped by canonical value; a value weighs the sum of its
    effective confidences; the heaviest value wins (equal weights: the value
    with the newest assertion) and its newest assertion is the winner.
    Confidence = the winning value's share of all weight (0.0 when all weigh
    0).  Ordered by value, heaviest first, newest first within a value."""

    name = "consensus"
    rows_only = True

    def _resolve(self, rows, groups, score, ctx):
        ranked, conf = _consensus(groups)
        return Resolution(ranked[0][_ROWS][0][_A], conf, score, _flatten(ranked))


class AuthorityLens(Lens):
    """The best source class present wins outright (one regulatory claim
    beats any number of anecdotal ones); within it, consensus (confidence =
    the winning value's share within that class).  Ordered by class, best
    first, then as consensus orders each class."""

    name = "authority"
    rows_only = True

    def _resolve(self, rows, groups, score, ctx):
        ordered: list[Assertion] = []
        winner, conf = None, 0.0
        for _, class_rows in _by_class(rows):
            ranked, share = _consensus(_group(class_rows))
            if winner is None:
                winner, conf = ranked[0][_ROWS][0][_A], share
            ordered.extend(_flatten(ranked))
        return Resolution(winner, conf, score, ordered)


class LayeredLens(Lens):
    """Per source class present, its winner and within-class conflict.

    Each layer is resolved as ``authority`` resolves its best class
    (consensus within the class), so the overall winner and confidence are
    ``authority``'s, and so is the order.  ``extra["layers"]``, best class
    first: ``{"source_class", "winner", "confidence", "conflict_score",
    "candidates_count"}``, the conflict score computed over that class alone.
    """

    name = "layered"
    rows_only = True

    def _empty_extra(self):
        return {"layers": []}

    def _resolve(self, rows, groups, score, ctx):
        ordered: list[Assertion] = []
        layers = []
        for rank, class_rows in _by_class(rows):
            class_groups = _group(class_rows)
            ranked, share = _consensus(class_groups)
            layers.append({"source_class": SOURCE_CLASSES[rank],
                           "winner": ranked[0][_ROWS][0][_A], "confidence": share,
                           "conflict_score": _conflict([g[_TIERED] for g in class_groups]),
                           "candidates_count": len(class_rows)})
            ordered.extend(_flatten(ranked))
        best = layers[0]
        return Resolution(best["winner"], best["confidence"], score, ordered,
                          {"layers": layers})


class VoteLens(Lens):
    """Each assertion weighs the sum of its votes (``ctx.votes``); the
    heaviest wins, ties by recency.  Confidence = the winner's share of all
    vote weight on the candidates, 0.0 when there is none.  O(n log n); the
    hashes are looked up only when there are votes."""

    name = "vote"

    def _resolve(self, rows, groups, score, ctx):
        votes = ctx.votes
        if not votes:
            return Resolution(rows[0][_A], 0.0, score, [row[_A] for row in rows])
        weights = [votes.get(row[_A].hash, 0.0) for row in rows]
        order = sorted(range(len(rows)), key=weights.__getitem__, reverse=True)
        best = order[0]
        return Resolution(rows[best][_A], _share(weights[best], fsum(weights)), score,
                          [rows[i][_A] for i in order])


class TrustLens(Lens):
    """Each assertion weighs effective confidence x its author's trust rank
    (``ctx.trust``, asked once per agent per call; 0.5 for unsigned ones);
    the heaviest wins, ties by recency.

    Confidence = the trust-weighted share of the winner's value: the weight
    of every candidate saying what the winner says, over all weight (0.0
    when all weigh 0).  So two trusted agents who agree give 1.0, not 0.5
    each, while a dissenting voice lowers it.  O(n log n).
    """

    name = "trust"

    def _resolve(self, rows, groups, score, ctx):
        trust = ctx.trust
        ranks: dict[bytes, float] = {}
        weights = []
        for row in rows:
            agent = row[_A].record.agent_id
            if agent is None:
                t = TRUST_DEFAULT
            else:
                t = ranks.get(agent)
                if t is None:
                    t = ranks[agent] = trust(agent.hex())
            weights.append(row[_EFF] * t)
        order = sorted(range(len(rows)), key=weights.__getitem__, reverse=True)
        winner = rows[order[0]][_A]
        key = rows[order[0]][_KEY]
        agreeing = fsum(w for w, row in zip(weights, rows) if row[_KEY] == key)
        return Resolution(winner, _share(agreeing, fsum(weights)), score,
                          [rows[i][_A] for i in order])


class SkepticLens(Lens):
    """The conflict analysis (see :func:`conflict_analysis`); the heaviest
    claim's newest assertion wins (equal weights: the claim with the newest
    assertion).  Confidence = the winning claim's share.  Ordered by claim,
    heaviest first, newest first within a claim.  ``extra`` holds
    ``status`` and ``claims``."""

    name = "skeptic"

    def _empty_extra(self):
        return {"status": "no_claims", "claims": []}

    def _resolve(self, rows, groups, score, ctx):
        ranked, claims = _claims(groups)
        return Resolution(ranked[0][_ROWS][0][_A], claims[0]["share"], score, _flatten(ranked),
                          {"status": _status(len(groups), score), "claims": claims})


LENSES: dict[str, Lens] = {lens.name: lens for lens in (
    RecencyLens(), ConfidenceLens(), ConsensusLens(), AuthorityLens(), VoteLens(),
    TrustLens(), SkepticLens(), LayeredLens())}


def get_lens(name: str) -> Lens:
    """The lens called ``name``; ValidationError (field ``lens``) listing the
    valid names otherwise."""
    lens = LENSES.get(name) if isinstance(name, str) else None
    if lens is None:
        raise ValidationError(
            f"unknown lens {name!r}; use one of {', '.join(LENSES)}", field="lens")
    return lens


def conflict_analysis(cands: Iterable[Assertion], ctx: LensContext) -> dict:
    """The body of ``GET /v1/skeptic``.

    Claims are the distinct values among the candidates, heaviest first
    (equal weights: the claim with the newest assertion first), each
    ``{"value", "weight", "share", "support", "hashes"}``: weight = sum of
    effective confidence x tier multiplier, share = weight / all weight
    (0.0 when all weigh 0), support = number of assertions, hashes newest
    first.  ``conflict_score`` is their normalized entropy (0 for one claim
    or none, 1.0 when two or more claims all weigh 0).  ``status``:
    ``no_claims``, ``unanimous`` (one claim), ``agreed`` (score < 0.5) or
    ``contested``.  O(n log n).
    """
    rows = _rows(cands, ctx.at_us, ctx.decay)
    groups = _group(rows)
    score = _conflict([g[_TIERED] for g in groups])
    claims = _claims(groups)[1] if groups else []
    return {"status": _status(len(groups), score), "conflict_score": score, "claims": claims}
