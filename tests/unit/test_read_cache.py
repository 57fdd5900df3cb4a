"""The read cache (stemedb.core.readcache.ReadCache): decoded records and
materialized query answers.

The property test is the contract of issue 9, section 3: over random
interleavings of writes, retractions, votes, epochs, trust outcomes, clock
ticks and queries, every answer the cache gives is exactly what a fresh
computation (the cache switched off for that one call) gives, pages after
the first included.  The other tests pin the bound, the counters, the
setting and that each kind of write invalidates what it changes.
"""
from __future__ import annotations

import tempfile
import threading
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from stemedb import open_store
from stemedb.config import Settings
from stemedb.core import reader as R
from stemedb.core import readcache as RC
from stemedb.core.lens import LENSES
from stemedb.errors import ConfigError, StemeError
from stemedb.model import assertion_hash
from stemedb.timeutil import format_time
from tests.conftest import NoFsyncFS

T0 = 1_709_294_400                       # seconds
NOW = (T0 + 400 * 86400) * 1_000_000     # the store's clock starts here (us)
DAY = 86400
PATHS = ["g", "g/a", "g/a/x", "g/b", "h"]
PREDS = ["r", "s"]
SOURCES = [None, "fda://x", "forum://y", "pubmed://z", "g/a"]
KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(2)]
AGENTS = [k.verify_key.encode().hex() for k in KEYS]
EPOCHS = ["e0", "e1", "e2"]


class Clock:
    def __init__(self):
        self.now = NOW

    def __call__(self):
        return self.now


def _open(path, clock, **kw):
    return open_store(path, fs=NoFsyncFS(), clock=clock, durability="none", **kw)


def _uncached(store, fn):
    """``fn()`` with the cache off for this call only (the test is single-threaded)."""
    saved, store.reader.cache = store.reader.cache, None
    try:
        return fn()
    finally:
        store.reader.cache = saved


def _outcome(fn):
    try:
        return ("ok", fn())
    except StemeError as exc:
        return ("error", type(exc).__name__, getattr(exc, "field", None))


def _answer(res):
    return res.to_dict()


# ----------------------------------------------------------------- operations

put_op = st.tuples(st.just("put"), st.sampled_from(PATHS), st.sampled_from(PREDS),
                   st.integers(0, 3), st.sampled_from([0.2, 0.5, 0.9]),
                   st.integers(0, 5), st.sampled_from(SOURCES),
                   st.sampled_from([None, "approved", "rejected", "proposed"]),
                   st.one_of(st.none(), st.integers(0, 2)),     # epoch index (if it exists)
                   st.one_of(st.none(), st.integers(0, 30)),    # parent: index of a stored one
                   st.one_of(st.none(), st.integers(0, 1)))     # signer
retract_op = st.tuples(st.just("retract"), st.sampled_from(["hash", "concept_path", "source"]),
                       st.integers(0, 30), st.sampled_from(PATHS), st.booleans())
vote_op = st.tuples(st.just("vote"), st.integers(0, 30), st.sampled_from([0.1, 0.5, 1.0]))
epoch_op = st.tuples(st.just("epoch"), st.lists(st.integers(0, 2), max_size=2))
outcome_op = st.tuples(st.just("outcome"), st.integers(0, 1), st.booleans())
tick_op = st.tuples(st.just("tick"), st.sampled_from([1, 60, 86400, 30 * 86400]))
query_spec = st.tuples(
    st.sampled_from(PATHS), st.sampled_from([None, "r", "s"]),
    st.booleans(),                                       # include_descendants
    st.sampled_from(sorted(LENSES)),
    st.sampled_from([None, None, 0, 2, 6]),              # as_of: in the claims' days
    st.sampled_from([None, None, 0, 1, 3]),              # known_at: ticks after NOW
    st.sampled_from([None, None, 1]),                    # since
    st.sampled_from([None, None, "any", "rejected"]),    # lifecycle
    st.sampled_from([None, None, None, "e0", "e1"]),     # epoch
    st.sampled_from([False, False, True]), st.booleans(),   # decay, include_retracted
    st.integers(1, 3))                                   # limit
# A few queries per interleaving, each asked again and again between the
# writes: repeats are what the cache answers, so they must be common.
query_op = st.tuples(st.just("query"), st.integers(0, 3))
page_op = st.tuples(st.just("page"), st.integers(0, 5))     # a cursor kept from earlier
WRITES = [put_op, put_op, put_op, retract_op, vote_op, epoch_op, outcome_op, tick_op, page_op,
          page_op]
