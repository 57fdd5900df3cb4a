"""A warm compiled query's audit line, queued as its pieces (``_query.KeptLine``)
and written by the flush (``_query.audit_take``), against the line the query
wrote itself before (``_query.audit_head``, held to orjson's entry by
test_audit_line.py) and the flush's pure twin (``audit.take_lines``, the
chunk loop as it was): the same bytes, in the same order, the same ids
(sequence numbers), the same entries dropped and counted, in the same files.
"""
from __future__ import annotations

import collections
import errno
import itertools
import os

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stemedb.core import audit as audit_mod
from stemedb.core import qaudit, qpure
from stemedb.core import query as Q
from stemedb.core.audit import AuditLog, Pending, query_id, take_lines
from stemedb.core.fileio import File, FileSystem
from stemedb.timeutil import format_time
from tests.unit.test_query_fastpath import clocked  # noqa: F401 (a fixture: the store at a set clock)
from tests.unit.test_query_fastpath import set_first
from tests.unit.test_query_first_page import _fill

try:
    from stemedb.core import _query  # type: ignore[attr-defined]
except ImportError:         # the pure-only install: nothing compiled to hold
    _query = None

pytestmark = pytest.mark.skipif(_query is None, reason="compiled _query not built")
# the audit log and the query path write KeptLines only when compiled
needs_compiled = pytest.mark.skipif(audit_mod._TAKE is None,
                                    reason="the pure build queues no KeptLine")

NAMES = Q._AUDIT_PARAMS
INT64 = 2**63
MAX_STAMP = 253402300799999999      # 9999-12-31T23:59:59.999999Z
AGENT = st.one_of(
    st.none(), st.text(st.characters(codec="utf-8"), max_size=10),
    st.sampled_from(["", "agent-7", 'a "quoted" \\ agent', "\x00\x1f\x7f\t\n", "é\u2028",
                     "🦊𝄞 non-BMP", "\ud800", "x\udfff"]))
AT = st.one_of(st.integers(0, 2_000_000), st.integers(1_700_000_000_000_000, MAX_STAMP),
               st.integers(MAX_STAMP - 3, MAX_STAMP + 3), st.integers(-3, -1),
               st.sampled_from([0, 1, 999_999, 1_000_000, 1_000_001, 9_999_999, 10_000_000,
                                1_764_300_000_000_000, MAX_STAMP]))
NUMBER = st.one_of(st.integers(0, 2**70), st.sampled_from([0, 1, 65535, 65536, 2**64 + 3]))
LIMIT = st.one_of(st.none(), st.integers(-INT64, INT64 - 1), st.sampled_from([1, 100, 1000]),
                  st.just(True))
TAIL = st.sampled_from([
    b',"result_hashes":[],"result_hashes_more":0,"contributing":[],"contributing_more":0}\n',
    b',"result_hashes":["' + b"ab" * 32 + b'"],"result_hashes_more":3,"contributing":[{"hash":"'
    + b"cd" * 32 + b'","weight":0.5}],"contributing_more":19}\n',
    b"," + b"x" * 3000 + b"}\n"])


def _params(path, limit):
    return (path, "p1", False, "recency", None, None, None, None, None, False, False, limit,
            None)


def _built(kept) -> bytes:
    """The one line the flush writes for ``kept``."""
    data, ends, failed, error = _query.audit_take(collections.deque([kept]), 1, None, None,
                                                  None)
    assert failed == 0 and error is None
    assert _query.split_lines(data, ends) == [data]
    return data


@settings(max_examples=400, deadline=None)
@given(NUMBER, AT, AGENT, LIMIT, TAIL, st.sampled_from(["d/e1", "g", 'p"é😀\\x']))
def test_a_kept_line_is_audit_heads(number, at, agent, limit, tail, path):
    """Queued as a KeptLine and written at the flush, the line is the one the
    query wrote before (audit_head), and the entry orjson writes; None
    exactly where audit_head gives None (a lone surrogate, a time it does
    not write), so the query then goes the general way as before."""
    params = _params(path, limit)
    want = _query.audit_head(NAMES, tail, number, at, agent, params)
    kept = _query.kept_line(NAMES, tail, number, at, agent, params)
    if want is None:
        assert kept is None
        return
    assert type(kept) is _query.KeptLine
    assert _built(kept) == want
    head = {"id": query_id(at, number), "at": format_time(at), "at_us": at, "agent": agent,
            "params": {k: v for k, v in zip(NAMES, params) if v is not None}}
    assert want == orjson.dumps(head)[:-1] + tail


