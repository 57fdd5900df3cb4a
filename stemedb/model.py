"""The assertion: validation, canonical form, hash, signature, and the
objects the store hands back.

One validation path serves every entry point (embedded ``put``, HTTP, batch
items): :func:`prepare_assertion` turns a request dict into an
:class:`AssertionRecord` (the stored form, hash included) or raises a
:class:`~stemedb.errors.ValidationError` naming the field.  Checks that need
the store's state (``parent_hash``, ``derived_from`` and ``epoch`` must
exist) are the store's.
"""
from __future__ import annotations

import re
from typing import Any

import blake3
import msgspec
import orjson

from . import canonical as _canonical
from .canonical import NotJSON, canonical_json, dumps_normalized, normalize
from .errors import InvalidSignature, SignatureRequired, ValidationError
from .timeutil import format_time
from .timeutil import now_us, parse_time


# The compiled twins (stemedb/core/_canon.pyx) when canonical chose them: a
# check twin answers True only where the pure check passes (False sends the
# field to the pure check, which raises); the hashed-object twin answers
# None where the pure writer must decide.
if _canonical.COMPILED:
    _path_ok = _canonical._canon.path_ok
    _source_ok = _canonical._canon.source_ok
    _hashed_compiled = _canonical._canon.hashed_assertion
    _unset_to_none = _canonical._canon.unset_to_none
    _name_ok = _canonical._canon.name_ok
    _checked = _canonical._canon.checked_fields
    _signature_ok = _canonical._canon.signature_ok
    _prepare_many = _canonical._canon.prepare_many
    # BLAKE3 by the vendored C implementation (stemedb/core/blake3): the
    # compiled pass's hash; the pure twin is the ``blake3`` package's
    _blake3_c = _canonical._canon.blake3_digest
else:
    _path_ok = _source_ok = _hashed_compiled = _unset_to_none = _name_ok = None
    _checked = _signature_ok = _prepare_many = _blake3_c = None

SOURCE_CLASSES = ("regulatory", "clinical", "observational", "expert", "community", "anecdotal")
SOURCE_CLASS_RANK = {name: i for i, name in enumerate(SOURCE_CLASSES)}
LIFECYCLES = ("proposed", "under_review", "approved", "deprecated", "rejected")
LIFECYCLE_RANK = {name: i for i, name in enumerate(LIFECYCLES)}

# Source class by URI scheme (case-insensitive); anything else is anecdotal.
SCHEME_CLASS = {
    **dict.fromkeys(("fda", "ema", "pmda", "mhra", "who", "rfc", "ietf"), "regulatory"),
    **dict.fromkeys(("nct", "clinicaltrials", "pubmed", "doi", "peer"), "clinical"),
    **dict.fromkeys(("medrxiv", "biorxiv", "cohort", "ehr"), "observational"),
    **dict.fromkeys(("expert", "guideline", "wiki", "code"), "expert"),
    **dict.fromkeys(("faers", "vaers", "forum", "community"), "community"),
}

MAX_PATH_BYTES = 512
MAX_SOURCE_BYTES = 1024
MAX_VALUE_BYTES = 64 * 1024
MAX_DERIVED = 256

ASSERTION_FIELDS = frozenset((
    "concept_path", "predicate", "value", "confidence", "source", "source_class",
    "lifecycle", "parent_hash", "derived_from", "epoch", "timestamp", "agent_id",
    "signature"))

_NAME_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,128}\Z")
_HASH_RE = re.compile(r"[0-9a-f]{64}\Z")
_SIG_RE = re.compile(r"[0-9a-f]{128}\Z")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")


