"""POST /v1/assert/batch answers with the contract's form,
``{"results": [{"hash", "status", "seq"}, ...]}``, byte for byte what the
dict form encodes to, now that the answer is built as ``BatchOut`` /
``PutOut`` Structs by C-level maps (stemedb/http/resources.py)."""
from __future__ import annotations

from stemedb.http.resources import _encoder

from .conftest import body


def test_the_batch_answer_is_the_contracts_dict_form_byte_for_byte(client, store):
    store.put(body(value="v1"))                      # item 1 exists already
    items = [body(value=f"v{i}") for i in range(5)] + [body(value="v0")]
    r = client.simulate_post("/v1/assert/batch", json={"assertions": items})
    assert r.status_code == 201
    results = r.json["results"]
    assert [x["status"] for x in results] == ["created", "exists", "created", "created",
                                              "created", "exists"]
    assert results[5]["seq"] == results[0]["seq"] and results[1]["seq"] == 1
    stored = [store.put(i) for i in items]           # every one exists now, same seqs
    want = {"results": [{"hash": s.hash, "status": x["status"], "seq": s.seq}
                        for s, x in zip(stored, results)]}
    assert r.content == _encoder.encode(want)


def test_the_answers_items_are_not_tracked_by_the_gc():
    """PutOut is gc=False (three scalars: never in a cycle); the bytes are the same."""
    import gc

    from stemedb.http import schemas as S
    item = S.PutOut("a" * 64, "created", 7)
    assert not gc.is_tracked(item)
    assert _encoder.encode(S.BatchOut([item])) == \
        b'{"results":[{"hash":"' + b"a" * 64 + b'","status":"created","seq":7}]}'
