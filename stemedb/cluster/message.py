"""One stream message per atomic write: its bytes, its subject, its id.

A message is msgpack ``[version, at_us, args]`` on subject
``<stream>.<kind>`` (kind: ``assert``, ``retract``, ``vote``, ``epoch``,
``outcome``).  ``args`` are the arguments of the writer's write step for
that kind, already validated by the node that took the write; ``at_us`` is
that node's clock when it took it, from which every node derives the same
``recorded_at`` (``max(at_us, the last recorded_at)``).

The message id (``Nats-Msg-Id``, JetStream's de-duplication within the
stream's ``duplicate_window``) is a BLAKE3 hash of the kind and ``args``:
a client that retries a write after a lost answer publishes the same id and
the stream keeps one copy.  Epochs and outcomes are the exception: two
equal outcome reports are two events, and a second epoch of one name is a
409 as on a single node, so their ids cover ``at_us`` too.
"""
from __future__ import annotations

import blake3
import msgspec

from ..model import AssertionRecord

VERSION = 1
SEQ_SPAN = 10_000          # record seq = stream seq * SEQ_SPAN + k; a batch holds <= 10,000
KINDS = ("assert", "retract", "vote", "epoch", "outcome")

_enc = msgspec.msgpack.Encoder()
_head = msgspec.msgpack.Decoder(tuple[int, int, msgspec.Raw])
_assert_args = msgspec.msgpack.Decoder(tuple[list[AssertionRecord], bool])
_any = msgspec.msgpack.Decoder()


def stream_seq_of(seq: int) -> int:
    """The stream sequence of the message that wrote the record with ``seq``."""
    return seq // SEQ_SPAN


def encode(kind: str, args: tuple, at_us: int) -> tuple[bytes, str]:
    """``(payload, message id)`` for a validated write."""
    if kind not in KINDS:
        raise ValueError(f"unknown write kind {kind!r}")
    body = _enc.encode(list(args))
    payload = _enc.encode([VERSION, at_us, msgspec.Raw(body)])
    h = blake3.blake3(kind.encode() + b"\0" + body)
    if kind in ("outcome", "epoch"):
        h.update(at_us.to_bytes(8, "little", signed=True))
    return payload, h.hexdigest()


def decode(kind: str, payload: bytes) -> tuple[tuple, int]:
    """``(args, at_us)`` of a message (raises ValueError on bytes we did not write)."""
    try:
        version, at_us, raw = _head.decode(payload)
        if version != VERSION:
            raise ValueError(f"message version {version}, this node reads {VERSION}")
        if kind == "assert":
            recs, batch = _assert_args.decode(raw)
            return (recs, batch), at_us
        if kind not in KINDS:
            raise ValueError(f"unknown write kind {kind!r}")
        return tuple(_any.decode(raw)), at_us
    except msgspec.DecodeError as exc:
        raise ValueError(f"undecodable {kind} message: {exc}") from None
