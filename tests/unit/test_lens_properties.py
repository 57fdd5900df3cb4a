"""Properties every lens keeps, whatever the candidates (Hypothesis).

Candidates are drawn from small pools of values, times, confidences and
agents so that ties (equal timestamps, equal weights, equal votes) are the
common case rather than the rare one: ties are where order leaks in.
"""
from __future__ import annotations

import math

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from stemedb.core.lens import (
    HALF_LIFE_DAYS, LENSES, LensContext, conflict_analysis, effective_confidence, trust_rank)
from stemedb.model import Assertion, prepare_assertion

T0_S = 1_767_225_600
DAY = 86_400_000_000
AGENTS = [None, "a1" * 32, "b2" * 32, "c3" * 32]
TRUST = {"a1" * 32: 0.9, "b2" * 32: 0.5, "c3" * 32: 0.0}


@st.composite
def candidates(draw, max_size=12):
    n = draw(st.integers(0, max_size))
    seqs = draw(st.lists(st.integers(1, 10_000), min_size=n, max_size=n, unique=True))
    out = []
    for seq in seqs:
        rec = prepare_assertion({
            "concept_path": "c/p", "predicate": "p", "source": f"test://{seq}",
            "value": draw(st.sampled_from(["x", "y", 1, 1.0, {"k": [1]}, None, 0.1])),
            "confidence": draw(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.9, 1.0])),
            "source_class": draw(st.sampled_from(list(HALF_LIFE_DAYS))),
            "timestamp": T0_S + 86400 * draw(st.integers(0, 4))})
        agent = draw(st.sampled_from(AGENTS))
        if agent is not None:
            rec = msgspec.structs.replace(rec, agent_id=bytes.fromhex(agent))
        out.append(Assertion(rec, seq=seq))
    return out


@st.composite
def contexts(draw, cands):
    voted = draw(st.lists(st.sampled_from(cands), unique_by=lambda a: a.seq)) if cands else []
    votes = {a.hash: draw(st.sampled_from([0.0, 0.5, 1.0, 2.0])) for a in voted}
    return LensContext(at_us=(T0_S + 86400 * draw(st.integers(0, 400))) * 1_000_000,
                       decay=draw(st.booleans()), votes=votes, trust=TRUST.__getitem__)


@st.composite
def scenes(draw):
    cands = draw(candidates())
    return cands, draw(contexts(cands)), draw(st.permutations(cands))


@settings(max_examples=150, deadline=None)
@given(scenes())
def test_every_lens_gives_the_same_answer_for_any_order(scene):
    cands, ctx, shuffled = scene
    for name, lens in LENSES.items():
        assert lens.resolve(shuffled, ctx) == lens.resolve(cands, ctx), \
            f"{name}: the same candidates in any order must give the same answer, bit for bit"
    assert conflict_analysis(shuffled, ctx) == conflict_analysis(cands, ctx), \
        "GET /v1/skeptic must not depend on candidate order"


@settings(max_examples=150, deadline=None)
@given(scenes())
def test_resolutions_are_well_formed(scene):
    cands, ctx, _ = scene
    scores = set()
    for name, lens in LENSES.items():
        res = lens.resolve(cands, ctx)
        assert sorted(a.seq for a in res.ordered) == sorted(a.seq for a in cands), \
            f"{name}: ordered lists every candidate exactly once"
        assert res.winner is (res.ordered[0] if cands else None), \
            f"{name}: the winner is the best-ranked candidate"
        assert 0.0 <= res.confidence <= 1.0, f"{name}: confidence within 0..1"
        assert 0.0 <= res.conflict_score <= 1.0, f"{name}: conflict within 0..1"
        scores.add(res.conflict_score)
    assert len(scores) <= 1, "conflict_score is the same for every lens"


@settings(max_examples=150, deadline=None)
@given(scenes())
def test_claims_partition_the_candidates(scene):
    cands, ctx, _ = scene
    analysis = conflict_analysis(cands, ctx)
    claims = analysis["claims"]
    hashes = [h for c in claims for h in c["hashes"]]
    assert sorted(hashes) == sorted(a.hash for a in cands), "every assertion in one claim"
    assert sum(c["support"] for c in claims) == len(cands), "support counts assertions"
    weights = [c["weight"] for c in claims]
    assert weights == sorted(weights, reverse=True), "claims heaviest first"
    if sum(weights) > 0:
        assert math.isclose(sum(c["share"] for c in claims), 1.0), "shares add up to 1"
    status = analysis["status"]
    assert status == {0: "no_claims", 1: "unanimous"}.get(
        len(claims), "agreed" if analysis["conflict_score"] < 0.5 else "contested"), \
        "status follows the number of claims and the score"


@given(candidates(max_size=1), st.integers(0, 3000), st.integers(0, 3000))
def test_decay_only_ever_lowers_confidence(cands, d1, d2):
    for a in cands:
        early, late = sorted((d1, d2))
        c1 = effective_confidence(a, at_us=a.timestamp_us + early * DAY, decay=True)
        c2 = effective_confidence(a, at_us=a.timestamp_us + late * DAY, decay=True)
        assert 0.0 <= c2 <= c1 <= a.confidence, "older claims never gain confidence"


@given(st.lists(st.tuples(st.integers(0, 400), st.booleans()), max_size=40),
       st.integers(0, 800))
def test_trust_rank_stays_in_range_and_fades_to_neutral(steps, now_days):
    outcomes = sorted((d * DAY, ok) for d, ok in steps)
    assert 0.0 <= trust_rank(outcomes, now_days * DAY) <= 1.0, "trust rank within 0..1"
    far = trust_rank(outcomes, 10 ** 6 * DAY)
    assert math.isclose(far, 0.5, abs_tol=1e-9), "without new outcomes a rank returns to 0.5"