def _entry_fn(number, tag):
    return {"number": number, "tag": tag}


def _boom(number, tag):
    raise ValueError(f"entry {tag} cannot be built")


ITEM = st.one_of(
    st.tuples(st.just("line"), st.integers(0, 40)),
    st.tuples(st.just("kept"), st.integers(0, 40)),
    st.tuples(st.just("pending"), st.integers(0, 40)),
    st.tuples(st.just("fails"), st.integers(0, 40)),
    st.tuples(st.just("callable"), st.integers(0, 40)))


def _queues(items, agent):
    """The same entries twice: as a warm query queues them now (KeptLine)
    and as it queued them before (audit_head's bytes)."""
    tail = b',"result_hashes":[],"result_hashes_more":0,"contributing":[],"contributing_more":0}\n'
    now, before = collections.deque(), collections.deque()
    for kind, i in items:
        if kind in ("line", "kept"):
            args = (NAMES, tail, 1000 + i, 1_764_300_000_000_000 + 7 * i, agent,
                    _params(f"d/e{i}", 100 + i))
            line = _query.audit_head(*args)
            now.append(_query.kept_line(*args) if kind == "kept" else line)
            before.append(line)
        elif kind == "callable":
            fn = (lambda i=i: {"callable": i})
            now.append(fn)
            before.append(fn)
        else:
            p = Pending((_entry_fn if kind == "pending" else _boom, i))
            now.append(p)
            before.append(p)
    return now, before


@settings(max_examples=300, deadline=None)
@given(st.lists(ITEM, max_size=40), st.integers(1, 12), st.integers(0, 2**40),
       st.sampled_from([None, "a", "é😀"]))
def test_audit_take_is_take_lines(items, budget, start, agent):
    """The compiled chunk: the same lines in the same order, the same
    entries left queued (a line costs no budget, an entry to build 1), the
    same sequence numbers taken, the same failures counted."""
    now, before = _queues(items, agent)
    ids_now, ids_before = itertools.count(start), itertools.count(start)
    data, ends, failed, error = _query.audit_take(now, budget, ids_now, orjson.dumps, Pending)
    lines, failed_b, error_b = take_lines(before, budget, ids_before)
    assert _query.split_lines(data, ends) == lines
    assert data == b"".join(lines)
    assert (failed, type(error), str(error)) == (failed_b, type(error_b), str(error_b))
    assert len(now) == len(before)
    assert next(ids_now) == next(ids_before)


def test_take_lines_of_an_empty_queue():
    data, ends, failed, error = _query.audit_take(collections.deque(), 5, None, None, None)
    assert (data, ends, failed, error) == (b"", b"", 0, None)
    assert take_lines(collections.deque(), 5, None) == ([], 0, None)


class _FailingFile(File):
    def write(self, data):
        if self.fs.failing:
            os.write(self.fd, bytes(data[:5]))          # a partial line reaches the file
            raise OSError(errno.ENOSPC, "No space left on device", self.path)
        super().write(data)


class _FailingFS(FileSystem):
    file_class = _FailingFile

    def __init__(self):
        super().__init__()
        self.failing = False


def _files(log):
    out = []
    for n in audit_mod.file_numbers(log.dir):
        with open(log._path(n), "rb") as f:
            out.append((n, f.read()))
    return out


