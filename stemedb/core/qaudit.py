"""A query's audit entry: what the query thread queues (:func:`_audit`, a
tuple of the few assertions and scalars the entry names) and what the audit
writer's thread builds from it (:func:`_entry`, or its compiled twin
``_query.audit_entry``); ``stemedb.core.audit`` writes the lines.

Split out of ``query.py``, which re-exports every name here.
"""
from __future__ import annotations

from functools import partial

from ..model import Assertion
from ..timeutil import format_time, now_us
from . import qfast
from .audit import AuditLog, Pending, query_id
from .lens import _HALF_LIFE_US

_AUDIT_PARAMS = ("concept_path", "predicate", "include_descendants", "lens", "as_of", "known_at",
                 "since", "lifecycle", "epoch", "decay", "include_retracted", "limit", "cursor")


def _audit_params(*args) -> tuple:
    """The query's parameters as its caller gave them, in _AUDIT_PARAMS order.
    A tuple: the entry's dict is built on the writer thread (``locals()``
    and a dict here cost run_query ~4 us)."""
    return args


class _Moment:
    """What :func:`_audit` reads of a LensContext (a materialized answer has
    no context to hand; a frozen dataclass costs ~1.3 us to build)."""

    __slots__ = ("at_us", "decay")

    def __init__(self, at_us: int, decay: bool):
        self.at_us = at_us
        self.decay = decay


AUDIT_CONTRIBUTORS = 20   # candidates an audit entry names; the rest are counted
AUDIT_RESULTS = 100       # winners an audit entry names; the rest are counted


def _contributing(top: list[Assertion], at_us: int, decay: bool) -> list[dict]:
    """The audit's ``contributing`` entries: each assertion's hash and its
    effective confidence, read off the records (the numbers
    ``effective_confidence`` gives: tests/unit/test_query_columns.py;
    the Assertion properties and a keyword call cost the writer ~1 us
    each)."""
    out = []
    for a in top:
        r = a.record
        c = r.confidence
        if decay:
            hl = _HALF_LIFE_US[r.source_class]
            age = at_us - r.timestamp
            if hl is not None and age > 0:
                c *= 2.0 ** (-age / hl)     # the same expression as effective_confidence
        out.append({"hash": r.hash.hex(), "weight": c})
    return out


def _audit(reader, agent, params, results, groups, ctx, ordered, active=None, answer=None,
           keep=False):
    """Queue the query's audit entry; O(len(results)) here, whatever the candidates.

    The entry names the winners (``result_hashes``, at most AUDIT_RESULTS,
    ``result_hashes_more`` counts the rest) and the lens's best-ranked
    candidates (``contributing``: the first AUDIT_CONTRIBUTORS of ``ordered``
    that are not retracted, each with its effective confidence as weight;
    ``contributing_more`` counts the rest).  ``active`` (the candidates that
    are not retracted) is counted from ``groups`` unless given.  Listing every candidate cost a
    ``limit=1`` query over 10,000 candidates 890 KB of audit (issue 8,
    item 15).  Only those few assertions and scalars are queued, as an
    ``audit.Pending`` tuple (no closure), and the writer thread builds the entry
    (:func:`_entry`), so a backlog holds no candidate lists.  Compiled, the
    entry's JSON line is written here instead (:data:`_LINE`): the writer
    thread then holds the GIL only to copy and write bytes (a warm hit on a
    held answer queues its line's pieces instead, written by the flush:
    ``_query.FirstPage._line``).
    ``params``: a dict, or a tuple in ``_AUDIT_PARAMS`` order (run_query's).
    ``keep``: ``answer`` was just made by the compiled first page
    (query._finish's ``keep``) and ``params`` are that page's plain ones:
    the line's parameters' JSON is kept in the answer with its end
    (:data:`_HEAD_KEEP`), so its first hit writes what a later hit writes.
    """
    audit = reader.audit
    at = reader.clock() if _CLOCK is None else _CLOCK(reader.clock, now_us)
    if active is None:
        active = sum(map(len, groups.values()))   # ordered lists these first, then retracted
    if (answer is not None and _HEAD is not None and not ctx.decay
            and answer.held is not None):
        # a materialized answer without decay: the line's end names only
        # what the answer holds (its winners, its top candidates and their
        # confidences), so it is written once, by the query that made the
        # answer, and kept (b"": not writable here, the entry goes the
        # general way)
        tail = answer.tail
        if tail is None:
            try:
                tail = _tail(ordered, results, ctx, active) or b""
            except Exception:  # noqa: BLE001 - the writer's path builds (and counts) it
                tail = b""
            answer.tail = tail
        if tail:
            try:
                line = (_HEAD_KEEP(tail, audit.number(), at, agent, params, answer) if keep
                        else _HEAD(tail, audit.number(), at, agent, params))
            except Exception:  # noqa: BLE001 - as above
                line = None
            if line is not None:
                audit.add(line)
                return
    top = ordered[:AUDIT_CONTRIBUTORS if active > AUDIT_CONTRIBUTORS else active]
    if len(results) == 1:       # one key: no comprehension's frame
        w = results[0]["winner"]
        winners = [] if w is None else [w]
    else:
        winners = [w for r in results if (w := r["winner"]) is not None]
    more = len(winners) - AUDIT_RESULTS
    if more > 0:
        winners = winners[:AUDIT_RESULTS]
    _add_entry(audit, at, agent, params, winners, more, top, ctx.at_us, ctx.decay, active)


