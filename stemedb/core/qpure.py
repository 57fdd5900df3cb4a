"""The query path's per-candidate loops, pure Python: the reference twin of
``stemedb/core/_query.pyx`` (``stemedb.core.qfast`` chooses which runs;
tests/unit/test_query_parity.py holds them equal, damaged input included).

* :func:`filter_ords`: the column filters of ``query.gather`` (as_of,
  known_at, since, the pinned seq, lifecycle and epoch tables).
* :func:`column_rows`: a lens's rows read from the index columns.
* :func:`resolve_columns`: the ``rows_only`` lenses over those rows (the
  reference of the compiled ``_query.resolve_columns``).

(``frame_rows``, a lens's rows read straight from assertion frames for the
candidates the read cache did not hold, went when the lenses moved to the
columns: nothing reads a frame to rank any more.)

(A compiled twin of the lens rows built from records, ``lens.record_rows``,
was measured and dropped: no faster, the per-record attribute reads are
the cost; bench/results/query-compiled-2026-11-26.md.)
"""
from __future__ import annotations

import threading
from math import isfinite

import numpy as np

SMALL = 48   # below this many candidates, a loop beats numpy's per-call cost
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1   # the columns' range (a bound beyond: the loop)


def _table_index(table: list, v: int) -> bool:
    """``table[v]`` for an id read from a column; a negative id (a damaged
    column) is an IndexError, as one past the end is."""
    if v < 0:
        raise IndexError(f"id {v} outside its table of {len(table)}")
    return table[v]


def filter_ords(ords: list[int], ts, rec, seq, lc, ep, as_of: int | None,
                known_at: int | None, since: int | None, seq_bound: int | None,
                lc_ok: list[bool] | None, ep_ok: list[bool] | None) -> list[int]:
    """The ordinals of ``ords`` (in their order) whose columns pass: ``ts <=
    as_of``, ``rec <= known_at``, ``ts > since``, ``seq <= seq_bound`` (each
    when not None), ``lc_ok[lc]`` and ``ep_ok[epoch]`` (tables of allowed ids,
    when not None).  An ordinal outside the columns, or an id outside its
    table (of any ordinal, filtered out or not), raises IndexError.
    O(len(ords))."""
    n = len(ts)
    if len(ords) <= SMALL or not all(b is None or INT64_MIN <= b <= INT64_MAX
                                     for b in (as_of, known_at, since, seq_bound)):
        tsi, reci, seqi, lci, epi = ts.item, rec.item, seq.item, lc.item, ep.item
        kept = []
        for o in ords:
            if not 0 <= o < n:
                raise IndexError(f"ordinal {o} outside the columns ({n})")
            # the id tables first: a damaged id raises whatever the filters say
            if lc_ok is not None and not _table_index(lc_ok, lci(o)):
                continue
            if ep_ok is not None and not _table_index(ep_ok, epi(o)):
                continue
            if as_of is not None and tsi(o) > as_of:
                continue
            if known_at is not None and reci(o) > known_at:
                continue
            if since is not None and tsi(o) <= since:
                continue
            if seq_bound is not None and seqi(o) > seq_bound:
                continue
            kept.append(o)
        return kept
    arr = np.fromiter(ords, dtype=np.int64, count=len(ords))
    if int(arr.min()) < 0 or int(arr.max()) >= n:
        raise IndexError(f"an ordinal outside the columns ({n})")
    mask = np.ones(len(arr), dtype=bool)
    if as_of is not None:
        mask &= ts[arr] <= as_of
    if known_at is not None:
        mask &= rec[arr] <= known_at
    if since is not None:
        mask &= ts[arr] > since
    if seq_bound is not None:
        mask &= seq[arr] <= seq_bound
    for table, col in ((lc_ok, lc), (ep_ok, ep)):
        if table is not None:
            ids = col[arr]
            if len(ids) and int(ids.min()) < 0:
                raise IndexError(f"id {int(ids.min())} outside its table of {len(table)}")
            mask &= np.array(table, dtype=bool)[ids]
    return arr[mask].tolist()



