"""A seeded fuzz of mutated request bodies: never a 5xx, and a refused
request never changes stored data."""
from __future__ import annotations

import json
import random
import urllib.parse

from stemedb.http.ratelimit import CircuitBreaker

from .conftest import body

SEED = 20260211
ROUNDS = 1500  # bounded: about two seconds

WEIRD = [None, True, False, 0, -1, 1.5, -0.0, 2 ** 53, 2 ** 64, 10 ** 400, 1e308, -1e308,
         1.7976931348623157e308, 253402300800, "9999-12-31T23:59:59Z", "", " ",
         "a" * 5000, "\x00", "\u202e", "\U0001F600", "\ud800", "../..", "/", "a//b", [], [1, 2], {},
         {"a": {"b": None}}, "2024-13-45T99:00:00Z", "NaN", "-Infinity", "0" * 64, "g" * 64]


def valid_bodies(rng, known_hash):
    return {
        "/v1/assert": body(value=rng.randint(0, 10 ** 6)),
        "/v1/assert/batch": {"assertions": [body(value=rng.randint(0, 10 ** 6)) for _ in range(3)]},
        "/v1/query": {"concept_path": "drugs/semaglutide", "lens": "consensus",
                      "include_descendants": True, "limit": 5, "as_of": 1700000000,
                      "known_at": "2024-03-01T12:00:00Z", "since": 0},
        "/v1/retract": {"hash": known_hash, "reason": "fuzz"},
        "/v1/vote": {"assertion_hash": known_hash, "weight": 0.5},
        "/v1/epoch": {"name": f"e{rng.randint(0, 10 ** 9)}", "supersedes": []},
        f"/v1/agents/{'ab' * 32}/outcome": {"accurate": True},
    }


def mutate(rng, doc):
    """One structural mutation of a JSON document (a copy)."""
    doc = json.loads(json.dumps(doc))
    target = doc
    if isinstance(doc, dict) and "assertions" in doc and rng.random() < 0.7:
        target = rng.choice(doc["assertions"])
    keys = list(target) if isinstance(target, dict) else []
    op = rng.randrange(6)
    if op == 0 and keys:
        del target[rng.choice(keys)]
    elif op == 1 and keys:
        target[rng.choice(keys)] = rng.choice(WEIRD)
    elif op == 2:
        target[rng.choice(["extra", "hash", "seq", "status", "", "concept_path "])] = rng.choice(WEIRD)
    elif op == 3:
        return rng.choice(WEIRD)
    elif op == 4 and keys:
        k = rng.choice(keys)
        target[k] = [target[k]] * rng.randint(0, 3)
    elif op == 5 and keys:
        nest = rng.choice(WEIRD)
        for _ in range(rng.randint(1, 100)):
            nest = [nest]
        target[rng.choice(keys)] = nest
    return doc


def raw_mutation(rng, data: bytes) -> bytes:
    op = rng.randrange(5)
    if op == 0 and data:
        return data[: rng.randrange(len(data))]
    if op == 1 and data:
        i = rng.randrange(len(data))
        return data[:i] + bytes([rng.randrange(256)]) + data[i + 1:]
    if op == 2:
        return data.replace(b":", b":" + b"[" * 3000, 1)
    if op == 3:  # duplicate keys: the last one wins in most parsers
        return data.replace(b"{", b'{"confidence": 9, ', 1)
    return data + rng.choice([b"}", b",", b"\x00", b" garbage"])


def test_fuzz_never_5xx_and_refusals_change_nothing(make_client, store):
    # The circuit breaker would stop this client after five refusals; the
    # fuzz wants every body to reach the parser and the store.
    client = make_client(breaker=CircuitBreaker(threshold=10 ** 9))
    rng = random.Random(SEED)
    seed = client.simulate_post("/v1/assert", json=body(value="seed"))
    known = seed.json["hash"]
    statuses = {}
    for i in range(ROUNDS):
        endpoint, good = rng.choice(list(valid_bodies(rng, known).items()))
        doc = mutate(rng, good) if rng.random() < 0.9 else good
        data = json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
        if rng.random() < 0.3:
            data = raw_mutation(rng, data)
        headers = {"Content-Type": rng.choice(["application/json"] * 8 + [
            "text/plain", "application/json; charset=utf-16", "multipart/form-data"])}
        before = (store.count, store.last_seq)
        r = client.simulate_post(endpoint, body=data, headers=headers)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code < 500, (i, endpoint, data[:300], r.status_code, r.text)
        err = r.json.get("error") if r.status_code >= 400 else None
        if r.status_code >= 400:
            assert err and err["code"] and err["message"], (i, r.text)
            assert (store.count, store.last_seq) == before, \
                (i, endpoint, data[:300], "a refused request changed stored data")
    assert statuses.get(400, 0) > ROUNDS // 3, statuses
    assert any(200 <= s < 300 for s in statuses), "some mutations stay valid"


def test_fuzz_query_strings_and_paths(make_client, store):
    client = make_client()
    rng = random.Random(SEED + 1)
    names = ["concept_path", "predicate", "include_descendants", "lens", "as_of", "known_at",
             "since", "lifecycle", "epoch", "decay", "include_retracted", "limit", "cursor",
             "bogus", "from", "to", "agent"]
    values = ["a/b", "", "true", "false", "yes", "1", "-5", "1e999", "2024-03-01T12:00:00Z",
              "%00", "\u00e9", "a//b", "x" * 3000, "recency", "any", "nan", "0" * 64]
    paths = ["/v1/query", "/v1/skeptic", "/v1/audit/queries", "/v1/assertions/{}",
             "/v1/trace/{}", "/v1/audit/queries/{}", "/v1/health", "/metrics"]
    before = (store.count, store.last_seq)
    for i in range(600):
        params = [(rng.choice(names), rng.choice(values)) for _ in range(rng.randint(0, 5))]
        qs = urllib.parse.urlencode(params)
        if rng.random() < 0.2:
            qs += rng.choice(["&&", "=", "%zz", "&a=%ff%fe", ";x=1"])
        path = rng.choice(paths).format(urllib.parse.quote(rng.choice(values), safe=""))
        r = client.simulate_get(path, query_string=qs)
        assert r.status_code < 500 or (path == "/v1/health" and r.status_code == 503), \
            (i, path, qs, r.text)
    assert (store.count, store.last_seq) == before


def test_fuzz_status_mix_is_meaningful(make_client):
    """Guard the fuzz itself: it must exercise validation, not only the media type check."""
    client = make_client(breaker=CircuitBreaker(threshold=10 ** 9))
    rng = random.Random(SEED)
    seen = set()
    for _ in range(200):
        endpoint, good = rng.choice(list(valid_bodies(rng, "0" * 64).items()))
        r = client.simulate_post(endpoint, body=json.dumps(mutate(rng, good)),
                                 headers={"Content-Type": "application/json"})
        if r.status_code == 400:
            seen.add(r.json["error"]["code"])
    assert {"invalid_field", "malformed_json"} & seen and len(seen) >= 2, seen
