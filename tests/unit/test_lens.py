"""The lenses: each rule by name, ties, empty sets, decay, trust, conflict.

Candidates are real assertions made by ``prepare_assertion`` (so the
source-class inference and canonical values are the model's), wrapped with a
seq as the store would.
"""
from __future__ import annotations

import math
import random

import msgspec
import pytest

from stemedb.core import lens as lens_mod
from stemedb.core.lens import (
    HALF_LIFE_DAYS, LENSES, TIER_MULTIPLIER, LensContext, Resolution, conflict_analysis,
    effective_confidence, get_lens, trust_rank)
from stemedb.errors import ValidationError
from stemedb.model import Assertion, prepare_assertion

T0_S = 1_767_225_600                 # 2026-01-01T00:00:00Z
T0 = T0_S * 1_000_000
DAY = 86_400_000_000
NOW = T0 + 1000 * DAY
ALICE, BOB = "a1" * 32, "b0" * 32
NAMES = ["recency", "confidence", "consensus", "authority", "vote", "trust", "skeptic",
         "layered"]


def mk(value, *, seq, day=0, conf=0.8, cls="anecdotal", source=None, agent=None):
    """An assertion made ``day`` days after T0 (whole seconds).

    The source is unique per seq so hashes differ.  ``agent`` is set on the
    record after hashing: lenses never check signatures (the store does).
    """
    body = {"concept_path": "drugs/semaglutide", "predicate": "gastroparesis_risk",
            "value": value, "confidence": conf, "timestamp": T0_S + round(day * 86400),
            "source": source or f"test://claim/{seq}"}
    if source is None:
        body["source_class"] = cls
    rec = prepare_assertion(body)
    if agent is not None:
        rec = msgspec.structs.replace(rec, agent_id=bytes.fromhex(agent))
    return Assertion(rec, seq=seq)


def ctx(**kw):
    kw.setdefault("at_us", NOW)
    return LensContext(**kw)


def seqs(items):
    return [a.seq for a in items]


def entropy(weights):
    """The contract's conflict score, written out plainly as the oracle."""
    total = sum(weights)
    if len(weights) < 2:
        return 0.0
    return -sum(w / total * math.log(w / total) for w in weights if w) / math.log(len(weights))


# ---------------------------------------------------------------- registry

def test_registry_holds_exactly_the_contract_lenses():
    assert list(LENSES) == NAMES, "LENSES must list the eight lenses of the contract"
    for name, lens in LENSES.items():
        assert lens.name == name, f"lens registered as {name!r} must call itself that"
        assert get_lens(name) is lens, "get_lens must return the registered singleton"


@pytest.mark.parametrize("bad", ["newest", "", "RECENCY", None, 3, ["recency"]])
def test_unknown_lens_is_a_validation_error_listing_the_valid_names(bad):
    with pytest.raises(ValidationError) as err:
        get_lens(bad)
    assert err.value.field == "lens", "the error must name the field at fault (HTTP 400 body)"
    for name in NAMES:
        assert name in err.value.message, f"the message must list the valid lens {name!r}"


@pytest.mark.parametrize("name", NAMES)
def test_empty_candidates_give_no_winner(name):
    res = LENSES[name].resolve([], ctx(decay=True, votes={"ab" * 32: 1.0}))
    assert (res.winner, res.confidence, res.conflict_score, res.ordered) == (None, 0.0, 0.0, []), \
        "no candidates: winner None, confidence 0.0, conflict 0.0, nothing ordered"
    expected = {"skeptic": {"status": "no_claims", "claims": []},
                "layered": {"layers": []}}.get(name, {})
    assert res.extra == expected, "empty extra must still have the keys clients read"


def test_conflict_analysis_of_nothing_is_no_claims():
    assert conflict_analysis([], ctx()) == {"status": "no_claims", "conflict_score": 0.0,
                                            "claims": []}, "GET /v1/skeptic with no matches"


