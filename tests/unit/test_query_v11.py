"""Contract v1.1 query semantics (issue 8, items 1, 2 and 4), through the
embedded API and over HTTP:

- time cuts show the past: with ``as_of``/``known_at`` every assertion in an
  answer has its status as of the cut;
- a cursor pins the first page's whole view (assertions, retractions,
  votes, epochs, trust outcomes and the "now" decay is measured at);
- time filters take any time of the years 0001-9999, while a stored
  ``timestamp`` keeps the range the hash carries exactly.
"""
from __future__ import annotations

import base64
import json

import falcon.testing
import pytest
from nacl.signing import SigningKey

from stemedb import open_store
from stemedb.config import Settings
from stemedb.core.lens import LENSES
from stemedb.errors import ValidationError
from stemedb.http.app import create_app
from stemedb.model import assertion_hash
from stemedb.timeutil import format_time
from tests.conftest import NoFsyncFS
from tests.unit.http.conftest import NO_LIMITS

DAY_US = 86400 * 1_000_000
T0 = 1_709_294_400                      # 2024-03-01T12:00:00Z, in seconds
NOW = (T0 + 400 * 86400) * 1_000_000    # the store's clock starts here (us)
FIRST = "0001-01-01T00:00:00Z"
LAST = "9999-12-31T23:59:59.999999Z"


@pytest.fixture
def store(tmp_path):
    clock = [NOW]
    with open_store(str(tmp_path / "data"), fs=NoFsyncFS(), clock=lambda: clock[0]) as s:
        s.test_clock = clock
        yield s


@pytest.fixture
def client(store, tmp_path):
    app = create_app(store, Settings(rate_limits=NO_LIMITS, data_dir=str(tmp_path / "data")))
    return falcon.testing.TestClient(app, headers={"Host": "localhost"})


def claim(value, t=0, path="g", conf=0.5, **kw):
    return {"concept_path": path, "predicate": "r", "value": value, "confidence": conf,
            "timestamp": T0 + t, **kw}


def tick(store, seconds=1):
    store.test_clock[0] += seconds * 1_000_000


def values(assertions):
    return [a.value for a in assertions]


def pages(store, first, **q):
    """Values of the first page (already answered) and of every later page."""
    out = [values(first.assertions)]
    page = first
    for _ in range(100):                 # bounded: six claims make at most six pages
        if page.next_cursor is None:
            return out
        page = store.query("g", predicate="r", cursor=page.next_cursor, **q)
        out.append(values(page.assertions))
    raise AssertionError("paging did not end")


# ------------------------------------------------------------------ 1. time cuts

def test_as_of_shows_the_status_before_a_later_retraction(store):
    a = store.put({"concept_path": "g", "predicate": "r", "value": "yes",
                   "confidence": 0.9, "timestamp": "2024-01-01T00:00:00Z"})
    store.retract(hash=a.hash, reason="withdrawn")
    res = store.query("g", predicate="r", as_of="2024-06-01T00:00:00Z")
    w = res.results[0]["winner"]
    assert w is not None and w.hash == a.hash
    assert (w.status, w.retraction) == ("active", None), \
        "a retraction recorded after as_of is not shown: the winner is active there"
    assert [(x.status, x.retraction) for x in res.assertions] == [("active", None)]
    d = res.to_dict()
    assert d["results"][0]["winner"]["status"] == "active"
    assert "retraction" not in d["results"][0]["winner"] and "retraction" not in d["assertions"][0]
    assert store.query("g", predicate="r").results[0]["winner"] is None, \
        "without a cut the retraction applies"


def test_known_at_shows_the_status_at_the_cut(store):
    a = store.put(claim("x"))
    cut = store.test_clock[0]
    tick(store, 60)
    store.retract(hash=a.hash, reason="wrong")
    retracted_at = store.test_clock[0]
    before = store.query("g", predicate="r", known_at=format_time(cut), include_retracted=True)
    assert [(x.status, x.retraction) for x in before.assertions] == [("active", None)], \
        "known_at before the retraction was recorded: active, no retraction"
    assert before.results[0]["winner"].status == "active"
    after = store.query("g", predicate="r", known_at=format_time(retracted_at),
                        include_retracted=True)
    assert after.results[0]["winner"] is None and after.results[0]["candidates_count"] == 0
    [x] = after.assertions
    assert x.status == "retracted" and x.retraction["reason"] == "wrong"
    assert x.retraction["retracted_at"] == format_time(retracted_at)