HASHED = 0xFF   # format.VALUE_HASHED: the low byte of a hashed value id


def column_rows(ords: list[int], seq, ts, conf, rank, va, vb, at_us: int, decay: bool,
                half_life_us: tuple, tier: tuple) -> tuple[list[tuple], int]:
    """The lens rows of the candidates ``ords`` read from the index columns
    (``seq``, ``ts``, ``conf``, ``rank``, ``va``, ``vb``: State.cols), as
    ``lens.record_rows`` builds them from decoded records, except that the
    value slot holds the value id ``va | vb << 64`` (``index.value_id``)
    instead of the value's bytes: (timestamp, seq, effective confidence,
    x tier, source rank, value id, ordinal).  Returns ``(rows, hashed)``,
    ``hashed`` the number of rows whose value id is a hash (a longer value:
    two such rows with equal ids may still hold different values, which
    the caller checks).  An ordinal outside the columns raises IndexError,
    a source rank outside ``tier`` too.  O(len(ords)), no record read."""
    n = len(seq)
    for o in ords:
        if not 0 <= o < n:
            raise IndexError(f"ordinal {o} outside the columns ({n})")
    if len(ords) < 16:
        take = [[col.item(o) for o in ords] for col in (seq, ts, conf, rank, va, vb)]
    else:
        take = [col[ords].tolist() for col in (seq, ts, conf, rank, va, vb)]
    rows: list[tuple] = []
    append = rows.append
    hashed = 0
    for o, s, t, c, r, a, b in zip(ords, *take):
        if decay:
            hl = half_life_us[r]
            age = at_us - t
            if hl is not None and age > 0:
                c *= 2.0 ** (-age / hl)     # the same expression as effective_confidence
        if a & 0xFF == HASHED:
            hashed += 1
        append((t, s, c, c * tier[r], r, a | b << 64 if b else a, o))
    return rows, hashed


COLUMN_LENSES = ("recency", "confidence", "consensus", "authority", "layered")


def resolve_columns(lens_name: str, ords: list[int], seq, ts, conf, rank, va, vb, at_us: int,
                    decay: bool, half_life_us: tuple, tier: tuple):
    """Resolve one key's candidates ``ords`` through a ``rows_only`` lens
    (one of COLUMN_LENSES) from the index columns: lens.py's
    ``resolve_rows`` over :func:`column_rows` (this is the reference the
    compiled twin is held to).  Returns ``(winner, confidence,
    conflict_score, ordered, layers)``: ordinals where a Resolution holds
    Assertions, ``layers`` (layered only) as ``(source rank, winner,
    confidence, conflict_score, candidates_count)``; or None when an
    effective confidence is not finite (a damaged record: the caller's own
    path decides).  Values are grouped by value id: the caller checks
    shared hashed ids first (``query._hashed_values_agree``).  An unknown
    lens is a ValueError, an ordinal outside the columns or a source rank
    outside ``tier`` an IndexError.  O(n log n)."""
    from .lens import LENSES, LensContext
    if lens_name not in COLUMN_LENSES:
        raise ValueError(f"lens {lens_name!r} is not resolved over columns")
    rows, _hashed = column_rows(ords, seq, ts, conf, rank, va, vb, at_us, decay,
                                half_life_us, tier)
    if not rows:
        return None, 0.0, 0.0, [], []
    if not all(isfinite(row[2]) and isfinite(row[3]) for row in rows):
        return None
    res = LENSES[lens_name].resolve_rows(rows, LensContext(at_us=at_us, decay=decay))
    layers = [(_RANKS[x["source_class"]], x["winner"], x["confidence"], x["conflict_score"],
               x["candidates_count"]) for x in res.extra.get("layers", ())]
    return res.winner, res.confidence, res.conflict_score, res.ordered, layers


def _class_ranks() -> dict:
    from ..model import SOURCE_CLASSES
    return {name: i for i, name in enumerate(SOURCE_CLASSES)}


_RANKS = _class_ranks()


SMALL_TAKE = 16   # below this many ordinals, per-element item() beats a fancy index


