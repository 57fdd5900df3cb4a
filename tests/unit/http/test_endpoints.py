"""Each endpoint of the contract through TestClient over the real store."""
from __future__ import annotations

from stemedb.client import assertion_hash

from .conftest import body


def put(client, **over):
    r = client.simulate_post("/v1/assert", json=body(**over))
    assert r.status_code in (200, 201), r.text
    return r.json


def test_assert_created_then_exists(client):
    r = client.simulate_post("/v1/assert", json=body())
    assert r.status_code == 201, "a new assertion is 201 once durable"
    doc = r.json
    assert doc["status"] == "created" and doc["seq"] >= 1
    assert doc["hash"] == assertion_hash(body()), "the hash is the contract's, as the client computes it"
    again = client.simulate_post("/v1/assert", json=body())
    assert again.status_code == 200, "a stored hash is 200 exists"
    assert again.json == {"hash": doc["hash"], "status": "exists", "seq": doc["seq"]}


def test_assert_unix_seconds_and_rfc3339_hash_the_same(client):
    a = put(client, timestamp=1709294400)
    b = client.simulate_post("/v1/assert", json=body(timestamp="2024-03-01T12:00:00Z"))
    assert b.json["hash"] == a["hash"] and b.status_code == 200


def test_assert_null_value_is_allowed(client):
    r = client.simulate_post("/v1/assert", json=body(value=None) | {"value": None})
    assert r.status_code == 201, r.text


def test_batch_in_request_order_and_atomic(client, store):
    items = [body(value=i) for i in range(5)]
    r = client.simulate_post("/v1/assert/batch", json={"assertions": items})
    assert r.status_code == 201
    results = r.json["results"]
    assert [x["hash"] for x in results] == [assertion_hash(b) for b in items]
    assert all(x["status"] == "created" for x in results)
    assert [x["seq"] for x in results] == sorted(x["seq"] for x in results)
    count = store.count
    bad = [body(value=100 + i) for i in range(5)]
    bad[3]["confidence"] = 1.5
    r = client.simulate_post("/v1/assert/batch", json={"assertions": bad})
    assert r.status_code == 400
    assert r.json["error"]["field"] == "assertions[3].confidence"
    assert store.count == count, "a bad item fails the whole batch"


def test_batch_model_error_names_the_item(client):
    bad = [body(value=1), body(concept_path="a//b")]
    r = client.simulate_post("/v1/assert/batch", json={"assertions": bad})
    assert r.status_code == 400
    assert r.json["error"]["field"] == "assertions[1].concept_path"


def test_batch_reference_to_earlier_item(client):
    first = body(value="base")
    second = body(value="revised", parent_hash=assertion_hash(first))
    r = client.simulate_post("/v1/assert/batch", json={"assertions": [first, second]})
    assert r.status_code == 201, r.text


def test_batch_limits(client):
    r = client.simulate_post("/v1/assert/batch", json={"assertions": []})
    assert r.status_code == 400 and r.json["error"]["field"] == "assertions"
    r = client.simulate_post("/v1/assert/batch",
                             json={"assertions": [body(value=i) for i in range(10_001)]})
    assert r.status_code == 400 and r.json["error"]["field"] == "assertions"


def test_get_assertion(client):
    h = put(client)["hash"]
    r = client.simulate_get(f"/v1/assertions/{h}")
    assert r.status_code == 200
    a = r.json
    assert a["hash"] == h and a["status"] == "active"
    assert a["source_class"] == "regulatory", "fda:// infers regulatory"
    assert a["lifecycle"] == "proposed"
    assert a["timestamp"] == "2024-03-01T12:00:00.000000Z"
    assert a["recorded_at"].endswith("Z")
    assert client.simulate_get("/v1/assertions/" + "0" * 64).status_code == 404
    bad = client.simulate_get("/v1/assertions/xyz")
    assert bad.status_code == 400 and bad.json["error"]["field"] == "hash"


def test_query_post_and_get_agree(client):
    put(client, value="rare", timestamp=1700000000)
    put(client, value="common", timestamp=1700000100, confidence=0.4)
    post = client.simulate_post("/v1/query", json={"concept_path": "drugs/semaglutide",
                                                   "predicate": "gastroparesis_risk"})
    assert post.status_code == 200, post.text
    doc = post.json
    assert set(doc) >= {"concept_path", "lens", "results", "assertions", "next_cursor"}
    assert doc["lens"] == "recency"
    assert doc["assertions"][0]["value"] == "common", "recency: newest first"
    res = doc["results"][0]
    assert res["winner"]["value"] == "common" and res["candidates_count"] == 2
    get = client.simulate_get("/v1/query", params={"concept_path": "drugs/semaglutide",
                                                  "predicate": "gastroparesis_risk"})
    assert get.status_code == 200 and get.json["results"] == doc["results"]