def test_as_of_and_known_at_together_take_the_earlier_cut(store):
    a = store.put(claim("x"))
    tick(store, 60)
    store.retract(hash=a.hash, reason="wrong")
    # known_at after the retraction, as_of before it: as_of hides it
    res = store.query("g", predicate="r", known_at=format_time(store.test_clock[0]),
                      as_of=T0 + 1)
    assert res.results[0]["winner"].status == "active"


@pytest.mark.parametrize("lens", sorted(LENSES))
def test_every_lens_and_layer_shows_the_cut_status(store, lens):
    store.put(claim("label", 0, source="fda://label"))
    store.put(claim("forum", 1, source="forum://t/1"))
    store.put(claim("trial", 2, source="nct://NCT1"))
    store.retract(concept_path="g", reason="all withdrawn")
    res = store.query("g", predicate="r", lens=lens, as_of=T0 + 10)
    assert res.results[0]["candidates_count"] == 3
    assert res.results[0]["winner"].status == "active", f"{lens}: winner as of the cut"
    assert {a.status for a in res.assertions} == {"active"}
    for layer in res.results[0].get("layers", ()):
        assert layer["winner"].status == "active", "layered: each layer's winner as of the cut"
    text = json.dumps(res.to_dict())
    assert '"retracted"' not in text and '"retraction"' not in text, \
        "nothing in the answer shows the later retraction"


def test_revision_retracted_after_the_cut_still_stands_in(store):
    a = store.put(claim("original", 0))
    b = store.put(claim("revision", 1, parent_hash=a.hash))
    tick(store)
    store.retract(hash=b.hash, reason="bad revision")
    past = store.query("g", predicate="r", as_of=T0 + 10)
    assert values(past.assertions) == ["revision"] and past.assertions[0].status == "active"
    assert values(store.query("g", predicate="r").assertions) == ["original"]


# ------------------------------------------------------------------ 2. cursors

def six(store, **kw):
    store.put_batch([claim(i, i, **kw) for i in range(1, 7)])


def test_retraction_between_pages_neither_skips_nor_repeats(store):
    six(store)
    first = store.query("g", predicate="r", limit=2)
    assert values(first.assertions) == [6, 5]
    tick(store)
    store.retract(hash=first.assertions[0].hash, reason="withdrawn")
    assert pages(store, first, limit=2) == [[6, 5], [4, 3], [2, 1]], \
        "the retraction came after the first page: later pages do not see it"
    assert values(store.query("g", predicate="r", limit=2).assertions) == [5, 4], \
        "a new first page sees it"


def test_retraction_of_a_later_page_is_not_shown_in_the_pinned_view(store):
    six(store)
    first = store.query("g", predicate="r", limit=2)
    tick(store)
    store.retract(hash=store.query("g", predicate="r", limit=6).assertions[3].hash, reason="x")
    second = store.query("g", predicate="r", limit=2, cursor=first.next_cursor)
    assert values(second.assertions) == [4, 3]
    assert [a.status for a in second.assertions] == ["active", "active"], \
        "statuses are those of the pinned view"
    assert second.results[0]["candidates_count"] == 6


def test_vote_between_pages_does_not_reorder_later_pages(store):
    six(store)
    stored = store.query("g", predicate="r", limit=6).assertions
    for a in stored:
        store.vote(a.hash, a.value / 10)
    first = store.query("g", predicate="r", lens="vote", limit=2)
    assert values(first.assertions) == [6, 5]
    tick(store)
    for _ in range(3):                        # anonymous votes each count
        store.vote(stored[5].hash, 1.0)       # claim 1 would now lead
    assert pages(store, first, lens="vote", limit=2) == [[6, 5], [4, 3], [2, 1]]
    assert values(store.query("g", predicate="r", lens="vote", limit=2).assertions) == [1, 6]