@needs_compiled
@pytest.mark.parametrize("rotate_at", [None, 700, 1500, 5000])
@pytest.mark.parametrize("max_queue", [8, 40, 2000])
def test_an_audit_log_of_kept_lines_writes_what_it_wrote_before(tmp_path, monkeypatch,
                                                                 rotate_at, max_queue):
    """Two audit logs given the same entries, one as a warm query queues
    them now (KeptLines, written by audit_take) and one as before (the
    lines, written by the pure loop): the same files, byte for byte, the
    same rotations, the same entries dropped under overload (max_queue),
    and the same dropped by a failed write."""
    items = [(("kept", "line", "pending", "fails", "kept", "kept", "callable")[i % 7], i)
             for i in range(60)]
    now, before = _queues(items, "agent-é")
    got = {}
    for name, q in (("now", now), ("before", before)):
        fs = _FailingFS()
        log = AuditLog(str(tmp_path / name), rotate_at=rotate_at, max_queue=max_queue, fs=fs)
        if name == "before":
            monkeypatch.setattr(audit_mod, "_TAKE", None)
        try:
            log._ids = itertools.count(1)
            for k, entry in enumerate(q):
                log.add(entry)
                if k == 30:
                    log.flush()
                    fs.failing = True
                if k == 40:
                    log.flush()             # a failed write: its entries dropped
                    fs.failing = False
            log.flush()
            got[name] = (_files(log), log.dropped, next(log._ids))
        finally:
            log.close()
            monkeypatch.undo()
    assert got["now"] == got["before"]
    files, dropped, _ = got["now"]
    assert dropped > 0, "the failed write (and a full queue) drop entries"
    if rotate_at is not None and rotate_at < 5000:
        assert len(files) > 1, "the chunk spans files: split between them as before"


def _pure_audit(monkeypatch):
    """The pure build's audit in this process: the pure first page, its
    entries queued as Pending and built and written by the pure loop."""
    set_first(monkeypatch, qpure.first_page(Q._FIRST_ENV))
    for name in ("_LINE", "_HEAD", "_HEAD_KEEP"):
        monkeypatch.setattr(qaudit, name, None)
    monkeypatch.setattr(qaudit, "_ENTRY", qaudit._entry)
    monkeypatch.setattr(audit_mod, "_TAKE", None)


@needs_compiled
@pytest.mark.parametrize("surrogate", [False, True])
def test_the_audit_trail_is_the_pure_builds(clocked, monkeypatch, surrogate):  # noqa: F811
    """The same queries, the compiled way (warm hits queue KeptLines) and
    the pure build's way (Pending entries built at the flush): the same
    trail, byte for byte, across agents (non-BMP, escapes, a lone surrogate,
    whose entry is dropped and counted: its sequence number taken, as
    before, so the ids differ there), limits (a page of another limit
    replaces the answer's kept parameters before the flush) and flushes."""
    got = {}
    store = clocked(audit=True)
    _fill(store, 0)
    clock0 = store.test_clock[0]
    for impl in ("compiled", "pure"):
        store.audit.flush()
        if impl == "pure":
            _pure_audit(monkeypatch)
        store.test_clock[0] = clock0
        store.reader.cache.clear()
        store.audit._ids = itertools.count(1)
        start = {n: len(b) for n, b in _files(store.audit)}
        dropped = store.audit.dropped
        for rnd in range(3):
            for path, pred in (("d/e1", "p1"), ("d/e2", "p0"), ("d/e0", "p2")):
                for agent in (None, "agent-7", 'q"\\é\u2028', "🦊𝄞",
                              "\ud800" if surrogate else "x"):
                    for limit in (100, 50):
                        store.test_clock[0] += 1_234_567
                        store.query(path, predicate=pred, agent=agent, limit=limit)
            if rnd == 1:
                store.audit.flush()
        store.audit.flush()
        got[impl] = ([(n, b[start.get(n, 0):]) for n, b in _files(store.audit)],
                     store.audit.dropped - dropped)
        monkeypatch.undo()
    if not surrogate:
        assert got["compiled"] == got["pure"]
    [(_, trail)] = got["compiled"][0]
    lines = trail.splitlines()
    assert len(lines) == 3 * 3 * (4 if surrogate else 5) * 2 and got["compiled"][1] == (3 * 3 * 2 if surrogate else 0)
    if surrogate:
        # the compiled query takes a sequence number for a line it then
        # cannot write (as before this change), the pure build's writer
        # only for what it builds: the ids differ, nothing else
        def ids_off(trail):
            return [(x[:x.index(b'"at":')], x[x.index(b'"at":'):]) for x in trail.splitlines()]
        a, b = ids_off(got["compiled"][0][0][1]), ids_off(got["pure"][0][0][1])
        assert [x[1] for x in a] == [x[1] for x in b]
        assert got["compiled"][1] == got["pure"][1]
        assert len({x[0] for x in a}) == len(a)
    assert {orjson.loads(x)["params"]["limit"] for x in lines} == {100, 50}


