"""The non-assertion writes: retractions, votes, epochs, trust outcomes.

:class:`MetaWrites` is a part of :class:`~stemedb.core.writer.Writer` (a
mixin: the same critical section ``_wmu``, the same stamping and WAL), kept
apart because these records take another path than assertions: each is one
msgpack body framed by :meth:`MetaWrites.commit`, applied by
``State.apply_meta``; assertions are framed by the compiled builder.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

import msgspec

from ..errors import Conflict, NotFound, UnknownReference, ValidationError
from ..model import (
    check_concept_path, check_confidence, check_hash, check_name, check_source,
    verify_signature, vote_hash,
)
from ..timeutil import format_time
from . import codec
from .format import FLAG_MORE, REC_EPOCH, REC_OUTCOME, REC_RETRACT, REC_VOTE
from .wal import Request

_enc = msgspec.msgpack.Encoder()


@dataclass(frozen=True)
class RetractResult:
    retracted: int         # newly retracted assertions (already-retracted ones not counted)
    hashes: list[str]
    seq: int               # seq of the retraction record

    def to_dict(self) -> dict:
        return {"retracted": self.retracted, "hashes": self.hashes, "seq": self.seq}


class MetaWrites:
    """Retract, vote, create_epoch, record_outcome: their checks and their
    state-dependent ``write_*`` steps (through ``Writer.submit``, so that
    cluster mode replicates them as it does puts)."""

    # provided by Writer (declared for the type checker; no values here)
    _wmu: threading.Lock
    _next_seq: int
    _stamp_us: int
    _vote_pending: dict
    wal: Any
    reader: Any
    clock: Callable[[], int]
    stamp: Callable[..., tuple[int, int]]
    writable: Callable[[], None]
    submit: Callable[..., Any]

    def commit(self, records: list[tuple[int, int, bytes, object]]) -> Request:
        """Frame, enqueue (under _wmu).  records: (type, seq, payload bytes, apply payload)."""
        frames, sizes, apply_arg = [], [], []
        last = len(records) - 1
        for i, (rtype, seq, payload, arg) in enumerate(records):
            fr = codec.encode_frame(rtype, FLAG_MORE if i < last else 0, seq, payload)
            frames.append(fr)
            sizes.append(len(fr))
            apply_arg.append((rtype, seq, arg))
        req = Request(b"".join(frames), sizes, apply_arg)
        self.wal.enqueue(req)
        return req
    def write_meta(self, rtype: int, body_fn) -> tuple[int, dict]:
        """Write one non-assertion record; body_fn(recorded_at) -> body dict."""
        with self._wmu:
            self.writable()
            mark = (self._next_seq, self._stamp_us)
            seq, stamp = self.stamp()
            try:
                body = body_fn(stamp)
            except BaseException:
                self._next_seq, self._stamp_us = mark   # refused (e.g. Conflict): no seq used
                raise
            req = self.commit([(rtype, seq, _enc.encode(body), body)])
        self.wal.wait(req)
        return seq, body

    def retract(self, *, hash: str | None = None, concept_path: str | None = None,
                source: str | None = None, reason: str, cascade: bool = False,
                by: str | None = None) -> RetractResult:
        """Retract by exactly one target; with ``cascade``, follow dependents.

        Time proportional to what it touches (the dependents and source
        indexes), never a scan.  Durable on return.
        """
        given = [n for n, v in (("hash", hash), ("concept_path", concept_path),
                                ("source", source)) if v is not None]
        if len(given) != 1:
            raise ValidationError("give exactly one of hash, concept_path or source to retract",
                                  field=given[1] if len(given) > 1 else "hash")
        if type(reason) is not str or not 1 <= len(reason) <= 256:
            raise ValidationError("reason must be 1 to 256 characters", field="reason")
        if type(cascade) is not bool:
            raise ValidationError("cascade must be true or false", field="cascade")
        if hash is not None:
            check_hash(hash, "hash")
            target = {"hash": hash}
        elif concept_path is not None:
            check_concept_path(concept_path)
            target = {"concept_path": concept_path}
        else:
            assert source is not None   # exactly one of the three was given
            check_source(source)
            target = {"source": source}
        return self.submit("retract", target, reason, cascade, by)

    def write_retract(self, target: dict, reason: str, cascade: bool,
                      by: str | None) -> RetractResult:
        """The state-dependent part of :meth:`retract`: find the targets, write."""
        from .query import retraction_targets
        with self._wmu:
            self.writable()
            with self.reader.lock:
                ords = retraction_targets(self.reader, target, cascade)
                st = self.reader.state
                newly = sorted(o for o in ords if o not in st.retracted)
                hashes = [st.cols.hash_of(o) for o in newly]
            seq, stamp = self.stamp()
            body = {"recorded_at": stamp, "reason": reason, "by": by, "target": target,
                    "cascade": cascade, "hashes": hashes}
            req = self.commit([(REC_RETRACT, seq, _enc.encode(body), body)])
        self.wal.wait(req)
        return RetractResult(len(hashes), [h.hex() for h in hashes], seq)

    def vote(self, assertion_hash: str, weight: float, *, agent_id: str | None = None,
             signature: str | None = None, timestamp=None,
             require_signatures: bool = False) -> int:
        """Record a vote; returns its seq once durable.

        ``timestamp`` is a time as for assertions (RFC 3339 or Unix seconds;
        the receive time when absent).  An agent's vote replaces its earlier
        vote on the assertion only when its timestamp is later: otherwise
        StaleVote (409), and nothing is written, no seq used.  The signature
        covers the timestamp (:func:`stemedb.model.vote_hash`), so an old
        signed vote cannot be replayed to undo a newer one.  NotFound for an
        unknown assertion; SignatureRequired for an unsigned vote when
        ``require_signatures``.  Votes without ``agent_id`` each count.
        """
        from ..errors import InvalidSignature, SignatureRequired
        from ..model import check_signature
        from ..timeutil import parse_time
        check_hash(assertion_hash, "assertion_hash")
        weight = check_confidence(weight, "weight")
        if agent_id is not None:
            check_hash(agent_id, "agent_id")
        if signature is not None:
            check_signature(signature)
        ts = self.clock() if timestamp is None else parse_time(timestamp, "timestamp")
        if (agent_id is None) != (signature is None):
            # As for assertions: an agent_id is a claim of identity, and since
            # an agent's newer vote replaces its earlier one, an unsigned one
            # would let anyone overwrite another agent's vote.
            missing = "agent_id" if agent_id is None else "signature"
            raise InvalidSignature(
                f"agent_id and signature go together on a vote; {missing} is missing (sign "
                f"the vote hash with the agent's Ed25519 key, or send neither)", field=missing)
        if require_signatures and signature is None:
            raise SignatureRequired(
                "this server requires signed votes: add agent_id, timestamp and signature "
                "(Ed25519 over the vote hash)", field="signature")
        if signature is not None:
            assert agent_id is not None     # checked above: they go together
            try:
                verify_signature(agent_id, signature,
                                 vote_hash(assertion_hash, weight, agent_id, ts), "signature")
            except InvalidSignature as exc:
                if timestamp is None:   # the hash then holds a receive time no signer knew
                    raise InvalidSignature(
                        exc.message + "; a signed vote must carry the timestamp it signed",
                        field="signature") from None
                raise
        return self.submit("vote", assertion_hash, weight, agent_id, ts)

    def write_vote(self, assertion_hash: str, weight: float, agent_id: str | None,
                    ts: int) -> int:
        """Decide staleness and enqueue under ``_wmu``, so of two racing votes
        by one agent only a newer one can follow the other; ``_vote_pending``
        holds the enqueued, not yet applied ones for that decision."""
        from ..errors import StaleVote
        h = bytes.fromhex(assertion_hash)
        key = (h, agent_id)
        with self._wmu:
            self.writable()
            with self.reader.lock:
                o = self.reader.state.ordinal(h)
                if o is None:
                    raise NotFound(f"no assertion with hash {assertion_hash}",
                                   field="assertion_hash")
                prev = self.reader.state.vote_time(o, agent_id) if agent_id is not None else None
            pend = self._vote_pending.get(key) if agent_id is not None else None
            if pend is not None and pend[1].error is None and (prev is None or pend[0] > prev):
                prev = pend[0]
            if prev is not None and ts <= prev:
                raise StaleVote(
                    f"agent {agent_id} already has a vote on {assertion_hash} with timestamp "
                    f"{format_time(prev)}; a vote replaces it only with a later timestamp "
                    f"(this one has {format_time(ts)})", field="timestamp")
            seq, stamp = self.stamp()
            body = {"recorded_at": stamp, "assertion_hash": h, "weight": weight,
                    "agent_id": agent_id, "timestamp": ts}
            req = self.commit([(REC_VOTE, seq, _enc.encode(body), body)])
            if agent_id is not None:
                self._vote_pending[key] = (ts, req)
        try:
            self.wal.wait(req)
        finally:
            if agent_id is not None:
                with self._wmu:
                    if self._vote_pending.get(key, (0, None))[1] is req:
                        del self._vote_pending[key]
        return seq

    def create_epoch(self, name: str, *, supersedes: list[str] | None = None,
                     description: str | None = None) -> int:
        """Create an epoch; O(len(supersedes)) whatever the epochs hold."""
        check_name(name, "name", "epoch name")
        if supersedes is not None:
            if type(supersedes) not in (list, tuple):
                raise ValidationError("supersedes must be a list of epoch names", field="supersedes")
            for i, s in enumerate(supersedes):
                check_name(s, f"supersedes[{i}]", "epoch name")
        if description is not None and (type(description) is not str or len(description) > 4096):
            raise ValidationError("description must be a string of at most 4096 characters",
                                  field="description")
        return self.submit("epoch", name, supersedes, description)

    def write_epoch(self, name: str, supersedes: list[str] | None,
                    description: str | None) -> int:
        """The state-dependent part of :meth:`create_epoch`: 409 for a taken
        name, 400 for an unknown superseded epoch, else write."""
        def body(rec):
            if name in self.reader.state.epochs:
                raise Conflict(f"epoch {name!r} already exists; epochs are immutable, pick "
                               f"another name", field="name")
            for i, s in enumerate(supersedes or []):
                if s not in self.reader.state.epochs:
                    raise UnknownReference(f"supersedes[{i}] names unknown epoch {s!r}",
                                           field=f"supersedes[{i}]")
            return {"recorded_at": rec, "name": name, "supersedes": list(supersedes or []),
                    "description": description}
        seq, _ = self.write_meta(REC_EPOCH, body)
        return seq

    def record_outcome(self, agent_id: str, accurate: bool) -> int:
        """Record whether an agent's claim proved accurate; returns its seq."""
        check_hash(agent_id, "agent_id")
        if type(accurate) is not bool:
            raise ValidationError("accurate must be true or false", field="accurate")
        return self.submit("outcome", agent_id, accurate)

    def write_outcome(self, agent_id: str, accurate: bool) -> int:
        seq, _ = self.write_meta(REC_OUTCOME, lambda rec: {
            "recorded_at": rec, "agent_id": agent_id, "accurate": accurate})
        return seq