def test_epoch_between_pages_does_not_empty_later_pages(store):
    store.create_epoch("e1")
    six(store, epoch="e1")
    first = store.query("g", predicate="r", limit=2)
    tick(store)
    store.create_epoch("e2", supersedes=["e1"])
    assert pages(store, first, limit=2) == [[6, 5], [4, 3], [2, 1]], \
        "the superseding epoch came after the first page"
    assert store.query("g", predicate="r").assertions == [], "a new first page sees it"


def test_decay_is_measured_at_the_first_page_time(store):
    now_s = NOW // 1_000_000
    store.put(claim("regulator", 0, conf=0.5, source="fda://x", timestamp=now_s - 1))
    store.put(claim("forum", 0, conf=0.9, source="forum://x", timestamp=now_s))
    first = store.query("g", predicate="r", lens="confidence", decay=True, limit=1)
    assert values(first.assertions) == ["forum"]
    tick(store, 365 * 86400)                  # a year on, the forum post has decayed
    assert pages(store, first, lens="confidence", decay=True, limit=1) == \
        [["forum"], ["regulator"]], "later pages rank as the first page did"


def test_trust_outcome_between_pages_is_not_seen(store):
    keys = [SigningKey.generate() for _ in range(2)]
    for i, key in enumerate(keys):
        body = claim(f"agent{i}", i, conf=0.6, agent_id=key.verify_key.encode().hex())
        body["signature"] = key.sign(bytes.fromhex(assertion_hash(body))).signature.hex()
        store.put(body)
    agent0 = keys[0].verify_key.encode().hex()
    store.record_outcome(agent0, True)
    first = store.query("g", predicate="r", lens="trust", limit=1)
    assert values(first.assertions) == ["agent0"], "0.6 x 0.55 beats 0.6 x 0.5"
    tick(store)
    for _ in range(3):
        store.record_outcome(agent0, False)
    assert pages(store, first, lens="trust", limit=1) == [["agent0"], ["agent1"]]


def test_a_cursor_from_before_v11_still_reads(store):
    six(store)
    old = base64.urlsafe_b64encode(f"v1:2:{store.last_seq}".encode()).decode().rstrip("=")
    assert values(store.query("g", predicate="r", limit=2, cursor=old).assertions) == [4, 3]


@pytest.mark.parametrize("raw", ["v2:2:6:1", "v2:-1:6:1:1", "v3:2:6:1:1", "v2:2:6:None:1",
                                 "v1:2", "garbage", "v2:0:6:1:" + "9" * 400,
                                 "v2:0:6:-" + "9" * 30 + ":1", "v2:0:" + "9" * 30 + ":1:1",
                                 "v1:0:" + "9" * 30, "v2:0:-6:1:1"])
def test_a_cursor_the_server_did_not_write_is_400(store, raw):
    six(store)
    cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    with pytest.raises(ValidationError) as exc:
        store.query("g", predicate="r", cursor=cursor, lens="confidence", decay=True)
    assert exc.value.field == "cursor", "an edited cursor is a 400 on cursor, never a crash"


def test_http_cursor_pins_the_view(client, store):
    six(store)
    r = client.simulate_get("/v1/query", params={"concept_path": "g", "predicate": "r",
                                                 "limit": "2"})
    assert r.status_code == 200, r.text
    assert [a["value"] for a in r.json["assertions"]] == [6, 5]
    tick(store)
    assert client.simulate_post("/v1/retract", json={
        "hash": r.json["assertions"][0]["hash"], "reason": "x"}).status_code == 200
    r2 = client.simulate_post("/v1/query", json={"concept_path": "g", "predicate": "r",
                                                 "limit": 2, "cursor": r.json["next_cursor"]})
    assert r2.status_code == 200, r2.text
    assert [a["value"] for a in r2.json["assertions"]] == [4, 3]


# ------------------------------------------------------------------ 4. time filters

