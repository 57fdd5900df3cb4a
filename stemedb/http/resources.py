"""Thin resources: read the body (size and type checked first), decode it with
the schema, call the store, serialize.  Every error goes through
:mod:`stemedb.http.errors`.
"""
from __future__ import annotations

import functools
import re
from operator import attrgetter

import falcon
import time
from collections import deque

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__
from ..errors import NotFound, ValidationError
from . import schemas as S
from .answer import enc_hook, query_bytes, query_doc
from .errors import HTTPProblem, bad_request, from_msgspec
from .middleware import FAST_QUERY

JSON = "application/json"
_HASH_RE = re.compile(r"[0-9a-f]{64}\Z")
_NUMBER_RE = re.compile(r"-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\Z")
_TIME_PARAMS = frozenset(("as_of", "known_at", "since", "from", "to"))


_enc_hook = enc_hook     # one hook for the answer's parts and the whole (stemedb.http.answer)
_encoder = msgspec.json.Encoder(enc_hook=enc_hook)
_hash_of, _seq_of, _created = attrgetter("hash"), attrgetter("seq"), attrgetter("created")
_STATUS = ("exists", "created")      # by PutResult.created


def send(resp, status: int, doc) -> None:
    resp.status = status
    resp.content_type = JSON
    resp.data = _encoder.encode(doc)


# ------------------------------------------------------------------ bodies

def is_json_type(ctype: str | None) -> bool:
    if not ctype:
        return False
    return _is_json_type(ctype)


@functools.lru_cache(maxsize=256)   # a few distinct values; bounded against odd ones
def _is_json_type(ctype: str) -> bool:
    mtype, _, params = ctype.partition(";")
    mtype = mtype.strip().lower()
    if not (mtype == "application/json"
            or (mtype.startswith("application/") and mtype.endswith("+json"))):
        return False
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
                "utf-8", "utf8"):
            return False
    return True


def read_body(req, max_bytes: int) -> bytes:
    """The raw body: 413 over ``max_bytes`` (from Content-Length, before reading),
    415 when it is not JSON, 400 when it is empty."""
    length = req.content_length  # falcon answers 400 for a malformed header
    if length is not None and length > max_bytes:
        raise _too_large(max_bytes)
    has_body = bool(length) or (
        length is None and "chunked" in (req.get_header("Transfer-Encoding") or "").lower())
    if has_body and not is_json_type(req.content_type):
        raise HTTPProblem(
            415, "unsupported_media_type",
            f"the body must be JSON: send Content-Type: application/json "
            f"(got {req.content_type or 'no Content-Type'})")
    if not has_body:
        raise bad_request("a JSON body is required (Content-Type: application/json)",
                          None, "missing_body")
    if length is not None:
        # the server's input stream ends at Content-Length (gunicorn's body
        # reader; the worker gathered it): read that much, without Falcon's
        # BoundedStream wrapper per request
        data = req.stream.read(length)
    else:
        data = req.stream.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise _too_large(max_bytes)
    if not data:
        raise bad_request("a JSON body is required (Content-Type: application/json)",
                          None, "missing_body")
    return data


def _too_large(max_bytes: int) -> HTTPProblem:
    return HTTPProblem(413, "payload_too_large",
                       f"the body is over the {max_bytes // (1024 * 1024)} MiB limit of this "
                       f"endpoint; split it into smaller requests")


def decode(data: bytes, schema):
    try:
        return S.DECODERS[schema].decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError,
            UnicodeDecodeError) as exc:
        raise from_msgspec(exc) from None


def decode_batch(data: bytes) -> list:
    """A batch body's items for the record builder: decoded by
    ``schemas.BatchLax`` (types, unknown and missing fields; the value checks
    are the builder's), or, when that refuses the body, by ``BatchIn``, whose
    error is the answer (the lax decode refuses nothing ``BatchIn`` accepts).

    One validation pass instead of two: ``BatchIn``'s patterns, lengths and
    ranges cost ~0.4 us of an item's ~0.75 us decode, and the builder checks
    every one of them again anyway (bench.http_stages, batch)."""
    try:
        return S.BATCH_LAX.decode(data).assertions
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError,
            UnicodeDecodeError):
        return decode(data, S.BatchIn).assertions


