"""The one "records to index columns" function: compiled and pure give the
same rows and refusals, and live groups, whatever their sizes, build the
state a replay of the same log builds.

The parity tests run where the extension is built; the state tests run in
both modes (``fast.index_records`` is whichever one runs).
"""
import os
import random

import msgspec
import numpy as np
import pytest

from stemedb.core import codec, fast, records
from stemedb.core.format import (
    ASSERT_HEAD_SIZE, FLAG_MORE, FRAME_SIZE, REC_ASSERT, REC_EPOCH, REC_RETRACT, REC_VOTE,
    SEGMENT_HEADER_SIZE,
)
from stemedb.core.snapshot import snapshot_path
from stemedb.core.state import State
from stemedb.errors import CorruptionError
from stemedb.model import prepare_assertion

_enc = msgspec.msgpack.Encoder()
EPOCH_BODY = {"name": "e1", "recorded_at": 5, "supersedes": [], "description": None}


def _log(n, seed=3):
    """A segment's bytes: assertions with every optional part, an epoch
    first, retractions and votes among them.  Returns (buf, hashes)."""
    rnd = random.Random(seed)
    frames, seq, hashes = [b"\0" * SEGMENT_HEADER_SIZE], 1, []
    frames.append(codec.encode_frame(REC_EPOCH, 0, seq, _enc.encode(EPOCH_BODY)))
    for i in range(n):
        body = {"concept_path": f"d{rnd.randrange(4)}/é{rnd.randrange(40)}/y{'x' * (i % 11)}",
                "predicate": f"p{rnd.randrange(5)}",
                # short values are their own value id, longer ones hashed
                "value": i if i % 3 else {"k": "v" * (i % 23), "i": i},
                "confidence": (0.0, 0.5, 1.0, 0.123456)[i % 4],
                "timestamp": 1_700_000_000 + i}
        if rnd.random() < 0.6:
            body["source"] = rnd.choice(["fda://l", "pubmed://9", "forum://😀"])
        if hashes and rnd.random() < 0.2:
            body["derived_from"] = [rnd.choice(hashes).hex()]
        if hashes and rnd.random() < 0.2:
            body["parent_hash"] = rnd.choice(hashes).hex()
        if rnd.random() < 0.2:
            body["epoch"] = "e1"
        r = msgspec.structs.replace(prepare_assertion(body), recorded_at=1_000_000 + i)
        hashes.append(r.hash)
        seq += 1
        frames.append(codec.encode_frame(REC_ASSERT, FLAG_MORE if i % 7 == 1 else 0, seq,
                                         codec.encode_assert(r)))
        if i % 13 == 12:
            seq += 1
            frames.append(codec.encode_frame(REC_RETRACT, 0, seq, _enc.encode(
                {"recorded_at": 2_000_000 + i, "reason": "r", "by": None,
                 "target": {"hash": hashes[i - 3].hex()}, "hashes": [hashes[i - 3]]})))
        if i % 17 == 16:
            seq += 1
            frames.append(codec.encode_frame(REC_VOTE, 0, seq, _enc.encode(
                {"recorded_at": 2_000_000 + i, "assertion_hash": hashes[i - 2],
                 "weight": 1.0, "agent_id": "a", "timestamp": i})))
    return b"".join(frames), hashes


def _scan(buf):
    offs, types, _f, seqs, _stop, _r = fast.scan_frames(buf, SEGMENT_HEADER_SIZE, len(buf))
    return offs, types, seqs


def _run(fn, buf, offs, types, seqs, first=3, rows=None, epoch_ids=None, seed_paths=()):
    """Call ``fn`` on fresh columns prefilled with a sentinel; returns every
    output (columns whole, so rows it must not touch are compared too)."""
    rows = rows or first + len(offs) + 2
    cols = [np.full(rows, -7, np.int64) for _ in range(5)] + \
        [np.full(rows, -7, np.int32), np.full(rows, -7, np.int32), np.full(rows, -7, np.int8),
         np.full(rows, -7.0, np.float64), np.full(rows, 7, np.uint8),
         np.full(rows, 7, np.uint64), np.full(rows, 7, np.uint64),
         np.full((rows, 32), 7, np.uint8)]
    scratch = [np.zeros(len(offs), np.uint64), np.zeros(len(offs), np.uint64),
               np.zeros(len(offs), np.int32)]
    paths = list(seed_paths)
    path_ids = {p: i for i, p in enumerate(paths)}
    preds, pred_ids = [], {}
    n, ns, max_rec, edges, metas = fn(buf, offs, types, seqs, (2 << 40) + 100, first, *cols,
                                      *scratch, path_ids, paths, pred_ids, preds,
                                      {"e1": 1} if epoch_ids is None else epoch_ids)
    return {"n": n, "ns": ns, "max_rec": max_rec, "edges": edges, "metas": metas,
            "cols": [c.tolist() for c in cols], "hkeys": scratch[0][:n].tolist(),
            "src": scratch[1][:ns].tolist(), "src_ords": scratch[2][:ns].tolist(),
            "paths": paths, "path_ids": path_ids, "preds": preds, "pred_ids": pred_ids}