EXTREMES = [
    ({"as_of": FIRST}, 0), ({"as_of": LAST}, 6),
    ({"as_of": -62135596800}, 0), ({"as_of": 253402300799.99}, 6),
    ({"as_of": 253402300799}, 6),
    ({"as_of": "0001-01-01T00:00:00+01:00"}, 0), ({"as_of": "9999-12-31T23:59:59-01:00"}, 6),
    ({"known_at": FIRST}, 0), ({"known_at": LAST}, 6),
    ({"since": FIRST}, 6), ({"since": LAST}, 0),
    ({"as_of": LAST, "known_at": LAST, "since": FIRST}, 6),
]


@pytest.mark.parametrize("q,n", EXTREMES)
def test_time_filters_take_the_years_0001_to_9999(store, q, n):
    six(store)
    res = store.query("g", predicate="r", **q)
    assert len(res.assertions) == n and res.results[0]["candidates_count"] == n


@pytest.mark.parametrize("q,n", EXTREMES)
def test_time_filters_at_the_extremes_over_many_candidates(store, q, n):
    # past query.SMALL candidates the filters run as numpy masks
    store.put_batch([claim(i, i) for i in range(1, 61)])
    res = store.query("g", predicate="r", limit=1000, **q)
    assert len(res.assertions) == n * 10 and res.results[0]["candidates_count"] == n * 10


def test_paging_many_candidates_with_retractions_between_pages(store):
    store.put_batch([claim(i, i) for i in range(1, 61)])
    first = store.query("g", predicate="r", limit=25)
    tick(store)
    store.retract(concept_path="g", reason="all withdrawn")
    got = [v for p in pages(store, first, limit=25) for v in p]
    assert got == list(range(60, 0, -1)), "every candidate exactly once, in the first page's order"


@pytest.mark.parametrize("field", ["as_of", "known_at", "since"])
@pytest.mark.parametrize("value", [-62135596801, 253402300800, 253402300800.0, 10**30, -1e300])
def test_unix_seconds_outside_the_years_are_refused(store, field, value):
    with pytest.raises(ValidationError) as exc:
        store.query("g", predicate="r", **{field: value})
    assert exc.value.field == field
    assert "0001 to 9999" in str(exc.value) and "hash" not in str(exc.value)


@pytest.mark.parametrize("lens", sorted(LENSES))
def test_decay_at_a_far_as_of_neither_overflows_nor_crashes(store, lens):
    store.put(claim("regulator", 0, conf=0.5, source="fda://x"))
    store.put(claim("forum", 1, conf=0.9, source="forum://x"))
    far = store.query("g", predicate="r", lens=lens, decay=True, as_of=LAST)
    assert far.results[0]["candidates_count"] == 2
    if lens in ("confidence", "authority", "layered", "consensus", "skeptic"):
        assert far.results[0]["winner"].value == "regulator", \
            f"{lens}: the forum post has decayed to nothing; regulatory never decays"
    before = store.query("g", predicate="r", lens=lens, decay=True, as_of=FIRST,
                         since=FIRST)
    assert before.results[0]["candidates_count"] == 0


def test_far_as_of_decays_every_decaying_claim_to_zero(store):
    store.put(claim("forum", 0, conf=0.9, source="forum://x"))
    res = store.query("g", predicate="r", lens="confidence", decay=True, as_of=LAST)
    assert res.results[0]["confidence"] == 0.0


def test_trust_rank_at_a_far_as_of(store):
    key = SigningKey.generate()
    agent = key.verify_key.encode().hex()
    body = claim("signed", 0, agent_id=agent)
    body["signature"] = key.sign(bytes.fromhex(assertion_hash(body))).signature.hex()
    store.put(body)
    store.record_outcome(agent, True)
    res = store.query("g", predicate="r", lens="trust", as_of=LAST)
    assert res.results[0]["winner"].value == "signed"