# The read cache's lock (reader.ReadCache._lock); the compiled build's is
# _query.CacheLock, which behaves as this one for what the cache asks of it
CacheLock = threading.Lock

# The reader's lock (reader.Reader.lock, made by Reader.new_lock); the
# compiled build's is _query.ReaderLock, which behaves as this one
ReaderLock = threading.RLock


def read_clock(clock, now_us) -> int:
    """``clock()`` (``now_us``: timeutil's, which the compiled twin reads
    itself when ``clock`` is it).  The query path calls it only compiled:
    the pure build calls ``reader.clock()`` as it did."""
    return clock()


def store_query(method, module):
    """Store.query itself: ``method``, the Python function whose frame the
    compiled twin (``_query.store_query``) leaves out for the plain shape
    (``module``, query.py, whose ``first_page`` that twin reads, is unused
    here: ``method`` reads it)."""
    return method


def new_assertions(cls):
    """``make(recs, seqs)``: ``[cls(rec, seq) for rec, seq in zip(recs, seqs)]``
    (active, no retraction), for two lists of one length (ValueError
    otherwise).  The compiled twin sets the slots in place
    (``_query.NewAssertions``); ``Reader.assertions`` builds a batch with
    it when no candidate is retracted."""
    def make(recs: list, seqs: list) -> list:
        if type(recs) is not list or type(seqs) is not list:
            raise TypeError("recs and seqs must be lists")
        if len(recs) != len(seqs):
            raise ValueError("recs and seqs differ in length")
        return list(map(cls, recs, seqs))
    return make


def cache_take(d, ords: list[int], loc, seq) -> tuple[list[int], list, list[int], int]:
    """The read cache's part of reading the records of ``ords`` (call under
    the cache's lock; ``d``: its OrderedDict, record entries keyed by packed
    log location, valued ``(record, size)``): ``(locs, recs, seqs, hits)``,
    each ordinal's location (the ``loc`` column) and seq (``seq``), its
    cached record or None, and how many were found.  A found entry moves
    to the recent end of ``d``.  An ordinal outside the columns raises
    IndexError (before any entry moves).  O(len(ords))."""
    n = len(loc)
    if len(seq) < n:
        raise ValueError("the columns differ in length")
    if len(ords) < SMALL_TAKE:
        for o in ords:
            if not 0 <= o < n:
                raise IndexError(f"ordinal {o} outside the columns ({n})")
        li, si = loc.item, seq.item
        locs, seqs = [li(o) for o in ords], [si(o) for o in ords]
    else:
        arr = np.fromiter(ords, dtype=np.int64, count=len(ords))
        if int(arr.min()) < 0 or int(arr.max()) >= n:
            raise IndexError(f"an ordinal outside the columns ({n})")
        locs, seqs = loc[arr].tolist(), seq[arr].tolist()
    get, to_end = d.get, d.move_to_end
    recs: list = []
    hits = 0
    for key in locs:
        e = get(key)
        if e is None:
            recs.append(None)
        else:
            to_end(key)
            recs.append(e[0])
            hits += 1
    return locs, recs, seqs, hits


def key_ordinals(keys, vals, recent: dict, key: int) -> list[int]:
    """``index.MultiMap.get(key)`` over a map's sorted ``keys`` (int64),
    their ``vals`` (int32 ordinals) and its ``recent`` dict: the ordinals
    filed under ``key``, the sorted run's first.  O(log n + k)."""
    if len(vals) < len(keys):
        raise ValueError("the map's keys and values differ in length")
    out: list[int] = []
    if len(keys) and INT64_MIN <= key <= INT64_MAX:
        k = np.int64(key)
        i = int(keys.searchsorted(k, "left"))
        if i < len(keys) and keys[i] == k:
            j = int(keys.searchsorted(k, "right"))
            out = vals[i:j].tolist()
    r = recent.get(key)
    if r:
        return out + r if out else list(r)
    return out


