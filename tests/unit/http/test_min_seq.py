"""min_seq on every read endpoint (cluster contract), on a single node: a
seq it has is answered at once; one beyond its last seq was never written
there (a single node answers a write only once applied), so it is a 400 on
min_seq like a malformed one (503 not_caught_up is the cluster's answer)."""
from __future__ import annotations

import pytest

from .conftest import body


@pytest.fixture
def written(client):
    r = client.simulate_post("/v1/assert", json=body())
    assert r.status_code == 201
    return r.json


def _reads(h):
    return [("GET", f"/v1/query?concept_path=drugs/semaglutide", None),
            ("GET", f"/v1/assertions/{h}", None),
            ("GET", "/v1/skeptic?concept_path=drugs/semaglutide&predicate=gastroparesis_risk",
             None),
            ("GET", f"/v1/trace/{h}", None),
            ("GET", "/v1/audit/queries", None),
            ("POST", "/v1/query", {"concept_path": "drugs/semaglutide"})]


def _call(client, method, path, doc, min_seq):
    if method == "GET":
        sep = "&" if "?" in path else "?"
        return client.simulate_get(f"{path}{sep}min_seq={min_seq}")
    return client.simulate_post(path, json={**doc, "min_seq": min_seq})


def test_every_read_takes_min_seq(client, written):
    for method, path, doc in _reads(written["hash"]):
        ok = _call(client, method, path, doc, written["seq"])
        assert ok.status_code == 200, (path, ok.text)
        ahead = _call(client, method, path, doc, written["seq"] + 1)
        assert ahead.status_code == 400, (path, ahead.text)
        assert ahead.json["error"]["field"] == "min_seq"
        assert "beyond this store's last seq" in ahead.json["error"]["message"]


def test_a_bad_min_seq_is_400_and_names_it(client, written):
    for bad in ("x", "-1", "1.5"):
        r = client.simulate_get(f"/v1/assertions/{written['hash']}?min_seq={bad}")
        assert r.status_code == 400 and r.json["error"]["field"] == "min_seq", r.text
    r = client.simulate_post("/v1/query", json={"concept_path": "drugs/semaglutide",
                                                "min_seq": -1})
    assert r.status_code == 400 and r.json["error"]["field"] == "min_seq", r.text