def from_params(req, schema):
    """Query-string parameters decoded with the same schema as the POST body.

    Booleans are ``true``/``false``; numbers in time parameters are Unix
    seconds; a repeated parameter is an error.
    """
    raw = {}
    for name, value in req.params.items():
        if isinstance(value, list):
            raise bad_request(f"{name} is given {len(value)} times; give it once", name)
        if name in _TIME_PARAMS and _NUMBER_RE.match(value):
            value = float(value) if any(c in value for c in ".eE") else int(value)
        elif name in _bool_fields(schema) and value not in ("true", "false"):
            # msgspec's lax conversion would also take 1, 0 and any case of true
            raise bad_request(f"{name} must be true or false (lower case), got {value!r}", name)
        raw[name] = value
    try:
        return msgspec.convert(raw, schema, strict=False)
    except (msgspec.ValidationError, RecursionError) as exc:
        raise from_msgspec(exc) from None


@functools.cache
def _bool_fields(schema) -> frozenset:
    return frozenset(f.encode_name for f in msgspec.structs.fields(schema) if f.type is bool)


def check_hash(value: str, field: str = "hash") -> str:
    if not _HASH_RE.match(value or ""):
        raise bad_request(f"{field} must be an assertion hash: 64 lower-case hex characters",
                          field)
    return value


def min_seq(state, req, value=None) -> None:
    """``min_seq`` on a read: answer only once this node has applied that seq.

    In cluster mode the node waits up to ``STEMEDB_READ_WAIT_MS``, else 503
    ``not_caught_up`` with ``Retry-After``.  A single node answers a write
    only after applying it, so every seq a client can know is applied: one
    beyond its last seq was never written here, and is a 400 on ``min_seq``
    (waiting or answering 503 would promise a retry that cannot succeed).
    GET parameters are taken out here, before the schemas (which forbid
    unknown fields) see them; ``POST /v1/query`` has it in its body.
    """
    if value is None:
        raw = req.params.pop("min_seq", None)
        if raw is None:
            return
        if isinstance(raw, list) or not raw.isdigit() or len(raw) > 19:
            raise bad_request("min_seq must be a whole number >= 0 (a seq from a write's "
                              "answer), given once", "min_seq")
        value = int(raw)
    store = state.handle.get()
    node = getattr(store, "cluster", None)
    if node is not None:
        node.wait_for(value)
    elif value > store.last_seq:
        raise bad_request(f"min_seq {value} is beyond this store's last seq {store.last_seq}: "
                          f"this single node answered every seq it wrote, so this one comes "
                          f"from another store; pass a seq from this store's answers", "min_seq")


def _read_barrier(req, resp, resource, params):
    if req.method in ("GET", "HEAD"):
        min_seq(resource.state, req)


# ------------------------------------------------------------------ resources

class _Base:
    scope: dict | str | None = {"GET": "read", "POST": "read"}
    limit_name: str | None = "default"
    writes: tuple = ()

    def __init__(self, state):
        self.state = state

    @property
    def store(self):
        return self.state.handle.get()

    def body(self, req, schema, max_bytes=None):
        return decode(read_body(req, max_bytes or self.state.settings.max_body_bytes), schema)


class AssertResource(_Base):
    scope = {"POST": "write"}
    limit_name = "assert"
    writes = ("POST",)

    def on_post(self, req, resp):
        item = self.body(req, S.AssertionIn)
        # The decoded Struct goes to the record builder as it is (no dict round trip).
        r = self.store.put(item,
                           require_signatures=self.state.settings.require_signatures)
        if r.created:
            self.state.recent.add([(r, item)])
        send(resp, 201 if r.created else 200, {"hash": r.hash, "status": r.status, "seq": r.seq})


class BatchResource(_Base):
    scope = {"POST": "write"}
    limit_name = "batch"
    writes = ("POST",)

    def on_post(self, req, resp):
        data = read_body(req, self.state.settings.max_batch_body_bytes)
        items = decode_batch(data)
        try:
            results = self.store.put_batch(
                items, require_signatures=self.state.settings.require_signatures)
        except ValidationError:
            # The items were checked once, by the record builder (schemas.AssertionLax);
            # where the schema refuses the body too, its error is the answer, as it
            # was before the lax decode; else the builder's.
            decode(data, S.BatchIn)
            raise
        tail = RecentWrites.SIZE
        self.state.recent.add([(r, a) for r, a in zip(results[-tail:], items[-tail:])
                               if r.created])
        # the contract's {"hash", "status", "seq"} per item, built by C-level maps
        send(resp, 201, S.BatchOut(list(map(S.PutOut, map(_hash_of, results),
                                            map(_STATUS.__getitem__, map(_created, results)),
                                            map(_seq_of, results)))))