def hashed_pairs(ords: list[int], va, vb) -> list[tuple[int, int]]:
    """``(value id, ordinal)`` of the candidates ``ords`` (in their order)
    whose value id (``va | vb << 64``, ``index.value_id``) is a hash: the
    low byte of ``va`` is HASHED.  An ordinal outside the columns raises
    IndexError.  O(len(ords))."""
    n = len(va)
    if len(vb) < n:
        raise ValueError("the columns differ in length")
    if len(ords) < SMALL_TAKE:
        for o in ords:
            if not 0 <= o < n:
                raise IndexError(f"ordinal {o} outside the columns ({n})")
        ai, bi = va.item, vb.item
        return [((a | bi(o) << 64) if bi(o) else a, o) for o in ords
                if (a := ai(o)) & 0xFF == HASHED]
    arr = np.fromiter(ords, dtype=np.int64, count=len(ords))
    if int(arr.min()) < 0 or int(arr.max()) >= n:
        raise IndexError(f"an ordinal outside the columns ({n})")
    h = arr[(va[arr] & np.uint64(0xFF)) == np.uint64(HASHED)]
    return [((a | b << 64) if b else a, x)
            for a, b, x in zip(va[h].tolist(), vb[h].tolist(), h.tolist())]


FRAME_HEAD, CRC_FROM, FIRST_READ, LOC_BITS = 20, 8, 512, 40   # see _query.pyx's read_frames
MAX_PAYLOAD = 256 * 1024 * 1024      # format.MAX_PAYLOAD: a longer length is damage, never read


def _frame(buf, off: int, decode):
    """(record, length) of the frame at ``buf[off:]``, or None when it does
    not check out (short, CRC)."""
    from .codec import crc32c
    if off + FRAME_HEAD > len(buf):
        return None
    length = int.from_bytes(buf[off:off + 4], "little")
    crc = int.from_bytes(buf[off + 4:off + 8], "little")
    end = off + FRAME_HEAD + length
    if end > len(buf):
        return None
    body = bytes(buf[off + CRC_FROM:end])
    if crc32c(body) != crc:
        return None
    return decode(body, FRAME_HEAD - CRC_FROM), length


def read_frames(locs: list[int], segs: list, decode) -> list:
    """The records at the packed log locations ``locs`` (``index.pack_loc``)
    of the WAL segments ``segs`` (``WAL.segments``, oldest first), each as
    ``(record, frame body length)``: each frame read by ``pread`` on its
    segment's descriptor, sealed or not (the first FIRST_READ bytes, then
    the whole frame if it is longer; never through a mapping, which would
    map ~64 KiB of the log into the process for each frame: segment.py),
    its CRC checked and its body decoded by ``decode``
    (``fast.decode_assert``).  None for a frame that does not check out
    (short, torn, CRC, an unknown segment): ``Reader._read`` reads those
    and raises what it always raised.  O(the frames' bytes)."""
    import os
    first = segs[0].number if segs else 0
    out: list = []
    for loc in locs:
        segno, off = loc >> LOC_BITS, loc & ((1 << LOC_BITS) - 1)
        k = segno - first
        if loc < 0 or not 0 <= k < len(segs):
            out.append(None)
            continue
        fd = segs[k]._fd
        try:
            raw = os.pread(fd, FIRST_READ, off)
        except OSError:
            out.append(None)
            continue
        if len(raw) >= FRAME_HEAD:
            need = FRAME_HEAD + int.from_bytes(raw[:4], "little")
            if need > FRAME_HEAD + MAX_PAYLOAD:
                # a damaged length (up to 4 GiB): Reader._read refuses it
                out.append(None)
                continue
            if need > len(raw):
                try:
                    raw = os.pread(fd, need, off)
                except OSError:
                    out.append(None)
                    continue
                if len(raw) != need:
                    out.append(None)
                    continue
        out.append(_frame(raw, 0, decode))
    return out


def _raw_span(raw: bytes, lo: int, hi: int) -> tuple[int, range]:
    """Where ``reader.raw_pack``'s bodies start in ``raw`` (its header
    checked, ValueError otherwise) and the indexes ``lo:hi`` of its bodies,
    clipped as a slice is."""
    if type(raw) is not bytes or len(raw) < 4:
        raise ValueError("not a raw frames object")
    n = int.from_bytes(raw[:4], "little")
    if 4 + 4 * (n + 1) > len(raw):
        raise ValueError("the raw frames' header does not fit")
    return 4 + 4 * (n + 1), range(*slice(lo, hi).indices(n))


