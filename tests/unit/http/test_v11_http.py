"""Contract v1.1 through HTTP (issue 8, items 3, 5 and 6): vote timestamps and
``stale_vote``, ``signature_required`` for votes, the client's vote signing,
``include_retracted`` on the skeptic, and GET booleans only ``true``/``false``."""
from __future__ import annotations

from urllib.parse import urlencode

import pytest

from stemedb.client import sign_vote, signing_key
from stemedb.http.openapi import build_openapi
from stemedb.model import vote_hash
from stemedb.timeutil import parse_time

from .conftest import body

KEY = signing_key(b"\x05" * 32)


def put(client, **over):
    r = client.simulate_post("/v1/assert", json=body(**over))
    assert r.status_code == 201, r.text
    return r.json["hash"]


def last_seq(client):
    return client.simulate_get("/v1/health").json["last_seq"]


def vote_lens(client, path="drugs/semaglutide"):
    r = client.simulate_get("/v1/query", params={"concept_path": path, "lens": "vote",
                                                 "predicate": "gastroparesis_risk"})
    assert r.status_code == 200, r.text
    res = r.json["results"][0]
    return res["winner"]["hash"], res["confidence"]


# ------------------------------------------------------------------ votes

def test_replayed_old_signed_vote_is_409_stale_vote_and_changes_nothing(client):
    a = put(client, value="a", timestamp="2024-03-01T12:00:00Z")
    b = put(client, value="b", timestamp="2024-03-01T12:00:01Z")
    assert client.simulate_post("/v1/vote", json={"assertion_hash": b,
                                                  "weight": 0.5}).status_code == 201
    old = sign_vote(a, 0.9, KEY, timestamp="2025-01-01T00:00:00Z")
    assert client.simulate_post("/v1/vote", json=old).status_code == 201
    newer = sign_vote(a, 0.1, KEY, timestamp="2025-01-02T00:00:00Z")
    assert client.simulate_post("/v1/vote", json=newer).status_code == 201
    before = (last_seq(client), vote_lens(client))
    assert before[1][0] == b, "the agent's newer vote (0.1) replaced its 0.9"
    for replay in (old, newer):
        r = client.simulate_post("/v1/vote", json=replay)
        assert r.status_code == 409, r.text
        err = r.json["error"]
        assert err["code"] == "stale_vote" and err["field"] == "timestamp"
        assert "later timestamp" in err["message"]
    assert (last_seq(client), vote_lens(client)) == before, "a stale vote writes nothing"


def test_vote_timestamp_forms_and_bad_ones(client):
    h = put(client)
    for ts in ("2024-03-01T12:00:00Z", 1709294400, 1709294400.5):
        r = client.simulate_post("/v1/vote", json={"assertion_hash": h, "weight": 0.2,
                                                   "timestamp": ts})
        assert r.status_code == 201, (ts, r.text)
    seq = last_seq(client)
    for ts in ("yesterday", "2024-03-01", True, [1]):
        r = client.simulate_post("/v1/vote", json={"assertion_hash": h, "weight": 0.2,
                                                   "timestamp": ts})
        assert r.status_code == 400 and r.json["error"]["field"] == "timestamp", (ts, r.text)
    assert last_seq(client) == seq


def test_signed_vote_over_unix_seconds_verifies(client):
    h = put(client)
    digest = vote_hash(h, 0.4, bytes(KEY.verify_key).hex(), 1709294400 * 10 ** 6)
    doc = {"assertion_hash": h, "weight": 0.4, "timestamp": 1709294400,
           "agent_id": bytes(KEY.verify_key).hex(),
           "signature": KEY.sign(digest).signature.hex()}
    assert client.simulate_post("/v1/vote", json=doc).status_code == 201
    r = client.simulate_post("/v1/vote", json={**doc, "timestamp": 1709294401})
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_signature", \
        "the signature covers the time: it cannot be moved to another one"


def test_require_signatures_refuses_unsigned_votes(make_client, store):
    client = make_client(require_signatures=True)
    signed = {"concept_path": "d/x", "predicate": "p", "value": 1, "confidence": 0.5,
              "timestamp": 1709294400}
    from stemedb.client import sign_assertion
    h = client.simulate_post("/v1/assert", json=sign_assertion(signed, KEY)).json["hash"]
    seq = store.last_seq
    r = client.simulate_post("/v1/vote", json={"assertion_hash": h, "weight": 0.5})
    assert r.status_code == 400, r.text
    assert r.json["error"]["code"] == "signature_required"
    assert r.json["error"]["field"] == "signature"
    assert store.last_seq == seq, "nothing written"
    r = client.simulate_post("/v1/vote", json=sign_vote(h, 0.5, KEY))
    assert r.status_code == 201, r.text


