"""Request and response schemas: msgspec Structs.

The same Structs decode and validate every request body (unknown fields
rejected, types and ranges checked in C) *and* produce the component schemas
of ``/openapi.json`` through :func:`msgspec.json.schema_components`, so the
document cannot drift from what the server accepts.  Checks that need more
than a schema (concept path segments, canonical value size, signatures,
references) are the model's and the store's; the HTTP layer does not repeat
them.

Why msgspec rather than spectree: spectree's Falcon plugin wants its own
decorators on every responder and validates through pydantic; msgspec alone
gives JSON Schema 2020-12 (which OpenAPI 3.1 uses verbatim) from the very
types the decoder enforces, at a fraction of the cost per request.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from ..model import LIFECYCLES, SOURCE_CLASSES

try:  # the lens registry is the engine's; fall back to the contract's list
    from ..core.lens import LENSES as _LENSES
    LENS_NAMES = tuple(_LENSES)
except Exception:  # noqa: BLE001 - any import problem: the contract's names
    LENS_NAMES = ("recency", "confidence", "consensus", "authority", "vote", "trust",
                  "skeptic", "layered")

HASH_PATTERN = "^[0-9a-f]{64}$"
SIGNATURE_PATTERN = "^[0-9a-f]{128}$"
NAME_PATTERN = "^[A-Za-z0-9_.:-]{1,128}$"

Hash = Annotated[str, Meta(pattern=HASH_PATTERN, description="64 lower-case hex characters")]
AgentId = Annotated[str, Meta(pattern=HASH_PATTERN,
                              description="Ed25519 public key, 64 lower-case hex characters")]
Signature = Annotated[str, Meta(pattern=SIGNATURE_PATTERN,
                                description="Ed25519 signature, 128 lower-case hex characters")]
Name = Annotated[str, Meta(pattern=NAME_PATTERN, min_length=1, max_length=128)]
ConceptPath = Annotated[str, Meta(
    min_length=1, max_length=512,
    description="'/'-separated segments, e.g. drugs/semaglutide; 1-512 bytes UTF-8, no empty, "
                "'.' or '..' segment, no leading or trailing '/' or white space in a segment, "
                "no control characters")]
Source = Annotated[str, Meta(min_length=1, max_length=1024,
                             description="a URI (fda://label/2024-03) or a concept path")]
Confidence = Annotated[float, Meta(ge=0.0, le=1.0)]
# Unix seconds are bounded to the years 1..9999 (what RFC 3339 can write):
# beyond that a float times 1e6 overflows to infinity.
_MIN_S, _MAX_S = -62135596800, 253402300799
Time = Annotated[
    str | Annotated[int, Meta(ge=_MIN_S, le=_MAX_S)]
    | Annotated[float, Meta(ge=_MIN_S, lt=_MAX_S + 1)],   # up to 9999-12-31T23:59:59.999999Z
    Meta(description="RFC 3339 time (2024-03-01T12:00:00Z) or Unix seconds (years 1 to 9999)")]
RespTime = Annotated[str, Meta(description="RFC 3339 UTC with microseconds")]
SourceClass = Literal[SOURCE_CLASSES]  # type: ignore[valid-type]
Lifecycle = Literal[LIFECYCLES]  # type: ignore[valid-type]
_LIFECYCLE_FILTERS = LIFECYCLES + ("any",)
# dynamic Literals like the two above: the checker takes them as Any
LifecycleFilter = Literal[_LIFECYCLE_FILTERS]  # type: ignore[valid-type]
LensName = Annotated[str, Meta(extra_json_schema={"enum": list(LENS_NAMES)},
                               description="a lens name; unknown names get 400 listing them")]
Limit = Annotated[int, Meta(ge=1, le=1000)]

_REQ = {"forbid_unknown_fields": True, "omit_defaults": True}


# ----------------------------------------------------------------- requests

class AssertionIn(Struct, **_REQ):
    """One assertion, as written (``POST /v1/assert``, batch items)."""

    concept_path: ConceptPath
    predicate: Name
    value: Any
    confidence: Confidence
    source: Source | None | UnsetType = UNSET
    source_class: SourceClass | None | UnsetType = UNSET
    lifecycle: Lifecycle | None | UnsetType = UNSET
    parent_hash: Hash | None | UnsetType = UNSET
    derived_from: Annotated[list[Hash], Meta(min_length=1, max_length=256)] | None | UnsetType = UNSET
    epoch: Name | None | UnsetType = UNSET
    timestamp: Time | None | UnsetType = UNSET
    agent_id: AgentId | None | UnsetType = UNSET
    signature: Signature | None | UnsetType = UNSET


class BatchIn(Struct, **_REQ):
    assertions: Annotated[list[AssertionIn], Meta(min_length=1, max_length=10_000)]


class AssertionLax(Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """A batch item decoded for the record builder: :class:`AssertionIn`'s
    fields, in its order, with its types but none of its value constraints
    (lengths, patterns, ranges, the Literals).

    Every one of those constraints is also a check of the record builder
    (``model.prepare_batch``), the same or stricter (bytes where the schema
    counts characters, ``\\Z`` where its patterns end in ``$``, the exact
    range the hash carries where it takes years 1-9999), so a body the
    builder accepts from these items is one ``BatchIn`` accepts, item for
    item with the same values: the values are checked once, by the builder.
    When the builder refuses an item, ``resources.BatchResource`` decodes
    the body with ``BatchIn`` to answer the schema's error where the schema
    refuses it (the error a client always got), else the builder's.
    Not tracked by the garbage collector: decoded JSON holds no cycle, and a
    batch allocates thousands (tests/unit/http/test_batch_lax.py).
    """

    concept_path: str
    predicate: str
    value: Any
    confidence: float
    source: str | None | UnsetType = UNSET
    source_class: str | None | UnsetType = UNSET
    lifecycle: str | None | UnsetType = UNSET
    parent_hash: str | None | UnsetType = UNSET
    derived_from: list[str] | None | UnsetType = UNSET
    epoch: str | None | UnsetType = UNSET
    timestamp: str | int | float | None | UnsetType = UNSET
    agent_id: str | None | UnsetType = UNSET
    signature: str | None | UnsetType = UNSET


class BatchLax(Struct, forbid_unknown_fields=True):
    assertions: Annotated[list[AssertionLax], Meta(min_length=1, max_length=10_000)]


class QueryIn(Struct, **_REQ):
    """``POST /v1/query`` body; ``GET /v1/query`` takes the same as parameters."""

    concept_path: ConceptPath
    predicate: Name | None = None
    include_descendants: bool = False
    lens: LensName = "recency"
    as_of: Time | None = None
    known_at: Time | None = None
    since: Time | None = None
    lifecycle: LifecycleFilter | None = None
    epoch: Name | None = None
    decay: bool = False
    include_retracted: bool = False
    limit: Limit = 100
    cursor: Annotated[str, Meta(max_length=1024)] | None = None
    # cluster mode: answer once this node has applied this seq (see resources.min_seq)
    min_seq: Annotated[int, Meta(ge=0)] | None = None


class SkepticIn(Struct, **_REQ):
    """``GET /v1/skeptic`` parameters: the query filters.  ``include_retracted``
    is accepted and changes nothing (retracted claims never count)."""

    concept_path: ConceptPath
    predicate: Name
    include_descendants: bool = False
    as_of: Time | None = None
    known_at: Time | None = None
    since: Time | None = None
    lifecycle: LifecycleFilter | None = None
    epoch: Name | None = None
    decay: bool = False
    include_retracted: bool = False


class RetractIn(Struct, **_REQ):
    """Exactly one of ``hash``, ``concept_path``, ``source``."""

    reason: Annotated[str, Meta(min_length=1, max_length=256)]
    hash: Hash | None = None
    concept_path: ConceptPath | None = None
    source: Source | None = None
    cascade: bool = False


class VoteIn(Struct, **_REQ):
    """A vote; signed over the vote hash, which covers ``timestamp``."""

    assertion_hash: Hash
    weight: Confidence
    timestamp: Time | None = None
    agent_id: AgentId | None = None
    signature: Signature | None = None


class EpochIn(Struct, **_REQ):
    name: Name
    supersedes: Annotated[list[Name], Meta(max_length=1000)] | None = None
    description: Annotated[str, Meta(max_length=4096)] | None = None


class OutcomeIn(Struct, **_REQ):
    accurate: bool


class AuditIn(Struct, **_REQ):
    """``GET /v1/audit/queries`` parameters (``from`` is a keyword, hence the rename)."""

    limit: Limit = 100
    agent: Annotated[str, Meta(max_length=256)] | None = None
    from_: Time | None = msgspec.field(default=None, name="from")
    to: Time | None = None


# ---------------------------------------------------------------- responses
# Not strict about extra fields: the contract allows additive changes.

class PutOut(Struct, gc=False):
    # gc=False: two strings and an int, never in a cycle; a batch's answer
    # builds 1,000 of them, untracked they cost ~30% less to make
    hash: Hash
    status: Literal["created", "exists"]
    seq: int


class BatchOut(Struct):
    results: list[PutOut]


class RetractionOut(Struct):
    reason: str
    retracted_at: RespTime
    seq: int
    by: str | None = None


class AssertionOut(Struct):
    hash: Hash
    seq: int
    concept_path: str
    predicate: str
    value: Any
    confidence: float
    source_class: SourceClass
    lifecycle: Lifecycle
    timestamp: RespTime
    recorded_at: RespTime
    status: Literal["active", "retracted"]
    source: str | None = None
    parent_hash: Hash | None = None
    derived_from: list[Hash] | None = None
    epoch: str | None = None
    agent_id: AgentId | None = None
    signature: Signature | None = None
    retraction: RetractionOut | None = None


class QueryResultOut(Struct):
    concept_path: str
    predicate: str
    winner: AssertionOut | None
    confidence: float | None
    conflict_score: float
    candidates_count: int


class QueryOut(Struct):
    concept_path: str
    lens: str
    results: list[QueryResultOut]
    assertions: list[AssertionOut]
    next_cursor: str | None


class RetractOut(Struct):
    retracted: int
    hashes: list[Hash]
    seq: int


class ClaimOut(Struct):
    value: Any
    weight: float
    share: float
    support: int
    hashes: list[Hash]


class SkepticOut(Struct):
    status: Literal["unanimous", "agreed", "contested", "no_claims"]
    conflict_score: float
    claims: list[ClaimOut]


class TraceOut(Struct):
    assertion: AssertionOut
    parents: list[Any]
    derived_from: list[Any]
    dependents: list[Any]
    dependents_count: int
    source: Any = None
    retraction: RetractionOut | None = None


class VoteOut(Struct):
    seq: int


class EpochOut(Struct):
    name: str
    seq: int


class OutcomeOut(Struct):
    agent_id: AgentId
    trust_rank: float


class ContributionOut(Struct):
    hash: Hash
    weight: float


class AuditEntryOut(Struct):
    id: str
    at: RespTime
    agent: str | None
    params: dict[str, Any]
    result_hashes: list[Hash]
    contributing: list[ContributionOut]


class AuditListOut(Struct):
    queries: list[AuditEntryOut]


class HealthOut(Struct):
    status: Literal["healthy", "degraded", "starting"]
    version: str
    uptime_seconds: float
    implementation: Literal["compiled", "pure"] | None = None
    assertion_count: int | None = None
    last_seq: int | None = None
    wal_segments: int | None = None
    reason: str | None = None


class ErrorBody(Struct):
    code: str
    message: str
    field: str | None = None


class ErrorOut(Struct):
    error: ErrorBody


REQUEST_TYPES = (AssertionIn, BatchIn, QueryIn, SkepticIn, RetractIn, VoteIn, EpochIn,
                 OutcomeIn, AuditIn)
RESPONSE_TYPES = (PutOut, BatchOut, AssertionOut, QueryOut, RetractOut, SkepticOut, TraceOut,
                  VoteOut, EpochOut, OutcomeOut, AuditListOut, AuditEntryOut, HealthOut,
                  ErrorOut)

# One decoder per body type: msgspec decoders are thread-safe and reusable.
DECODERS = {t: msgspec.json.Decoder(t) for t in REQUEST_TYPES}
BATCH_LAX = msgspec.json.Decoder(BatchLax)


def query_kwargs(q: QueryIn) -> dict:
    """A decoded ``QueryIn`` as keyword arguments of ``Store.query``: the
    fields given and not at their default (msgspec's ``to_builtins`` of an
    ``omit_defaults`` Struct, ~0.5 us against ~2.3 for :func:`to_kwargs`);
    each default is the engine's own (tests/unit/http/test_query_kwargs.py),
    so leaving one out asks the same query."""
    return msgspec.to_builtins(q)


def to_kwargs(obj: Struct) -> dict:
    """A decoded Struct as a dict of the fields that were given (and not null)."""
    return {f: v for f in obj.__struct_fields__
            if (v := getattr(obj, f)) is not UNSET and v is not None}