def test_a_stored_timestamp_keeps_the_exact_integer_range(store):
    for ts in (FIRST, LAST, -62135596800):
        with pytest.raises(ValidationError) as exc:
            store.put(claim("x", timestamp=ts))
        assert exc.value.field == "timestamp"
        assert "2^53" in str(exc.value), "the message says why timestamps are bounded"
    assert store.put(claim("x", timestamp="2255-01-01T00:00:00Z")).created
    assert store.put(claim("y", timestamp="1700-01-01T00:00:00Z")).created


def test_audit_from_and_to_take_the_years_0001_to_9999(store):
    store.put(claim("x"))
    store.query("g", predicate="r")
    assert len(store.audit_queries(from_=FIRST, to=LAST)) == 1
    assert len(store.audit_queries(from_=-62135596800, to=253402300799.5)) == 1
    assert store.audit_queries(from_=LAST) == []
    assert store.audit_queries(to=FIRST) == []
    with pytest.raises(ValidationError) as exc:
        store.audit_queries(to=253402300800)
    assert exc.value.field == "to"


# over HTTP

def _n(r):
    assert r.status_code == 200, r.text
    return len(r.json["assertions"])


@pytest.mark.parametrize("as_of,n", [(FIRST, 0), (LAST, 6), ("-62135596800", 0),
                                     ("253402300799.5", 6), ("0001-01-01T00:00:00+01:00", 0)])
def test_http_get_query_at_the_extremes(client, store, as_of, n):
    six(store)
    r = client.simulate_get("/v1/query", params={"concept_path": "g", "predicate": "r",
                                                 "as_of": as_of, "decay": "true",
                                                 "lens": "confidence"})
    assert _n(r) == n


@pytest.mark.parametrize("q,n", [({"as_of": FIRST}, 0), ({"as_of": LAST}, 6),
                                 ({"as_of": -62135596800}, 0), ({"as_of": 253402300799.5}, 6),
                                 ({"known_at": LAST, "since": FIRST, "decay": True}, 6),
                                 ({"since": LAST}, 0)])
def test_http_post_query_at_the_extremes(client, store, q, n):
    six(store)
    assert _n(client.simulate_post("/v1/query", json={"concept_path": "g", "predicate": "r",
                                                      **q})) == n


@pytest.mark.parametrize("where,q", [("GET", {"as_of": "253402300800"}),
                                     ("GET", {"since": "-62135596801"}),
                                     ("POST", {"known_at": 253402300800}),
                                     ("POST", {"as_of": "10000-01-01T00:00:00Z"})])
def test_http_times_outside_the_years_are_400(client, where, q):
    field = next(iter(q))
    if where == "GET":
        r = client.simulate_get("/v1/query", params={"concept_path": "g", **q})
    else:
        r = client.simulate_post("/v1/query", json={"concept_path": "g", **q})
    assert r.status_code == 400, r.text
    assert r.json["error"]["field"] == field


@pytest.mark.parametrize("as_of,status", [(FIRST, "no_claims"), (LAST, "contested")])
def test_http_skeptic_at_the_extremes(client, store, as_of, status):
    six(store)
    r = client.simulate_get("/v1/skeptic", params={"concept_path": "g", "predicate": "r",
                                                   "as_of": as_of, "decay": "true"})
    assert r.status_code == 200, r.text
    assert r.json["status"] == status


def test_http_audit_from_to_at_the_extremes(client, store):
    six(store)
    assert _n(client.simulate_get("/v1/query", params={"concept_path": "g"})) == 6
    r = client.simulate_get("/v1/audit/queries", params={"from": FIRST, "to": LAST})
    assert r.status_code == 200, r.text
    assert len(r.json["queries"]) == 1
    r = client.simulate_get("/v1/audit/queries", params={"from": "-62135596800",
                                                         "to": "253402300799.5"})
    assert r.status_code == 200 and len(r.json["queries"]) == 1, r.text
    r = client.simulate_get("/v1/audit/queries", params={"from": LAST})
    assert r.status_code == 200 and r.json["queries"] == [], r.text
    r = client.simulate_get("/v1/audit/queries", params={"to": "253402300800"})
    assert r.status_code == 400 and r.json["error"]["field"] == "to", r.text
