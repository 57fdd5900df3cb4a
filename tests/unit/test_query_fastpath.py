"""The small-key query path's compiled helpers give their pure twins'
answers (issue 9, "The read path, compiled"):

* ``cache_take`` (a page's records from the read cache, by ordinal): the
  same locations, records, seqs, hit count, and the same LRU order left in
  the cache; an ordinal outside the columns raises before anything moves;
* ``key_ordinals`` against ``index.MultiMap.get`` (the by_key lookup of
  ``query.gather``), the sorted run and the recent dict both;
* ``hashed_pairs`` (the value ids a ranking checks for collisions);
* ``audit_entry`` against ``query._entry`` (the audit writer's entry): the
  same JSON bytes, weights to the bit, decayed or not, times before the
  epoch and beyond int64 included; ``query_id`` and the entry's time
  against ``audit.query_id`` and ``timeutil.format_time``;
* whole queries with the compiled helpers swapped for the pure twins give
  the same answers and the same audit entries, over stores with
  retractions; a damaged record is the same ChecksumMismatch either way.
"""
from __future__ import annotations

import glob
import os
import random
from collections import OrderedDict

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stemedb.core import audit as audit_mod
from stemedb.core import qaudit, qfast, qpure
from stemedb.core import query as Q
from stemedb.core import readcache as RC
from stemedb.core.index import MultiMap
from stemedb.core.lens import _HALF_LIFE_US
from stemedb.errors import ChecksumMismatch
from stemedb.model import Assertion, AssertionRecord
from stemedb.timeutil import format_time
from tests.conftest import log_end

try:
    from stemedb.core import _query  # type: ignore[attr-defined]
except ImportError:     # a pure-Python build: nothing compiled to compare
    _query = None

needs_compiled = pytest.mark.skipif(_query is None, reason="compiled _query not built")
T0 = 1_709_294_400


def set_first(monkeypatch, first):
    """``first`` as query.first_page, the first-page call of run_query and
    of Store.query."""
    monkeypatch.setattr(Q, "first_page", first)


def _outcome(fn, *args):
    try:
        return fn(*args)
    except (IndexError, ValueError, TypeError) as exc:
        return type(exc)


# ------------------------------------------------------------------ cache_take

@st.composite
def cache_case(draw):
    n = draw(st.integers(0, 40))
    locs = draw(st.lists(st.integers(0, 2**45), min_size=n, max_size=n))
    seqs = draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n))
    cap = n + draw(st.integers(0, 3))           # the columns' spare capacity
    loc = np.zeros(cap, dtype=np.int64)
    seq = np.zeros(cap, dtype=np.int64)
    loc[:n], seq[:n] = locs, seqs
    held = draw(st.lists(st.sampled_from(locs) if locs else st.nothing(), unique=True))
    damaged = draw(st.booleans())
    top = cap + 2 if damaged else max(0, cap - 1)
    ords = draw(st.lists(st.integers(-2 if damaged else 0, top), max_size=40)) if cap else []
    return loc, seq, held, ords


def _cache(held, extra=()):
    d: OrderedDict = OrderedDict()
    for k in extra:                 # answers share the dict: tuple keys
        d[k] = "answer"
    for i, loc in enumerate(held):
        d[loc] = (f"rec{loc}", 100 + i)
    return d


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(cache_case(), st.booleans())
def test_cache_take_is_its_twin(case, large):
    loc, seq, held, ords = case
    if large:                        # the twin's numpy branch at any size
        ords = ords * (qpure.SMALL_TAKE // max(1, len(ords)) + 1) if ords else ords
    d1, d2 = _cache(held, [("k",)]), _cache(held, [("k",)])
    got = _outcome(_query.cache_take, d1, list(ords), loc, seq)
    want = _outcome(qpure.cache_take, d2, list(ords), loc, seq)
    assert got == want, "the same locations, records, seqs and hits, or the same error"
    assert list(d1) == list(d2), "the same entries moved to the recent end"


def test_cache_take_reads_the_records_it_holds():
    loc = np.array([10, 20, 30, 40], dtype=np.int64)
    seq = np.array([1, 2, 3, 4], dtype=np.int64)
    d = _cache([30, 10])
    locs, recs, seqs, hits = qfast.cache_take(d, [2, 1, 0, 2], loc, seq)
    assert (locs, recs, seqs, hits) == ([30, 20, 10, 30], ["rec30", None, "rec10", "rec30"],
                                        [3, 2, 1, 3], 3)
    assert list(d) == [10, 30], "a hit moves its entry to the recent end, last use last"
    with pytest.raises(IndexError):
        qfast.cache_take(d, [0, 9], loc, seq)
    assert list(d) == [10, 30], "a bad ordinal raises before anything moves"


# ------------------------------------------------------------------ key_ordinals

@needs_compiled
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 30), st.integers(0, 1000)), max_size=60),
       st.lists(st.tuples(st.integers(-5, 30), st.integers(1001, 2000)), max_size=20),
       st.lists(st.integers(-8, 34) | st.integers(-2**63, 2**63 - 1), max_size=10))