def test_unsigned_votes_still_accepted_without_the_setting(client):
    h = put(client)
    for _ in range(2):   # anonymous votes each count, whatever their time
        r = client.simulate_post("/v1/vote", json={"assertion_hash": h, "weight": 0.5,
                                                   "timestamp": 0})
        assert r.status_code == 201


def test_sign_vote_sets_a_timestamp_the_signature_covers():
    h = "ab" * 32
    doc = sign_vote(h, 0.3, KEY)
    assert set(doc) == {"assertion_hash", "weight", "timestamp", "agent_id", "signature"}
    ts = parse_time(doc["timestamp"], "timestamp")
    KEY.verify_key.verify(vote_hash(h, 0.3, doc["agent_id"], ts),
                          bytes.fromhex(doc["signature"]))
    given = sign_vote(h, 0.3, KEY, timestamp=1709294400.25)
    assert given["timestamp"] == 1709294400.25
    KEY.verify_key.verify(vote_hash(h, 0.3, given["agent_id"], 1709294400_250000),
                          bytes.fromhex(given["signature"]))
    with pytest.raises(ValueError):
        sign_vote(h, 0.3, KEY, timestamp="not a time")


def test_openapi_has_the_vote_timestamp_and_its_409():
    doc = build_openapi()
    props = doc["components"]["schemas"]["VoteIn"]["properties"]
    assert "timestamp" in props
    assert "409" in doc["paths"]["/v1/vote"]["post"]["responses"]
    names = [p["name"] for p in doc["paths"]["/v1/skeptic"]["get"]["parameters"]]
    assert "include_retracted" in names


# ------------------------------------------------------------------ skeptic

def test_skeptic_accepts_include_retracted_and_ignores_it(client):
    keep = put(client, value="rare")
    gone = put(client, value="common", timestamp="2024-03-02T12:00:00Z")
    r = client.simulate_post("/v1/retract", json={"hash": gone, "reason": "withdrawn"})
    assert r.status_code == 200
    base = {"concept_path": "drugs/semaglutide", "predicate": "gastroparesis_risk"}
    plain = client.simulate_get("/v1/skeptic", params=base)
    assert plain.status_code == 200
    for flag in ("true", "false"):
        r = client.simulate_get("/v1/skeptic", params={**base, "include_retracted": flag})
        assert r.status_code == 200, r.text
        assert r.json == plain.json, "include_retracted changes nothing"
    assert [c["hashes"] for c in plain.json["claims"]] == [[keep]], \
        "retracted claims never count"


# ------------------------------------------------------------------ GET booleans

@pytest.mark.parametrize("path,name,value", [
    ("/v1/query", "decay", "1"), ("/v1/query", "decay", "TRUE"),
    ("/v1/query", "decay", "True"), ("/v1/query", "include_descendants", "yes"),
    ("/v1/query", "include_retracted", "0"), ("/v1/query", "decay", ""),
    ("/v1/skeptic", "decay", "1"), ("/v1/skeptic", "include_descendants", "FALSE"),
    ("/v1/skeptic", "include_retracted", "on"),
])
def test_get_booleans_are_true_or_false_only(client, path, name, value):
    qs = urlencode({"concept_path": "drugs/semaglutide", "predicate": "gastroparesis_risk",
                    name: value})
    r = client.simulate_get(path, query_string=qs)
    assert r.status_code == 400, r.text
    err = r.json["error"]
    assert err["field"] == name and err["code"] == "invalid_field"
    assert "true or false" in err["message"]


@pytest.mark.parametrize("path", ["/v1/query", "/v1/skeptic"])
def test_get_booleans_true_and_false_work(client, path):
    put(client)
    for value in ("true", "false"):
        r = client.simulate_get(path, params={
            "concept_path": "drugs", "predicate": "gastroparesis_risk",
            "include_descendants": value, "decay": value, "include_retracted": value})
        assert r.status_code == 200, r.text
    found = client.simulate_get("/v1/query", params={
        "concept_path": "drugs", "include_descendants": "true"}).json["assertions"]
    assert found, "include_descendants=true takes effect"