def _both(*args, **kw):
    _fast = pytest.importorskip("stemedb.core._fast", reason="compiled extension not built")
    outs = []
    for fn in (records.index_records, _fast.index_records):
        try:
            outs.append(("ok", _run(fn, *args, **kw)))
        except Exception as exc:            # noqa: BLE001  (the refusal is what is compared)
            outs.append((type(exc).__name__, str(exc)))
    return outs


@pytest.mark.parametrize("n,first", [(1, 0), (5, 9), (300, 3), (2500, 1)])
def test_compiled_index_records_writes_the_references_rows(n, first):
    buf, _h = _log(n)
    offs, types, seqs = _scan(buf)
    pure, compiled = _both(buf, offs, types, seqs, first=first,
                           seed_paths=["d1/é3/y", "zz"])
    assert pure[0] == "ok", pure
    assert compiled == pure, "compiled index_records differs from records.index_records"
    got = pure[1]
    assert got["n"] == n and got["max_rec"] == 1_000_000 + n - 1
    assert got["cols"][0][:first] == [-7] * first, "rows below first must stay untouched"
    assert got["cols"][1][first] == (2 << 40) + 100 + offs[1], "loc = loc_base + offset"


def _frame_at(buf, k):
    offs, _t, _s = _scan(buf)
    return offs, offs[k]


def _damaged():
    """(name, buffer, offsets, types, seqs, epoch_ids) of damaged inputs."""
    buf, _h = _log(40, seed=5)
    offs, types, seqs = _scan(buf)
    k = next(i for i, t in enumerate(types) if t == REC_ASSERT and i > 3)
    o = offs[k]
    p = o + FRAME_SIZE
    cases = []

    def put(name, at, data, **kw):
        b = bytearray(buf)
        b[at:at + len(data)] = data
        cases.append((name, bytes(b), offs, types, seqs, kw.get("epochs")))
    put("path length past the frame", p + 60, (60000).to_bytes(2, "little"))
    put("a signature flag past the frame", p + 58, bytes([buf[p + 58] | 0x10]))
    put("derived count huge", p + 68, (65535).to_bytes(2, "little"))
    put("value length past the frame", p + 72, (1 << 30).to_bytes(4, "little"))
    put("frame length past the buffer", o, (len(buf)).to_bytes(4, "little"))
    put("frame shorter than the head", o, (ASSERT_HEAD_SIZE - 1).to_bytes(4, "little"))
    put("bad UTF-8 in the concept path", p + ASSERT_HEAD_SIZE, b"\xff")
    lpath = int.from_bytes(buf[p + 60:p + 62], "little")
    put("bad UTF-8 in the predicate", p + ASSERT_HEAD_SIZE + lpath, b"\xc3")
    cases.append(("an unknown epoch", buf, offs, types, seqs, {}))
    cases.append(("an offset past the buffer", buf, offs[:k] + [len(buf) - 5], types[:k + 1],
                  seqs[:k + 1], None))
    cases.append(("an offset before the buffer", buf, [-3], [REC_ASSERT], [1], None))
    cases.append(("an empty buffer", b"", [0], [REC_ASSERT], [1], None))
    return cases


@pytest.mark.parametrize("case", _damaged(), ids=lambda c: c[0])
def test_compiled_index_records_refuses_damage_like_the_reference(case):
    name, buf, offs, types, seqs, epochs = case
    pure, compiled = _both(buf, offs, types, seqs, epoch_ids=epochs)
    assert pure[0] != "ok", f"{name}: the reference accepted damaged input"
    assert compiled == pure, f"{name}: compiled and pure disagree"
    if name.startswith("bad UTF-8"):
        assert pure[0] == "UnicodeDecodeError"
    else:
        assert pure[0] == "CorruptionError"


def test_compiled_index_records_checks_the_columns_it_writes_through():
    _fast = pytest.importorskip("stemedb.core._fast", reason="compiled extension not built")
    buf, _h = _log(4)
    offs, types, seqs = _scan(buf)
    good = _run(_fast.index_records, buf, offs, types, seqs)
    assert good["n"] == 4
    for bad in ("short", "dtype", "strided", "readonly", "lens dtype", "lens short"):
        cols = [np.zeros(20, np.int64) for _ in range(5)] + [
            np.zeros(20, np.int32), np.zeros(20, np.int32), np.zeros(20, np.int8),
            np.zeros(20, np.float64), np.zeros(20, np.uint8), np.zeros(20, np.uint64),
            np.zeros(20, np.uint64), np.zeros((20, 32), np.uint8)]
        if bad == "short":
            cols[0] = np.zeros(3, np.int64)
        elif bad == "dtype":
            cols[5] = np.zeros(20, np.int64)
        elif bad == "strided":
            cols[1] = np.zeros(40, np.int64)[::2]
        elif bad == "lens dtype":
            cols[9] = np.zeros(20, np.int8)         # rank
        elif bad == "lens short":
            cols[11] = np.zeros(2, np.uint64)       # vb
        else:
            cols[2].setflags(write=False)
        scratch = [np.zeros(8, np.uint64), np.zeros(8, np.uint64), np.zeros(8, np.int32)]
        with pytest.raises(ValueError, match="index_records"):
            _fast.index_records(buf, offs, types, seqs, 0, 1, *cols, *scratch, {}, [], {}, [],
                                {"e1": 1})