def test_key_ordinals_is_multimap_get(run, recent, probes):
    keys = np.array([k for k, _ in run], dtype=np.int64)
    vals = np.array([v for _, v in run], dtype=np.int32)
    m = MultiMap.build(keys, vals) if run else MultiMap()
    for k, o in recent:
        m.recent.setdefault(k, []).append(o)
    for key in probes + [k for k, _ in run[:5]] + [k for k, _ in recent[:5]]:
        want = m.get(key)
        assert _query.key_ordinals(m.keys, m.vals, m.recent, key) == want
        assert qpure.key_ordinals(m.keys, m.vals, m.recent, key) == want


@needs_compiled
def test_key_ordinals_refuses_a_damaged_map():
    keys = np.array([1, 2, 3], dtype=np.int64)
    vals = np.array([0, 1], dtype=np.int32)
    for fn in (_query.key_ordinals, qpure.key_ordinals):
        with pytest.raises(ValueError):
            fn(keys, vals, {}, 2)


# ------------------------------------------------------------------ hashed_pairs

@needs_compiled
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
                          st.booleans()), max_size=40),
       st.data())
def test_hashed_pairs_is_its_twin(rows, data):
    va = np.array([(a | 0xFF) if h else (a & ~0xFF) for a, _, h in rows], dtype=np.uint64)
    vb = np.array([b if data.draw(st.booleans()) else 0 for _, b, _ in rows], dtype=np.uint64)
    n = len(rows)
    ords = data.draw(st.lists(st.integers(-2, n + 1) if data.draw(st.booleans())
                              else st.integers(0, max(0, n - 1)), max_size=40)) if n else []
    assert _outcome(_query.hashed_pairs, list(ords), va, vb) == \
        _outcome(qpure.hashed_pairs, list(ords), va, vb)


# ------------------------------------------------------------------ the audit entry

REC = st.tuples(st.integers(-2**62, 2**62), st.floats(0.0, 1.0), st.integers(0, 5),
                st.binary(min_size=32, max_size=32))
AT = st.one_of(st.integers(0, 2**53), st.integers(-2**62, 2**62),
               st.integers(2**53, 2**63 - 1), st.just(T0 * 1_000_000))


def _assertions(items):
    return [Assertion(AssertionRecord(hash=h, recorded_at=0, timestamp=ts, confidence=c,
                                      source_class=rank, lifecycle=0, concept_path="g",
                                      predicate="r", value_json=b"1"), i + 1)
            for i, (ts, c, rank, h) in enumerate(items)]


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(st.lists(REC, max_size=22), st.lists(REC, max_size=3), AT, AT, st.booleans(),
       st.integers(0, 2**40), st.integers(-3, 5), st.booleans(),
       st.one_of(st.none(), st.text(max_size=5)))
def test_audit_entry_is_query_entry(top, winners, at, at_us, decay, number, more, as_dict,
                                    agent):
    params = ("a/b", None, False, "recency", None, at % 7 or None, None, None, None,
              decay, False, 100, None)
    if as_dict:
        params = {k: v for k, v in zip(Q._AUDIT_PARAMS, params)}
    args = (number, at, agent, params, _assertions(winners), more, _assertions(top), at_us,
            decay, len(top) + 3)
    try:
        want = Q._entry(*args)
    except (ValueError, OverflowError, OSError) as exc:     # a time no format takes
        with pytest.raises(type(exc)):
            _query.audit_entry(Q._AUDIT_PARAMS, _HALF_LIFE_US, format_time, *args)
        return
    got = _query.audit_entry(Q._AUDIT_PARAMS, _HALF_LIFE_US, format_time, *args)
    assert orjson.dumps(got) == orjson.dumps(want), "the same entry, weights to the bit"
    assert [type(c["weight"]) for c in got["contributing"]] == \
        [type(c["weight"]) for c in want["contributing"]]


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(st.integers(-2**64, 2**64), st.integers(0, 2**64))
def test_the_entry_id_and_time_are_the_references(at, number):
    assert _query.query_id(at, number) == audit_mod.query_id(at, number)
    try:
        want = format_time(at)
    except (ValueError, OverflowError, OSError) as exc:
        with pytest.raises(type(exc)):
            _query.format_time_c(at, format_time)
    else:
        assert _query.format_time_c(at, format_time) == want