def _add_entry(audit, at, agent, params, winners, more, top, at_us, decay, active) -> None:
    """Queue the audit entry of a query answered from what it made (not a
    kept answer's line): compiled, the entry's JSON line written here, so
    the writer thread only joins bytes (None: an entry _LINE does not write,
    queued as before); else the Pending entry the writer builds."""
    if _LINE is not None:
        plain = type(audit) is AuditLog
        try:
            # (audit.number() and, below its quick_below backlog, audit.add,
            # inline for the AuditLog itself, as FirstPage queues its lines)
            line = _LINE(next(audit._ids) if plain else audit.number(), at, agent, params,
                         winners, more, top, at_us, decay, active)
        except Exception:  # noqa: BLE001 - an audit entry must never fail its query:
            line = None     # the writer's path builds it, and counts it if it fails
        if line is not None:
            if plain and len(audit._queue) < audit.quick_below:
                audit._queue.append(line)
            else:
                audit.add(line)
            return
    audit.add(Pending((_ENTRY, at, agent, params, winners, more, top, at_us, decay, active)))


def _audit_decayed(reader, agent, params, winner, top: list, at_us: int, active: int) -> None:
    """:func:`_audit` of a query made, not kept, with decay at ``at_us``
    (query._decayed_page's: one key, its ``winner``, its ``active``
    candidates at most AUDIT_CONTRIBUTORS, ``top`` all of them in the
    lens's order, and nothing retracted): the same line or the same entry,
    without _audit's _Moment and its branches for answers and groups."""
    at = reader.clock() if _CLOCK is None else _CLOCK(reader.clock, now_us)
    _add_entry(reader.audit, at, agent, params, [winner], 1 - AUDIT_RESULTS, top, at_us, True,
               active)


def _tail(ordered, results, ctx, active: int) -> bytes | None:
    """The compiled line's end for a materialized answer (``active`` given):
    what _audit would write after the parameters."""
    top = ordered[:AUDIT_CONTRIBUTORS if active > AUDIT_CONTRIBUTORS else active]
    winners = [w for r in results if (w := r["winner"]) is not None]
    more = len(winners) - AUDIT_RESULTS
    if more > 0:
        winners = winners[:AUDIT_RESULTS]
    return qfast._query.audit_tail(_HALF_LIFE_US, winners, more, top, ctx.at_us, ctx.decay,
                                   active)


def _entry(number: int, at: int, agent, params, winners: list[Assertion], more: int,
           top: list[Assertion], at_us: int, decay: bool, active: int) -> dict:
    """The audit entry :func:`_audit` queued, built on the audit writer's
    thread (``number``: its sequence number, given by the writer)."""
    given = params.items() if type(params) is dict else zip(_AUDIT_PARAMS, params)
    return {"id": query_id(at, number), "at": format_time(at), "at_us": at, "agent": agent,
            "params": {k: v for k, v in given if v is not None},
            "result_hashes": [w.record.hash.hex() for w in winners],
            "result_hashes_more": more if more > 0 else 0,
            "contributing": _contributing(top, at_us, decay),
            "contributing_more": active - len(top)}


# "now" without now_us's Python frame when compiled (qfast.read_clock)
_CLOCK = qfast.read_clock if qfast.COMPILED else None
# The builder the writer thread calls: compiled (_query.audit_entry, held to
# _entry by tests/unit/test_query_fastpath.py) or _entry itself
_ENTRY = (partial(qfast._query.audit_entry, _AUDIT_PARAMS, _HALF_LIFE_US, format_time)
          if qfast.COMPILED else _entry)
# The line the query thread writes when compiled (_query.audit_line, held to
# orjson.dumps(_entry(...)) by tests/unit/test_audit_line.py); the pure build
# queues the entry for the writer thread
_LINE = (partial(qfast._query.audit_line, _AUDIT_PARAMS, _HALF_LIFE_US)
         if qfast.COMPILED else None)
# A line from a kept end (_query.audit_head, the same bytes as _LINE's)
_HEAD = partial(qfast._query.audit_head, _AUDIT_PARAMS) if qfast.COMPILED else None
# The same line, its parameters' JSON kept by the answer the query made
# (_query.audit_head_keep; the kept bytes FirstPage._kept_line's)
_HEAD_KEEP = (partial(qfast._query.audit_head_keep, _AUDIT_PARAMS) if qfast.COMPILED
              else None)