@pytest.mark.parametrize("name", NAMES)
def test_lenses_accept_any_iterable(name):
    cands = [mk("a", seq=1), mk("b", seq=2, day=1)]
    assert LENSES[name].resolve(iter(cands), ctx()) == LENSES[name].resolve(cands, ctx()), \
        "the store may hand over a generator; the answer must not change"


def test_rows_read_the_same_numbers_as_the_public_attributes():
    # The lens reads the record's fields for speed; this pins them to the API.
    a = mk({"x": [1, 2.0]}, seq=7, day=3, conf=0.6, cls="expert", agent=ALICE)
    (row,) = lens_mod._rows([a], NOW, False)
    assert row[:3] == (a.timestamp_us, a.seq, a.confidence), "timestamp, seq, confidence"
    assert row[4] == a.source_rank and row[5] == a.value_key and row[6] is a, \
        "source rank and canonical value key"
    assert a.record.agent_id.hex() == a.agent_id, "trust lens reads the author from the record"


# ------------------------------------------------------------------- decay

@pytest.mark.parametrize("cls", list(HALF_LIFE_DAYS))
def test_decay_at_200_days_per_tier(cls):
    a = mk("v", seq=1, conf=0.9, cls=cls)
    hl = HALF_LIFE_DAYS[cls]
    expected = 0.9 if hl is None else 0.9 * 2 ** (-200 / hl)
    got = effective_confidence(a, at_us=T0 + 200 * DAY, decay=True)
    assert got == expected, f"{cls} at 200 days must be confidence x 2^(-200/{hl})"
    res = LENSES["confidence"].resolve([a], ctx(at_us=T0 + 200 * DAY, decay=True))
    assert res.confidence == expected, "lenses must use the same effective confidence"


def test_decay_numbers_that_users_quote():
    at = T0 + 200 * DAY
    assert effective_confidence(mk("v", seq=1, conf=1.0, cls="clinical"), at_us=at, decay=True) \
        == pytest.approx(0.8270, abs=1e-4), "clinical keeps ~83% after 200 days"
    assert effective_confidence(mk("v", seq=1, conf=1.0, cls="anecdotal"), at_us=at, decay=True) \
        == pytest.approx(0.0098, abs=1e-4), "anecdotal keeps ~1% after 200 days"
    half = effective_confidence(mk("v", seq=1, conf=0.8, cls="community"), at_us=T0 + 90 * DAY,
                                decay=True)
    assert half == 0.4, "one half-life halves the confidence exactly"


def test_no_decay_without_decay_for_the_future_or_for_regulatory():
    old = mk("v", seq=1, conf=0.7, cls="anecdotal")
    assert effective_confidence(old, at_us=T0 + 9999 * DAY, decay=False) == 0.7, \
        "decay=false leaves confidence as written"
    future = mk("v", seq=2, day=10, conf=0.7, cls="anecdotal")
    assert effective_confidence(future, at_us=T0, decay=True) == 0.7, \
        "a timestamp after as_of does not decay (nor grow)"
    assert effective_confidence(old, at_us=T0, decay=True) == 0.7, "age 0 does not decay"
    label = mk("v", seq=3, conf=0.7, cls="regulatory")
    assert effective_confidence(label, at_us=T0 + 36500 * DAY, decay=True) == 0.7, \
        "regulatory claims never decay"


def test_tables_match_the_contract():
    assert HALF_LIFE_DAYS == {"regulatory": None, "clinical": 730, "observational": 365,
                              "expert": 180, "community": 90, "anecdotal": 30}, "half-lives"
    assert TIER_MULTIPLIER == {"regulatory": 1.0, "clinical": 0.9, "observational": 0.7,
                               "expert": 0.5, "community": 0.3, "anecdotal": 0.1}, "tiers"


# ----------------------------------------------------------------- recency

def test_recency_newest_timestamp_wins_and_orders_newest_first():
    cands = [mk("old", seq=3, day=1), mk("new", seq=1, day=5), mk("mid", seq=2, day=3)]
    res = LENSES["recency"].resolve(cands, ctx())
    assert res.winner.value == "new", "the newest timestamp wins, whatever its seq"
    assert seqs(res.ordered) == [1, 2, 3], "assertions[0] is the newest"
    assert res.confidence == 0.8, "confidence is the winner's (undecayed) confidence"


