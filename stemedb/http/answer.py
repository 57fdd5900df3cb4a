"""The query answer's JSON, encoded without a dict per assertion.

``QueryResult.to_dict`` builds one dict per assertion through the
``Assertion`` properties (a lambda call per field); the answer of
``POST /v1/query`` holds every candidate of a page plus the winners, so
that was about a third of a consensus query's time over HTTP at
1,000,000 assertions (bench/results/http-query-2026-11-26.md).  Here each
assertion becomes a msgspec Struct read straight off its record, which the
encoder writes field by field in declaration order: the same bytes as the
dict (the same keys in the same order, the same values; ``retraction``
only when there is one).  ``tests/unit/http/test_answer_bytes.py`` checks
the bytes against ``to_dict`` on active, retracted, revised, derived and
signed assertions.
"""
from __future__ import annotations

from typing import Any

import orjson
from msgspec import UNSET, Struct, UnsetType

from ..core.query import QueryResult
from ..model import LIFECYCLES, SOURCE_CLASSES, Assertion
from ..timeutil import format_time


class AssertionJSON(Struct, omit_defaults=True):
    """One assertion as ``Assertion.to_dict`` gives it, field for field
    (encoding only; the documented schema is ``schemas.AssertionOut``)."""

    hash: str
    seq: int
    concept_path: str
    predicate: str
    value: Any
    confidence: float
    source: str | None
    source_class: str
    lifecycle: str
    parent_hash: str | None
    derived_from: list[str] | None
    epoch: str | None
    timestamp: str
    agent_id: str | None
    signature: str | None
    recorded_at: str
    status: str
    retraction: dict | UnsetType = UNSET


_UNSET_VALUE = Assertion._UNSET
_loads = orjson.loads


def assertion_json(a: Assertion) -> AssertionJSON:
    """``a.to_dict()`` as a Struct that encodes to the same bytes."""
    r = a.record
    ph, df, ag, sg = r.parent_hash, r.derived_from, r.agent_id, r.signature
    value = a._value
    if value is _UNSET_VALUE:
        value = _loads(r.value_json)
    ret = a.retraction
    return AssertionJSON(
        r.hash.hex(), a.seq, r.concept_path, r.predicate, value, r.confidence, r.source,
        SOURCE_CLASSES[r.source_class], LIFECYCLES[r.lifecycle],
        ph.hex() if ph else None, [h.hex() for h in df] if df is not None else None,
        r.epoch, format_time(r.timestamp), ag.hex() if ag else None,
        sg.hex() if sg else None, format_time(r.recorded_at), a.status,
        UNSET if ret is None else ret)


_SCALARS = frozenset((str, int, float, bool, type(None)))


def _out(v):
    """``query._jsonable`` with assertions as :class:`AssertionJSON`."""
    if type(v) in _SCALARS:     # most of a result's fields: no isinstance chain
        return v
    if isinstance(v, Assertion):
        return assertion_json(v)
    if isinstance(v, dict):
        return {k: _out(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_out(x) for x in v]
    return v


def query_doc(result) -> dict:
    """What ``send`` encodes for ``POST /v1/query``: the same JSON as
    ``result.to_dict()``."""
    if type(result) is not QueryResult:
        return result.to_dict()
    return {"concept_path": result.concept_path, "lens": result.lens,
            "results": [_out(r) for r in result.results],
            "assertions": list(map(assertion_json, result.assertions)),
            "next_cursor": result.next_cursor}


__all__ = ["AssertionJSON", "assertion_json", "query_doc"]