def query_answer(result) -> dict:
    try:
        return query_doc(result)     # the bytes of result.to_dict(), built faster
    except NotImplementedError:
        return {"concept_path": result.concept_path, "lens": result.lens,
                "results": result.results, "assertions": result.assertions,
                "next_cursor": result.next_cursor}


def query_body(result) -> bytes:
    """The answer's bytes: what ``send`` would encode of
    ``query_answer(result)``, written by ``answer.query_bytes``."""
    try:
        return query_bytes(result)
    except NotImplementedError:
        return _encoder.encode(query_answer(result))


class QueryResource(_Base):
    limit_name = "query"

    def on_get(self, req, resp):
        # the read barrier of the other GET resources, called here: a
        # falcon.before hook would wrap POST too, the hot path, for nothing
        min_seq(self.state, req)
        self._answer(req, resp, from_params(req, S.QueryIn))

    def on_post(self, req, resp):
        self._answer(req, resp, self.body(req, S.QueryIn))

    def _answer(self, req, resp, q):
        kwargs = S.query_kwargs(q)
        if "min_seq" in kwargs:
            min_seq(self.state, req, kwargs.pop("min_seq"))
        path = kwargs.pop("concept_path")
        handoff = req.env.get(FAST_QUERY)
        if handoff is not None and handoff.error is not None:
            raise handoff.error    # fastquery ran this query: its error, not a second run
        result = self.store.query(path, agent=req.context.key_id, **kwargs)
        resp.status = 200
        resp.content_type = JSON
        resp.data = query_body(result)


@falcon.before(_read_barrier)
class AssertionResource(_Base):
    def on_get(self, req, resp, hash):
        a = self.store.get(check_hash(hash))
        if a is None:
            raise NotFound(f"no assertion with hash {hash}", field="hash")
        send(resp, 200, a.to_dict())


class RetractResource(_Base):
    scope = {"POST": "write"}
    limit_name = "retract"
    writes = ("POST",)

    def on_post(self, req, resp):
        body = self.body(req, S.RetractIn)
        targets = [n for n in ("hash", "concept_path", "source") if getattr(body, n) is not None]
        if len(targets) != 1:
            raise bad_request(
                "give exactly one target: hash, concept_path or source"
                + (f" (got {', '.join(targets)})" if targets else ""),
                targets[1] if len(targets) > 1 else "hash")
        r = self.store.retract(hash=body.hash, concept_path=body.concept_path,
                               source=body.source, reason=body.reason, cascade=body.cascade,
                               by=req.context.key_id)
        send(resp, 200, {"retracted": r.retracted, "hashes": r.hashes, "seq": r.seq})


@falcon.before(_read_barrier)
class SkepticResource(_Base):
    limit_name = "query"

    def on_get(self, req, resp):
        kwargs = S.to_kwargs(from_params(req, S.SkepticIn))
        path, predicate = kwargs.pop("concept_path"), kwargs.pop("predicate")
        send(resp, 200, self.store.skeptic(path, predicate, **kwargs))


@falcon.before(_read_barrier)
class TraceResource(_Base):
    def on_get(self, req, resp, hash):
        t = self.store.trace(check_hash(hash))
        if t is None:
            raise NotFound(f"no assertion with hash {hash}", field="hash")
        send(resp, 200, t)


class VoteResource(_Base):
    scope = {"POST": "write"}
    limit_name = "vote"
    writes = ("POST",)

    def on_post(self, req, resp):
        v = self.body(req, S.VoteIn)
        seq = self.store.vote(v.assertion_hash, v.weight, agent_id=v.agent_id,
                              signature=v.signature, timestamp=v.timestamp,
                              require_signatures=self.state.settings.require_signatures)
        send(resp, 201, {"seq": seq})


class EpochResource(_Base):
    scope = {"POST": "admin"}
    writes = ("POST",)

    def on_post(self, req, resp):
        e = self.body(req, S.EpochIn)
        seq = self.store.create_epoch(e.name, supersedes=e.supersedes, description=e.description)
        send(resp, 201, {"name": e.name, "seq": seq})


class OutcomeResource(_Base):
    scope = {"POST": "admin"}
    writes = ("POST",)

    def on_post(self, req, resp, agent_id):
        if not _HASH_RE.match(agent_id):
            raise bad_request("agent_id must be an Ed25519 public key: 64 lower-case hex "
                              "characters", "agent_id")
        o = self.body(req, S.OutcomeIn)
        rank = self.store.record_outcome(agent_id, o.accurate)
        send(resp, 201, {"agent_id": agent_id, "trust_rank": rank})