# ------------------------------------------------------------------ whole queries

@pytest.fixture
def clocked(opener):
    def _open(**kw):
        clock = [T0 * 1_000_000 + 500 * 86400 * 1_000_000]
        s = opener(clock=lambda: clock[0], **kw)
        s.test_clock = clock
        return s
    return _open


def _pure(monkeypatch):
    """The pure twins in place of every compiled helper of this path."""
    monkeypatch.setattr(qfast, "cache_take", qpure.cache_take)
    monkeypatch.setattr(RC, "cache_take", qpure.cache_take)
    monkeypatch.setattr(qfast, "key_ordinals", qpure.key_ordinals)
    monkeypatch.setattr(qfast, "hashed_pairs", qpure.hashed_pairs)
    monkeypatch.setattr(qaudit, "_ENTRY", qaudit._entry)
    set_first(monkeypatch, qpure.first_page(Q._FIRST_ENV))


def _fill(store, seed):
    r = random.Random(seed)
    hashes = []
    for i in range(120):
        path = f"d/e{r.randrange(4)}"
        value = r.choice([r.randrange(5), "x" * r.randrange(1, 40), [1, 2], {"k": i % 3}])
        hashes.append(store.put({"concept_path": path, "predicate": f"p{r.randrange(3)}",
                                 "value": value, "confidence": r.choice([0.1, 0.5, 0.9]),
                                 "source": r.choice([None, "fda://x", "blog://y"]),
                                 "timestamp": T0 + r.randrange(10**6)}))
    for h in r.sample(hashes, 8):
        store.retract(hash=h.hash, reason="test")


def _answers(store, queries):
    out = []
    for path, pred, kw in queries:
        res = store.query(path, predicate=pred, limit=1000, **kw)
        out.append(orjson.dumps(res.to_dict()))
    return out


QUERIES = [(f"d/e{i}", f"p{j}", kw) for i in range(5) for j in range(4)
           for kw in ({}, {"lens": "authority", "decay": True}, {"include_retracted": True},
                      {"lens": "consensus"})]


@needs_compiled
@pytest.mark.parametrize("seed", range(3))
def test_queries_answer_as_the_pure_helpers_do(clocked, tmp_path, monkeypatch, seed):
    store = clocked(audit=True)
    _fill(store, seed)
    first = _answers(store, QUERIES)
    again = _answers(store, QUERIES)                 # answers and records from the cache
    store.reader.cache.clear()
    with monkeypatch.context() as m:
        _pure(m)
        pure_cold = _answers(store, QUERIES)
        pure_warm = _answers(store, QUERIES)
    assert first == again == pure_cold == pure_warm
    store.audit.flush()
    entries = store.audit_queries(limit=10 * len(QUERIES))[::-1]
    n = len(QUERIES)
    assert len(entries) == 4 * n
    strip = [{k: v for k, v in e.items() if k != "id"} for e in entries]
    assert strip[:n] == strip[n:2 * n] == strip[2 * n:3 * n] == strip[3 * n:], \
        "the compiled and the pure entry builders write the same entries"
    assert len({e["id"] for e in entries}) == len(entries), "ids stay unique"


