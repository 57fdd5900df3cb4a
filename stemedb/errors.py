"""The whole exception tree of StemeDB.

Every error is a ``StemeError``.  Errors caused by bad input also subclass
``ValueError`` (or ``LookupError`` for unknown things) so callers who do not
know StemeDB can still catch them the usual way.  Each carries the data at
fault as attributes (``field``, ``file``, ``offset``) and a message that says
what was expected and how to fix it.  ``code`` is the snake_case name used in
the HTTP error body.
"""
from __future__ import annotations

__all__ = [
    "StemeError", "ValidationError", "InvalidSignature", "SignatureRequired",
    "UnknownReference", "NotFound", "Conflict", "StaleVote", "StoreClosed", "StoreLocked",
    "StoreFaulted", "CorruptionError", "ChecksumMismatch", "BadMagic",
    "UnsupportedFormat", "ConfigError",
]


class StemeError(Exception):
    """Base of every StemeDB error."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class ValidationError(StemeError, ValueError):
    """A request field is missing, unknown, malformed or out of range."""

    code = "invalid_field"
    status = 400

    def prefixed(self, prefix: str) -> "ValidationError":
        """The same error with ``prefix`` in front of the field (batch items)."""
        field = f"{prefix}.{self.field}" if self.field else prefix
        err = type(self)(self.message, field=field)
        err.code = self.code
        return err


class InvalidSignature(ValidationError):
    code = "invalid_signature"


class SignatureRequired(ValidationError):
    code = "signature_required"


class UnknownReference(ValidationError, LookupError):
    """``parent_hash``, ``derived_from`` or ``epoch`` names nothing stored."""

    code = "unknown_reference"


class NotFound(StemeError, LookupError):
    code = "not_found"
    status = 404


class Conflict(StemeError):
    """A unique name (an epoch) already exists."""

    code = "conflict"
    status = 409


class StaleVote(Conflict):
    """An agent's vote that is not newer than the vote it already has on that
    assertion (so an old signed vote cannot be replayed to undo a newer one)."""

    code = "stale_vote"


class StoreClosed(StemeError):
    code = "store_closed"
    status = 503


class StoreLocked(StemeError):
    """Another process holds ``LOCK``."""

    code = "store_locked"
    status = 503

    def __init__(self, message: str, *, pid: int | None = None):
        super().__init__(message)
        self.pid = pid


class StoreFaulted(StemeError):
    """A write or fsync failed; the store refuses writes until reopened."""

    code = "storage_fault"
    status = 503


class CorruptionError(StemeError):
    """The files on disk are not what StemeDB wrote."""

    code = "corruption"

    def __init__(self, message: str, *, file: str | None = None, offset: int | None = None):
        super().__init__(message)
        self.file = file
        self.offset = offset


class ChecksumMismatch(CorruptionError):
    code = "checksum_mismatch"


class BadMagic(CorruptionError):
    code = "bad_magic"


class UnsupportedFormat(CorruptionError):
    code = "unsupported_format"


class ConfigError(StemeError, ValueError):
    code = "invalid_setting"
