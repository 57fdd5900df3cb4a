"""Seq and recorded_at stamping of the write path (stemedb/core/writer.py).

* A local batch takes consecutive seqs; its records share one recorded_at
  (one clock reading under the write mutex), never before the last one;
  duplicates inside the batch or of stored records use no seq.
* A replicated batch (cluster mode, ``Writer.apply_replicated``) gives item
  ``i`` the seq ``first_seq + i``; an item already stored leaves its seq
  unused; recorded_at is ``max(at_us, the last recorded_at)``.
* A batch refused for an unknown reference writes nothing and uses no seq.
"""
from __future__ import annotations

import pytest

from stemedb.errors import UnknownReference
from stemedb.model import prepare_batch


def body(i: int, **kw) -> dict:
    return {"concept_path": f"drugs/d{i % 5}/risk", "predicate": "p1", "value": i,
            "confidence": 0.5, "timestamp": 1_700_000_000 + i, **kw}


class Clock:
    def __init__(self, t: int):
        self.t = t

    def __call__(self) -> int:
        self.t += 7
        return self.t


def test_a_local_batch_takes_consecutive_seqs_and_one_recorded_at(opener):
    s = opener()
    s.writer.clock = clock = Clock(1_800_000_000_000_000)
    first = s.put(body(0))
    rs = s.put_batch([body(1), body(2), body(1), body(0), body(3)])
    assert [r.seq for r in rs] == [2, 3, 2, 1, 4]
    assert [r.created for r in rs] == [True, True, False, False, True]
    at = {s.get(r.hash).recorded_at_us for r in rs if r.created}
    assert len(at) == 1, "one recorded_at for the batch"
    assert at.pop() > s.get(first.hash).recorded_at_us
    clock.t = 0                       # the clock goes back: recorded_at does not
    r = s.put(body(9))
    assert s.get(r.hash).recorded_at_us == s.get(rs[-1].hash).recorded_at_us
    assert r.seq == 5


def test_a_replicated_batch_takes_the_stream_seqs(opener):
    s = opener()
    s.put(body(0))                                    # seq 1, already stored
    recs = prepare_batch([body(1), body(0), body(2)], default_time_us=1)
    last = s.get(s.put(body(7)).hash).recorded_at_us  # seq 2
    out = s.writer.apply_replicated("assert", (recs, True), 10, last - 5)
    assert [(r.seq, r.created) for r in out] == [(10, True), (1, False), (12, True)]
    for r in (out[0], out[2]):
        assert s.get(r.hash).recorded_at_us == last, "never before the last recorded_at"
    local = s.put(body(3))
    assert local.seq == 13, "local writes go on after the stream's seqs"
    ahead = s.get(local.hash).recorded_at_us + 10**6     # the stream's time, ahead of ours
    out = s.writer.apply_replicated("assert", ([prepare_batch([body(4)],
                                                              default_time_us=1)[0]], False),
                                    20, ahead)
    assert out[0].seq == 20 and s.get(out[0].hash).recorded_at_us == ahead


def test_a_refused_batch_uses_no_seq(opener):
    s = opener()
    s.put(body(0))
    with pytest.raises(UnknownReference) as exc:
        s.put_batch([body(1), body(2, parent_hash="ab" * 32)])
    assert exc.value.field == "assertions[1].parent_hash"
    assert s.count == 1
    assert s.put(body(1)).seq == 2


def test_the_all_new_batch_path_writes_what_the_per_record_loop_writes(tmp_path, monkeypatch):
    """put_records takes a batch of new, distinct records naming nothing in
    C-level maps; forcing its per-record loop must give the same answers,
    seqs, recorded_at and stored records."""
    from stemedb import open_store
    from stemedb.core import writer as writer_mod
    from tests.conftest import NoFsyncFS

    batches = [[body(i) for i in range(k, k + 50)] for k in (0, 50, 100)]
    batches.append([body(i) for i in range(140, 160)])    # 10 stored already: the loop
    batches.append([body(200), body(201), body(200)])     # a duplicate: the loop

    def run(path, force_loop):
        if force_loop:
            # "some record names another": the per-record loop
            monkeypatch.setattr(writer_mod.fast, "no_refs", lambda recs: False)
        s = open_store(str(path), fs=NoFsyncFS(), audit=False)
        s.writer.clock = Clock(1_800_000_000_000_000)
        try:
            out = [s.put_batch(b) for b in batches]
            stored = {r.hash: s.get(r.hash).to_dict() for rs in out for r in rs}
            return out, stored, s.check()
        finally:
            s.close()
            monkeypatch.undo()
    fast, slow = run(tmp_path / "a", False), run(tmp_path / "b", True)
    assert fast == slow
    assert [r.seq for r in fast[0][0]] == list(range(1, 51)) and fast[2] == []
