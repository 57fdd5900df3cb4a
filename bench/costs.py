"""The cost breakdown of issue 9: microseconds per stage of the write path,
the query path and the rebuild, on this machine.

    python -m bench.costs                  # 200,000 assertions, compiled + pure (a few minutes)
    python -m bench.costs --quick          # 20,000, smaller counts (under a minute)
    python -m bench.costs --only rebuild   # some sections: write, query, rebuild
    python -m bench.costs --out bench/results/costs-<date>.md

Each stage is timed by calling the functions the store itself calls, on the
benchmark workload (``bench/workload.py``), never a simplified copy:

* **write**: ``model.prepare_assertion`` whole, and inside it the checks it
  calls (``check_concept_path``, ``check_name``, ``check_confidence``,
  ``check_source``, ``infer_source_class``/``_enum``), the canonicalizer
  (``canonical.normalize`` + ``dumps_normalized`` of the value and the
  confidence) and BLAKE3 over the hashed bytes (checked equal to the record's
  hash); ``model.prepare_batch`` and ``model.prepare_one``, the builders
  ``put_batch`` and ``put`` call; ``fast.encode_assert_frames`` (frame +
  CRC); ``State.apply_group`` over a durable group's frames, as the store's
  on-durable step runs it (index apply); the fsync share from a real store with
  ``durability="fsync"`` through ``set_commit_observer``; and ``put_batch`` /
  ``put`` end to end, so what the stages leave out shows as "unaccounted".
* **query**: the seams of ``query.run_query``: argument checks, ``gather``
  (index lookup, then the filters), ``shown_many`` (read, CRC, decode: the
  candidates' batch), the lens on the branch run_query takes
  (``rows_answer`` from the index columns,
  ``columns_resolution`` for a small key compiled, or ``_context`` and
  ``resolve_groups``; the page), ``_audit`` (in the query: compiled, it
  writes the entry's JSON line) and the audit writer's share (off the query
  path: joining the lines, or building and dumping the pure path's
  entries), and the HTTP layer's serialization (``query_answer`` +
  its msgspec encoder).  Before timing, the stages' answer is checked equal
  to ``store.query``'s for every query, so the replay cannot drift from
  ``run_query`` unnoticed (the run stops with an error instead).
* **rebuild**: what recovery calls per segment (``scan.scan_segment``,
  inside it ``fast.scan_frames``; ``State.apply_group`` between
  ``begin_replay`` and ``end_replay``), and the whole open with
  ``db/indexes/`` deleted.

Every stage figure is CPU time (``time.process_time``, all the process's
threads), the least of ``--reps`` runs of the stage's loop over all its
inputs: on a shared machine wall time measures the neighbours' load as much
as the code.  What includes waiting is wall time and says so: the group
commit figures (one run each, real fsyncs) and the whole open.  The
implementation is the one the environment selects; unless ``--no-pure`` a
second pass runs in a subprocess with ``STEMEDB_PURE_PYTHON=1`` and the
tables show both.  Timings are noisy on a
shared machine: compare figures of one run, and read the load average in
the header.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
SECTIONS = ("write", "query", "rebuild")
perf = time.perf_counter      # wall clock: what a caller waits (fsync, a whole open)
cpu = time.process_time       # CPU seconds of this process, every thread: what a stage costs


def log(msg: str) -> None:
    print(f"[costs {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Config:
    def __init__(self, n: int, quick: bool, reps: int | None):
        self.n = n
        self.quick = quick
        self.reps = reps or (3 if quick else 5)
        self.sample = min(n, 50_000)            # assertions the per-stage write loops run over
        self.w1 = 300 if quick else 2_000       # single durable puts
        self.w2 = 100 if quick else 500         # per thread, 8 threads
        self.r1 = 1_000 if quick else 5_000     # keys
        self.r2 = 100 if quick else 200         # prefixes
        self.hot = 20 if quick else 50          # queries of the hot key
        self.hot_size = 1_000                   # its candidates
        self.rebuild_reps = 2 if quick else 3   # full opens with db/indexes/ deleted


def timed(fn, reps: int, before=None, collect: bool = True) -> float:
    """CPU seconds of ``fn()``, the least of ``reps`` runs.

    CPU time, not wall time: on a shared machine the wall time of a
    CPU-bound loop grows with the other processes' load (a load average of
    6 on 2 cores triples it), its CPU time does not.  The process's time
    counts every thread, so work a stage hands to a background thread (the
    audit writer) is counted.  ``before()`` runs, untimed, before each run.
    ``collect=False`` pauses the garbage collector during the runs.
    """
    out = []
    for _ in range(reps):
        if before is not None:
            before()
        gc.collect()        # each run starts with empty young generations
        if not collect:
            gc.disable()
        try:
            t = cpu()
            fn()
            out.append(cpu() - t)
        finally:
            gc.enable()
    return min(out)


# ------------------------------------------------------------------ write

def hashed_args(rec) -> tuple:
    """The validated fields ``model._prepare`` hands its hashed-object writer,
    rebuilt from the record it returned."""
    from stemedb.model import LIFECYCLES, SOURCE_CLASSES
    hx = (lambda b: None if b is None else b.hex())
    return (hx(rec.agent_id), rec.concept_path, rec.confidence,
            None if rec.derived_from is None else [h.hex() for h in rec.derived_from],
            rec.epoch, LIFECYCLES[rec.lifecycle], hx(rec.parent_hash), rec.predicate, rec.source,
            SOURCE_CLASSES[rec.source_class], rec.timestamp, rec.value_json)


def hashed_object(args: tuple) -> bytes:
    """The bytes prepare_assertion hashes, by the writer it uses: the compiled
    twin where it answers, else the pure one (the record's hash checks them)."""
    from stemedb import model
    out = model._hashed_compiled(*args) if model._hashed_compiled is not None else None
    return out if out is not None else model._hashed_bytes_py(*args)


def validate_checks(body: dict) -> None:
    """The checks ``model._prepare`` runs on the workload's fields, in its
    order, each through the compiled check where the model has one (the
    fields the workload never sets cost nothing there either)."""
    from stemedb import model
    if not model.ASSERTION_FIELDS.issuperset(body):
        raise AssertionError("the workload has only assertion fields")
    path, pred, source = body["concept_path"], body["predicate"], body.get("source")
    if model._path_ok is None or not model._path_ok(path):
        model.check_concept_path(path)
    if model._name_ok is None or not model._name_ok(pred):
        model.check_name(pred, "predicate", "predicate")
    model.check_confidence(body["confidence"])
    if source is not None and (model._source_ok is None or not model._source_ok(source)):
        model.check_source(source)
    model.infer_source_class(source)
    lc = body.get("lifecycle")
    if lc is not None:
        model._enum(lc, "lifecycle", model.LIFECYCLES)
    ts = body.get("timestamp")
    if ts is not None:
        model.parse_time(ts, "timestamp")


def canonicalize(body: dict, args: tuple) -> None:
    """The canonical form prepare_assertion builds: the value's RFC 8785 bytes
    (``canonical.canonical_json``), then the hashed object around them."""
    from stemedb.canonical import canonical_json
    canonical_json(body["value"])
    hashed_object(args)


def write_section(cfg: Config, bodies: list[dict], workdir: str) -> dict:
    import blake3
    import msgspec

    from stemedb import open_store
    from stemedb.core import fast
    from stemedb.core.state import State
    from stemedb import model
    from stemedb.model import prepare_assertion

    sample = bodies[:cfg.sample]
    reps = cfg.reps
    t0 = 1_700_000_000_000_000
    recs = [prepare_assertion(b, default_time_us=t0) for b in sample]
    stamped = [msgspec.structs.replace(r, recorded_at=t0 + i) for i, r in enumerate(recs)]
    args = [hashed_args(r) for r in recs]
    pre = [hashed_object(a) for a in args]
    for r, p in zip(recs, pre):
        if blake3.blake3(p).digest() != r.hash:
            raise RuntimeError("bench.costs: the hashed-object bytes timed for the hash stage "
                               "are not what prepare_assertion hashes; update hashed_object()")
    n = len(sample)
    out: dict = {"sample": n}

    def per(sec: float) -> float:
        return sec / n * 1e6

    log(f"write: prepare_assertion and its parts over {n:,} assertions x{reps}")
    out["prepare"] = per(timed(lambda: [prepare_assertion(b, default_time_us=t0)
                                        for b in sample], reps))
    checked = getattr(model, "_checked", None)
    if checked is not None:
        # The compiled model checks, canonicalizes and writes the hashed object
        # in one call (_canon.checked_fields): that is the stage, undivided.
        def fused():
            for bd in sample:
                g = bd.get
                checked(bd["concept_path"], bd["predicate"], bd["value"], bd["confidence"],
                        g("source"), g("source_class"), g("lifecycle"), g("parent_hash"),
                        g("derived_from"), g("epoch"), model.parse_time(bd["timestamp"],
                                                                        "timestamp"),
                        g("agent_id"))
        fused()
        out["checked"] = per(timed(fused, reps))
        out["validate"] = out["canonicalize"] = None
        parts = out["checked"]
    else:
        out["validate"] = per(timed(lambda: [validate_checks(b) for b in sample], reps))
        out["canonicalize"] = per(timed(lambda: [canonicalize(b, a)
                                                 for b, a in zip(sample, args)], reps))
        parts = out["validate"] + out["canonicalize"]
    # the hash the model runs: the vendored C (_canon.blake3_digest, which
    # prepare_many also calls inside its loop) compiled, the blake3 package pure
    c_hash = getattr(model, "_blake3_c", None)
    if c_hash is not None:
        if [c_hash(p) for p in pre[:100]] != [r.hash for r in recs[:100]]:
            raise RuntimeError("bench.costs: _canon.blake3_digest disagrees with the records' "
                               "hashes")
        out["hash"] = per(timed(lambda: [c_hash(p) for p in pre], reps))
    else:
        out["hash"] = per(timed(lambda: [blake3.blake3(p).digest() for p in pre], reps))
    out["prepare_rest"] = out["prepare"] - parts - out["hash"]
    if out["prepare_rest"] < -0.25 * out["prepare"]:
        # the parts cost more than the whole: prepare_assertion no longer calls them
        out["drift"] = ("validate + canonicalize + hash exceed prepare_assertion by "
                        f"{-out['prepare_rest']:.2f} us: prepare_assertion no longer calls "
                        "the functions bench/costs.py times for them; update write_section()")
        log("write: " + out["drift"])

    # The builders the live paths call: put_batch -> model.prepare_batch (the
    # compiled _canon.prepare_many in one call per batch, prepare_assertion for
    # what it leaves), put -> model.prepare_one.
    chunks = [sample[i:i + 1000] for i in range(0, n, 1000)]
    log("write: model.prepare_batch (batches of 1,000) and model.prepare_one")
    out["prepare_batch"] = per(timed(lambda: [model.prepare_batch(c, default_time_us=t0)
                                              for c in chunks], reps))
    out["prepare_one"] = per(timed(lambda: [model.prepare_one(b, default_time_us=t0)
                                            for b in sample], reps))

    batches = [(stamped[i:i + 1000], list(range(i + 1, i + 1 + len(stamped[i:i + 1000]))))
               for i in range(0, n, 1000)]
    log("write: encode_assert_frames, batches of 1,000 and single records")
    out["frame_batch"] = per(timed(lambda: [fast.encode_assert_frames(r, s) for r, s in batches],
                                   reps))
    out["frame_single"] = per(timed(lambda: [fast.encode_assert_frames([r], [i])
                                             for i, r in enumerate(stamped, 1)], reps))

    # Index apply as the store runs it after each durable group (its on-durable
    # step, stemedb/core/opening.py): records.group_frames of the group's WAL
    # requests, then State.apply_group over the framed bytes.
    from bench.apply_small import requests as wal_requests
    from stemedb.core import records

    def requests(size):
        return wal_requests(stamped[:n], size)

    def apply(reqs):
        st = State()
        for req in reqs:
            st.apply_group(*records.group_frames([req]))
    log("write: State.apply_group of durable groups of 1,000 and of 1")
    r1000, r1 = requests(1000), requests(1)
    out["apply_batch"] = per(timed(lambda: apply(r1000), reps))
    out["apply_single"] = per(timed(lambda: apply(r1), reps))

    # The on-durable step itself for W2's groups: 4 single puts' requests
    # (each one record, framed as Writer._put_one frames it), applied as
    # opening.on_durable applies them: fast.apply_puts, or, where it declines
    # (the pure build's groups of more than one), group_frames + apply_group.
    from stemedb.core.format import REC_ASSERT
    from stemedb.core.state import GEN_MIX, PRED_BITS, PUT_GROUP
    from stemedb.core.wal import Request

    def put_groups(size):
        groups, at = [], 40
        for i in range(0, n, size):
            g = []
            for q, r in enumerate(stamped[i:i + size], i + 1):
                data, sizes = fast.encode_assert_frames([r], [q])
                req = Request(data, sizes, None, ((0,), (REC_ASSERT,), [q]))
                req.locs = [(1, at)]
                at += len(data)
                g.append(req)
            groups.append(g)
        return groups

    def on_durable(groups):
        st = State()
        for g in groups:
            if not fast.apply_puts(st, g, PUT_GROUP, GEN_MIX, PRED_BITS):
                st.apply_group(*records.group_frames(g))
    log("write: the on-durable step of groups of 4 single puts")
    g4 = put_groups(4)
    out["apply_puts4"] = per(timed(lambda: on_durable(g4), reps))

    # Group commit on a real store: W3 (batches of 1,000), W1 (one put per
    # commit), W2 (8 threads, one put each per commit).
    commits: dict[str, list] = {}

    def store(name):
        s = open_store(os.path.join(workdir, f"write-{name}"), durability="fsync", audit=False)
        commits[name] = []
        s.set_commit_observer(lambda k, sec, c=commits[name]: c.append((k, sec)))
        return s

    # the garbage collector's collections inside each shape, wall time (a
    # collection holds the GIL in the thread whose allocation set it off)
    gc_sec = [0.0]

    def on_gc(phase, info, _t=[0.0]):
        if phase == "start":
            _t[0] = perf()
        else:
            gc_sec[0] += perf() - _t[0]

    log(f"write: group commit, put_batch of 1,000 x{n // 1000 or 1}, "
        f"{cfg.w1} puts, 8 threads x {cfg.w2} puts (durability=fsync)")
    gc.callbacks.append(on_gc)
    s = store("w3")
    gc.collect()
    t, c, g = perf(), cpu(), gc_sec[0]
    for i in range(0, n, 1000):
        s.put_batch(sample[i:i + 1000])
    e2e = {"w3": (perf() - t, cpu() - c, n, gc_sec[0] - g)}
    s.close()
    s = store("w1")
    gc.collect()
    t, c, g = perf(), cpu(), gc_sec[0]
    for b in sample[:cfg.w1]:
        s.put(b)
    e2e["w1"] = (perf() - t, cpu() - c, cfg.w1, gc_sec[0] - g)
    s.close()
    s = store("w2")
    parts = [sample[k * cfg.w2:(k + 1) * cfg.w2] for k in range(8)]
    threads = [threading.Thread(target=lambda p=p: [s.put(b) for b in p]) for p in parts]
    gc.collect()
    t, c, g = perf(), cpu(), gc_sec[0]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    e2e["w2"] = (perf() - t, cpu() - c, sum(map(len, parts)), gc_sec[0] - g)
    s.close()
    gc.callbacks.remove(on_gc)
    for name, (sec, csec, k, gsec) in e2e.items():
        c = commits[name]
        recs_ = sum(x for x, _ in c)
        fs = sorted(x for _, x in c)
        out[f"group_{name}"] = {
            "records": recs_, "fsyncs": len(c), "records_per_fsync": recs_ / len(c) if c else 0,
            "fsync_p50_ms": fs[len(fs) // 2] * 1e3 if fs else 0,
            "fsync_share_us": sum(fs) / recs_ * 1e6 if recs_ else 0,
            "end_to_end_us": sec / k * 1e6, "end_to_end_cpu_us": csec / k * 1e6,
            "gc_us": gsec / k * 1e6,
        }
    return out


# ------------------------------------------------------------------ query

class _AuditCapture:
    """Stands in for ``store.reader.audit`` while timing ``_audit``: the real id
    generator, and the entry functions kept for the writer-side timing."""

    def __init__(self, real):
        self.real = real
        self.fns: list = []

    def new_id(self, at_us):
        return self.real.new_id(at_us)

    def number(self):
        return self.real.number()

    def add(self, fn):
        self.fns.append(fn)


def query_kinds(cfg: Config, wl) -> dict:
    keys = wl.r1_keys(cfg.r1)
    prefixes = wl.r2_prefixes(cfg.r2)
    hot = ("costs/hot/key", "hot_pred")
    return {
        "R1 recency": [(p, {"predicate": q, "limit": 1000}) for p, q in keys],
        "R1 authority+decay": [(p, {"predicate": q, "lens": "authority", "decay": True,
                                    "limit": 1000}) for p, q in keys],
        "R2 prefix": [(p.rstrip("/"), {"include_descendants": True, "limit": 1000})
                      for p in prefixes],
        f"hot key ({cfg.hot_size:,} candidates)": [
            (hot[0], {"predicate": hot[1], "limit": 1000})] * cfg.hot,
    }


def hot_key_batch(size: int) -> list[dict]:
    return [{"concept_path": "costs/hot/key", "predicate": "hot_pred",
             "value": {"n": i, "level": ("low", "mid", "high")[i % 3]},
             "confidence": round(0.05 + (i * 37 % 95) / 100, 3),
             "source": ("fda://x", "pubmed://1", "forum://t", None)[i % 4],
             "timestamp": 1_750_000_000 + i} for i in range(size)]


def _lens_stage(store, lens_obj, f, cands, active, retracted, concept_path, predicate,
                include_descendants, limit, offset=0):
    """run_query's lens block, on the branch run_query takes for this query:

    * a ``rows_only`` lens over enough candidates (``query._rows_pay``):
      ``rows_answer``, ranked from the index columns (``_query.resolve_columns``
      compiled); asked for no page (``want`` empty), since the decode stage
      already times decoding the candidates, the page among them; it still
      decodes the winners, one per key;
    * compiled, a small key of one predicate under a column lens: the context,
      ``columns_resolution`` and ``_shown_resolution`` over the decoded
      candidates;
    * otherwise the context and ``resolve_groups`` over them.

    Returns ``(QueryResult, groups, ctx, ordered, branch)``: what run_query's
    audit call gets (on the rows branch ``groups`` is None and ``ordered``
    the audit's top, as there), and which branch ran: ``"rows"``,
    ``"columns"`` or ``"decoded"``."""
    from stemedb.core import qfast
    from stemedb.core import query as Q
    reader = store.reader
    if lens_obj.rows_only and Q._rows_pay(len(active), limit, reader.audit is not None):
        with reader.lock:
            ans, _shown = Q.rows_answer(reader, lens_obj, f, active, retracted, concept_path,
                                        predicate, include_descendants, None)
        of = dict(zip(active, cands))
        ords = ans.ords
        page = [of[o] for o in ords[offset:offset + limit]]
        nxt = Q._cursor(offset + limit, f) if offset + limit < len(ords) else None
        at = f.as_of if f.as_of is not None else f.at_us
        top = [of[o] for o in ords[:min(Q.AUDIT_CONTRIBUTORS, ans.active)]]
        return (Q.QueryResult(concept_path, lens_obj.name, [Q.Result(r) for r in ans.results],
                              page, nxt), None, Q._Moment(at, f.decay), top, "rows")
    with reader.lock:
        ctx = Q._context(reader, f, cands, active, need_votes=lens_obj.name == "vote")
        colres = None
        if (qfast.COMPILED and active and predicate is not None
                and not include_descendants and lens_obj.name in qfast.COLUMN_LENSES):
            colres = Q.columns_resolution(reader, lens_obj, active, ctx.at_us, f.decay)
    if colres is not None:
        groups, results, ordered = Q._shown_resolution(colres, cands, active, concept_path,
                                                       predicate)
        branch = "columns"
    else:
        groups, results, ordered = Q.resolve_groups(lens_obj, cands, ctx, concept_path,
                                                    predicate, include_descendants)
        branch = "decoded"
    page = ordered[offset:offset + limit]
    nxt = Q._cursor(offset + limit, f) if offset + limit < len(ordered) else None
    return (Q.QueryResult(concept_path, lens_obj.name, results, page, nxt), groups, ctx,
            ordered, branch)


def query_section(cfg: Config, store, kinds: dict) -> dict:
    import orjson
    try:
        from stemedb.http.resources import _encoder, query_answer

        def serialize(res):
            return _encoder.encode(query_answer(res))
        ser_what = "stemedb.http.resources: query_answer + msgspec encoder"
    except Exception as exc:  # noqa: BLE001 - the HTTP layer is optional here
        log(f"query: the HTTP layer does not import ({exc!r}); serialization by to_dict + orjson")

        def serialize(res):
            return orjson.dumps(res.to_dict())
        ser_what = "QueryResult.to_dict + orjson"
    out: dict = {"serialization": ser_what}
    # Every stage, run_query and the end-to-end figures run without the read
    # cache (records and answers computed every time, as on a miss); the
    # last figure puts it back, warmed by one untimed pass.  The collector
    # is paused while they run: a stage holds every query's output for the
    # next one, which would make full collections that the real path, which
    # drops each answer, never pays.
    read_cache, store.reader.cache = store.reader.cache, None
    try:
        for kind, qs in kinds.items():
            out[kind] = _query_kind(cfg, store, kind, qs, read_cache, serialize)
    finally:
        store.reader.cache = read_cache
    return out


def _query_kind(cfg: Config, store, kind: str, qs: list, read_cache, serialize) -> dict:
    """The stages of one kind of query, us per query."""
    import orjson

    from stemedb.core import qfast
    from stemedb.core import query as Q
    from stemedb.core.index import PRED_BITS
    from stemedb.core.lens import get_lens
    from stemedb.model import check_concept_path, check_name
    reps = cfg.reps
    st = store.state
    nq = len(qs)

    def args_stage():
        fs = []
        for p, kw in qs:
            check_concept_path(p)
            if kw.get("predicate") is not None:
                check_name(kw["predicate"], "predicate", "predicate")
            lens = get_lens(kw.get("lens", "recency"))
            fs.append((lens, Q.parse_filters(decay=kw.get("decay", False))))
        return fs
    prepared = args_stage()

    def pin():
        for _lens, f in prepared:
            with store.reader.lock:
                f.seq_bound = st.last_seq
                f.rec_bound = st.last_recorded_at
                f.at_us = store.clock()
    pin()

    def lookup_stage():
        # gather's candidate lookup alone (path ids, then by_key / by_path)
        for (p, kw), (_lens, _f) in zip(qs, prepared):
            with store.reader.lock:
                paths = [p] + (st.descendant_paths(p) if kw.get("include_descendants") else [])
                pred = kw.get("predicate")
                qid = st.pred_ids.get(pred) if pred is not None else None
                ords = []
                m = st.by_key
                for path in paths:
                    pid = st.path_ids.get(path)
                    if pid is None:
                        continue
                    # the lookup gather makes: by_path, or key_ordinals over by_key
                    ords.extend(st.by_path.get(pid) if pred is None
                                else qfast.key_ordinals(m.keys, m.vals, m.recent,
                                                        (pid << PRED_BITS) | qid))

    gathered = []

    def gather_stage():
        gathered.clear()
        for (p, kw), (_lens, f) in zip(qs, prepared):
            with store.reader.lock:
                paths = [p] + (st.descendant_paths(p) if kw.get("include_descendants") else [])
                gathered.append(Q.gather(store.reader, paths, kw.get("predicate"), f))
    gather_stage()
    decoded = []

    def decode_stage():
        # what run_query decodes its candidates with (one batch a query)
        decoded.clear()
        for (active, _r), (_lens, f) in zip(gathered, prepared):
            with store.reader.lock:
                decoded.append(Q.shown_many(store.reader, active, f))
    decode_stage()

    def read_stage():
        # the records of that batch (read, CRC, decode), the cache off
        for active, _r in gathered:
            with store.reader.lock:
                store.reader.read_records(active)
    lensed = []

    def lens_stage():
        lensed.clear()
        for (p, kw), (lens, f), cands, (active, retr) in zip(qs, prepared, decoded, gathered):
            lensed.append(_lens_stage(store, lens, f, cands, active, retr, p,
                                      kw.get("predicate"), kw.get("include_descendants", False),
                                      kw.get("limit", 100)))
    lens_stage()
    # the replay must give run_query's answer, or its timings mean nothing
    for (p, kw), (res, *_x) in zip(qs, lensed):
        real = store.query(p, **kw)
        if ([a.hash for a in real.assertions] != [a.hash for a in res.assertions]
                or [r["winner"] and r["winner"].hash for r in real.results]
                != [r["winner"] and r["winner"].hash for r in res.results]
                or bool(real.next_cursor) != bool(res.next_cursor)):
            raise RuntimeError(f"bench.costs: the staged query of {p!r} {kw} answers "
                               f"differently from store.query; update bench/costs.py to "
                               f"follow query.run_query")
    capture = _AuditCapture(store.reader.audit)

    def audit_stage():
        capture.fns.clear()
        real, store.reader.audit = store.reader.audit, capture
        try:
            for (p, kw), (res, groups, ctx, ordered, branch), (active, _r) in zip(qs, lensed,
                                                                                 gathered):
                # run_query's tuple, in _AUDIT_PARAMS order
                params = (p, kw.get("predicate"), kw.get("include_descendants", False),
                          kw.get("lens", "recency"), None, None, None, None, None,
                          kw.get("decay", False), False, kw.get("limit", 100), None)
                if branch == "rows":        # as run_query: the top, counted actives
                    Q._audit(store.reader, None, params, res.results, None, ctx, ordered,
                             active=len(active))
                else:
                    Q._audit(store.reader, None, params, res.results, groups, ctx, ordered)
        finally:
            store.reader.audit = real
    audit_stage()

    def audit_writer_stage():
        # what the writer thread does with each queued item: a finished line
        # (the compiled path's) is only joined; an entry is built and dumped
        b"".join([fn if type(fn) is bytes else orjson.dumps(fn()) + b"\n"
                  for fn in capture.fns])

    def serialize_stage():
        for res, *_x in lensed:
            serialize(res)

    def e2e(audit_on):
        real = store.reader.audit
        if not audit_on:
            store.reader.audit = None
        try:
            for p, kw in qs:
                store.query(p, **kw)
        finally:
            store.reader.audit = real

    def run_query():
        for p, kw in qs:
            Q.run_query(store.reader, p, **kw)

    def e2e_cached():
        store.reader.cache = read_cache
        try:
            for p, kw in qs:
                store.query(p, **kw)
        finally:
            store.reader.cache = None

    def drain():
        # the audit writer catches up between runs, so no run meets a full queue
        if store.reader.audit is not None:
            store.reader.audit.flush()

    log(f"query: {kind}, {nq:,} queries x{reps}")
    row = {"queries": nq,
           "candidates": sum(len(a) for a, _r in gathered) / nq,
           "page": sum(len(r.assertions) for r, *_x in lensed) / nq,
           # which lens branch run_query took (_lens_stage), per query
           "lens_branch": dict(Counter(x[-1] for x in lensed))}
    for name, fn in (("args", args_stage), ("lookup", lookup_stage), ("gather", gather_stage),
                     ("decode", decode_stage), ("read", read_stage), ("lens", lens_stage),
                     ("audit", audit_stage), ("audit_writer", audit_writer_stage),
                     ("serialize", serialize_stage),
                     ("run_query", run_query),
                     ("e2e_audit", lambda: e2e(True)), ("e2e_no_audit", lambda: e2e(False))):
        row[name] = timed(fn, reps, before=drain, collect=False) / nq * 1e6
    if read_cache is not None:
        e2e_cached()                                  # warm it
        row["e2e_cached"] = timed(e2e_cached, reps, before=drain, collect=False) / nq * 1e6
    row["filter"] = row["gather"] - row["lookup"]
    row["wrapper"] = row["e2e_audit"] - row["run_query"]
    row["unaccounted"] = row["run_query"] - sum(row[k] for k in ("args", "gather", "decode",
                                                                  "lens", "audit"))
    if store.reader.audit is not None:
        store.reader.audit.flush()
    return row


# ------------------------------------------------------------------ rebuild

class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def rebuild_section(cfg: Config, path: str) -> dict:
    from stemedb import open_store
    from stemedb.core import fast
    from stemedb.core.recovery import _map_last
    from stemedb.core.scan import scan_segment
    from stemedb.core.snapshot import snapshot_path
    from stemedb.core.state import State
    from stemedb.core.wal import WAL

    wal = WAL(os.path.join(path, "wal"))
    wal.open()
    segs = wal.segments
    # as recovery has them: sealed segments mapped by the WAL, the last one
    # mapped read-only by recovery._map_last
    bufs = [wal.segment_bytes(s, last=False) for s in segs[:-1]] + [_map_last(segs[-1])]
    reps = cfg.reps
    scans = []

    def scan_stage():
        scans.clear()
        prev = 0
        for i, (seg, buf) in enumerate(zip(segs, bufs)):
            v = scan_segment(buf, seg.path, seg.number, last=i == len(segs) - 1, prev_seq=prev)
            prev = v.last_seq
            scans.append(v)
    scan_stage()
    records = sum(len(v.offsets) for v in scans)
    out: dict = {"records": records, "segments": len(segs),
                 "wal_bytes": sum(len(b) for b in bufs)}
    log(f"rebuild: {records:,} records in {len(segs)} segment(s) x{reps}")

    def frames_stage():
        for buf in bufs:
            fast.scan_frames(buf, 40, len(buf))

    # What recovery does with the scanned segments (stemedb/core/recovery.py):
    # State.begin_replay, State.apply_group per segment (the one records-to-
    # columns function, fast.index_records), State.end_replay (each map built
    # once over every replayed key).
    def apply_stage(until_end: bool):
        st = State()
        st.begin_replay()
        for seg, buf, v in zip(segs, bufs, scans):
            st.apply_group(buf, v.offsets, v.types, v.seqs, seg.number << 40, seg.number)
        if until_end:
            st.end_replay()
        return st

    def us(sec):
        return sec / records * 1e6 if records else 0.0
    out["scan_segment"] = us(timed(scan_stage, reps))
    out["scan_frames"] = us(timed(frames_stage, reps))
    out["columns"] = us(timed(lambda: apply_stage(False), reps))
    out["replay_apply"] = us(timed(lambda: apply_stage(True), reps))
    # what recovery does before the scan: map the last segment (sealed ones
    # are mapped too; the page faults land in the scan)
    def map_stage():
        m = _map_last(segs[-1])
        if not isinstance(m, bytes):
            m.close()
    out["read"] = us(timed(map_stage, reps))
    del bufs, scans
    wal.close()

    opens, open_cpu, engine, snaps, snaps_cpu = [], [], [], [], []
    for _ in range(cfg.rebuild_reps):
        shutil.rmtree(os.path.dirname(snapshot_path(os.path.join(path, "db"))), ignore_errors=True)
        h = _Lines()
        lg = logging.getLogger("stemedb")
        level = lg.level
        lg.setLevel(logging.INFO)
        lg.addHandler(h)
        try:
            t, c = perf(), cpu()
            s = open_store(path, audit=False)
            opens.append(perf() - t)
            open_cpu.append(cpu() - c)
        finally:
            lg.removeHandler(h)
            lg.setLevel(level)
        if not s.rebuilt:
            raise RuntimeError("bench.costs: the open after deleting db/indexes/ was not a rebuild")
        # the snapshot a rebuilding open writes before it returns, once more
        t, c = perf(), cpu()
        s.snapshot()
        snaps.append(perf() - t)
        snaps_cpu.append(cpu() - c)
        s.close()
        m = next((re.search(r"Index rebuild complete in ([0-9.]+)s", x) for x in h.lines
                  if "Index rebuild complete" in x), None)
        if m:
            engine.append(float(m.group(1)))
    out["open_rebuild"] = us(min(opens))
    out["open_rebuild_cpu"] = us(min(open_cpu))
    out["engine_rebuild"] = us(min(engine)) if engine else None
    out["snapshot"] = us(min(snaps))
    out["snapshot_cpu"] = us(min(snaps_cpu))
    out["rebuild_cpu"] = out["open_rebuild_cpu"] - out["snapshot_cpu"]
    return out


# ------------------------------------------------------------------ driver

def measure(cfg: Config, sections: list[str], workdir: str) -> dict:
    from bench.workload import generate
    from stemedb import open_store
    from stemedb.core import fast

    log(f"generating {cfg.n:,} assertions")
    wl = generate(cfg.n)
    gc.collect()
    gc.freeze()     # the workload's dicts out of the collector's walk, as in bench.run
    res: dict = {"implementation": "compiled" if fast.COMPILED else "pure", "n": cfg.n}
    if "write" in sections:
        res["write"] = write_section(cfg, wl.assertions, workdir)
    if "query" in sections or "rebuild" in sections:
        path = os.path.join(workdir, "store")
        log(f"loading {cfg.n:,} assertions into {path} (put_batch of 1,000, durability=none)")
        with open_store(path, durability="none", audit=False) as s:
            for b in wl.batches(1000):
                s.put_batch(b)
            s.put_batch(hot_key_batch(cfg.hot_size))
        if "query" in sections:
            with open_store(path, durability="none", audit=True) as s:
                res["query"] = query_section(cfg, s, query_kinds(cfg, wl))
        if "rebuild" in sections:
            res["rebuild"] = rebuild_section(cfg, path)
    gc.unfreeze()
    return res


def run_pure(args, cfg: Config, workdir: str) -> dict | None:
    os.makedirs(workdir, exist_ok=True)
    out = os.path.join(workdir, "pure.json")
    cmd = [sys.executable, "-m", "bench.costs", "--no-pure", "--worker-json", out,
           "--n", str(args.n), "--only", ",".join(args.sections), "--reps", str(cfg.reps)]
    if args.quick:
        cmd.append("--quick")
    env = dict(os.environ, STEMEDB_PURE_PYTHON="1")
    env.pop("STEMEDB_REQUIRE_FAST", None)
    env["PYTHONPATH"] = REPO_DIR + os.pathsep + env.get("PYTHONPATH", "")
    log("second pass with STEMEDB_PURE_PYTHON=1 in a subprocess")
    p = subprocess.run(cmd, env=env, cwd=REPO_DIR)
    if p.returncode != 0 or not os.path.exists(out):
        log(f"the pure pass failed (exit {p.returncode})")
        return None
    with open(out) as f:
        return json.load(f)


def _git(*a: str) -> str:
    try:
        return subprocess.run(["git", "-C", REPO_DIR, *a], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def header(command: str) -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
    except OSError:
        pass
    dirty = bool(_git("status", "--porcelain", "--", "stemedb", ":(exclude)stemedb/http"))
    return {"date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "commit": _git("rev-parse", "--short=12", "HEAD"), "engine_dirty": dirty,
            "loadavg_start": os.getloadavg(), "command": command}


# ------------------------------------------------------------------ report

def _f(x, digits=2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and x != x:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def _share(part, total) -> str:
    return f"{part / total * 100:.0f}%" if total else "-"


def render(doc: dict) -> str:
    h = doc["header"]
    passes = [p for p in doc["passes"] if p]
    labels = [p["implementation"] for p in passes]
    lines = [f"# StemeDB cost breakdown, {h['date_utc'][:10]}", "", "| | |", "|---|---|",
             f"| machine | {h['cpu']}, {h['cores']} cores, Linux {platform.release()} |",
             f"| Python | {h['python']} |",
             f"| StemeDB | commit `{h['commit']}`{' (engine files modified)' if h['engine_dirty'] else ''}; "
             f"passes: {', '.join(labels)} |",
             f"| load average | start {'/'.join(f'{x:.2f}' for x in h['loadavg_start'])}, "
             f"end {'/'.join(f'{x:.2f}' for x in h['loadavg_end'])} |",
             f"| command | `{h['command']}` ({h['elapsed_s']:.0f} s) |",
             "", "Microseconds per assertion (write, rebuild) or per query (query): CPU time of "
             "the process, the least of several runs of the stage's loop, except where a row "
             "says wall (fsync, a whole open). How to read it: `bench/README.md`.", ""]
    cols = " | ".join(labels)
    sep = "|---" * (2 + len(labels)) + "|"

    def row(name, what, key, sub=None, fmt=_f):
        vals = []
        for p in passes:
            v = p.get(sub, {}) if sub else p
            for k in key if isinstance(key, tuple) else (key,):
                v = v.get(k) if isinstance(v, dict) else None
            vals.append(fmt(v))
        return f"| {name} | {what} | {' | '.join(vals)} |"

    if all("write" in p for p in passes):
        n = passes[0]["write"]["sample"]
        lines += [f"## Write path, us per assertion ({n:,} assertions)", "",
                  f"| stage | what is timed | {cols} |", sep,
                  row("validate", "the checks `prepare_assertion` calls (compiled ones where "
                      "the model has them)", "validate", "write"),
                  row("canonicalize", "`canonical_json` of the value, then the hashed object "
                      "around it", "canonicalize", "write"),
                  row("validate + canonicalize, one call", "`_canon.checked_fields`, which the "
                      "compiled model calls instead of the two above", "checked", "write"),
                  row("hash", "BLAKE3-256 of the hashed bytes (compiled: the vendored C, "
                      "`_canon.blake3_digest`, a Python call each; pure: the `blake3` package)",
                      "hash", "write"),
                  row("rest of prepare", "its own lines: field reads, the record struct (the "
                      "whole call - the stages above)", "prepare_rest", "write"),
                  row("**prepare_assertion**", "the whole call", "prepare", "write"),
                  row("**prepare_batch**, batches of 1,000", "`model.prepare_batch`, what "
                      "`put_batch` calls (the compiled builder, one call per batch)",
                      "prepare_batch", "write"),
                  row("**prepare_one**", "`model.prepare_one`, what `put` calls",
                      "prepare_one", "write"),
                  row("frame + CRC, batch of 1,000", "`fast.encode_assert_frames`", "frame_batch",
                      "write"),
                  row("frame + CRC, one record", "`fast.encode_assert_frames([r])`", "frame_single",
                      "write"),
                  row("index apply, group of 1,000", "`State.apply_group` of the durable "
                      "group's frames (the store's on-durable step)", "apply_batch", "write"),
                  row("index apply, group of 1", "the same, groups of one record",
                      "apply_single", "write"),
                  row("index apply, W2's groups", "the on-durable step (`opening.on_durable`) of "
                      "groups of 4 single puts: `fast.apply_puts`, or where it declines (pure), "
                      "`group_frames` + `apply_group`", "apply_puts4", "write"),
                  "", "Group commit on a real store (`durability=\"fsync\"`, the commit observer); "
                  "wall clock, one run each:",
                  "", f"| shape | figure | {cols} |", sep]
        for name, what in (("w3", "W3: put_batch of 1,000"), ("w1", "W1: one put per commit"),
                           ("w2", "W2: 8 threads, one put each")):
            for fig, label in (("records_per_fsync", "records per fsync"),
                               ("fsync_p50_ms", "fsync p50 (ms)"),
                               ("fsync_share_us", "fsync share (us/assertion)"),
                               ("end_to_end_us", "end to end, wall (us/assertion)"),
                               ("end_to_end_cpu_us", "end to end, CPU (us/assertion)"),
                               ("gc_us", "of which the GC's collections (wall, us/assertion)")):
                lines.append(row(what, label, (f"group_{name}", fig), "write"))
        lines.append("")
        for p in passes:
            if p["write"].get("drift"):
                lines.append(f"- **{p['implementation']}: {p['write']['drift']}.**")
        for p in passes:
            w = p["write"]
            g3, g1 = w["group_w3"], w["group_w1"]
            e3, e1 = g3["end_to_end_cpu_us"], g1["end_to_end_cpu_us"]
            pb, p1 = w.get("prepare_batch", w["prepare"]), w.get("prepare_one", w["prepare"])
            acc3 = pb + w["frame_batch"] + w["apply_batch"]
            acc1 = p1 + w["frame_single"] + w["apply_single"]
            lines.append(
                f"- {p['implementation']}: W3 costs {_f(e3)} us of CPU per assertion, the stages "
                f"{_f(acc3)} of it (prepare_batch {_share(pb, e3)}, frame "
                f"{_share(w['frame_batch'], e3)}, apply {_share(w['apply_batch'], e3)}); the "
                f"other {_f(e3 - acc3)} are the write lock, the dedupe lookup, the reference "
                f"checks, stamping, the WAL write and the hand-off. Its wall time is "
                f"{_f(g3['end_to_end_us'])} us, {_f(g3['fsync_share_us'])} of them waiting for "
                f"fsync. W1: {_f(e1)} us of CPU per put (the stages {_f(acc1)}; the rest is "
                f"mostly the kernel's write and fdatasync, which count as the process's CPU), "
                f"{_f(g1['end_to_end_us'])} us of wall time, {_f(g1['fsync_share_us'])} of them "
                f"in fsync.")
        lines.append("")

    if all("query" in p for p in passes):
        ser = passes[0]["query"]["serialization"]
        kinds = [k for k in passes[0]["query"] if k != "serialization"]
        lines += ["## Query path, us per query", ""]
        for kind in kinds:
            q0 = passes[0]["query"][kind]
            lines += [f"### {kind}: {q0['queries']:,} queries, {q0['candidates']:.1f} candidates "
                      f"and {q0['page']:.1f} assertions returned per query", "",
                      f"| stage | what is timed | {cols} |", sep,
                      row("arguments", "`check_*`, `get_lens`, `parse_filters`", (kind, "args"),
                          "query"),
                      row("gather: lookup", "path ids, `key_ordinals` over `by_key` / `by_path` runs", (kind, "lookup"),
                          "query"),
                      row("gather: filter", "`query.gather` - lookup (time, lifecycle, epoch, "
                          "revision, retraction filters)", (kind, "filter"), "query"),
                      row("decode", "`query.shown_many` of the candidates (run_query's batch)",
                          (kind, "decode"), "query"),
                      row("  of which read + CRC + decode", "`Reader.read_records` (cache off)",
                          (kind, "read"),
                          "query"),
                      row("lens", "run_query's branch (" + ", ".join(
                          f"{b}: {n}" for b, n in sorted(q0.get("lens_branch", {}).items()))
                          + "): rows = `rows_answer` (columns, winners decoded); columns = "
                          "`_context`, `columns_resolution`, `_shown_resolution`; decoded = "
                          "`_context`, `resolve_groups`; the page", (kind, "lens"), "query"),
                      row("audit (in the query)", "`query._audit` (compiled: the entry's JSON "
                          "line written)", (kind, "audit"), "query"),
                      row("unaccounted", "`run_query` - the stages above: its own lines, the audit "
                          "thread's CPU, and the cache warmth a loop of one stage enjoys",
                          (kind, "unaccounted"), "query"),
                      row("`run_query`", "called directly, audit on", (kind, "run_query"), "query"),
                      row("`Store.query` wrapper", "end to end - `run_query`", (kind, "wrapper"),
                          "query"),
                      row("**end to end**", "`store.query`, audit on", (kind, "e2e_audit"), "query"),
                      row("end to end, audit off", "`store.query` with `store.reader.audit` None",
                          (kind, "e2e_no_audit"), "query"),
                      row("end to end, read cache warm", "`store.query`, audit on, with the read "
                          "cache (records and answers)", (kind, "e2e_cached"), "query"),
                      row("audit writer", "the writer thread's share: lines joined, or "
                          "entries built and `orjson.dumps`'d", (kind, "audit_writer"), "query"),
                      row("serialization", ser, (kind, "serialize"), "query"), ""]
        lines += ["The audit writer and the serialization are not in `store.query`'s time: the "
                  "first runs on the audit thread, the second in the HTTP layer.", ""]

    if all("rebuild" in p for p in passes):
        r0 = passes[0]["rebuild"]
        lines += [f"## Rebuild from the WAL, us per record ({r0['records']:,} records, "
                  f"{r0['segments']} segment(s), {r0['wal_bytes'] / 1e6:.1f} MB)", "",
                  f"| stage | what is timed | {cols} |", sep,
                  row("map", "`recovery._map_last` of the last segment (every segment is "
                      "mapped; its pages are read during the scan)", "read", "rebuild"),
                  row("scan", "`scan.scan_segment` (frame walk, CRC, seq order, tail rule)",
                      "scan_segment", "rebuild"),
                  row("  of which frame walk + CRC", "`fast.scan_frames`", "scan_frames", "rebuild"),
                  row("replay apply", "`State.begin_replay`, `apply_group` per segment, "
                      "`end_replay` (what recovery runs)", "replay_apply", "rebuild"),
                  row("  of which rows into the columns", "the same without `end_replay` "
                      "(`fast.index_records` and the replay's bookkeeping)", "columns",
                      "rebuild"),
                  row("snapshot: CPU", "`Store.snapshot`, which a rebuilding open calls "
                      "before it returns", "snapshot_cpu", "rebuild"),
                  row("snapshot: wall", "the same, wall clock (with its fsyncs)", "snapshot",
                      "rebuild"),
                  row("open, rebuilding: CPU", "`open_store` with `db/indexes/` deleted "
                      "(writes a snapshot too)", "open_rebuild_cpu", "rebuild"),
                  row("rebuild without the snapshot: CPU", "the open - the snapshot",
                      "rebuild_cpu", "rebuild"),
                  row("**open, rebuilding: wall**", "the same, wall clock", "open_rebuild",
                      "rebuild"),
                  row("engine's rebuild: wall", "its `Index rebuild complete in Xs` line (no "
                      "snapshot)", "engine_rebuild", "rebuild"), "",
                  f"| records/s | {cols} |", "|---" * (1 + len(labels)) + "|"]
        for key, label in (("scan_segment", "scan alone (CPU)"),
                           ("replay_apply", "replay apply alone (CPU)"),
                           ("rebuild_cpu", "rebuild without the snapshot (CPU)"),
                           ("open_rebuild_cpu", "open, rebuilding (CPU)"),
                           ("engine_rebuild", "engine's rebuild (wall)"),
                           ("open_rebuild", "open, rebuilding (wall)")):
            vals = [p["rebuild"][key] for p in passes]
            lines.append(f"| {label} | " + " | ".join(
                f"{1e6 / v:,.0f}" if v else "-" for v in vals) + " |")
        lines.append("")
        for p in passes:
            r = p["rebuild"]
            if r.get("engine_rebuild") is None:
                continue
            rest = r["engine_rebuild"] - r["read"] - r["scan_segment"] - r["replay_apply"]
            lines.append(
                f"- {p['implementation']}: a rebuilding open takes {_f(r['open_rebuild'])} us "
                f"per record: the engine's rebuild {_f(r['engine_rebuild'])} (map "
                f"{_f(r['read'])}, scan {_f(r['scan_segment'])}, replay apply "
                f"{_f(r['replay_apply'])} of which rows into the columns {_f(r['columns'])}, "
                f"the rest "
                f"{_f(rest)}), then the snapshot it writes ({_f(r['snapshot'])} by itself); "
                f"in CPU time, {_f(r['rebuild_cpu'])} for the rebuild and "
                f"{_f(r['snapshot_cpu'])} for the snapshot.")
        lines.append("")
    return "\n".join(lines)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m bench.costs",
                                 description="Microseconds per stage of the write path, the "
                                             "query path and the rebuild.")
    ap.add_argument("--n", type=int, default=None, help="assertions (default 200,000; 20,000 "
                                                        "with --quick)")
    ap.add_argument("--quick", action="store_true", help="small counts, under a minute")
    ap.add_argument("--only", default=",".join(SECTIONS), help="sections: write,query,rebuild")
    ap.add_argument("--reps", type=int, default=None,
                    help="runs per stage, the fastest counts (default 5; 3 with --quick)")
    ap.add_argument("--out", default=None, help="write the markdown report here")
    ap.add_argument("--json", default=None, help="write every figure as JSON here")
    ap.add_argument("--workdir", default=None, help="where the stores go (default: a temp dir)")
    ap.add_argument("--no-pure", action="store_true", help="skip the STEMEDB_PURE_PYTHON=1 pass")
    ap.add_argument("--worker-json", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.n is None:
        args.n = 20_000 if args.quick else 200_000
    if args.n < 1000:
        ap.error("--n must be at least 1000")
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad or not args.sections:
        ap.error(f"--only takes {', '.join(SECTIONS)}; got {args.only!r}")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = Config(args.n, args.quick, args.reps)
    command = " ".join(["python -m bench.costs", *(sys.argv[1:] if argv is None else argv)])
    t0 = perf()
    h = header(command)
    workdir = args.workdir or tempfile.mkdtemp(prefix="stemedb-costs-")
    os.makedirs(workdir, exist_ok=True)
    try:
        first = measure(cfg, args.sections, os.path.join(workdir, "main"))
        if args.worker_json:
            with open(args.worker_json, "w") as f:
                json.dump(first, f)
            return 0
        passes = [first]
        if not args.no_pure and first["implementation"] != "pure":
            passes.append(run_pure(args, cfg, os.path.join(workdir, "pure")))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    h["loadavg_end"] = os.getloadavg()
    h["elapsed_s"] = perf() - t0
    doc = {"header": h, "passes": passes}
    text = render(doc)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
        log(f"wrote {args.out}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0 if all(passes) else 1


if __name__ == "__main__":
    sys.exit(main())