def raw_records(raw: bytes, lo: int, hi: int, decode, at: int) -> list:
    """The records of bodies ``lo:hi`` (clipped as a slice is) of
    ``reader.raw_pack``'s ``raw``: each body's payload, at ``at`` in it,
    decoded by ``decode`` (``fast.decode_assert``) from a copy of the body
    (a bytes object of its own).  A header that does not fit ``raw``
    raises ValueError."""
    head, span = _raw_span(raw, lo, hi)
    out = []
    for i in span:
        s = int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "little")
        e = int.from_bytes(raw[8 + 4 * i:12 + 4 * i], "little")
        if not head <= s <= e <= len(raw):
            raise ValueError("a raw frame's offsets are out of bounds")
        out.append(decode(raw[s:e], at))
    return out


def raw_seqs(raw: bytes, lo: int, hi: int, at: int) -> list[int]:
    """The seqs (uint64 at ``at`` in each body) of bodies ``lo:hi`` of
    ``reader.raw_pack``'s ``raw``; ValueError as raw_records."""
    head, span = _raw_span(raw, lo, hi)
    out = []
    for i in span:
        s = int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "little")
        e = int.from_bytes(raw[8 + 4 * i:12 + 4 * i], "little")
        if not head <= s <= e <= len(raw) or e - s < at + 8:
            raise ValueError("a raw frame's offsets are out of bounds")
        out.append(int.from_bytes(raw[s + at:s + at + 8], "little"))
    return out


def answer_token(st, paths: list[str], predicate: str | None, include_descendants: bool,
                 gen_mask: int, gen_mix: int) -> tuple:
    """The generations an answer over ``paths`` (and ``predicate``) reads
    (call under the lock; see stemedb.core.state, GEN_SLOTS): ``(st.gen,
    paths counted, predicates counted, the key's or path's slots)``.  A
    path or predicate not stored yet contributes the count of paths or
    predicates, which its first assertion moves (``-1`` where none is
    counted).  ``query._token`` is this with the State's mask and mix."""
    kg, pg = st.key_gen, st.path_gen
    if len(kg) <= gen_mask or len(pg) <= gen_mask or gen_mask < 0:
        raise ValueError("the generation slots are fewer than the mask covers")
    qid = st.pred_ids.get(predicate) if predicate is not None else None
    npaths = len(st.path_names) if include_descendants else -1
    parts = []
    for p in paths:
        pid = st.path_ids.get(p)
        if pid is None:
            npaths = len(st.path_names)
        elif predicate is None:
            parts.append(pg[pid & gen_mask])
        elif qid is not None:
            parts.append(kg[(pid * gen_mix + qid) & gen_mask])
    npreds = len(st.pred_names) if predicate is not None and qid is None else -1
    return (st.gen, npaths, npreds, tuple(parts))


def token_is(tok, gen, part) -> bool:
    """Whether a cached answer's token ``tok`` is this query's one-part
    token ``(gen, -1, -1, (part,))`` (one stored path, and its predicate:
    answer_token's short way), as ReadCache.answer asks it (``!=``).  The
    compiled first page compares the two in place, without making the
    tuple (``_query.token_is``); this is its reference."""
    return not (tok != (gen, -1, -1, (part,)))


