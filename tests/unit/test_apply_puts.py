"""``_fast.apply_puts`` against its pure twin ``records.apply_puts``: a
durable group of single puts applied request by request (the store's
on-durable step, W1 and W2).  Both must leave the same state: columns,
maps (recent dicts and counts included, merges at the same additions),
generations, counters, citations; refuse the same groups (returning 0,
nothing done); and stop at the same record of a damaged group, having
applied the ones before it.  The compiled one runs only where it is built.
"""
import random
import pytest

from stemedb.core import fast, index, records
from stemedb.core.index import Columns
from stemedb.core.format import ASSERT_HEAD_SIZE, FRAME_SIZE, REC_ASSERT
from stemedb.core.state import GEN_MIX, PRED_BITS, SMALL_GROUP, State
from stemedb.core.wal import Request

from .test_index_records import _log, _scan, _state_view
from .test_on_durable import _requests

_fast = fast._fast
compiled = pytest.mark.skipif(_fast is None, reason="pure-Python run")
IMPLS = [pytest.param(records.apply_puts, id="pure"),
         pytest.param(getattr(_fast, "apply_puts", None), id="compiled", marks=compiled)]


def _puts(n=300, seed=11):
    """Single-put requests of a log with every optional part (sources,
    epochs, parents, derived), ``locs`` as the WAL sets them; and the epoch
    record's body applied first (the records name epoch e1)."""
    buf, _h = _log(n, seed=seed)
    reqs = _requests(buf, *_scan(buf))
    epoch = next(r for r in reqs if r.apply_arg)
    singles = []
    for r in reqs:
        if r.frames is not None and len(r.sizes) == 1:
            singles.append(r)
        elif r.frames is not None:      # a batch's records: one request each
            for k, seq in enumerate(r.frames[2]):
                if r.frames[1][k] != REC_ASSERT:
                    continue
                off = r.frames[0][k]
                end = r.frames[0][k + 1] if k + 1 < len(r.frames[0]) else len(r.data)
                q = Request(r.data[off:end], [end - off], None, ((0,), (REC_ASSERT,), [seq]))
                q.locs = [(r.locs[0][0], r.locs[0][1] + off)]
                singles.append(q)
    at = 5000
    for q in singles:               # back to back, as the WAL writes a group
        q.locs = [(1, at)]
        at += len(q.data)
    return singles, epoch


def _fresh(epoch):
    st = State()
    st.apply_group(*records.group_frames([epoch]))
    return st


def _view(st):
    recent = {m: (dict(getattr(st, m).recent), getattr(st, m).n_recent)
              for m in ("by_hash", "by_key", "by_path", "by_source")}
    return (recent, list(st.key_gen), list(st.path_gen), st.cols.n, _state_view(st))


def _apply(fn, reqs, sizes, epoch, limit=SMALL_GROUP):
    st = _fresh(epoch)
    i = k = 0
    got = []
    while i < len(reqs):
        group = reqs[i:i + sizes[k % len(sizes)]]
        k += 1
        i += len(group)
        got.append(fn(st, group, limit, GEN_MIX, PRED_BITS))
    return got, _view(st)


def test_fast_chooses_the_compiled_one_where_built():
    assert fast.apply_puts is (records.apply_puts if _fast is None else _fast.apply_puts)


@pytest.mark.parametrize("sizes", [[1], [4], [2, 3, SMALL_GROUP], [SMALL_GROUP, 1, 5]])
def test_the_twins_build_the_state_apply_group_builds(sizes):
    reqs, epoch = _puts()
    assert len(reqs) > 250
    assert any(r.data[FRAME_SIZE + 58] & 0x06 for r in reqs), "records that cite"
    # the reference: the same requests through group_frames + apply_group
    ref = _fresh(epoch)
    i = k = 0
    while i < len(reqs):
        group = reqs[i:i + sizes[k % len(sizes)]]
        k += 1
        i += len(group)
        ref.apply_group(*records.group_frames(group))
    want = _view(ref)
    for fn in [records.apply_puts] + ([_fast.apply_puts] if _fast else []):
        got, view = _apply(fn, reqs, sizes, epoch)
        assert sum(got) == len(reqs)
        assert view == want, fn