def test_recency_timestamp_tie_goes_to_higher_seq():
    cands = [mk("first", seq=10, day=2), mk("second", seq=11, day=2), mk("older", seq=12, day=1)]
    res = LENSES["recency"].resolve(cands, ctx())
    assert res.winner.seq == 11, "equal timestamps: the later write (higher seq) wins"
    assert seqs(res.ordered) == [11, 10, 12], "ties ordered by seq, newest write first"


def test_recency_confidence_is_decayed_when_asked():
    a = mk("v", seq=1, conf=0.6, cls="expert")
    res = LENSES["recency"].resolve([a], ctx(at_us=T0 + 180 * DAY, decay=True))
    assert res.confidence == 0.3, "with decay the winner's effective confidence is reported"


# -------------------------------------------------------------- confidence

def test_confidence_highest_wins_ties_by_recency():
    cands = [mk("a", seq=1, conf=0.9, day=1), mk("b", seq=2, conf=0.9, day=3),
             mk("c", seq=3, conf=0.95, day=0), mk("d", seq=4, conf=0.9, day=3)]
    res = LENSES["confidence"].resolve(cands, ctx())
    assert res.winner.value == "c" and res.confidence == 0.95, "highest confidence wins"
    assert seqs(res.ordered) == [3, 4, 2, 1], "equal confidence: newer first, then higher seq"


def test_confidence_decay_can_turn_the_winner():
    old = mk("old", seq=1, conf=0.9, cls="anecdotal", day=0)
    new = mk("new", seq=2, conf=0.5, cls="anecdotal", day=60)
    lens = LENSES["confidence"]
    assert lens.resolve([old, new], ctx(at_us=T0 + 90 * DAY)).winner is old, \
        "without decay the stronger old claim wins"
    res = lens.resolve([old, new], ctx(at_us=T0 + 90 * DAY, decay=True))
    assert res.winner is new, "after three anecdotal half-lives the old claim fades"
    assert res.confidence == 0.25, "the winner's decayed confidence: 0.5 x 2^(-30/30)"


# --------------------------------------------------------------- consensus

def test_consensus_heaviest_value_wins_with_its_newest_assertion():
    cands = [mk("rare", seq=1, conf=0.5, day=1), mk("rare", seq=2, conf=0.5, day=4),
             mk("rare", seq=3, conf=0.5, day=2), mk("common", seq=4, conf=0.9, day=9)]
    res = LENSES["consensus"].resolve(cands, ctx())
    assert res.winner.seq == 2, "three 'rare' (1.5) outweigh one 'common' (0.9); newest wins"
    assert res.confidence == pytest.approx(1.5 / 2.4), "confidence is the value's weight share"
    assert seqs(res.ordered) == [2, 3, 1, 4], "heaviest value first, newest first within it"


def test_consensus_groups_by_canonical_value():
    cands = [mk({"a": 1, "b": [1.0, "x"]}, seq=1, conf=0.4),
             mk({"b": [1, "x"], "a": 1.0}, seq=2, conf=0.4, day=1),
             mk({"a": 2}, seq=3, conf=0.7, day=2)]
    res = LENSES["consensus"].resolve(cands, ctx())
    assert res.winner.seq == 2, "key order and 1 vs 1.0 do not split a value (0.8 > 0.7)"


def test_consensus_weight_tie_goes_to_the_value_with_the_newest_assertion():
    cands = [mk("x", seq=1, conf=0.5, day=5), mk("y", seq=2, conf=0.25, day=1),
             mk("y", seq=3, conf=0.25, day=6)]
    res = LENSES["consensus"].resolve(cands, ctx())
    assert res.winner.seq == 3, "equal weights: the value with the newest assertion wins"
    assert res.confidence == 0.5, "half of the weight"