def test_query_get_booleans_times_and_paging(client):
    for i in range(3):
        put(client, value=i, timestamp=1700000000 + i)
    r = client.simulate_get("/v1/query", query_string="concept_path=drugs&include_descendants=true"
                            "&as_of=1700000001&limit=1&decay=false")
    assert r.status_code == 200, r.text
    doc = r.json
    assert len(doc["assertions"]) == 1 and doc["next_cursor"]
    assert doc["assertions"][0]["value"] == 1, "as_of in Unix seconds from the query string"
    nxt = client.simulate_get("/v1/query", params={
        "concept_path": "drugs", "include_descendants": "true", "as_of": "1700000001",
        "limit": "1", "cursor": doc["next_cursor"]})
    assert nxt.status_code == 200 and nxt.json["assertions"][0]["value"] == 0


def test_query_nothing_matches_is_200(client):
    r = client.simulate_post("/v1/query", json={"concept_path": "nothing/here"})
    assert r.status_code == 200 and r.json["assertions"] == []


def test_query_bad_parameters(client):
    r = client.simulate_get("/v1/query", query_string="concept_path=a&include_descendants=maybe")
    assert r.status_code == 400 and r.json["error"]["field"] == "include_descendants"
    r = client.simulate_get("/v1/query", query_string="concept_path=a&bogus=1")
    assert r.status_code == 400 and r.json["error"]["field"] == "bogus"
    r = client.simulate_get("/v1/query", query_string="concept_path=a&concept_path=b")
    assert r.status_code == 400 and r.json["error"]["field"] == "concept_path"
    r = client.simulate_get("/v1/query", query_string="predicate=p")
    assert r.status_code == 400 and r.json["error"]["field"] == "concept_path"
    r = client.simulate_post("/v1/query", json={"concept_path": "a", "limit": 0})
    assert r.status_code == 400 and r.json["error"]["field"] == "limit"
    r = client.simulate_post("/v1/query", json={"concept_path": "a", "lens": "nope"})
    assert r.status_code == 400 and r.json["error"]["field"] == "lens"
    assert "recency" in r.json["error"]["message"], "an unknown lens lists the valid ones"


def test_every_lens_answers(client):
    put(client, value="a")
    put(client, value="b", source="forum://x")
    for lens in ("recency", "confidence", "consensus", "authority", "vote", "trust",
                 "skeptic", "layered"):
        r = client.simulate_post("/v1/query", json={"concept_path": "drugs/semaglutide",
                                                    "lens": lens})
        assert r.status_code == 200, (lens, r.text)
        assert r.json["lens"] == lens


def test_retract_by_hash_and_errors(client):
    h = put(client)["hash"]
    r = client.simulate_post("/v1/retract", json={"hash": h, "reason": "wrong label"})
    assert r.status_code == 200, r.text
    assert r.json["retracted"] == 1 and r.json["hashes"] == [h] and r.json["seq"] > 0
    a = client.simulate_get(f"/v1/assertions/{h}").json
    assert a["status"] == "retracted" and a["retraction"]["reason"] == "wrong label"
    r = client.simulate_post("/v1/retract", json={"hash": "0" * 64, "reason": "x"})
    assert r.status_code == 404
    r = client.simulate_post("/v1/retract", json={"hash": h, "source": "x", "reason": "x"})
    assert r.status_code == 400
    r = client.simulate_post("/v1/retract", json={"reason": "x"})
    assert r.status_code == 400
    r = client.simulate_post("/v1/retract", json={"hash": h, "reason": ""})
    assert r.status_code == 400 and r.json["error"]["field"] == "reason"


def test_retract_source_cascade(client):
    a = put(client, value=1, source="source/bad_source")
    d = put(client, value=2, source="pubmed://1", derived_from=[a["hash"]])
    r = client.simulate_post("/v1/retract", json={"source": "source/bad_source",
                                                  "reason": "fraud", "cascade": True})
    assert r.status_code == 200
    assert sorted(r.json["hashes"]) == sorted([a["hash"], d["hash"]])


def test_skeptic(client):
    put(client, value="rare")
    put(client, value="common", source="forum://x")
    r = client.simulate_get("/v1/skeptic", params={"concept_path": "drugs/semaglutide",
                                                  "predicate": "gastroparesis_risk"})
    assert r.status_code == 200, r.text
    doc = r.json
    assert doc["status"] in ("agreed", "contested")
    assert [c["value"] for c in doc["claims"]][0] == "rare", "heaviest first"
    assert set(doc["claims"][0]) >= {"value", "weight", "share", "support", "hashes"}
    r = client.simulate_get("/v1/skeptic", params={"concept_path": "drugs/semaglutide"})
    assert r.status_code == 400 and r.json["error"]["field"] == "predicate"