@pytest.mark.parametrize("pure", [False, True])
def test_a_damaged_record_is_the_same_checksum_mismatch(clocked, monkeypatch, pure):
    """A page read through the cache lookup (cache_take) and its misses read
    from the log: a flipped byte is the ChecksumMismatch naming the file."""
    if pure:
        _pure(monkeypatch)
    store = clocked()
    for i in range(6):
        store.put({"concept_path": "g", "predicate": "r", "value": f"v{i}", "confidence": 0.5,
                   "timestamp": T0 + i})
    [seg] = glob.glob(os.path.join(store.path, "**", "segment-*.log"), recursive=True)
    size = log_end(seg)                 # the records (the active segment's zeros follow)
    with open(seg, "r+b") as fh:        # a byte in the middle of the log's records
        fh.seek(size // 2)
        b = fh.read(1)
        fh.seek(size // 2)
        fh.write(bytes([b[0] ^ 0x40]))
    with pytest.raises(ChecksumMismatch) as err:
        store.query("g", predicate="r")
    assert err.value.file == seg


# ------------------------------------------------------------------ read_frames

def test_the_frame_constants_are_the_format():
    from stemedb.core import format as fmt
    from stemedb.core.index import pack_loc
    assert (qpure.FRAME_HEAD, qpure.CRC_FROM) == (fmt.FRAME_SIZE, fmt.FRAME_CRC_FROM)
    assert qpure.MAX_PAYLOAD == fmt.MAX_PAYLOAD
    assert pack_loc(3, 5) == (3 << qpure.LOC_BITS) | 5


@pytest.fixture
def segmented(tmp_path):
    from stemedb import open_store
    from tests.conftest import NoFsyncFS
    s = open_store(str(tmp_path / "d"), fs=NoFsyncFS(), durability="none", audit=False,
                   segment_size=16384)
    for k in range(0, 200, 10):
        s.put_batch([{"concept_path": f"p{i % 7}", "predicate": "r",
                      "value": {"n": i, "pad": "x" * (i * 7 % 900)}, "confidence": 0.5,
                      "timestamp": T0 + i} for i in range(k, k + 10)])
    yield s
    s.close()


@needs_compiled
def test_read_frames_is_its_twin_on_a_sound_log(segmented):
    from stemedb.core import fast
    r = segmented.reader
    segs = r.wal.segments
    assert len(segs) > 3 and segs[0].sealed and not segs[-1].sealed
    locs = [int(x) for x in segmented.state.cols.loc[:segmented.state.count]]
    want = [r._read(loc) for loc in locs]
    assert _query.read_frames(locs, segs, fast.decode_assert) == want
    assert qpure.read_frames(locs, segs, fast.decode_assert) == want
    assert _query.read_frames([], segs, fast.decode_assert) == []


@needs_compiled
@pytest.mark.parametrize("where", ["crc", "length", "tail", "segment", "active-crc",
                                   "active-length"])
def test_read_frames_declines_damaged_frames_as_its_twin(segmented, where):
    """A frame that does not check out is None in both (Reader._read then
    raises what it raises for it); its neighbours still read."""
    from stemedb.core import fast
    r = segmented.reader
    segs = r.wal.segments
    seg = segs[-1] if where.startswith("active") else segs[1]
    locs = [int(x) for x in segmented.state.cols.loc[:segmented.state.count]
            if int(x) >> 40 == seg.number]
    loc = locs[len(locs) // 2]
    off = loc & ((1 << 40) - 1)
    if where == "active-crc":
        with open(seg.path, "r+b") as fh:
            fh.seek(off + 25)
            b = fh.read(1)
            fh.seek(off + 25)
            fh.write(bytes([b[0] ^ 0x10]))
    elif where == "active-length":
        # a length past MAX_PAYLOAD (a flipped high bit): declined
        with open(seg.path, "r+b") as fh:
            fh.seek(off)
            fh.write((0xFFFFFFF0).to_bytes(4, "little"))
    else:
        with open(seg.path, "rb") as fh:
            data = bytearray(fh.read(seg.size))
        if where == "crc":
            data[off + 23] ^= 0x10
        elif where == "length":
            data[off:off + 4] = (len(data)).to_bytes(4, "little")
        elif where == "tail":
            loc = (seg.number << 40) | (len(data) - 3)
        elif where == "segment":
            loc = ((segs[-1].number + 5) << 40) | off
        with open(seg.path, "r+b") as fh:   # a sealed segment's frames are pread too
            fh.write(data)
    asked = [locs[0], loc, locs[-1]]
    got = _query.read_frames(asked, segs, fast.decode_assert)
    assert got == qpure.read_frames(asked, segs, fast.decode_assert)
    assert got[1] is None and got[0] is not None and got[2] is not None
    with pytest.raises(Exception) as err:
        r._read_many(asked)
    with pytest.raises(type(err.value)):
        r._read(loc)
    if where in ("crc", "length", "active-crc"):
        assert err.type is ChecksumMismatch


def test_read_frames_never_asks_for_a_damaged_length(segmented, monkeypatch):
    """A length field past MAX_PAYLOAD is damage: the pure twin declines the
    frame without asking pread for that many bytes (the compiled one has the
    same bound before its malloc)."""
    import os
    from stemedb.core import fast
    seg = segmented.reader.wal.segments[-1]
    locs = [int(x) for x in segmented.state.cols.loc[:segmented.state.count]
            if int(x) >> 40 == seg.number]
    off = locs[0] & ((1 << 40) - 1)
    with open(seg.path, "r+b") as fh:
        fh.seek(off)
        fh.write((0xFFFFFFF0).to_bytes(4, "little"))
    asked: list[int] = []
    real = os.pread

    def pread(fd, n, at):
        asked.append(n)
        return real(fd, n, at)

    monkeypatch.setattr(os, "pread", pread)
    assert qpure.read_frames(locs[:1], [seg], fast.decode_assert) == [None]
    assert asked and max(asked) <= qpure.FRAME_HEAD + qpure.MAX_PAYLOAD


def test_a_queued_entry_builds_as_the_writer_builds_it(clocked, monkeypatch):
    """Compiled, what _audit queues is the entry's JSON line, numbered by the
    audit log; pure (no _LINE), an audit.Pending the writer builds with the
    entry's number, and called bare (a tool timing the builder) with number
    0.  Both are the entry _entry builds."""
    store = clocked()
    store.put({"concept_path": "g", "predicate": "r", "value": 1, "confidence": 0.5,
               "timestamp": T0})
    queued: list = []

    class Capture:
        add = queued.append

        @staticmethod
        def number():
            return 7

    store.reader.audit = Capture()
    entries = []
    compiled = (qaudit._LINE, qaudit._HEAD)
    for line, head in ([(None, None)] if qaudit._LINE is None else
                       [compiled, compiled, (None, None)]):
        # compiled: a first query writes its line, a repeated one (from the
        # materialized answer) writes it from the answer's kept end
        monkeypatch.setattr(qaudit, "_LINE", line)
        monkeypatch.setattr(qaudit, "_HEAD", head)
        res = store.query("g", predicate="r")
        item = queued.pop()
        if line is not None:
            assert type(item) is bytes and item.endswith(b"\n")
            e = orjson.loads(item)
        else:
            assert type(item) is audit_mod.Pending
            assert item() == item[0](0, *item[1:])
            e = item[0](7, *item[1:])
        assert e["id"] == audit_mod.query_id(e["at_us"], 7)
        assert e["result_hashes"] == [res.results[0]["winner"].hash]
        assert [c["hash"] for c in e["contributing"]] == [a.hash for a in res.assertions]
        entries.append(e)
    assert all(e == entries[-1] for e in entries), "the line is the entry the writer builds"


# ------------------------------------------------------------------ the columns

@needs_compiled
@pytest.mark.parametrize("bad", [
    np.arange(8, dtype=np.int32),                   # another dtype
    np.arange(8, dtype=np.uint64),                  # another kind, the same size
    np.arange(16, dtype=np.int64)[::2],             # not contiguous
    np.arange(8, dtype=np.int64).reshape(2, 4),     # not 1-D
    np.arange(8, dtype=">i8"),                      # not the machine's byte order
    list(range(8)),                                 # not an array
])
def test_a_column_that_is_not_the_expected_array_is_refused(bad):
    """The compiled helpers read a column's data pointer (no memoryview):
    anything but a 1-D, contiguous, native-order array of the column's type
    is refused, as the typed memoryview refused it, before anything is read."""
    good = np.arange(8, dtype=np.int64)
    with pytest.raises((ValueError, TypeError)):
        _query.cache_take(OrderedDict(), [0], bad, good)
    with pytest.raises((ValueError, TypeError)):
        _query.key_ordinals(bad, np.arange(8, dtype=np.int32), {}, 1)
    with pytest.raises((ValueError, TypeError)):
        _query.filter_ords([0], good, good, bad, np.zeros(8, np.int8), np.zeros(8, np.int32),
                           None, None, None, 3, None, None)


@needs_compiled
def test_a_snapshot_view_column_is_read_in_place():
    """A column may be a read-only view over a mapped file (the snapshot):
    read through its pointer, offset included, as the memoryview read it."""
    raw = bytearray(8 + 8 * 6)
    view = np.frombuffer(bytes(raw[:8]) + np.arange(6, dtype=np.int64).tobytes(),
                         dtype=np.int64, offset=8)
    assert not view.flags.writeable
    d = OrderedDict({3: ("r3", 1)})
    assert _query.cache_take(d, [3, 4], view, view) == qpure.cache_take(
        OrderedDict({3: ("r3", 1)}), [3, 4], view, view)


@needs_compiled
def test_a_line_that_fails_to_build_does_not_fail_the_query(clocked, monkeypatch):
    """The compiled line is built on the query's thread: if it raises, the
    entry goes the writer's way (which builds it, or counts it dropped),
    and the query answers."""
    store = clocked(audit=True)
    store.put({"concept_path": "g", "predicate": "r", "value": 1, "confidence": 0.5,
               "timestamp": T0})

    def broken(*a, **k):
        raise RuntimeError("the line failed")
    monkeypatch.setattr(qaudit, "_LINE", broken)
    monkeypatch.setattr(qaudit, "_HEAD", broken)
    for _ in range(2):                  # made, then from the cached answer
        res = store.query("g", predicate="r")
        assert res.results[0]["winner"].value == 1
    entries = store.audit_queries(limit=5)
    assert len(entries) == 2, "the writer built both entries"