def test_consensus_with_no_weight_has_zero_confidence():
    cands = [mk("x", seq=1, conf=0.0), mk("y", seq=2, conf=0.0, day=1)]
    res = LENSES["consensus"].resolve(cands, ctx())
    assert res.winner.seq == 2 and res.confidence == 0.0, \
        "all-zero confidence: newest wins, and nothing backs it (0.0, as vote does)"


# --------------------------------------------------------------- authority

def test_authority_best_class_wins_outright_then_consensus():
    cands = [mk("safe", seq=i, conf=1.0, cls="anecdotal", day=i) for i in range(1, 51)]
    cands += [mk("risky", seq=100, conf=0.2, cls="clinical", day=0),
              mk("risky", seq=101, conf=0.2, cls="clinical", day=-1),
              mk("unclear", seq=102, conf=0.3, cls="clinical", day=2)]
    res = LENSES["authority"].resolve(cands, ctx())
    assert res.winner.seq == 100, "clinical beats 50 anecdotes; within it 'risky' 0.4 > 0.3"
    assert res.confidence == pytest.approx(0.4 / 0.7), "share within the winning class"
    assert seqs(res.ordered[:3]) == [100, 101, 102], "best class first, in consensus order"
    assert seqs(res.ordered[3:]) == list(range(50, 0, -1)), "then lower classes"


# -------------------------------------------------------------------- vote

def test_vote_heaviest_wins_and_confidence_is_its_share():
    a, b, c = mk("a", seq=1, day=3), mk("b", seq=2, day=1), mk("c", seq=3, day=2)
    votes = {a.hash: 0.5, b.hash: 1.5, "ff" * 32: 9.0}
    res = LENSES["vote"].resolve([a, b, c], ctx(votes=votes))
    assert res.winner is b, "the assertion with most vote weight wins"
    assert res.confidence == 0.75, "its share of the votes on these candidates (not elsewhere)"
    assert seqs(res.ordered) == [2, 1, 3], "then by votes, unvoted by recency"


def test_vote_ties_by_recency_and_no_votes_means_zero_confidence():
    a, b = mk("a", seq=1, day=1), mk("b", seq=2, day=2)
    res = LENSES["vote"].resolve([a, b], ctx(votes={a.hash: 1.0, b.hash: 1.0}))
    assert res.winner is b and res.confidence == 0.5, "equal votes: the newer wins"
    res = LENSES["vote"].resolve([a, b], ctx())
    assert res.winner is b and res.confidence == 0.0, "no votes: newest wins with confidence 0"


# ------------------------------------------------------------------- trust

def test_trust_weights_confidence_by_author_rank():
    ranks = {ALICE: 0.9, BOB: 0.1}
    calls = []

    def trust(agent):
        calls.append(agent)
        return ranks[agent]

    cands = [mk("a", seq=1, conf=0.6, agent=ALICE), mk("b", seq=2, conf=0.9, agent=BOB, day=1),
             mk("c", seq=3, conf=0.8, day=2), mk("a", seq=4, conf=0.2, agent=ALICE, day=3)]
    res = LENSES["trust"].resolve(cands, ctx(trust=trust))
    assert res.winner.seq == 1, "0.6 x 0.9 beats unsigned 0.8 x 0.5 and 0.9 x 0.1"
    assert seqs(res.ordered) == [1, 3, 4, 2], "ordered by trust-weighted confidence"
    assert sorted(calls) == [ALICE, BOB], "trust asked once per agent, never for unsigned"
    assert res.confidence == pytest.approx((0.54 + 0.18) / (0.54 + 0.09 + 0.4 + 0.18)), \
        "confidence: trust-weighted share of the winner's value"


def test_trust_default_and_ties_by_recency():
    cands = [mk("a", seq=1, conf=0.5, agent=ALICE), mk("b", seq=2, conf=0.5, day=1)]
    res = LENSES["trust"].resolve(cands, ctx())
    assert res.winner.seq == 2, "default trust 0.5 equals unsigned 0.5: the newer wins"
    assert res.confidence == 0.5, "two equal-weight values share the evidence"