def _state_view(st: State) -> dict:
    out = {name: arr.tolist() for name, arr in st.cols.arrays().items()}
    for name in ("by_hash", "by_key", "by_path", "by_source"):
        m = getattr(st, name)
        m.merge()
        out[name] = (m.keys.tolist(), m.vals.tolist())
    for name in ("path_names", "pred_names", "epoch_names", "dependents", "revisions",
                 "retracted", "votes", "last_seq", "last_recorded_at", "records", "epoch_ids"):
        out[name] = getattr(st, name)
    out["retractions"] = [(r.seq, r.count, r.target) for r in st.retractions]
    out["sorted_paths"] = list(st.sorted_paths)
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_groups_of_any_size_build_the_state_of_one_replay(seed):
    """The live path applies one WAL group at a time (a single put, a group
    commit of a few, a batch of thousands, which sort into the maps' runs or
    go to their recent dicts); replay applies a segment at once.  Every
    split of the same records gives the same state."""
    buf, _h = _log(3000, seed=seed)
    offs, types, seqs = _scan(buf)
    whole = State()
    whole.apply_group(buf, offs, types, seqs, 1 << 40, 1)
    rnd = random.Random(seed)
    split = State()
    i = 0
    sizes = [1800] + [rnd.choice([1, 2, 3, 9, 40, 200]) for _ in range(400)]
    for size in sizes:
        if i >= len(offs):
            break
        j = min(len(offs), i + size)
        while j < len(offs) and types[j - 1] == REC_ASSERT and \
                buf[offs[j - 1] + 9] & FLAG_MORE:      # a group ends where its batch does
            j += 1
        start, end = offs[i], offs[j] if j < len(offs) else len(buf)
        part = buf[start:end]
        split.apply_group(part, [o - start for o in offs[i:j]], types[i:j], seqs[i:j],
                          (1 << 40) + start, 1)
        i = j
    assert i == len(offs)
    replayed = State()                     # recovery's mode: maps and the rest at the end
    replayed.begin_replay()
    for a, b in ((0, 1000), (1000, 2300), (2300, len(offs))):
        start, end = offs[a], offs[b] if b < len(offs) else len(buf)
        replayed.apply_group(buf[start:end], [o - start for o in offs[a:b]], types[a:b],
                             seqs[a:b], (1 << 40) + start, 1)
    replayed.end_replay()
    assert split.check() == [] and whole.check() == [] and replayed.check() == []
    assert _state_view(split) == _state_view(whole)
    assert _state_view(replayed) == _state_view(whole)
    assert whole.count == 3000 and len(whole.retractions) > 100 and whole.votes


def test_a_store_reopened_by_rebuild_has_the_state_its_writes_built(opener, data):
    """Live writes (single puts, batches, votes, retractions, an epoch) and a
    rebuild from the WAL of the same log build the same state."""
    s = opener()
    s.create_epoch("e1")
    hashes = []
    for i in range(30):
        hashes.append(s.put({"concept_path": f"live/{i % 4}", "predicate": "p", "value": i,
                             "confidence": 0.5, "source": "fda://x", "epoch": "e1"}).hash)
    res = s.put_batch([{"concept_path": f"live/b{i % 9}", "predicate": f"q{i % 3}",
                        "value": i, "confidence": 0.5, "derived_from": [hashes[i % 30]]}
                       for i in range(2500)])
    s.vote(res[5].hash, 1.0)
    s.retract(hash=hashes[3], reason="wrong")
    live = _state_view(s.state)
    s.close()
    os.remove(snapshot_path(os.path.join(data, "db")))
    r = opener()
    assert r.rebuilt
    assert _state_view(r.state) == live


def test_the_lens_columns_hold_each_records_confidence_class_and_value_id():
    """conf, rank, va, vb: the record's confidence and source class, and
    index.value_id of its canonical value bytes, in both modes."""
    from stemedb.core.index import value_id
    buf, hashes = _log(60)
    offs, types, seqs = _scan(buf)
    st = State()
    st.apply_epoch(1, EPOCH_BODY)
    st.apply_group(buf, offs, types, seqs, 0)
    recs = [codec.decode_assert(buf, o + FRAME_SIZE) for o, t in zip(offs, types)
            if t == REC_ASSERT]
    c = st.cols
    assert c.conf[:c.n].tolist() == [r.confidence for r in recs]
    assert c.rank[:c.n].tolist() == [r.source_class for r in recs]
    ids = [value_id(r.value_json) for r in recs]
    assert list(zip(c.va[:c.n].tolist(), c.vb[:c.n].tolist())) == ids
    assert any(a & 0xFF == 0xFF for a, _b in ids) and any(a & 0xFF != 0xFF for a, _b in ids), \
        "the log holds both inline and hashed value ids"
