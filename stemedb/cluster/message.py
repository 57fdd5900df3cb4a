"""Stream messages: one per record, so a record's seq is its stream sequence.

A message is msgpack ``[version, at_us, args]`` on subject
``<stream>.<kind>`` (kind: ``assert``, ``retract``, ``vote``, ``epoch``,
``outcome``).  ``args`` are the arguments of the writer's write step for
that kind, already validated by the node that took the write; ``at_us`` is
that node's clock when it took it, from which every node derives the same
``recorded_at`` (``max(at_us, the last recorded_at)``).

An assertion write of N items is N ``assert`` messages, each with args
``([record], batch)``.  For N > 1 they are one JetStream *atomic batch*
(headers ``Nats-Batch-Id``, ``Nats-Batch-Sequence``, ``Nats-Batch-Commit``
on the last): the stream stores all N at consecutive sequences or none, and
keeps the headers, so every node sees where a group starts and ends and
applies it as one group.  Item ``i`` gets seq ``first + i`` on every node
(:meth:`stemedb.core.writer.Writer.apply_replicated`).  The NATS servers
must allow batches of 10,000 messages (``jetstream { limits { batch {
max_msgs: 10000 } } }``, as the shipped configs do; the default is 1,000).

The message id (``Nats-Msg-Id``, JetStream's de-duplication within the
stream's ``duplicate_window``) is a BLAKE3 hash of the kind and ``args``:
a client that retries a write after a lost answer publishes the same id and
the stream keeps one copy.  A batch carries its id on the commit message
only (the hash of all its items): the stream refuses a batch holding an id
it has seen (``err_code`` 10201), which for us means "already stored".
Epochs and outcomes are the exception: two equal outcome reports are two
events, and a second epoch of one name is a 409 as on a single node, so
their ids cover ``at_us`` too.
"""
from __future__ import annotations

import blake3
import msgspec

from ..model import AssertionRecord

VERSION = 2
KINDS = ("assert", "retract", "vote", "epoch", "outcome")
MAX_BATCH = 10_000                  # items of one atomic batch (the API's batch limit)
DUPLICATE_IN_BATCH = 10201          # JetStream: "atomic publish batch contains duplicate message id"

_enc = msgspec.msgpack.Encoder()
_head = msgspec.msgpack.Decoder(tuple[int, int, msgspec.Raw])
_assert_args = msgspec.msgpack.Decoder(tuple[list[AssertionRecord], bool])
_any = msgspec.msgpack.Decoder()


def _id(kind: str, bodies: list[bytes], at_us: int) -> str:
    h = blake3.blake3(kind.encode() + b"\0")
    for b in bodies:
        h.update(len(b).to_bytes(4, "little"))
        h.update(b)
    if kind in ("outcome", "epoch"):
        h.update(at_us.to_bytes(8, "little", signed=True))
    return h.hexdigest()


def encode(kind: str, args: tuple, at_us: int) -> tuple[list[bytes], str]:
    """``(payloads, message id)`` for a validated write: one payload per
    record (several only for an assertion batch), and the id of the write."""
    if kind not in KINDS:
        raise ValueError(f"unknown write kind {kind!r}")
    if kind == "assert":
        recs, batch = args
        if not 1 <= len(recs) <= MAX_BATCH:
            raise ValueError(f"an assertion write holds 1 to {MAX_BATCH} records")
        bodies = [_enc.encode([[r], batch]) for r in recs]
    else:
        bodies = [_enc.encode(list(args))]
    payloads = [_enc.encode([VERSION, at_us, msgspec.Raw(b)]) for b in bodies]
    return payloads, _id(kind, bodies, at_us)


def decode(kind: str, payload: bytes) -> tuple[tuple, int]:
    """``(args, at_us)`` of a message (raises ValueError on bytes we did not write)."""
    try:
        version, at_us, raw = _head.decode(payload)
        if version != VERSION:
            raise ValueError(f"message version {version}, this node reads {VERSION} (a stream "
                             f"written by another StemeDB release: start a new stream)")
        if kind == "assert":
            recs, batch = _assert_args.decode(raw)
            return (recs, batch), at_us
        if kind not in KINDS:
            raise ValueError(f"unknown write kind {kind!r}")
        return tuple(_any.decode(raw)), at_us
    except msgspec.DecodeError as exc:
        raise ValueError(f"undecodable {kind} message: {exc}") from None