@compiled
@pytest.mark.parametrize("merge_at", [3, 7, 64])
def test_merges_happen_at_the_same_additions(monkeypatch, merge_at):
    """MERGE_AT small: every map merges inside groups; the runs and recent
    dicts after each group agree."""
    monkeypatch.setattr(index, "MERGE_AT", merge_at)
    reqs, epoch = _puts(120, seed=12)
    a, b = _fresh(epoch), _fresh(epoch)
    for i in range(0, len(reqs), 5):
        group = reqs[i:i + 5]
        assert records.apply_puts(a, group, 8, GEN_MIX, PRED_BITS) == \
            _fast.apply_puts(b, group, 8, GEN_MIX, PRED_BITS) == len(group)
        for m in ("by_hash", "by_key", "by_path", "by_source"):
            ma, mb = getattr(a, m), getattr(b, m)
            assert (ma.keys.tolist(), ma.vals.tolist(), ma.recent, ma.n_recent) == \
                (mb.keys.tolist(), mb.vals.tolist(), mb.recent, mb.n_recent), m
    assert _view(a) == _view(b)


@pytest.mark.parametrize("fn", IMPLS)
def test_groups_it_does_not_take_are_left_alone(fn):
    reqs, epoch = _puts(40)
    st = _fresh(epoch)
    before = _view(st)
    batch = Request(reqs[0].data + reqs[1].data, reqs[0].sizes + reqs[1].sizes, None,
                    ((0, len(reqs[0].data)), (REC_ASSERT, REC_ASSERT), [2, 3]))
    batch.locs = reqs[0].locs
    meta = Request(reqs[2].data, reqs[2].sizes, [(REC_ASSERT, 4, None)])
    meta.locs = reqs[2].locs
    other = Request(reqs[3].data, reqs[3].sizes, None, ((0,), (REC_ASSERT + 1,), [5]))
    other.locs = reqs[3].locs
    assert fn(st, [], 8, GEN_MIX, PRED_BITS) == 0
    assert fn(st, reqs[:9], 8, GEN_MIX, PRED_BITS) == 0, "more than limit"
    assert fn(st, reqs[:2], 1, GEN_MIX, PRED_BITS) == 0, "more than limit"
    for bad in (batch, meta, other):
        assert fn(st, reqs[:3] + [bad], 8, GEN_MIX, PRED_BITS) == 0, "checked before any apply"
    st.begin_replay()
    assert fn(st, reqs[:1], 8, GEN_MIX, PRED_BITS) == 0, "replaying"
    st.end_replay()
    assert _view(st) == before


@pytest.mark.parametrize("fn", IMPLS)
def test_bad_arguments_are_refused(fn):
    reqs, epoch = _puts(10)
    st = _fresh(epoch)
    with pytest.raises(ValueError, match="pred_bits"):
        fn(st, reqs[:1], 8, GEN_MIX, 63)
    st.key_gen = [0] * 3
    st.path_gen = [0] * 3
    with pytest.raises(ValueError, match="power-of-two"):
        fn(st, reqs[:1], 8, GEN_MIX, PRED_BITS)
    st.key_gen = [0] * 8
    with pytest.raises(ValueError, match="power-of-two"):
        fn(st, reqs[:1], 8, GEN_MIX, PRED_BITS)


def _outcome(fn, st, group):
    try:
        return ("ok", fn(st, group, 8, GEN_MIX, PRED_BITS))
    except Exception as e:  # noqa: BLE001 - the outcome is compared
        return (type(e).__name__, str(e))


