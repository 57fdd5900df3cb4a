"""Issue 3's scenarios through the embedded API: what a reader gets when
claims disagree, over time, across epochs and retractions."""
import pytest
from nacl.signing import SigningKey

from stemedb import open_store
from stemedb.errors import NotFound, UnknownReference, ValidationError
from stemedb.model import assertion_hash, vote_hash
from tests.conftest import NoFsyncFS

DAY = 86400
T0 = 1_709_294_400            # 2024-03-01T12:00:00Z


@pytest.fixture
def store(tmp_path):
    clock = [T0 * 1_000_000 + 400 * DAY * 1_000_000]   # "now", well after T0
    with open_store(tmp_path, fs=NoFsyncFS(), clock=lambda: clock[0]) as s:
        s.test_clock = clock
        yield s


def claim(path, value, conf=0.8, t=0, **kw):
    return {"concept_path": path, "predicate": "risk", "value": value, "confidence": conf,
            "timestamp": T0 + t, **kw}


def winner(store, path="drugs/sema", **q):
    res = store.query(path, predicate="risk", **q)
    return res.results[0]["winner"].value if res.results and res.results[0]["winner"] else None


def test_label_trial_and_forum(store):
    store.put(claim("drugs/sema", "rare", 0.95, 0, source="fda://label/2024-03"))
    store.put(claim("drugs/sema", "uncommon", 0.85, 10, source="nct://NCT0001"))
    store.put_batch([claim("drugs/sema", "common", 0.6, 20 + i, source=f"forum://t/{i}")
                     for i in range(100)])
    assert winner(store) == "common", "recency: the newest forum post"
    assert winner(store, lens="consensus") == "common", "consensus: a hundred posts outweigh two"
    assert winner(store, lens="authority") == "rare", "authority: the regulator beats any crowd"
    sk = store.skeptic("drugs/sema", "risk")
    import math
    w = [100 * 0.6 * 0.3, 0.95 * 1.0, 0.85 * 0.9]     # tier-weighted claims
    p = [x / sum(w) for x in w]
    score = -sum(x * math.log(x) for x in p) / math.log(3)
    assert sk["conflict_score"] == pytest.approx(score), "entropy of the tier-weighted shares"
    assert sk["status"] == "agreed" and [c["value"] for c in sk["claims"]] == ["common", "rare", "uncommon"]
    assert [c["support"] for c in sk["claims"]] == [100, 1, 1]
    layered = store.query("drugs/sema", predicate="risk", lens="layered").results[0]
    assert [l["source_class"] for l in layered["layers"]] == ["regulatory", "clinical", "community"]
    assert layered["winner"].value == "rare"


def test_paradigm_shift_by_epoch(store):
    store.create_epoch("humoral")
    store.put(claim("disease/ulcer", "stress", 0.9, 0, epoch="humoral"))
    assert winner(store, "disease/ulcer") == "stress"
    store.create_epoch("h_pylori", supersedes=["humoral"])
    store.put(claim("disease/ulcer", "bacteria", 0.7, -DAY, epoch="h_pylori"))
    assert winner(store, "disease/ulcer") == "bacteria", "the superseded epoch drops out"
    assert winner(store, "disease/ulcer", epoch="humoral") == "stress", "and stays reachable"
    with pytest.raises(UnknownReference):
        store.query("disease/ulcer", epoch="nope")
    store.create_epoch("later", supersedes=["h_pylori"])
    assert winner(store, "disease/ulcer") is None, "supersession is transitive"


def test_source_retraction_cascades_two_levels(store):
    a = store.put(claim("drugs/x", "safe", 0.9, 0, source="source/bad_source"))
    b = store.put(claim("drugs/y", "safe", 0.8, 1, derived_from=[a.hash]))
    c = store.put(claim("drugs/z", "safe", 0.7, 2, source="drugs/y"))
    keep = store.put(claim("drugs/x", "risky", 0.5, 3, source="pubmed://1"))
    r = store.retract(concept_path="source/bad_source", reason="fabricated", cascade=True)
    assert set(r.hashes) == {a.hash, b.hash, c.hash}, "citing, derived, and citing the derived path"
    assert store.get(keep.hash).status == "active"
    assert store.get(c.hash).retraction["reason"] == "fabricated"
    again = store.retract(concept_path="source/bad_source", reason="twice", cascade=True)
    assert again.retracted == 0, "retracting twice counts once"
    assert winner(store, "drugs/x") == "risky"
    listed = store.query("drugs/x", predicate="risk", include_retracted=True)
    assert [x.status for x in listed.assertions] == ["active", "retracted"]
    assert listed.results[0]["candidates_count"] == 1, "retracted ones are not counted"


def test_state_before_and_after_a_retraction(store):
    clock = store.test_clock
    a = store.put(claim("drugs/q", "fine", 0.9, 0))
    before = clock[0]
    clock[0] += DAY * 1_000_000
    store.retract(hash=a.hash, reason="withdrawn")
    assert winner(store, "drugs/q") is None
    as_of = (before + 1) / 1_000_000
    assert winner(store, "drugs/q", as_of=as_of) == "fine", "as_of ignores later retractions"
    assert winner(store, "drugs/q", known_at=as_of) == "fine", "known_at too"
    assert winner(store, "drugs/q", as_of=T0 - 1) is None, "nothing was claimed yet"


