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

Compiled, a page's assertions are written as one JSON array in one call
(``_canon.assertions_answer``: each without a retraction straight from its
record, a retracted one by the Struct below) and handed to the encoder as
``msgspec.Raw``; a winner in ``results`` is one call each
(``_canon.assertion_answer``).  The pure twins are :func:`assertion_bytes_py`
and the Structs (tests/unit/http/test_answer_compiled.py holds them to the
same bytes).
"""
from __future__ import annotations

from typing import Any

import msgspec
import orjson
from msgspec import UNSET, Raw, Struct, UnsetType

from .. import canonical as _canonical
from ..core.query import QueryResult
from ..model import LIFECYCLES, SOURCE_CLASSES, Assertion, AssertionRecord
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


def enc_hook(obj):
    """What the HTTP answers encode beyond JSON's types: objects with a
    ``to_dict``, sets and tuples (``resources.send``'s encoder)."""
    to_dict = getattr(obj, "to_dict", None)
    if to_dict is not None:
        return to_dict()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise NotImplementedError(f"cannot serialize {type(obj).__name__}")


_encode = msgspec.json.Encoder(enc_hook=enc_hook).encode


def assertion_bytes_py(record, seq: int, status: str) -> bytes:
    """The JSON of an assertion without a retraction, as ``query_doc``
    encodes it: the pure twin of ``_canon.assertion_answer``."""
    return _encode(assertion_json(Assertion(record, seq, status)))


def _value_bytes(value_json: bytes) -> bytes:
    return _encode(_loads(value_json))


def _one_bytes(a: Assertion) -> bytes:
    """The pure twin's bytes of one assertion of a page (any status)."""
    return _encode(assertion_json(a))


def configure_compiled(canon) -> None:
    """Hand the compiled writer (``_canon``) the tables and the pure
    fallbacks it calls; done at import when the build is in use (the parity
    tests do it in the pure run too)."""
    canon.configure_answer(SOURCE_CLASSES, LIFECYCLES, format_time, _encode, _value_bytes,
                           msgspec.structs.astuple)
    canon.configure_query_answer(Assertion)
    canon.configure_slots(AssertionRecord, Assertion)


if _canonical.COMPILED:
    _assertion_answer = _canonical._canon.assertion_answer
    _assertions_answer = _canonical._canon.assertions_answer
    _query_answer = _canonical._canon.query_answer
    configure_compiled(_canonical._canon)
else:
    _assertion_answer = _assertions_answer = _query_answer = None


def assertions_out(assertions: list):
    """A page's assertions as ``query_doc`` puts them in the answer: one
    ``msgspec.Raw`` of the whole JSON array written by one compiled call
    (``_canon.assertions_answer``; an assertion it does not write, a retracted
    one, comes from :func:`assertion_json`), or the list of Structs."""
    if _assertions_answer is not None:
        return Raw(_assertions_answer(assertions, _one_bytes))
    return list(map(assertion_json, assertions))


def assertion_out(a: Assertion):
    """What ``query_doc`` puts in the answer for ``a``: its JSON written by
    the compiled pass (a ``msgspec.Raw``, copied as it is by the encoder:
    ~0.5 us against ~4 us for the Struct and its encoding, 21 a consensus
    query at 1,000,000), or the :class:`AssertionJSON` Struct, which encodes
    to the same bytes (tests/unit/http/test_answer_bytes.py)."""
    if _assertion_answer is not None and a.retraction is None:
        b = _assertion_answer(a.record, a.seq, a.status)
        if b is not None:
            return Raw(b)
    return assertion_json(a)


_SCALARS = frozenset((str, int, float, bool, type(None)))


def _out(v):
    """``query._jsonable`` with assertions as :class:`AssertionJSON`."""
    if type(v) in _SCALARS:     # most of a result's fields: no isinstance chain
        return v
    if isinstance(v, Assertion):
        return assertion_out(v)
    if isinstance(v, dict):     # a result: its scalars kept without a call each
        return {k: x if type(x) in _SCALARS else _out(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [x if type(x) in _SCALARS else _out(x) for x in v]
    return v


def query_doc(result) -> dict:
    """What ``send`` encodes for ``POST /v1/query``: the same JSON as
    ``result.to_dict()``."""
    if type(result) is not QueryResult:
        return result.to_dict()
    return {"concept_path": result.concept_path, "lens": result.lens,
            "results": [_out(r) for r in result.results],
            "assertions": assertions_out(result.assertions),
            "next_cursor": result.next_cursor}


def _result_bytes(r) -> bytes:
    """The pure twin's bytes of one result of ``results`` (what the
    compiled pass does not write: layered's, a retracted winner)."""
    return _encode(_out(r))


def query_bytes(result) -> bytes:
    """The answer's JSON: ``_encode(query_doc(result))``'s bytes.  Compiled,
    the whole document is written by one call (``_canon.query_answer``: the
    results, the page and the fields around them into one buffer, instead
    of a dict, a ``msgspec.Raw`` per part and the encoder copying each);
    a part it does not write comes from the pure twin (:func:`_one_bytes`,
    :func:`_result_bytes`).  tests/unit/http/test_answer_bytes.py holds the
    two to the same bytes on every lens."""
    if (_query_answer is not None and type(result) is QueryResult
            and type(result.results) is list and type(result.assertions) is list):
        b = _query_answer(result.concept_path, result.lens, result.results, result.assertions,
                          result.next_cursor, _one_bytes, _result_bytes)
        if b is not None:
            return b
    return _encode(query_doc(result))


__all__ = ["AssertionJSON", "assertion_bytes_py", "assertion_json", "assertion_out",
           "assertions_out", "enc_hook", "query_bytes", "query_doc"]