def _damaged_groups():
    """(name, group, epoch_ids) of groups whose third request is damaged
    (or names an unknown epoch)."""
    reqs, _epoch = _puts(60, seed=13)
    r = reqs[2]
    p = FRAME_SIZE
    out = []

    def put(name, at, data, *more):
        b = bytearray(r.data)
        for a, d in ((at, data),) + more:
            b[a:a + len(d)] = d
        q = Request(bytes(b), r.sizes, None, r.frames)
        q.locs = r.locs
        out.append((name, reqs[:2] + [q] + reqs[3:5]))
    put("path length past the frame", p + 60, (60000).to_bytes(2, "little"))
    put("a signature flag past the frame", p + 58, bytes([r.data[p + 58] | 0x10]))
    put("derived count huge", p + 68, (65535).to_bytes(2, "little"),
        (p + 58, bytes([r.data[p + 58] | 0x04])))
    put("value length past the frame", p + 72, (1 << 30).to_bytes(4, "little"))
    put("frame length past the buffer", 0, (len(r.data) + 1).to_bytes(4, "little"))
    put("frame shorter than the head", 0, (ASSERT_HEAD_SIZE - 1).to_bytes(4, "little"))
    put("bad UTF-8 in the concept path", p + ASSERT_HEAD_SIZE, b"\xff")
    short = Request(r.data[:10], r.sizes, None, r.frames)
    short.locs = r.locs
    out.append(("a request shorter than a frame", reqs[:2] + [short]))
    empty = Request(b"", r.sizes, None, r.frames)
    empty.locs = r.locs
    out.append(("an empty request", reqs[:2] + [empty]))
    badseq = Request(r.data, r.sizes, None, ((0,), (REC_ASSERT,), ["7"]))
    badseq.locs = r.locs
    out.append(("a seq that is not an int", reqs[:2] + [badseq]))
    big = Request(r.data, r.sizes, None, ((0,), (REC_ASSERT,), [1 << 63]))
    big.locs = r.locs
    out.append(("a seq past int64", reqs[:2] + [big]))
    return out


@compiled
@pytest.mark.parametrize("case", _damaged_groups(), ids=lambda c: c[0])
def test_a_damaged_group_stops_both_at_the_same_record(case):
    name, group = case
    _reqs, epoch = _puts(60, seed=13)
    a, b = _fresh(epoch), _fresh(epoch)
    got_a = _outcome(records.apply_puts, a, group)
    got_b = _outcome(_fast.apply_puts, b, group)
    assert got_a[0] != "ok", f"{name}: the twin accepted it"
    assert got_a == got_b, name
    assert a.cols.n == b.cols.n == 2, "the two records before it applied"
    assert _view(a) == _view(b)


@compiled
def test_an_unknown_epoch_stops_both_at_the_same_record():
    reqs, epoch = _puts(80, seed=14)
    k = next(i for i, r in enumerate(reqs) if r.data[FRAME_SIZE + 58] & 0x08 and i >= 1)
    group = reqs[k - 1:k + 2]
    a, b = State(), State()         # no epoch record applied: e1 is unknown
    got_a, got_b = _outcome(records.apply_puts, a, group), _outcome(_fast.apply_puts, b, group)
    assert got_a[0] == "CorruptionError" and got_a == got_b
    assert _view(a) == _view(b)


@compiled
def test_random_groups_agree():
    rnd = random.Random(15)
    reqs, epoch = _puts(400, seed=15)
    a, b = _fresh(epoch), _fresh(epoch)
    i = 0
    while i < len(reqs):
        n = rnd.randint(1, SMALL_GROUP)
        group = reqs[i:i + n]
        i += n
        assert records.apply_puts(a, group, SMALL_GROUP, GEN_MIX, PRED_BITS) == \
            _fast.apply_puts(b, group, SMALL_GROUP, GEN_MIX, PRED_BITS)
    assert _view(a) == _view(b)
    assert a.check() == b.check() == []


@compiled
def test_columns_grow_inside_a_group_as_the_twin_grows_them():
    reqs, epoch = _puts(60, seed=16)
    a, b = _fresh(epoch), _fresh(epoch)
    for st in (a, b):               # 16 rows: groups of 8 cross the end
        st.cols = Columns(16)
    for i in range(0, 40, 8):
        records.apply_puts(a, reqs[i:i + 8], 8, GEN_MIX, PRED_BITS)
        _fast.apply_puts(b, reqs[i:i + 8], 8, GEN_MIX, PRED_BITS)
        assert a.cols.cap == b.cols.cap and a.cols.n == b.cols.n == i + 8
    assert _view(a) == _view(b)
