"""Votes in v1.1 (issue 8, item 3): the timestamp a vote carries and its
signature covers, replace-only-when-newer per agent (409 ``stale_vote``
otherwise, nothing written), the same rule on replay, records from before
v1.1, and ``require_signatures`` for votes."""
from __future__ import annotations

import os
import shutil
import threading
import time

import blake3
import pytest
from nacl.signing import SigningKey

from stemedb.core.format import REC_VOTE
from stemedb.errors import (
    InvalidSignature, NotFound, SignatureRequired, StaleVote, ValidationError)
from stemedb.model import vote_hash
from stemedb.timeutil import format_time, parse_time
from tests.conftest import T0, body

KEY = SigningKey(b"\x07" * 32)
AGENT = bytes(KEY.verify_key).hex()


def signed(store, h, weight, t, key=KEY):
    """Store a vote by ``key``'s agent signed over the v1.1 vote hash at time ``t``."""
    agent = bytes(key.verify_key).hex()
    sig = key.sign(vote_hash(h, weight, agent, parse_time(t, "t"))).signature.hex()
    return store.vote(h, weight, agent_id=agent, signature=sig, timestamp=t)


def vote_answer(store, path):
    """What a user sees of the votes: the vote lens's winner and confidence."""
    r = store.query(path, predicate="p0", lens="vote").results[0]
    return r["winner"].hash, r["confidence"]


def two_claims(store):
    a = store.put(body(0, concept_path="v/x", predicate="p0", value="a")).hash
    b = store.put(body(1, concept_path="v/x", predicate="p0", value="b")).hash
    return a, b


# ------------------------------------------------------------------ the hash

def test_vote_hash_is_blake3_of_the_jcs_object_with_timestamp_in_microseconds():
    h, agent, ts = "ab" * 32, "cd" * 32, 1_709_294_400_123_456
    jcs = ('{"agent_id":"%s","assertion_hash":"%s","timestamp":%d,"weight":0.5}'
           % (agent, h, ts)).encode()
    assert vote_hash(h, 0.5, agent, ts) == blake3.blake3(jcs).digest(), \
        "the contract's vote hash: JCS keys sorted, timestamp an integer of microseconds"
    assert vote_hash(h, 0.5, agent, ts) != vote_hash(h, 0.5, agent, ts + 1), \
        "the time is covered, so a signature is bound to it"
    with pytest.raises(ValidationError):
        vote_hash(h, 0.5, agent, "2024-03-01T12:00:00Z")   # a time must be converted first


def test_rfc3339_and_unix_seconds_sign_the_same_vote(opener):
    s = opener()
    a, _ = two_claims(s)
    sig = KEY.sign(vote_hash(a, 0.5, AGENT, T0 * 1_000_000)).signature.hex()
    assert s.vote(a, 0.5, agent_id=AGENT, signature=sig, timestamp="2024-03-01T12:00:00Z") > 0


# ------------------------------------------------------------------ replace only when newer

def test_an_old_signed_vote_replayed_is_stale_and_changes_nothing(opener):
    s = opener()
    a, b = two_claims(s)
    s.vote(b, 0.5)
    old_body = (a, 0.9, T0 + 10)
    signed(s, *old_body)
    signed(s, a, 0.1, T0 + 20)      # the agent changes its mind
    before = (s.last_seq, vote_answer(s, "v/x"))
    assert before[1][0] == b, "the newer vote (0.1) replaced the old one (0.9)"
    for _ in range(2):              # the attack: send the old signed vote again
        with pytest.raises(StaleVote) as exc:
            signed(s, *old_body)
        assert exc.value.code == "stale_vote" and exc.value.status == 409
        assert exc.value.field == "timestamp"
    with pytest.raises(StaleVote):
        signed(s, a, 0.9, T0 + 20)  # as new is not newer
    assert (s.last_seq, vote_answer(s, "v/x")) == before, "a stale vote is not written"
    seq = s.put(body(50)).seq
    assert seq == before[0] + 1, "a refused vote uses no seq"
    assert signed(s, a, 0.9, T0 + 21) == seq + 1, "a later one still replaces"
    assert vote_answer(s, "v/x")[0] == a