ops = st.lists(st.integers(0, 17).flatmap(lambda k: WRITES[k] if k < len(WRITES) else query_op),
               min_size=20, max_size=60)


class Run:
    """One interleaving against one store; every query compared both ways."""

    def __init__(self, store, clock, queries):
        self.s, self.clock, self.queries = store, clock, queries
        self.hashes: list[str] = []
        self.epochs: list[str] = []
        self.ticks: list[int] = [NOW]
        self.cursors: list[tuple] = []

    def put(self, path, pred, value, conf, ts, source, lifecycle, ep, parent, signer):
        body = {"concept_path": path, "predicate": pred, "value": value, "confidence": conf,
                "timestamp": T0 + (390 + 2 * ts) * DAY}
        if source is not None:
            body["source"] = source
        if lifecycle is not None:
            body["lifecycle"] = lifecycle
        if ep is not None and ep < len(self.epochs):
            body["epoch"] = self.epochs[ep]
        if parent is not None and self.hashes:
            body["parent_hash"] = self.hashes[parent % len(self.hashes)]
        if signer is not None:
            body["agent_id"] = AGENTS[signer]
            body["signature"] = KEYS[signer].sign(
                bytes.fromhex(assertion_hash(body))).signature.hex()
        r = self.s.put(body)
        self.hashes.append(r.hash)

    def retract(self, kind, i, path, cascade):
        if kind == "hash":
            if not self.hashes:
                return
            target = {"hash": self.hashes[i % len(self.hashes)]}
        elif kind == "concept_path":
            target = {"concept_path": path}
        else:
            target = {"source": path}
        _outcome(lambda: self.s.retract(reason="test", cascade=cascade, **target))

    def vote(self, i, weight):
        if self.hashes:
            self.s.vote(self.hashes[i % len(self.hashes)], weight)

    def epoch(self, supersedes):
        if len(self.epochs) < len(EPOCHS):
            sup = sorted({self.epochs[j] for j in supersedes if j < len(self.epochs)})
            name = EPOCHS[len(self.epochs)]
            self.s.create_epoch(name, supersedes=sup)
            self.epochs.append(name)

    def outcome(self, agent, accurate):
        self.s.record_outcome(AGENTS[agent], accurate)

    def page(self, i):
        """A page asked for later, after whatever the interleaving did since."""
        if self.cursors:
            path, kw = self.cursors[i % len(self.cursors)]
            cached = _outcome(lambda: _answer(self.s.query(path, **kw)))
            fresh = _outcome(lambda: _answer(_uncached(self.s, lambda: self.s.query(path, **kw))))
            assert cached == fresh, f"later page of {path!r} {kw}"

    def tick(self, seconds):
        self.clock.now += seconds * 1_000_000
        self.ticks.append(self.clock.now)

    def query(self, i):
        self.ask(*self.queries[i % len(self.queries)])

    def ask(self, path, pred, desc, lens, as_of, known_at, since, lifecycle, epoch, decay,
            incl, limit):
        kw = {"predicate": pred, "include_descendants": desc, "lens": lens, "decay": decay,
              "include_retracted": incl, "limit": limit, "lifecycle": lifecycle, "epoch": epoch}
        if as_of is not None:
            kw["as_of"] = format_time((T0 + (390 + 2 * as_of) * DAY) * 1_000_000)
        if known_at is not None:
            kw["known_at"] = format_time(self.ticks[min(known_at, len(self.ticks) - 1)])
        if since is not None:
            kw["since"] = format_time((T0 + (390 + 2 * since) * DAY) * 1_000_000)
        cached = _outcome(lambda: _answer(self.s.query(path, **kw)))
        fresh = _outcome(lambda: _answer(_uncached(self.s, lambda: self.s.query(path, **kw))))
        assert cached == fresh, f"query {path!r} {kw}"
        if cached[0] == "ok" and cached[1]["next_cursor"]:
            self.cursors.append((path, dict(kw, cursor=cached[1]["next_cursor"])))
        # follow the cursor: pinned pages, cached and not, agree too
        pages = 0
        while cached[0] == "ok" and cached[1]["next_cursor"] and pages < 3:
            kw2 = dict(kw, cursor=cached[1]["next_cursor"])
            cached = _outcome(lambda: _answer(self.s.query(path, **kw2)))
            fresh = _outcome(lambda: _answer(_uncached(self.s, lambda: self.s.query(path, **kw2))))
            assert cached == fresh, f"page {pages + 2} of {path!r} {kw}"
            pages += 1


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(query_spec, min_size=1, max_size=4), ops)
def test_cached_answers_equal_fresh_ones(queries, program):
    clock = Clock()
    with tempfile.TemporaryDirectory() as d, _open(d, clock, audit=False) as s:
        run = Run(s, clock, queries)
        for op in program:
            getattr(run, op[0])(*op[1:])