@needs_compiled
def test_a_page_of_another_limit_before_the_flush_keeps_each_lines_own(clocked):  # noqa: F811
    """A warm hit's line names its own limit even when a page of another
    limit replaced the answer's kept parameters before the flush: the
    KeptLine holds the kept JSON it was queued with, not the answer."""
    store = clocked(audit=True)
    _fill(store, 0)
    first = _query.first_page(Q._FIRST_ENV)
    store.query("d/e1", predicate="p1")                 # the answer and its kept end
    store.audit.flush()
    for limit in (100, 50, 100, 7, 7):
        store.test_clock[0] += 1
        assert first(store.reader, "d/e1", "p1", False, "recency", limit, None) is not None
    assert all(type(x) is _query.KeptLine for x in store.audit._queue)
    [ans] = [v for v in store.reader.cache._d.values()
             if isinstance(v, Q.Answer) and v.tail is not None]
    assert ans.plimit == 7
    entries = [e for e in store.audit.read(limit=5)][::-1]
    assert [e["params"]["limit"] for e in entries] == [100, 50, 100, 7, 7]
    assert all(store.audit_query(e["id"])["params"]["limit"] == e["params"]["limit"]
               for e in entries)


@pytest.mark.parametrize("subclass", [False, True])
def test_audit_take_pops_each_entry_once(subclass):
    """Popped by deque.popleft's C function (a deque subclass by its own
    popleft): each entry given back once, none kept, none leaked."""
    import sys

    class Q(collections.deque):
        popped = 0

        def popleft(self):
            Q.popped += 1
            return super().popleft()

    line = b'{"a":1}\n'
    kept = _query.kept_line(NAMES, b"}\n", 1, 1_764_300_000_000_000, "a", _params("g", 1))
    q = (Q if subclass else collections.deque)([line, kept] * 5)
    before = sys.getrefcount(line), sys.getrefcount(kept)
    data, ends, failed, error = _query.audit_take(q, 1, None, None, None)
    assert not q and failed == 0 and Q.popped == (10 if subclass else 0)
    assert _query.split_lines(data, ends)[::2] == [line] * 5
    del q
    assert (sys.getrefcount(line), sys.getrefcount(kept)) == (before[0] - 5, before[1] - 5)


@needs_compiled
def test_a_lone_warm_hit_reaches_the_disk_by_the_writer_thread(clocked, monkeypatch):  # noqa: F811
    """No flush: the writer thread writes a lone KeptLine at its next turn,
    as it wrote a lone line."""
    monkeypatch.setattr(audit_mod, "FLUSH_EVERY", 0.05)
    store = clocked(audit=True)
    _fill(store, 0)
    store.query("d/e1", predicate="p1")
    store.audit.flush()
    before = b"".join(b for _, b in _files(store.audit))
    store.query("d/e1", predicate="p1", agent="lone")    # a warm hit: its KeptLine queued
    import time
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        trail = b"".join(b for _, b in _files(store.audit))
        if len(trail) > len(before):
            break
        time.sleep(0.02)
    new = trail[len(before):].splitlines()
    assert len(new) == 1 and orjson.loads(new[0])["agent"] == "lone"


def test_a_built_line_that_is_not_bytes_is_copied_as_bytes():
    """An entry built by a ``dumps`` that gives a bytearray: its line is
    written as its bytes (as b"".join would), never read as a bytes object
    it is not."""
    q = collections.deque([Pending((_entry_fn, 1)), b'{"a":1}\n'])
    data, ends, failed, error = _query.audit_take(
        q, 5, itertools.count(3), lambda e: bytearray(orjson.dumps(e)), Pending)
    assert failed == 0 and data == b'{"number":3,"tag":1}\n{"a":1}\n'
    assert _query.split_lines(data, ends) == [b'{"number":3,"tag":1}\n', b'{"a":1}\n']
