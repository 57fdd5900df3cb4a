"""The single-record write path (``Writer._put_one``, what every put and
every batch of one takes) against the batch loop (``Writer._put_many``) it
stands in for: the same answers (hash, seq, created), the same refusals
(class and field, ``assertions[0].`` for a batch of one), no seq used by a
refusal, the same stored records with recorded_at in seq order, and a hash queued by
another writer answered with that writer's seq once durable."""
from __future__ import annotations

import threading

import pytest

from stemedb.core.writer import Writer
from stemedb.errors import StemeError

from .test_writer_stamps import Clock, body


def _script(s):
    """Writes that reach every branch of the single path; each outcome."""
    first = s.put(body(0))
    steps = [
        lambda: s.put(body(1)),                                     # new
        lambda: s.put(body(0)),                                     # stored: exists
        lambda: s.put_batch([body(0)]),                             # stored, batch of one
        lambda: s.put(body(2, parent_hash="ab" * 32)),              # unknown parent
        lambda: s.put_batch([body(3, parent_hash="cd" * 32)]),      # the same, in a batch
        lambda: s.put(body(4, derived_from=["ef" * 32])),           # unknown derived_from
        lambda: s.put(body(5, epoch="nope")),                       # unknown epoch
        lambda: s.put(body(6, parent_hash=first.hash)),             # a known parent
        lambda: s.put(body(7, derived_from=[first.hash])),
        lambda: s.create_epoch("e1"),
        lambda: s.put(body(8, epoch="e1")),
        lambda: s.put_batch([body(9)]),                             # new, batch of one
        lambda: s.put(body(9)),
    ]
    out = [first]
    for step in steps:
        try:
            out.append(step())
        except StemeError as exc:
            out.append((type(exc).__name__, exc.field))
    return out


def _run(opener, single: bool, monkeypatch):
    if not single:
        monkeypatch.setattr(Writer, "_put_one",
                            lambda self, r, batch: self._put_many([r], batch)[0])
    s = opener()
    s.writer.clock = Clock(1_800_000_000_000_000)
    try:
        out = _script(s)
        hashes = [r.hash for r in out if hasattr(r, "hash")]
        stored = {h: s.get(h).to_dict() for h in hashes}
        # recorded_at is a reading of the clock under the write mutex; the
        # loop also reads it for a write it refuses, so the test clock (a
        # step per reading) gives other values: the order is what must hold
        stamps = [rec.pop("recorded_at") for rec in sorted(stored.values(),
                                                           key=lambda d: d["seq"])]
        assert stamps == sorted(stamps), "recorded_at never goes back in seq order"
        return out, stored, s.count, s.check()
    finally:
        s.close()
        monkeypatch.undo()


def test_the_single_path_answers_what_the_batch_loop_answers(tmp_path, monkeypatch):
    from stemedb import open_store
    from tests.conftest import NoFsyncFS

    def opener_at(name):
        return lambda: open_store(str(tmp_path / name), fs=NoFsyncFS(), audit=False)
    single = _run(opener_at("single"), True, monkeypatch)
    loop = _run(opener_at("loop"), False, monkeypatch)
    assert single == loop, "a put answers, refuses and stores as the batch loop does"
    out, _stored, count, problems = single
    assert problems == []
    assert ("UnknownReference", "parent_hash") in out
    assert ("UnknownReference", "assertions[0].parent_hash") in out, \
        "a refused batch of one names its item"
    seqs = [r.seq for r in out if hasattr(r, "seq") and getattr(r, "created", False)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_a_put_of_a_hash_another_writer_queued_answers_that_writers_seq(opener):
    """Two threads put one body at once: one record, both answers name it."""
    from .test_group_commit import SlowSyncFS
    s = opener(fs=SlowSyncFS(), durability="fsync")
    s.put(body(0))
    got, start = [], threading.Barrier(6)

    def worker():
        start.wait()
        got.append(s.put(body(1)))
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(got) == 6
    assert len({(r.hash, r.seq) for r in got}) == 1, "every answer names the one record"
    assert [r.created for r in got].count(True) == 1
    assert s.count == 2 and s.check() == []


def test_a_refused_put_uses_no_seq(opener):
    s = opener()
    s.put(body(0))
    with pytest.raises(StemeError):
        s.put(body(1, parent_hash="ab" * 32))
    assert s.put(body(2)).seq == 2