# ----------------------------------------------------------------- invalidation

@pytest.fixture
def store(tmp_path):
    clock = Clock()
    with _open(str(tmp_path / "data"), clock) as s:
        s.test_clock = clock
        yield s


def claim(value, *, path="g", pred="r", conf=0.5, ts=0, **extra):
    return {"concept_path": path, "predicate": pred, "value": value, "confidence": conf,
            "timestamp": T0 + ts, **extra}


def winner(res):
    return res.results[0]["winner"].value if res.results and res.results[0]["winner"] else None


def test_a_repeated_query_is_answered_from_the_cache(store):
    for i in range(5):
        store.put(claim(i, ts=i))
    first = store.query("g", predicate="r", limit=2)
    cache = store.reader.cache
    hits = cache.answer_hits
    again = store.query("g", predicate="r", limit=2)
    assert cache.answer_hits == hits + 1
    assert again.to_dict()["results"] == first.to_dict()["results"]
    assert [a.hash for a in again.assertions] == [a.hash for a in first.assertions]


@pytest.mark.parametrize("change", ["put", "retract", "vote", "epoch", "outcome", "revision"])
def test_each_kind_of_write_changes_the_answer_it_touches(store, change):
    """A write that changes an answer makes the next query recompute it (the
    cached answer would be wrong); each record kind goes through its own bump."""
    a = store.put(claim("old", ts=1, conf=0.9, agent_id=AGENTS[0]) | {
        "signature": KEYS[0].sign(bytes.fromhex(assertion_hash(claim(
            "old", ts=1, conf=0.9, agent_id=AGENTS[0])))).signature.hex()})
    store.put(claim("other", ts=0, conf=0.6, path="h"))
    b_body = claim("b", ts=0, conf=0.7, epoch=None)
    lens = {"put": "recency", "retract": "recency", "vote": "vote", "epoch": "recency",
            "outcome": "trust", "revision": "recency"}[change]
    if change == "epoch":
        store.create_epoch("e0")
        store.put(claim("old", ts=1, epoch="e0"))
    b = store.put(b_body)
    kw = {"predicate": "r", "lens": lens}
    if lens == "trust":          # without as_of its answer depends on "now": never kept
        kw["as_of"] = format_time((T0 + 10) * 1_000_000)
    before = store.query("g", **kw)
    assert store.query("g", **kw).to_dict() == before.to_dict()
    if change == "put":
        store.put(claim("new", ts=5))
    elif change == "retract":
        store.retract(hash=a.hash, reason="wrong")
    elif change == "vote":
        store.vote(b.hash, 1.0)
    elif change == "epoch":
        store.create_epoch("e1", supersedes=["e0"])
    elif change == "outcome":
        for _ in range(5):
            store.record_outcome(AGENTS[0], False)
    else:
        store.put(claim("revised", path="h", pred="q", parent_hash=a.hash))
    after = store.query("g", **kw)
    fresh = _uncached(store, lambda: store.query("g", **kw))
    assert after.to_dict() == fresh.to_dict()
    assert after.to_dict() != before.to_dict(), f"{change} should change this answer"


def test_a_later_page_does_not_stand_in_for_a_first_page(store):
    """A cursor's page is computed in its pinned view, which a write since
    has left behind: it must not be filed where a first page would find it."""
    for i in range(3):
        store.put(claim(i, ts=i))
    first = store.query("g", predicate="r", limit=1)
    store.put(claim("new", ts=9))
    store.query("g", predicate="r", limit=1, cursor=first.next_cursor)
    again = store.query("g", predicate="r", limit=1)
    assert [a.value for a in again.assertions] == ["new"]
    assert again.to_dict() == _uncached(
        store, lambda: store.query("g", predicate="r", limit=1)).to_dict()


def test_decay_without_as_of_is_never_served_stale(store):
    now_s = NOW // 1_000_000 - T0
    store.put(claim("forum", conf=0.9, source="forum://x", ts=now_s))
    store.put(claim("fda", conf=0.5, source="fda://x", ts=now_s - 1))
    first = store.query("g", predicate="r", lens="confidence", decay=True)
    store.test_clock.now += 400 * 86400 * 1_000_000
    later = store.query("g", predicate="r", lens="confidence", decay=True)
    assert later.to_dict() == _uncached(
        store, lambda: store.query("g", predicate="r", lens="confidence", decay=True)).to_dict()
    assert winner(first) != winner(later), "a year of decay changes the winner"