def first_page(env: tuple):
    """``query.run_query`` for a first page of the default view (no cursor,
    no filter), as one call: the reference of the compiled
    ``_query.first_page``.  ``env``: what it uses of query.py, in this order:
    the lenses by name, the Filters class, the default lifecycles, the
    generation mask and mix, how many candidates an audit entry names, the
    Result, QueryResult and Assertion classes, the audit's moment class,
    query._resolve, query._finish, qaudit._audit, the AuditLog class, the
    audit parameters' names, timeutil.now_us and the Answer class (the
    last four are read by the compiled twin only, which reads an Answer's
    fields at their slots; the default lifecycles by neither since the
    default view's answer key is the short one, query._answer_key).

    The returned function takes ``(reader, concept_path, predicate,
    include_descendants, lens, limit, agent)`` and gives run_query's
    QueryResult, or None, having done nothing, when an argument is not in
    the plain form run_query's checks let through without a call (a stored
    path and predicate, booleans, a known lens, a limit in range) or the
    answer is not one the cache keeps (no cache; the trust lens, measured
    at "now").  A held answer (reader.Answer.held) whose candidates fit on
    the page and are none of them retracted is served from its records,
    as run_query's _answer_shown would; anything else goes through
    query._resolve and query._finish as run_query's own path, with the key,
    the token and the pinned view computed here."""
    (lenses, filters, lifecycles, gen_mask, gen_mix, ntop_max, result, query_result,
     assertion, moment, resolve, finish, audit, _log, _names, _now_us, _answer) = env

    def first(reader, concept_path, predicate, include_descendants, lens, limit, agent):
        st = reader.state
        cache = reader.cache
        if cache is None or type(concept_path) is not str or concept_path not in st.path_ids:
            return None
        if predicate is not None and (type(predicate) is not str
                                      or predicate not in st.pred_ids):
            return None
        if include_descendants is not False and include_descendants is not True:
            return None
        lens_obj = lenses.get(lens) if type(lens) is str else None
        if lens_obj is None or type(limit) is not int or not 1 <= limit <= 1000:
            return None
        name = lens_obj.name
        if name == "trust":     # measured at "now" (query._time_bound): never kept unpinned
            return None
        with reader.lock:
            seq_bound, rec_bound, at_us = st.last_seq, st.last_recorded_at, reader.clock()
            paths = [concept_path]
            if include_descendants:
                paths += st.descendant_paths(concept_path)
            # query._answer_key of the default Filters (its short key)
            akey = (concept_path, predicate, include_descendants, name)
            token = answer_token(st, paths, predicate, include_descendants, gen_mask, gen_mix)
            ans = cache.answer(akey, token)
            page = None
            if ans is not None and ans.held is not None and len(ans.ords) <= limit:
                page = held_page(st, ans, assertion)
            if page is None:
                f = filters()
                f.seq_bound, f.rec_bound, f.at_us = seq_bound, rec_bound, at_us
                got = resolve(reader, concept_path, predicate, include_descendants, lens_obj, f,
                              paths, akey, token, ans, 0, limit)
        params = (concept_path, predicate, include_descendants, lens, None, None, None, None,
                  None, False, False, limit, None)
        if page is None:
            return finish(reader, got, params, lens_obj, f, akey, token, 0, agent)
        results = [result(r) for r in ans.results]
        out = query_result(concept_path, lens, results, page, None)
        if reader.audit is not None:
            n = ans.active
            audit(reader, agent, params, results, None, moment(at_us, False),
                  page[:ntop_max if n > ntop_max else n], active=n, answer=ans)
        return out

    return first


RAW_AT = 12     # reader.BODY_PAYLOAD: a frame body's payload offset
RAW_SEQ = 4     # reader.BODY_SEQ: its seq's


def held_page(st, ans, assertion) -> list | None:
    """The Assertions of a held answer's candidates (``ans.held``: their
    records and seqs), all active, or None when one of them is retracted
    (the caller then shows them as ``Reader.assertions`` does)."""
    rmap = st.retracted
    if rmap:
        for o in ans.ords:
            if o in rmap:
                return None
    recs, seqs = ans.held
    if type(recs) is bytes:     # raw frames (reader.raw_pack): decoded per page
        from . import fast
        n = len(ans.ords)
        if len(recs) < 4 or int.from_bytes(recs[:4], "little") != n:
            raise ValueError("the held frames and the candidates differ in number")
        seqs = raw_seqs(recs, 0, n, RAW_SEQ)
        recs = raw_records(recs, 0, n, fast.decode_assert, RAW_AT)
    return list(map(assertion, recs, seqs))