# ------------------------------------------------------------------ trust rank

def test_trust_rank_numbers():
    assert trust_rank([], NOW) == 0.5, "an agent without outcomes is neutral"
    assert trust_rank([(T0, True)], T0) == 0.55, "an accurate outcome adds 0.05"
    assert trust_rank([(T0, False)], T0) == 0.4, "an inaccurate outcome takes 0.1"
    assert trust_rank([(T0, True)], T0 + 30 * DAY) == pytest.approx(0.525), \
        "30 days halve the distance to 0.5"
    assert trust_rank([(T0, False)], T0 + 60 * DAY) == pytest.approx(0.475), "two half-lives"
    assert trust_rank([(T0, True), (T0 + 30 * DAY, True)], T0 + 30 * DAY) == \
        pytest.approx(0.575), "decay between outcomes, then the step"
    assert trust_rank(iter([(T0, True)]), T0 - DAY) == 0.55, \
        "now before the last outcome: no decay; any iterable works"


def test_trust_rank_clamps_and_orders():
    assert trust_rank([(T0, True)] * 20, T0) == 1.0, "the rank never exceeds 1"
    assert trust_rank([(T0, False)] * 8, T0) == 0.0, "the rank never drops below 0"
    assert trust_rank([(T0, False)] * 8 + [(T0, True)], T0) == pytest.approx(0.05), \
        "clamping happens at each step, not at the end"
    out_of_order = [(T0 + 10 * DAY, True), (T0, False)]
    assert trust_rank(out_of_order, T0 + 10 * DAY) == pytest.approx(0.45), \
        "an outcome recorded out of order counts as simultaneous"


# ------------------------------------------------------------------ conflict

@pytest.mark.parametrize("name", NAMES)
def test_conflict_score_is_the_same_for_every_lens(name):
    cands = [mk("x", seq=1, conf=0.9, cls="regulatory"), mk("y", seq=2, conf=0.9, cls="community"),
             mk("y", seq=3, conf=0.6, cls="expert", day=1)]
    res = LENSES[name].resolve(cands, ctx(decay=True))
    w = [0.9 * 1.0, effective_confidence(cands[1], at_us=NOW, decay=True) * 0.3
         + effective_confidence(cands[2], at_us=NOW, decay=True) * 0.5]
    assert res.conflict_score == pytest.approx(entropy(w), abs=1e-12), \
        "conflict uses tier-weighted effective confidence, whatever the lens"


def test_conflict_score_numbers():
    def score(cands):
        return conflict_analysis(cands, ctx())["conflict_score"]
    assert score([mk("x", seq=1)]) == 0.0, "one claim: no conflict"
    assert score([mk("x", seq=1), mk("x", seq=2)]) == 0.0, "agreeing claims: no conflict"
    assert score([mk("x", seq=1), mk("y", seq=2)]) == 1.0, "an even split is full conflict"
    assert score([mk("x", seq=1, conf=0.75), mk("y", seq=2, conf=0.25)]) == \
        pytest.approx(0.8112781244591328), "3:1 split"
    even3 = [mk(v, seq=i, conf=0.3) for i, v in enumerate("xyz")]
    assert score(even3) == pytest.approx(1.0), "three-way even split normalizes to 1"
    assert score([mk("x", seq=1, conf=0.0), mk("y", seq=2, conf=0.0)]) == 1.0, \
        "claims with no weight at all cannot be told apart: fully contested"
    assert score([mk("x", seq=1, conf=0.5), mk("y", seq=2, conf=0.0)]) == 0.0, \
        "a weightless dissent adds no conflict"


# ------------------------------------------------------------------ skeptic