def test_a_caller_changing_its_result_does_not_change_the_cache(store):
    store.put(claim(1))
    r = store.query("g", predicate="r")
    r.results[0]["winner"] = None
    r.results[0]["confidence"] = -1
    assert winner(store.query("g", predicate="r")) == 1
    assert store.query("g", predicate="r").results[0]["confidence"] > 0


def test_a_small_answer_serves_its_pages_from_the_records_it_holds(store, monkeypatch):
    """An answer of at most HELD_MAX candidates holds their records and
    seqs: a repeated query takes no record-cache lookup, gives the same
    assertions (retracted ones as retracted), and the answer's size counts
    the records it holds and the room of its audit line's end."""
    hashes = [store.put(claim(i, ts=i)).hash for i in range(5)]
    store.retract(hash=hashes[1], reason="bad")
    first = store.query("g", predicate="r", include_retracted=True, limit=3)
    [ans] = [v for v in store.reader.cache._d.values() if isinstance(v, RC.Answer)]
    assert ans.held is not None and len(ans.held[0]) == len(ans.ords) == 5
    assert ans.held[1] == [int(store.reader.state.cols.seq[o]) for o in ans.ords]
    bare = RC.Answer(ans.token, ans.results, list(ans.ords), ans.active)
    assert bare.held is None
    # (compiled, also the room of the parameters' JSON kept with that end)
    assert ans.proom == (RC.PARAMS_BASE + len("g") + len("r") if R.qfast.COMPILED else 0)
    assert ans.size == bare.size + sum(RC.HELD_BYTES + RC.record_size(r) for r in ans.held[0]) \
        + RC.TAIL_BASE + 68 * len(ans.results) + 112 * min(len(ans.ords), RC.TAIL_NAMED) + ans.proom

    def no_lookup(*a, **k):
        raise AssertionError("a held answer looked its records up")
    shown = []
    for cursor in (None, first.next_cursor):
        store.query("g", predicate="r", include_retracted=True, limit=3, cursor=cursor)
        with monkeypatch.context() as m:
            m.setattr(RC.ReadCache, "take", no_lookup)
            again = store.query("g", predicate="r", include_retracted=True, limit=3,
                                cursor=cursor)
        with monkeypatch.context() as m:
            m.setattr(store.reader, "cache", None)          # computed afresh
            fresh = store.query("g", predicate="r", include_retracted=True, limit=3,
                                cursor=cursor)
        assert [(a.hash, a.seq, a.status, a.retraction) for a in again.assertions] == \
            [(a.hash, a.seq, a.status, a.retraction) for a in fresh.assertions]
        assert again.next_cursor == fresh.next_cursor
        shown += again.assertions
    assert [a.status for a in shown].count("retracted") == 1


def test_a_large_answer_holds_no_records(store):
    store.put_batch([claim(i, ts=i) for i in range(RC.HELD_MAX + 1)])
    store.query("g", predicate="r", limit=2)
    [ans] = [v for v in store.reader.cache._d.values() if isinstance(v, RC.Answer)]
    assert ans.held is None


# ----------------------------------------------------------------- records and the bound

def test_records_are_cached_and_the_bound_holds(tmp_path):
    clock = Clock()
    with _open(str(tmp_path / "d"), clock, audit=False, read_cache_bytes=20_000) as s:
        s.put_batch([claim(i, path=f"p{i % 7}", ts=i) for i in range(200)])
        cache = s.reader.cache
        for p in range(7):
            s.query(f"p{p}", predicate="r", limit=1)
            assert 0 < cache.bytes <= 20_000
        rec = s.reader.read_record(199)
        hits = cache.record_hits
        assert s.reader.read_record(199) is rec
        assert cache.record_hits == hits + 1
        assert cache.bytes == sum(RC._size(v) for v in cache._d.values())


def _signed(body):
    body = dict(body, agent_id=AGENTS[0])
    body["signature"] = KEYS[0].sign(bytes.fromhex(assertion_hash(body))).signature.hex()
    return body