def test_bitemporal_known_at_hides_late_records(store):
    clock = store.test_clock
    store.put(claim("drugs/b", "v1", 0.9, 0))
    t1 = clock[0]
    clock[0] += 10 * 1_000_000
    store.put(claim("drugs/b", "backdated", 0.9, -DAY))     # claimed earlier, recorded later
    store.put(claim("drugs/b", "v2", 0.9, 5))
    assert winner(store, "drugs/b") == "v2"
    assert winner(store, "drugs/b", known_at=t1 / 1e6) == "v1"
    assert winner(store, "drugs/b", as_of=T0 + 1) == "v1"
    assert winner(store, "drugs/b", as_of=T0 - 1) == "backdated"
    assert winner(store, "drugs/b", as_of=T0 - 1, known_at=t1 / 1e6) is None, "bitemporal"


def test_revision_stands_in_for_its_parent(store):
    p = store.put(claim("drugs/r", "draft", 0.9, 0))
    store.put(claim("drugs/r", "final", 0.4, 1, parent_hash=p.hash))
    res = store.query("drugs/r", predicate="risk", lens="confidence")
    assert [a.value for a in res.assertions] == ["final"], "the parent is left out"


def test_votes_and_trust(store):
    a = store.put(claim("drugs/v", "a", 0.5, 0))
    b = store.put(claim("drugs/v", "b", 0.5, 1))
    key = SigningKey.generate()
    agent = key.verify_key.encode().hex()
    for t, w in ((1, 0.9), (2, 0.1)):   # an agent's newer vote replaces its earlier one
        sig = key.sign(vote_hash(a.hash, w, agent, t * 1_000_000)).signature.hex()
        store.vote(a.hash, w, agent_id=agent, signature=sig, timestamp=t)
    store.vote(b.hash, 0.3)
    res = store.query("drugs/v", predicate="risk", lens="vote").results[0]
    assert res["winner"].value == "b" and res["confidence"] == pytest.approx(0.3 / 0.4)
    with pytest.raises(NotFound):
        store.vote("00" * 32, 0.5)
    body = claim("drugs/t", "signed", 0.6, 0, agent_id=agent)
    body["signature"] = key.sign(bytes.fromhex(assertion_hash(body))).signature.hex()
    store.put(body)
    store.put(claim("drugs/t", "unsigned", 0.6, 1))
    assert store.record_outcome(agent, True) == pytest.approx(0.55)
    assert winner(store, "drugs/t", lens="trust") == "signed", "0.6 x 0.55 beats 0.6 x 0.5"


def test_decay_at_200_days(store):
    store.put(claim("drugs/d", "old-regulator", 0.9, 0, source="fda://x"))
    store.put(claim("drugs/d", "old-forum", 0.9, 0, source="forum://x"))
    at = T0 + 200 * DAY
    res = store.query("drugs/d", predicate="risk", lens="confidence", decay=True, as_of=at)
    assert res.results[0]["winner"].value == "old-regulator", "regulatory never decays"
    assert res.results[0]["confidence"] == pytest.approx(0.9)
    forum = store.query("drugs/d", predicate="risk", lens="recency", decay=True, as_of=at,
                        since=T0 - 1).assertions
    assert {a.value for a in forum} == {"old-regulator", "old-forum"}


def test_paging_is_consistent_while_writes_go_on(store):
    store.put_batch([claim("drugs/p", i, 0.5, i) for i in range(25)])
    page = store.query("drugs/p", predicate="risk", limit=10)
    seen = [a.value for a in page.assertions]
    store.put(claim("drugs/p", "new", 0.5, 100))
    while page.next_cursor:
        page = store.query("drugs/p", predicate="risk", limit=10, cursor=page.next_cursor)
        seen += [a.value for a in page.assertions]
    assert seen == list(range(24, -1, -1)), "later writes do not shift the pages"
    with pytest.raises(ValidationError) as exc:
        store.query("drugs/p", cursor="garbage!")
    assert exc.value.field == "cursor"


def test_descendants_and_unknown_lens(store):
    store.put(claim("drugs/sema", "x", 0.5, 0))
    store.put(claim("drugs/sema/oral", "y", 0.5, 1))
    store.put(claim("drugs/semaglutide", "z", 0.5, 2))
    res = store.query("drugs/sema", include_descendants=True)
    assert sorted(r["concept_path"] for r in res.results) == ["drugs/sema", "drugs/sema/oral"]
    assert res.assertions[0].value == "y", "recency over the whole subtree"
    with pytest.raises(ValidationError) as exc:
        store.query("drugs/sema", lens="nope")
    assert exc.value.field == "lens" and "skeptic" in str(exc.value)


def test_trace_shows_the_chain(store):
    root = store.put(claim("drugs/t1", "a", 0.5, 0))
    rev = store.put(claim("drugs/t1", "b", 0.5, 1, parent_hash=root.hash))
    dep = store.put(claim("drugs/t2", "c", 0.5, 2, derived_from=[rev.hash]))
    store.retract(hash=rev.hash, reason="wrong")
    t = store.trace(rev.hash)
    assert [p["hash"] for p in t["parents"]] == [root.hash]
    assert [d["hash"] for d in t["dependents"]] == [dep.hash] and t["dependents_count"] == 1
    assert t["retraction"]["reason"] == "wrong"
    assert store.trace("00" * 32) is None