def test_skeptic_claims_status_and_winner():
    cands = [mk("rare", seq=1, conf=0.9, cls="clinical", day=1),
             mk("rare", seq=2, conf=0.5, cls="expert", day=3),
             mk("common", seq=3, conf=0.8, cls="anecdotal", day=9)]
    analysis = conflict_analysis(cands, ctx())
    rare_w = 0.9 * 0.9 + 0.5 * 0.5
    common_w = 0.8 * 0.1
    assert [c["value"] for c in analysis["claims"]] == ["rare", "common"], "heaviest first"
    rare, common = analysis["claims"]
    assert rare["weight"] == pytest.approx(rare_w) and common["weight"] == pytest.approx(common_w)
    assert rare["share"] == pytest.approx(rare_w / (rare_w + common_w)), "share of all weight"
    assert (rare["support"], common["support"]) == (2, 1), "support counts assertions"
    assert rare["hashes"] == [cands[1].hash, cands[0].hash], "hashes newest first"
    assert analysis["status"] == "agreed", "a 93/7 split is agreement (score < 0.5)"
    res = LENSES["skeptic"].resolve(cands, ctx())
    assert res.winner.seq == 2, "the heaviest claim's newest assertion wins"
    assert res.extra == {"status": analysis["status"], "claims": analysis["claims"]}, \
        "the skeptic lens and GET /v1/skeptic tell the same story"
    assert res.confidence == rare["share"] and seqs(res.ordered) == [2, 1, 3]


def test_skeptic_status_boundaries():
    def status(cands):
        return conflict_analysis(cands, ctx())["status"]
    assert status([mk("x", seq=1), mk("x", seq=2)]) == "unanimous", "one value"
    assert status([mk("x", seq=1), mk("y", seq=2)]) == "contested", "an even split"
    assert status([mk("x", seq=1, conf=0.9, cls="regulatory"),
                   mk("y", seq=2, conf=0.1, cls="anecdotal")]) == "agreed", "0.9 vs 0.01"


# ------------------------------------------------------------------ layered

def test_layered_reports_each_class_best_first():
    cands = [mk("b", seq=1, conf=0.6, cls="expert"), mk("a", seq=2, conf=0.5, cls="clinical"),
             mk("c", seq=3, conf=0.4, cls="expert", day=1)]
    res = LENSES["layered"].resolve(cands, ctx())
    assert res.winner.seq == 2 and res.confidence == 1.0, "the best class's winner wins"
    layers = res.extra["layers"]
    assert [layer["source_class"] for layer in layers] == ["clinical", "expert"], "best first"
    assert layers[1]["winner"].seq == 1 and layers[1]["confidence"] == pytest.approx(0.6), \
        "within a class: consensus"
    assert layers[1]["conflict_score"] == pytest.approx(entropy([0.6, 0.4])), \
        "each layer's conflict is within its class"
    assert [layer["candidates_count"] for layer in layers] == [1, 2]
    auth = LENSES["authority"].resolve(cands, ctx())
    assert (auth.winner, auth.confidence, auth.ordered) == (res.winner, res.confidence,
                                                           res.ordered), \
        "layered agrees with authority on winner, confidence and order"


# ------------------------------------------------------------------ scenario

def drug_scenario():
    """A label, a trial and a hundred forum posts about one risk."""
    label = Assertion(prepare_assertion({
        "concept_path": "drugs/semaglutide", "predicate": "gastroparesis_risk",
        "value": "rare", "confidence": 0.95, "source": "fda://label/2024-03",
        "timestamp": T0_S}), seq=1)
    trial = Assertion(prepare_assertion({
        "concept_path": "drugs/semaglutide", "predicate": "gastroparesis_risk",
        "value": "uncommon", "confidence": 0.8, "source": "nct://NCT04184622",
        "timestamp": T0_S + 86400}), seq=2)
    posts = [Assertion(prepare_assertion({
        "concept_path": "drugs/semaglutide", "predicate": "gastroparesis_risk",
        "value": "common" if i < 90 else "rare", "confidence": 0.6,
        "source": f"forum://ozempic/thread/{i}", "timestamp": T0_S + 2 * 86400 + i * 60}),
        seq=3 + i) for i in range(100)]
    return label, trial, posts