@pytest.mark.parametrize("shape", ["plain", "signed_derived"])
def test_the_size_estimate_is_not_below_what_records_take(tmp_path, shape):
    """RECORD_BASE and the extras are measured: the estimate must not
    undercount the heap the cached records hold (else the bound is no bound)."""
    clock = Clock()
    with _open(str(tmp_path / "d"), clock, audit=False) as s:
        roots = [s.put(claim(k, path="root")).hash for k in range(5)]
        bodies = [claim({"level": "rare", "n": i, "note": "x" * (40 + i % 40)},
                        path=f"dom{i % 10}/ent{i % 100}/asp{i % 7}", pred=f"pred{i % 50}",
                        source=f"pubmed://{i * 7919}", ts=i) for i in range(2000)]
        if shape == "signed_derived":
            bodies = [_signed(dict(b, derived_from=roots[:1 + i % 5]))
                      for i, b in enumerate(bodies)]
        s.put_batch(bodies)
        s.reader.cache = RC.ReadCache(1 << 40)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            s.reader.read_records(list(range(5, 1005)))
            for o in range(1005, 2005):
                s.reader.read_record(o)
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert s.reader.cache.bytes >= used, (s.reader.cache.bytes / 2000, used / 2000)


def test_threads_share_the_cache_safely(tmp_path):
    clock = Clock()
    with _open(str(tmp_path / "d"), clock, audit=False, read_cache_bytes=30_000) as s:
        s.put_batch([claim(i, path=f"p{i % 5}", ts=i) for i in range(300)])
        want = {p: _uncached(s, lambda p=p: s.query(f"p{p}", predicate="r").to_dict())
                for p in range(5)}
        errors = []

        def reader(k):
            try:
                for i in range(40):
                    p = (i + k) % 5
                    assert s.query(f"p{p}", predicate="r").to_dict() == want[p]
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert s.reader.cache.bytes <= 30_000


def test_zero_turns_the_cache_off(tmp_path):
    with _open(str(tmp_path / "d"), Clock(), read_cache_bytes=0) as s:
        s.put(claim(1))
        assert s.reader.cache is None
        assert winner(s.query("g", predicate="r")) == 1


@pytest.mark.parametrize("bad", [-1, 1.5, "64", 1 << 41])
def test_a_bad_setting_names_the_field(bad):
    with pytest.raises(ConfigError) as exc:
        Settings(read_cache_bytes=bad)
    assert exc.value.field == "read_cache_bytes"
    assert "STEMEDB_READ_CACHE_BYTES" in str(exc.value)


def test_the_setting_reaches_the_store(tmp_path):
    s = open_store(settings=Settings(data_dir=str(tmp_path / "d"), read_cache_bytes=123_456),
                   fs=NoFsyncFS())
    try:
        assert s.reader.cache.max_bytes == 123_456
    finally:
        s.close()
    assert Settings.from_env({"STEMEDB_READ_CACHE_BYTES": "0"}).read_cache_bytes == 0


def test_an_answer_from_the_cache_is_audited_as_a_fresh_one(store):
    for i in range(30):
        store.put(claim(i % 4, ts=i, conf=0.1 + i / 100))
    kw = {"predicate": "r", "lens": "consensus", "limit": 3}
    store.query("g", agent="a", **kw)
    hits = store.reader.cache.answer_hits
    store.query("g", agent="a", **kw)       # the answer's audit line end written and kept
    store.query("g", agent="a", **kw)       # ... and used
    assert store.reader.cache.answer_hits == hits + 2
    _uncached(store, lambda: store.query("g", agent="a", **kw))
    entries = store.audit_queries(limit=4)
    assert len(entries) == 4
    same = [{k: v for k, v in e.items() if k not in ("id", "at")} for e in entries]
    assert same[0] == same[1] == same[2] == same[3]
    assert len(same[0]["contributing"]) == 20 and same[0]["contributing_more"] == 10


def test_a_thrashing_cache_admits_one_miss_in_eight(tmp_path):
    """Working set above the bound: after a window of mostly misses with the
    cache full, a batch keeps one miss in ADMIT_EVERY; answers stay right."""
    clock = Clock()
    with _open(str(tmp_path / "d"), clock, audit=False, read_cache_bytes=40_000) as s:
        s.put_batch([claim(i, path=f"p{i % 40}", ts=i) for i in range(2000)])
        cache = s.reader.cache
        assert not cache.thrashing
        ords = list(range(2000))
        for _ in range(RC.WINDOW // 2000 + 1):
            s.reader.read_records(ords)
        assert cache.thrashing
        before = len(cache)
        cache.clear()
        s.reader.read_records(list(range(80)))
        assert before > 20 and len(cache) == 80 // RC.ADMIT_EVERY
        for p in range(40):
            assert s.query(f"p{p}", predicate="r").to_dict() == _uncached(
                s, lambda p=p: s.query(f"p{p}", predicate="r")).to_dict()
        assert cache.bytes <= 40_000