def test_agents_are_independent_and_anonymous_votes_each_count(opener):
    s = opener()
    a, b = two_claims(s)
    other = SigningKey(b"\x08" * 32)
    signed(s, a, 0.3, T0 + 5)
    signed(s, a, 0.3, T0 + 5, key=other)        # same time, other agent: fine
    signed(s, b, 0.2, T0 + 1)                   # same agent, other assertion: fine
    for _ in range(3):                          # anonymous, same time, no staleness
        s.vote(b, 0.2, timestamp=T0)
    w, conf = vote_answer(s, "v/x")
    assert w == b and conf == pytest.approx(0.8 / 1.4), "three anonymous votes add up"


def test_receive_time_is_the_timestamp_when_absent(opener):
    clock = [T0 * 1_000_000]
    s = opener(clock=lambda: clock[0])
    a, _ = two_claims(s)
    # an unsigned agent vote is refused, so an anonymous one shows the receive time
    s.vote(a, 0.4)
    o = s.state.ordinal(bytes.fromhex(a))
    assert s.state.votes[o][-1][4] == clock[0], "the receive time stands in"


def test_signed_vote_without_its_timestamp_says_so(opener):
    s = opener()
    a, _ = two_claims(s)
    sig = KEY.sign(vote_hash(a, 0.5, AGENT, T0 * 1_000_000)).signature.hex()
    with pytest.raises(InvalidSignature) as exc:
        s.vote(a, 0.5, agent_id=AGENT, signature=sig)
    assert "timestamp" in exc.value.message and exc.value.field == "signature"
    with pytest.raises(InvalidSignature):      # signed for another time
        s.vote(a, 0.5, agent_id=AGENT, signature=sig, timestamp=T0 + 1)


@pytest.mark.parametrize("bad", ["yesterday", True, float("nan"), 10 ** 12])
def test_bad_timestamps_name_the_field(opener, bad):
    s = opener()
    a, _ = two_claims(s)
    last = s.last_seq
    with pytest.raises(ValidationError) as exc:
        s.vote(a, 0.5, timestamp=bad)
    assert exc.value.field == "timestamp" and s.last_seq == last


def test_malformed_signature_is_invalid_signature_not_a_crash(opener):
    s = opener()
    a, _ = two_claims(s)
    for sig in (12345, "zz" * 64, "ab" * 10):
        with pytest.raises(InvalidSignature) as exc:
            s.vote(a, 0.5, agent_id=AGENT, signature=sig, timestamp=T0)
        assert exc.value.field == "signature"


def test_require_signatures_covers_votes(opener):
    s = opener()
    a, _ = two_claims(s)
    last = s.last_seq
    with pytest.raises(SignatureRequired) as exc:
        s.vote(a, 0.5, require_signatures=True)
    assert exc.value.code == "signature_required" and exc.value.field == "signature"
    assert s.last_seq == last, "refused before anything is written"
    sig = KEY.sign(vote_hash(a, 0.5, AGENT, T0 * 1_000_000)).signature.hex()
    assert s.vote(a, 0.5, agent_id=AGENT, signature=sig, timestamp=T0,
                  require_signatures=True) == last + 1
    with pytest.raises(NotFound):
        s.vote("ee" * 32, 0.5, require_signatures=True, agent_id=AGENT,
               signature=KEY.sign(vote_hash("ee" * 32, 0.5, AGENT, T0 * 10 ** 6))
               .signature.hex(), timestamp=T0)


# ------------------------------------------------------------------ racing votes

def test_two_racing_votes_of_one_agent_cannot_both_pass(opener):
    """The first vote is logged but not yet applied (its group waits for the
    batch delay); the second, as new, must still see it and be refused."""
    s = opener(durability="batch", batch_delay_ms=300)
    a, _ = two_claims(s)
    outcomes = []

    def first():
        try:
            outcomes.append(("ok", signed(s, a, 0.9, T0 + 7)))
        except StaleVote:
            outcomes.append(("stale", None))
    t = threading.Thread(target=first)
    t.start()
    deadline = time.monotonic() + 5
    while not s.writer._vote_pending and time.monotonic() < deadline:
        time.sleep(0.001)
    assert s.writer._vote_pending, "the first vote is in flight"
    try:
        outcomes.append(("ok", signed(s, a, 0.2, T0 + 7)))
    except StaleVote:
        outcomes.append(("stale", None))
    t.join(10)
    assert sorted(o for o, _ in outcomes) == ["ok", "stale"], \
        "exactly one of two equally new votes by one agent is accepted"
    o = s.state.ordinal(bytes.fromhex(a))
    assert len(s.state.votes[o]) == 1