class AssertionRecord(msgspec.Struct, frozen=True, gc=False):
    """An assertion as stored (see docs/format.md for its bytes).

    ``value_json`` is the value's RFC 8785 canonical JSON: what was hashed,
    what is stored, and the key that groups equal values.

    Not tracked by the garbage collector (``gc=False``): its fields are
    bytes, numbers, text and a list of bytes, so it can be in no reference
    cycle, and a bulk load or a query page allocates thousands of them
    (tracked, they set off a young-generation collection every ~700).
    """

    hash: bytes
    recorded_at: int
    timestamp: int
    confidence: float
    source_class: int
    lifecycle: int
    concept_path: str
    predicate: str
    value_json: bytes
    source: str | None = None
    epoch: str | None = None
    parent_hash: bytes | None = None
    derived_from: list[bytes] | None = None
    agent_id: bytes | None = None
    signature: bytes | None = None


# --------------------------------------------------------------- validation

def infer_source_class(source: str | None) -> str:
    """The tier a source URI's scheme implies; anecdotal when none fits.

    The scheme is what precedes the first ``:`` (``_SCHEME_RE``).  Every
    scheme of the table is ASCII letters, so an ASCII prefix found in the
    table is a scheme the pattern matches, and anything else is anecdotal
    whether the pattern matches it or not (tests/unit/test_canon.py checks
    this against the pattern); a lookup is cheaper than the pattern.
    """
    if source:
        i = source.find(":")
        if i > 0:
            scheme = source[:i]
            if scheme.isascii():
                return SCHEME_CLASS.get(scheme.lower(), "anecdotal")
    return "anecdotal"


def check_concept_path(path, field: str = "concept_path") -> str:
    if type(path) is not str:
        raise ValidationError(f"{field} must be a string such as drugs/semaglutide", field=field)
    n = len(path.encode("utf-8", "surrogatepass"))
    if not 1 <= n <= MAX_PATH_BYTES:
        raise ValidationError(f"{field} must be 1 to {MAX_PATH_BYTES} bytes of UTF-8, got {n}",
                              field=field)
    if _CONTROL_RE.search(path):
        raise ValidationError(f"{field} must not contain control characters", field=field)
    for seg in path.split("/"):
        if not seg:
            raise ValidationError(
                f"{field} {path!r} has an empty segment (a leading, trailing or doubled '/'); "
                f"write segments separated by single slashes", field=field)
        if seg in (".", ".."):
            raise ValidationError(f"{field} must not contain '.' or '..' segments", field=field)
        if seg.strip() != seg:
            raise ValidationError(
                f"{field} segment {seg!r} has leading or trailing white space", field=field)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{field} is not valid UTF-8 text", field=field) from None
    return path


def check_name(value, field: str, what: str = "name") -> str:
    if type(value) is not str or not _NAME_RE.match(value):
        raise ValidationError(
            f"{field} must be 1-128 characters of letters, digits and _ . : - "
            f"(a {what}), got {value!r}", field=field)
    return value


def check_hash(value, field: str) -> str:
    if type(value) is not str or not _HASH_RE.match(value):
        raise ValidationError(
            f"{field} must be an assertion hash: 64 lower-case hex characters", field=field)
    return value


def check_confidence(value, field: str = "confidence") -> float:
    if type(value) not in (int, float) or not (0.0 <= value <= 1.0):
        raise ValidationError(f"{field} must be a number from 0.0 to 1.0, got {value!r}",
                              field=field)
    return float(value)