def test_trace(client):
    base = put(client, value=1)
    child = put(client, value=2, parent_hash=base["hash"])
    r = client.simulate_get(f"/v1/trace/{child['hash']}")
    assert r.status_code == 200, r.text
    doc = r.json
    assert doc["assertion"]["hash"] == child["hash"]
    assert [p["hash"] for p in doc["parents"]] == [base["hash"]]
    assert set(doc) >= {"parents", "derived_from", "dependents", "dependents_count", "source",
                        "retraction"}
    assert client.simulate_get("/v1/trace/" + "1" * 64).status_code == 404


def test_vote(client):
    h = put(client)["hash"]
    r = client.simulate_post("/v1/vote", json={"assertion_hash": h, "weight": 0.5})
    assert r.status_code == 201 and r.json["seq"] > 0
    r = client.simulate_post("/v1/vote", json={"assertion_hash": "2" * 64, "weight": 0.5})
    assert r.status_code == 404
    r = client.simulate_post("/v1/vote", json={"assertion_hash": h, "weight": 2})
    assert r.status_code == 400 and r.json["error"]["field"] == "weight"


def test_signed_vote(client):
    from stemedb.client import sign_vote, signing_key
    key = signing_key()
    h = put(client)["hash"]
    r = client.simulate_post("/v1/vote", json=sign_vote(h, 0.7, key))
    assert r.status_code == 201, r.text
    forged = sign_vote(h, 0.7, key) | {"weight": 0.9}
    r = client.simulate_post("/v1/vote", json=forged)
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_signature"


def test_epoch(client):
    r = client.simulate_post("/v1/epoch", json={"name": "v1", "description": "first"})
    assert r.status_code == 201 and r.json["name"] == "v1" and r.json["seq"] > 0
    r = client.simulate_post("/v1/epoch", json={"name": "v1"})
    assert r.status_code == 409
    r = client.simulate_post("/v1/epoch", json={"name": "v2", "supersedes": ["nope"]})
    assert r.status_code == 400 and r.json["error"]["code"] == "unknown_reference"
    r = client.simulate_post("/v1/epoch", json={"name": "v2", "supersedes": ["v1"]})
    assert r.status_code == 201
    r = client.simulate_post("/v1/assert", json=body(epoch="missing"))
    assert r.status_code == 400 and r.json["error"]["code"] == "unknown_reference"


def test_outcome(client):
    agent = "ab" * 32
    r = client.simulate_post(f"/v1/agents/{agent}/outcome", json={"accurate": True})
    assert r.status_code == 201
    assert r.json["agent_id"] == agent and 0.5 < r.json["trust_rank"] <= 1
    r = client.simulate_post("/v1/agents/nothex/outcome", json={"accurate": True})
    assert r.status_code == 400 and r.json["error"]["field"] == "agent_id"
    r = client.simulate_post(f"/v1/agents/{agent}/outcome", json={"accurate": "yes"})
    assert r.status_code == 400 and r.json["error"]["field"] == "accurate"


def test_audit(client):
    put(client)
    client.simulate_post("/v1/query", json={"concept_path": "drugs/semaglutide"})
    r = client.simulate_get("/v1/audit/queries", params={"limit": "10"})
    assert r.status_code == 200, r.text
    queries = r.json["queries"]
    assert queries and queries[0]["params"]["concept_path"] == "drugs/semaglutide"
    one = client.simulate_get(f"/v1/audit/queries/{queries[0]['id']}")
    assert one.status_code == 200 and one.json["id"] == queries[0]["id"]
    assert client.simulate_get("/v1/audit/queries/nope").status_code == 404


def test_signed_assert_and_require_signatures(make_client):
    from stemedb.client import sign_assertion, signing_key
    client = make_client(require_signatures=True)
    r = client.simulate_post("/v1/assert", json=body())
    assert r.status_code == 400 and r.json["error"]["code"] == "signature_required"
    signed = sign_assertion(body(), signing_key())
    r = client.simulate_post("/v1/assert", json=signed)
    assert r.status_code == 201, r.text
    assert r.json["hash"] == assertion_hash(signed)
    tampered = dict(signed, value="other")
    r = client.simulate_post("/v1/assert", json=tampered)
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_signature"


def test_health(client, store):
    put(client)
    r = client.simulate_get("/v1/health")
    assert r.status_code == 200
    doc = r.json
    assert doc["status"] == "healthy"
    assert doc["assertion_count"] == store.count == 1
    assert doc["last_seq"] == store.last_seq
    assert doc["implementation"] in ("compiled", "pure")
    assert doc["wal_segments"] >= 1 and "version" in doc and doc["uptime_seconds"] >= 0
    assert doc["wal"]["writes"] == "accepting"


def test_trailing_slash_is_the_same_endpoint(client):
    assert client.simulate_get("/v1/health/").status_code == 200