def test_a_newer_racing_vote_follows_the_pending_one(opener):
    s = opener(durability="batch", batch_delay_ms=200)
    a, b = two_claims(s)
    s.vote(b, 0.5)
    t = threading.Thread(target=signed, args=(s, a, 0.9, T0 + 7))
    t.start()
    deadline = time.monotonic() + 5
    while not s.writer._vote_pending and time.monotonic() < deadline:
        time.sleep(0.001)
    signed(s, a, 0.1, T0 + 8)
    t.join(10)
    assert vote_answer(s, "v/x")[0] == b, "the newer (0.1) is the agent's vote"
    assert not s.writer._vote_pending, "nothing left pending once durable"


# ------------------------------------------------------------------ replay

def _votes(s):
    return {o: list(vs) for o, vs in s.state.votes.items()}


def _inject(s, h, weight, agent, ts=None):
    """A vote record written straight to the log, past Store.vote's check
    (what an older server, or a record out of order, leaves in a WAL)."""
    def make(rec):
        b = {"recorded_at": rec, "assertion_hash": bytes.fromhex(h), "weight": weight,
             "agent_id": agent}
        if ts is not None:
            b["timestamp"] = ts
        return b
    seq, _ = s.writer.write_meta(REC_VOTE, make)
    return seq


@pytest.mark.parametrize("keep_snapshot", [True, False])
def test_restart_rebuilds_the_same_votes(opener, data, keep_snapshot):
    s = opener()
    a, b = two_claims(s)
    signed(s, a, 0.9, T0 + 10)
    signed(s, a, 0.2, T0 + 30)
    s.vote(b, 0.5)
    s.vote(b, 0.25, timestamp=T0)
    with pytest.raises(StaleVote):
        signed(s, a, 0.9, T0 + 10)
    # a stale record that reached the log anyway changes nothing, live or on replay
    _inject(s, a, 1.0, AGENT, ts=(T0 + 20) * 10 ** 6)
    before = (_votes(s), vote_answer(s, "v/x"), s.last_seq)
    assert before[1][0] == b and before[1][1] == pytest.approx(0.75 / 0.95)
    s.close()
    if not keep_snapshot:
        shutil.rmtree(os.path.join(data, "db", "indexes"))
    s = opener()
    assert (_votes(s), vote_answer(s, "v/x"), s.last_seq) == before, \
        "the state after restart equals the state before"
    with pytest.raises(StaleVote):
        signed(s, a, 0.9, T0 + 10)      # the rule still holds after a restart
    assert signed(s, a, 0.9, T0 + 31) == before[2] + 1


def test_vote_records_from_before_v11_still_replay(opener, data):
    """Old records carry no timestamp: recorded_at stands in, and (as when
    they were written) the later of two equally old ones is the vote."""
    fixed = (T0 + 100) * 10 ** 6
    s = opener(clock=lambda: fixed)     # every record gets the same recorded_at
    a, b = two_claims(s)
    _inject(s, a, 0.2, AGENT)
    _inject(s, a, 0.8, AGENT)
    _inject(s, b, 0.5, None)
    live = (_votes(s), vote_answer(s, "v/x"))
    assert live[1][0] == a and live[1][1] == pytest.approx(0.8 / 1.3)
    s.close()
    shutil.rmtree(os.path.join(data, "db", "indexes"))
    s = opener()
    assert (_votes(s), vote_answer(s, "v/x")) == live, "legacy votes replay as they were"
    with pytest.raises(StaleVote):
        signed(s, a, 0.1, T0 + 100)     # not newer than the legacy vote's recorded_at
    signed(s, a, 0.1, T0 + 101)
    assert vote_answer(s, "v/x")[0] == b


def test_snapshot_entries_from_before_v11_count_recorded_at(opener, data):
    """A snapshot written before v1.1 holds 4-field vote entries."""
    s = opener()
    a, _ = two_claims(s)
    signed(s, a, 0.5, T0 + 50)
    o = s.state.ordinal(bytes.fromhex(a))
    st = s.state
    st.votes = {k: [v[:4] for v in vs] for k, vs in st.votes.items()}
    st.__dict__.pop("_vote_times", None)
    rec = st.votes[o][0][2]
    with pytest.raises(StaleVote):
        signed(s, a, 0.5, format_time(rec))
    signed(s, a, 0.5, format_time(rec + 1))