def check_source(value, field: str = "source") -> str:
    if type(value) is not str or not value:
        raise ValidationError(f"{field} must be a non-empty string (a URI or a concept path)",
                              field=field)
    if len(value.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        raise ValidationError(f"{field} must be at most {MAX_SOURCE_BYTES} bytes", field=field)
    if _CONTROL_RE.search(value):
        raise ValidationError(f"{field} must not contain control characters", field=field)
    return value


def _enum(value, field: str, allowed: tuple) -> str:
    if value not in allowed or type(value) is not str:
        raise ValidationError(f"{field} must be one of {', '.join(allowed)}, got {value!r}",
                              field=field)
    return value


def hash_object(obj: dict) -> bytes:
    """BLAKE3-256 of the canonical JSON of ``obj`` (a small top-level dict)."""
    out = _canonical._canon.value_json(obj) if _canonical.COMPILED else None
    if out is None:   # pure, or the twin declined: the reference writes it (or raises)
        n, fast = normalize(obj, "assertion")
        out = dumps_normalized(n, fast)
    return blake3.blake3(out).digest()


def assertion_hash(body) -> str:
    """The hex hash the store gives ``body``, for a signer.

    Validates like a write, but a signer has ``agent_id`` and no signature
    yet, so the signature is neither required nor checked.  ``body`` needs a
    ``timestamp`` (without one the store stamps its receive time).
    """
    if not isinstance(body, dict) or body.get("timestamp") is None:
        raise ValidationError("assertion_hash needs a timestamp in the body: without one the "
                              "store stamps its receive time", field="timestamp")
    return prepare_assertion({k: v for k, v in body.items() if k != "signature"},
                             _signing=True).hash.hex()


def prepare_assertion(body, *, default_time_us: int | None = None,
                      require_signatures: bool = False, _signing: bool = False) -> AssertionRecord:
    """Validate a request and return the record to store (hash included).

    ``body`` is a dict, an :class:`Assertion`, or a msgspec Struct whose
    fields are assertion fields (the HTTP layer's decoded ``AssertionIn``):
    a Struct's fields are read as they are, without a round trip through a
    dict, and its class already rules out unknown and missing fields.  The
    value checks run for every kind of body (a Struct built in Python is not
    validated by msgspec, and msgspec's ``$`` lets a trailing newline through
    a pattern), in the same order, so the errors are the same.
    ``recorded_at`` is left 0; the log sets it when it assigns the seq.
    Raises ``ValidationError`` (or a subclass) naming the field at fault.
    """
    if type(body) is not dict:
        if isinstance(body, Assertion):
            body = body.request_dict()
        elif _struct_fields(type(body)) is not None:
            # the list holds the 13 fields: mypy takes *list as filling every parameter
            return _prepare(*_struct_values(body), default_time_us,  # type: ignore[call-arg]
                            require_signatures, _signing)
        elif not isinstance(body, dict):
            raise ValidationError("an assertion must be a JSON object (a dict) or an Assertion",
                                  field=None)
    if not ASSERTION_FIELDS.issuperset(body):
        name = sorted(body.keys() - ASSERTION_FIELDS)[0]
        raise ValidationError(
            f"unknown field {name!r}; an assertion has only {', '.join(sorted(ASSERTION_FIELDS))}",
            field=name)
    for name in _REQUIRED:
        if name not in body:
            raise ValidationError(f"{name} is required", field=name)
    g = body.get
    return _prepare(body["concept_path"], body["predicate"], body["value"], body["confidence"],
                    g("source"), g("source_class"), g("lifecycle"), g("parent_hash"),
                    g("derived_from"), g("epoch"), g("timestamp"), g("agent_id"),
                    g("signature"), default_time_us, require_signatures, _signing)


def prepare_batch(bodies, *, default_time_us: int | None = None,
                  require_signatures: bool = False) -> list[AssertionRecord]:
    """:func:`prepare_assertion` of every body of a batch, in order, each
    untimed one stamped ``default_time_us`` (the batch's receive time); the
    first bad item raises its error with the field prefixed
    ``assertions[i].`` (``assertions[3].confidence``).

    Compiled, one call (``_canon.prepare_many``) builds the records of the
    dicts and decoded ``AssertionIn`` Structs it takes; the items it leaves
    (a refused field, a signed item, an RFC 3339 time...) go through
    :func:`prepare_assertion` one by one, in order, so a refusal names the
    same first item and field as the pure loop does.
    """
    if default_time_us is None:
        default_time_us = now_us()
    n = len(bodies)
    recs: list = [None] * n
    if _prepare_many is not None and not require_signatures and n:
        cls = type(bodies[0])
        struct = cls if cls is not dict and _struct_fields(cls) == _FIELD_ORDER else None
        recs = _prepare_many(bodies if type(bodies) is list else list(bodies), default_time_us,
                             AssertionRecord, struct, _astuple, _MS_UNSET)
        if None not in recs:
            return recs
    for i in range(n):
        if recs[i] is None:
            try:
                recs[i] = prepare_assertion(bodies[i], default_time_us=default_time_us,
                                            require_signatures=require_signatures)
            except ValidationError as exc:
                raise exc.prefixed(f"assertions[{i}]") from None
    return recs


def prepare_one(body, *, default_time_us: int, require_signatures: bool = False) -> AssertionRecord:
    """:func:`prepare_assertion` for one put: the compiled batch builder
    (``_canon.prepare_many``) when it takes the body, in one call, else
    ``prepare_assertion``, which raises the error naming the field."""
    if _prepare_many is not None and not require_signatures:
        cls = type(body)
        struct = cls if cls is not dict and _struct_fields(cls) == _FIELD_ORDER else None
        rec = _prepare_many([body], default_time_us, AssertionRecord, struct,
                            _astuple, _MS_UNSET)[0]
        if rec is not None:
            return rec
    return prepare_assertion(body, default_time_us=default_time_us,
                             require_signatures=require_signatures)


_astuple = msgspec.structs.astuple
_MS_UNSET = msgspec.UNSET
_REQUIRED = ("concept_path", "predicate", "value", "confidence")
# The order _prepare takes the fields in.
_FIELD_ORDER = ("concept_path", "predicate", "value", "confidence", "source", "source_class",
                "lifecycle", "parent_hash", "derived_from", "epoch", "timestamp", "agent_id",
                "signature")
_STRUCT_FIELDS: dict = {}


def _struct_fields(cls) -> tuple | None:
    """``cls.__struct_fields__`` when ``cls`` is a msgspec Struct holding only
    assertion fields and every required one, else None (cached per class)."""
    try:
        return _STRUCT_FIELDS[cls]
    except KeyError:
        pass
    fields = getattr(cls, "__struct_fields__", None) if issubclass(cls, msgspec.Struct) else None
    if fields is not None and not (ASSERTION_FIELDS.issuperset(fields)
                                   and set(_REQUIRED).issubset(fields)):
        fields = None
    _STRUCT_FIELDS[cls] = fields
    return fields


def _struct_values(body) -> list:
    """The struct's fields in ``_FIELD_ORDER``; UNSET and absent are None."""
    unset = msgspec.UNSET
    values: tuple[Any, ...] | list[Any]
    if body.__struct_fields__ == _FIELD_ORDER:      # AssertionIn: one C call
        values = msgspec.structs.astuple(body)
        if _unset_to_none is not None:
            out = _unset_to_none(values, unset, len(_REQUIRED))
            if type(out) is list:
                return out
    else:
        values = [getattr(body, name, None) for name in _FIELD_ORDER]
    for i, name in enumerate(_REQUIRED):
        if values[i] is unset:
            raise ValidationError(f"{name} is required", field=name)
    return [None if v is unset else v for v in values]


def _prepare(concept_path, predicate, value, confidence, source, sc, lc, parent_hash, derived,
             epoch, ts, agent_id, signature, default_time_us, require_signatures,
             _signing) -> AssertionRecord:
    """The checks and the record, from the fields (absent ones are None).

    The compiled pass (``_canon.checked_fields``, inline here: a call per
    assertion costs) goes first and answers only when every check passes,
    accepting exactly what the pure checks accept (tests/unit/test_canon.py);
    otherwise the pure checks below run from the start and raise the first
    error in their order.
    """
    if default_time_us is None:   # one receive time, whichever pass answers
        default_time_us = now_us()
    if _checked is not None:
        try:
            timestamp = default_time_us if ts is None else parse_time(ts, "timestamp")
        except ValidationError:
            timestamp = None
        if timestamp is not None and (
                (signature is None and not require_signatures
                 and (agent_id is None or _signing))
                or (signature is not None and agent_id is not None
                    and _signature_ok(signature))):
            out = _checked(concept_path, predicate, value, confidence, source, sc, lc,
                           parent_hash, derived, epoch, timestamp, agent_id)
            if out is not None:
                value_json, hashed, confidence, source_rank, lifecycle_rank, derived = out
                digest = _blake3_c(hashed)      # set with _checked: compiled
                if signature is not None:   # every other check passed: the pure pass says the same
                    assert agent_id is not None     # the condition above: a signature has its key
                    verify_signature(agent_id, signature, digest, "signature")
                return AssertionRecord(
                    digest, 0, timestamp, confidence, source_rank, lifecycle_rank, concept_path,
                    predicate, value_json, source, epoch,
                    bytes.fromhex(parent_hash) if parent_hash is not None else None,
                    [bytes.fromhex(h) for h in derived] if derived is not None else None,
                    bytes.fromhex(agent_id) if agent_id is not None else None,
                    bytes.fromhex(signature) if signature is not None else None)
    if _path_ok is None or not _path_ok(concept_path):
        check_concept_path(concept_path)
    if _name_ok is None or not _name_ok(predicate):
        check_name(predicate, "predicate", "predicate")
    confidence = check_confidence(confidence)
    try:
        value_json = canonical_json(value)
    except NotJSON as exc:
        raise ValidationError(f"{exc.path} {exc}", field="value") from None
    if len(value_json) > MAX_VALUE_BYTES:
        raise ValidationError(
            f"value is {len(value_json)} bytes in canonical JSON; the limit is {MAX_VALUE_BYTES}",
            field="value")
    if source is not None and (_source_ok is None or not _source_ok(source)):
        check_source(source)
    source_class = infer_source_class(source) if sc is None else _enum(sc, "source_class", SOURCE_CLASSES)
    lifecycle = "proposed" if lc is None else _enum(lc, "lifecycle", LIFECYCLES)
    if parent_hash is not None:
        check_hash(parent_hash, "parent_hash")
    if derived is not None:
        if type(derived) not in (list, tuple) or not 1 <= len(derived) <= MAX_DERIVED:
            raise ValidationError(
                f"derived_from must be a list of 1 to {MAX_DERIVED} assertion hashes",
                field="derived_from")
        for i, h in enumerate(derived):
            check_hash(h, f"derived_from[{i}]")
        if len(set(derived)) != len(derived):
            raise ValidationError("derived_from lists the same hash twice; list each once",
                                  field="derived_from")
        derived = list(derived)
    if epoch is not None and (_name_ok is None or not _name_ok(epoch)):
        check_name(epoch, "epoch", "epoch name")
    timestamp = (now_us() if default_time_us is None else default_time_us) if ts is None \
        else parse_time(ts, "timestamp")
    if agent_id is not None and (type(agent_id) is not str or not _HASH_RE.match(agent_id)):
        raise ValidationError("agent_id must be an Ed25519 public key: 64 lower-case hex characters",
                              field="agent_id")
    if signature is not None and (type(signature) is not str or not _SIG_RE.match(signature)):
        raise InvalidSignature("signature must be 128 lower-case hex characters", field="signature")
    if (agent_id is None) != (signature is None) and not _signing:
        missing = "agent_id" if agent_id is None else "signature"
        raise InvalidSignature(f"agent_id and signature go together; {missing} is missing",
                               field=missing)
    if require_signatures and signature is None:
        raise SignatureRequired(
            "this server requires signed writes: add agent_id and signature "
            "(Ed25519 over the assertion hash)", field="signature")

    hashed = None
    if _hashed_compiled is not None:
        hashed = _hashed_compiled(agent_id, concept_path, confidence, derived, epoch, lifecycle,
                                  parent_hash, predicate, source, source_class, timestamp,
                                  value_json)
    if hashed is None:   # pure, or the twin declined: the reference writes it (or raises)
        hashed = _hashed_bytes_py(agent_id, concept_path, confidence, derived, epoch, lifecycle,
                                  parent_hash, predicate, source, source_class, timestamp,
                                  value_json)
    digest = blake3.blake3(hashed).digest()

    if signature is not None:
        assert agent_id is not None     # checked above: agent_id and signature go together
        verify_signature(agent_id, signature, digest, "signature")
    return AssertionRecord(   # positional, in field order: keywords cost a lookup each
        digest, 0, timestamp, confidence, SOURCE_CLASS_RANK[source_class],
        LIFECYCLE_RANK[lifecycle], concept_path, predicate, value_json, source, epoch,
        bytes.fromhex(parent_hash) if parent_hash is not None else None,
        [bytes.fromhex(h) for h in derived] if derived is not None else None,
        bytes.fromhex(agent_id) if agent_id is not None else None,
        bytes.fromhex(signature) if signature is not None else None)


def _hashed_bytes_py(agent_id, concept_path, confidence, derived, epoch, lifecycle, parent_hash,
                     predicate, source, source_class, timestamp, value_json) -> bytes:
    """The hashed object of validated fields, written out in JCS key order by
    hand: every key is ASCII and fixed, so only the value needs the general
    canonicalizer (``value_json`` is its output).  The pure reference of
    ``_canon.hashed_assertion``."""
    parts = []
    if agent_id is not None:
        parts.append(b'"agent_id":"' + agent_id.encode() + b'"')
    parts.append(b'"concept_path":' + orjson.dumps(concept_path))
    parts.append(b'"confidence":' + _number(confidence))
    if derived is not None:
        parts.append(b'"derived_from":' + orjson.dumps(derived))
    if epoch is not None:
        parts.append(b'"epoch":"' + epoch.encode() + b'"')
    parts.append(b'"lifecycle":"' + lifecycle.encode() + b'"')
    if parent_hash is not None:
        parts.append(b'"parent_hash":"' + parent_hash.encode() + b'"')
    parts.append(b'"predicate":"' + predicate.encode() + b'"')
    if source is not None:
        try:
            parts.append(b'"source":' + orjson.dumps(source))
        except TypeError:
            raise ValidationError("source is not valid UTF-8 text", field="source") from None
    parts.append(b'"source_class":"' + source_class.encode() + b'"')
    parts.append(b'"timestamp":' + str(timestamp).encode())
    parts.append(b'"value":' + value_json)
    return b"{" + b",".join(parts) + b"}"


def _number(x: float) -> bytes:
    n, fast = normalize(x)
    return dumps_normalized(n, fast)


def verify_signature(agent_id: str, signature: str, message: bytes, field: str) -> None:
    """Ed25519 check of ``signature`` by ``agent_id`` over ``message``."""
    from nacl.exceptions import BadSignatureError, CryptoError
    from nacl.signing import VerifyKey
    try:
        VerifyKey(bytes.fromhex(agent_id)).verify(message, bytes.fromhex(signature))
    except (BadSignatureError, CryptoError, ValueError):
        raise InvalidSignature(
            f"{field} does not verify: it must be the Ed25519 signature by agent_id over "
            f"the 32 bytes of the hash", field=field) from None


def vote_hash(assertion_hash: str, weight: float, agent_id: str | None,
              timestamp_us: int) -> bytes:
    """The 32 bytes a vote's signature covers: BLAKE3-256 of the JCS form of
    ``{"assertion_hash", "weight", "agent_id", "timestamp"}``, the timestamp
    as integer microseconds since the Unix epoch, as in the assertion hash
    (``parse_time`` turns a body's RFC 3339 or Unix-seconds time into them).
    Covering the time lets the store refuse a replayed older vote."""
    if type(timestamp_us) is not int:
        raise ValidationError("the vote hash takes the timestamp as integer microseconds "
                              "(use stemedb.timeutil.parse_time on a body's time)",
                              field="timestamp")
    return hash_object({"assertion_hash": assertion_hash, "weight": weight,
                        "agent_id": agent_id, "timestamp": timestamp_us})


def check_signature(value, field: str = "signature") -> str:
    if type(value) is not str or not _SIG_RE.match(value):
        raise InvalidSignature(f"{field} must be an Ed25519 signature: 128 lower-case hex "
                               f"characters", field=field)
    return value


# ------------------------------------------------------------ read objects

_ASSERTION_KEYS = ASSERTION_FIELDS | {"hash", "seq", "recorded_at", "status", "retraction"}


class Assertion:
    """A stored assertion as handed back: the JSON field names as attributes.

    Times are RFC 3339 strings as in the HTTP answer; ``timestamp_us`` and
    ``recorded_at_us`` carry the integer microseconds.  ``to_dict()`` is the
    JSON form.
    """

    __slots__ = ("record", "seq", "status", "retraction", "_value")

    _UNSET = object()

    def __init__(self, record: AssertionRecord, seq: int, status: str = "active",
                 retraction: dict | None = None):
        self.record = record
        self.seq = seq
        self.status = status
        self.retraction = retraction
        self._value = Assertion._UNSET

    # The JSON names, computed from the record (cheap, and keeps objects small).
    hash = property(lambda s: s.record.hash.hex())
    concept_path = property(lambda s: s.record.concept_path)
    predicate = property(lambda s: s.record.predicate)
    confidence = property(lambda s: s.record.confidence)
    source = property(lambda s: s.record.source)
    source_class = property(lambda s: SOURCE_CLASSES[s.record.source_class])
    lifecycle = property(lambda s: LIFECYCLES[s.record.lifecycle])
    parent_hash = property(lambda s: s.record.parent_hash.hex() if s.record.parent_hash else None)
    derived_from = property(lambda s: [h.hex() for h in s.record.derived_from]
                            if s.record.derived_from is not None else None)
    epoch = property(lambda s: s.record.epoch)
    timestamp = property(lambda s: format_time(s.record.timestamp))
    recorded_at = property(lambda s: format_time(s.record.recorded_at))
    agent_id = property(lambda s: s.record.agent_id.hex() if s.record.agent_id else None)
    signature = property(lambda s: s.record.signature.hex() if s.record.signature else None)
    timestamp_us = property(lambda s: s.record.timestamp)
    recorded_at_us = property(lambda s: s.record.recorded_at)
    source_rank = property(lambda s: s.record.source_class)

    @property
    def value(self):
        if self._value is Assertion._UNSET:
            self._value = orjson.loads(self.record.value_json)
        return self._value

    @property
    def value_key(self) -> bytes:
        """Canonical JSON of the value: equal values have equal keys."""
        return self.record.value_json

    def request_dict(self) -> dict:
        """The request fields, as a body that stores (and hashes) to this assertion."""
        d = {name: getattr(self, name) for name in ASSERTION_FIELDS}
        return {k: v for k, v in d.items() if v is not None or k == "value"}

    def to_dict(self) -> dict:
        d = {
            "hash": self.hash, "seq": self.seq, "concept_path": self.concept_path,
            "predicate": self.predicate, "value": self.value, "confidence": self.confidence,
            "source": self.source, "source_class": self.source_class,
            "lifecycle": self.lifecycle, "parent_hash": self.parent_hash,
            "derived_from": self.derived_from, "epoch": self.epoch,
            "timestamp": self.timestamp, "agent_id": self.agent_id,
            "signature": self.signature, "recorded_at": self.recorded_at,
            "status": self.status,
        }
        if self.retraction is not None:
            d["retraction"] = self.retraction
        return d

    def __getitem__(self, name: str):
        """``a["value"]`` reads like the JSON form (same as ``a.value``)."""
        if name in _ASSERTION_KEYS:
            return getattr(self, name)
        raise KeyError(name)

    def get(self, name: str, default=None):
        try:
            return self[name]
        except KeyError:
            return default

    def __repr__(self) -> str:
        return (f"Assertion({self.concept_path!r}, {self.predicate!r}, {self.value!r}, "
                f"confidence={self.confidence}, seq={self.seq}, status={self.status!r})")

    def __eq__(self, other):
        return isinstance(other, Assertion) and other.record == self.record and other.seq == self.seq

    def __hash__(self):
        return hash(self.record.hash)


if _checked is not None:
    _canonical._canon.configure(SCHEME_CLASS, SOURCE_CLASS_RANK, LIFECYCLE_RANK)