@falcon.before(_read_barrier)
class AuditListResource(_Base):
    scope = {"GET": "admin"}

    def on_get(self, req, resp):
        a = from_params(req, S.AuditIn)
        queries = self.store.audit_queries(limit=a.limit, agent=a.agent, from_=a.from_, to=a.to)
        send(resp, 200, {"queries": queries})


@falcon.before(_read_barrier)
class AuditEntryResource(_Base):
    scope = {"GET": "admin"}

    def on_get(self, req, resp, id):
        entry = self.store.audit_query(id)
        if entry is None:
            raise NotFound(f"no audited query with id {id}", field="id")
        send(resp, 200, entry)


class HealthResource(_Base):
    scope = None
    limit_name = None

    def on_get(self, req, resp):
        doc, status = health(self.state)
        send(resp, status, doc)

    on_head = on_get  # load balancers probe with HEAD; Falcon drops the body


def health(state) -> tuple[dict, int]:
    """The health document and its status (shared with the dashboard)."""
    doc = {"status": "healthy", "version": __version__,
           "uptime_seconds": round(time.monotonic() - state.started_at, 3)}
    store = state.handle.peek()
    if store is None:
        failure = state.handle.failure
        doc.update(status="starting" if failure is None else "degraded",
                   reason="opening the store" if failure is None else str(failure))
        return doc, 503
    fault = None
    try:
        fault = store.fault
        doc.update(assertion_count=store.count, last_seq=store.last_seq,
                   wal_segments=store.wal_segments, implementation=store.implementation)
    except Exception as exc:  # noqa: BLE001 - a closed store: degraded, never a 500
        fault = fault or f"store unavailable: {exc}"
    node = getattr(store, "cluster", None)
    if node is not None:
        doc["cluster"] = node.status()
        fault = fault or (f"cluster: {node.fault}" if node.fault else None)
    doc["wal"] = {"segments": doc.get("wal_segments"), "last_seq": doc.get("last_seq"),
                  "durability": state.settings.durability,
                  "writes": "stopped" if fault else "accepting"}
    if fault:
        doc.update(status="degraded", reason=str(fault))
        return doc, 503
    return doc, 200


class MetricsResource(_Base):
    limit_name = None

    def __init__(self, state):
        super().__init__(state)
        self.scope = {"GET": "read"} if state.settings.metrics_require_key else None

    def on_get(self, req, resp):
        resp.status = 200
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(self.state.metrics.registry)


class OpenAPIResource(_Base):
    scope = None

    def __init__(self, state, document: bytes):
        super().__init__(state)
        self.document = document

    def on_get(self, req, resp):
        resp.status = 200
        resp.content_type = JSON
        resp.data = self.document


class RecentWrites:
    """The last assertions written through this server (the dashboard's list).

    A write keeps its (result, decoded item, time) as they are; the entries
    are built when the dashboard asks (every 2 s at most, per open page),
    not on every write (~1.6 us an item: the value's JSON and a dict).  It
    holds at most 50 decoded items, whose values are at most 64 KiB of
    canonical JSON each (model.MAX_VALUE_BYTES): 3.2 MiB at worst."""

    SIZE = 50

    def __init__(self) -> None:
        self._items: deque = deque(maxlen=self.SIZE)

    def add(self, pairs) -> None:
        now = time.time()
        self._items.extend((r, item, now) for r, item in pairs)

    def items(self) -> list:
        return [{"hash": r.hash, "seq": r.seq, "concept_path": item.concept_path,
                 "predicate": item.predicate, "confidence": item.confidence,
                 "value": msgspec.json.encode(item.value)[:200].decode("utf-8", "replace"),
                 "at": at}
                for r, item, at in reversed(list(self._items))]


ROUTES = (
    ("/v1/assert", AssertResource),
    ("/v1/assert/batch", BatchResource),
    ("/v1/query", QueryResource),
    ("/v1/assertions/{hash}", AssertionResource),
    ("/v1/retract", RetractResource),
    ("/v1/skeptic", SkepticResource),
    ("/v1/trace/{hash}", TraceResource),
    ("/v1/vote", VoteResource),
    ("/v1/epoch", EpochResource),
    ("/v1/agents/{agent_id}/outcome", OutcomeResource),
    ("/v1/audit/queries", AuditListResource),
    ("/v1/audit/queries/{id}", AuditEntryResource),
    ("/v1/health", HealthResource),
    ("/metrics", MetricsResource),
)