def test_scenario_sources_are_classified_by_scheme():
    label, trial, posts = drug_scenario()
    assert (label.source_class, trial.source_class, posts[0].source_class) == \
        ("regulatory", "clinical", "community"), "fda://, nct:// and forum:// tiers"


def test_scenario_authority_trusts_the_label_over_the_crowd():
    label, trial, posts = drug_scenario()
    cands = [*posts, trial, label]
    assert LENSES["consensus"].resolve(cands, ctx()).winner.value == "common", \
        "raw consensus follows the 90 forum posts"
    res = LENSES["authority"].resolve(cands, ctx())
    assert res.winner is label and res.confidence == 1.0, "one label outranks a hundred posts"
    assert res.ordered[:2] == [label, trial], "then the trial, then the forum"


def test_scenario_skeptic_weighs_tiers():
    label, trial, posts = drug_scenario()
    analysis = conflict_analysis([label, trial, *posts], ctx())
    weights = {"common": 90 * 0.6 * 0.3, "rare": 0.95 + 10 * 0.6 * 0.3, "uncommon": 0.8 * 0.9}
    assert [c["value"] for c in analysis["claims"]] == ["common", "rare", "uncommon"]
    for claim in analysis["claims"]:
        assert claim["weight"] == pytest.approx(weights[claim["value"]]), \
            "weight = sum of confidence x tier multiplier"
    assert [c["support"] for c in analysis["claims"]] == [90, 11, 1]
    assert analysis["claims"][1]["hashes"][-1] == label.hash, "the label is the oldest 'rare'"
    score = entropy(list(weights.values()))
    assert analysis["conflict_score"] == pytest.approx(score)
    assert analysis["status"] == ("agreed" if score < 0.5 else "contested")
    assert analysis["status"] == "contested", "the forum's weight still leaves real doubt"
    res = LENSES["skeptic"].resolve([label, trial, *posts], ctx())
    assert res.winner is posts[89], "the skeptic's winner is the heaviest claim's newest post"


def test_scenario_layered_shows_each_tier():
    label, trial, posts = drug_scenario()
    res = LENSES["layered"].resolve([*reversed(posts), label, trial], ctx())
    assert res.winner is label, "overall winner is the regulatory layer's"
    layers = {layer["source_class"]: layer for layer in res.extra["layers"]}
    assert list(layers) == ["regulatory", "clinical", "community"], "best tier first"
    assert (layers["regulatory"]["candidates_count"], layers["clinical"]["candidates_count"],
            layers["community"]["candidates_count"]) == (1, 1, 100)
    assert layers["clinical"]["winner"] is trial and layers["clinical"]["conflict_score"] == 0.0
    community = layers["community"]
    assert community["winner"] is posts[89] and community["confidence"] == pytest.approx(0.9), \
        "the forum says 'common' by 90 to 10"
    assert community["conflict_score"] == pytest.approx(entropy([0.9, 0.1])), \
        "within-forum disagreement is visible on its own"


# ------------------------------------------------------------- determinism

@pytest.mark.parametrize("name", NAMES)
def test_every_lens_ignores_input_order(name):
    label, trial, posts = drug_scenario()
    cands = [label, trial, *posts, mk("rare", seq=500, day=2, agent=ALICE, conf=0.3),
             mk("rare", seq=501, day=2, agent=BOB, conf=0.3)]
    context = ctx(decay=True, votes={posts[5].hash: 1.0, label.hash: 1.0},
                  trust={ALICE: 0.8, BOB: 0.2}.get)
    expected = LENSES[name].resolve(cands, context)
    rng = random.Random(1)
    for _ in range(5):
        rng.shuffle(cands)
        assert LENSES[name].resolve(cands, context) == expected, \
            "the same candidates in any order must give the same answer"


def test_resolution_is_a_plain_dataclass():
    res = Resolution(None, 0.0, 0.0, [])
    assert res.extra == {} and res == Resolution(None, 0.0, 0.0, [], {}), "extra defaults to {}"
