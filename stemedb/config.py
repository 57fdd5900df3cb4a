"""Settings: one frozen dataclass, one documented table.

Every field maps to a ``STEMEDB_<NAME>`` environment variable, read only at
the edges (the CLI and the gunicorn entry) through :func:`Settings.from_env`.
``.env.example`` lists every variable with its default and unit; a unit test
keeps the two in step.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from .errors import ConfigError

DURABILITY_MODES = ("fsync", "batch", "none")
MIN_AUDIT_MAX_BYTES = 64 * 1024

DEFAULT_RATE_LIMITS = (
    "assert=2000/second;batch=100/second;query=2000/second;"
    "retract=10/second;vote=1000/second;default=1000/second"
)


@dataclass(frozen=True)
class Settings:
    """StemeDB settings.  ``unit`` in each field's metadata is documentation."""

    data_dir: str = field(default="./data", metadata={"unit": "path"})
    bind: str = field(default="127.0.0.1:18180", metadata={"unit": "host:port"})
    dashboard_bind: str = field(default="127.0.0.1:18188", metadata={"unit": "host:port"})
    durability: str = field(default="fsync", metadata={"unit": "fsync|batch|none"})
    segment_size: int = field(default=64 * 1024 * 1024, metadata={"unit": "bytes"})
    batch_delay_ms: float = field(default=2.0, metadata={"unit": "milliseconds"})
    snapshot_interval: int = field(default=100_000, metadata={"unit": "records"})
    lock_timeout: float = field(default=0.0, metadata={"unit": "seconds"})
    api_keys_file: str | None = field(default=None, metadata={"unit": "path"})
    allow_anonymous: bool = field(default=False, metadata={"unit": "0|1"})
    require_signatures: bool = field(default=False, metadata={"unit": "0|1"})
    rate_limits: str = field(default=DEFAULT_RATE_LIMITS, metadata={"unit": "endpoint=N/period;..."})
    trusted_proxies: str | None = field(default=None, metadata={"unit": "comma-separated addresses"})
    metrics_require_key: bool = field(default=False, metadata={"unit": "0|1"})
    backup_dir: str = field(default="./backups", metadata={"unit": "path"})
    archive_s3: str | None = field(default=None, metadata={"unit": "bucket/prefix"})
    s3_endpoint_url: str | None = field(default=None, metadata={"unit": "URL"})
    threads: int = field(default=16, metadata={"unit": "threads"})
    graceful_timeout: int = field(default=25, metadata={"unit": "seconds"})
    max_body_bytes: int = field(default=1024 * 1024, metadata={"unit": "bytes"})
    max_batch_body_bytes: int = field(default=16 * 1024 * 1024, metadata={"unit": "bytes"})
    log_level: str = field(default="info", metadata={"unit": "debug|info|warning|error"})
    pure_python: bool = field(default=False, metadata={"unit": "0|1"})
    require_fast: bool = field(default=False, metadata={"unit": "0|1"})
    audit: str = field(default="on", metadata={"unit": "on|off"})
    audit_max_bytes: int = field(default=1024 * 1024 * 1024, metadata={"unit": "bytes"})

    def __post_init__(self):
        if self.durability not in DURABILITY_MODES:
            raise ConfigError(
                f"STEMEDB_DURABILITY must be one of {', '.join(DURABILITY_MODES)}, "
                f"got {self.durability!r}", field="durability")
        if self.segment_size < 4096:
            raise ConfigError(
                f"STEMEDB_SEGMENT_SIZE must be at least 4096 bytes, got {self.segment_size}",
                field="segment_size")
        if self.batch_delay_ms < 0:
            raise ConfigError("STEMEDB_BATCH_DELAY_MS must be >= 0", field="batch_delay_ms")
        if self.audit not in ("on", "off"):
            raise ConfigError(f"STEMEDB_AUDIT must be on or off, got {self.audit!r}",
                              field="audit")
        if type(self.audit_max_bytes) is not int or self.audit_max_bytes < MIN_AUDIT_MAX_BYTES:
            raise ConfigError(
                f"STEMEDB_AUDIT_MAX_BYTES must be a whole number of bytes, at least "
                f"{MIN_AUDIT_MAX_BYTES} (64 KiB), got {self.audit_max_bytes!r}; to keep no "
                f"audit trail at all, set STEMEDB_AUDIT=off", field="audit_max_bytes")

    @staticmethod
    def env_name(name: str) -> str:
        return "STEMEDB_" + name.upper()

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Settings":
        """Settings from ``STEMEDB_*`` variables; ``overrides`` win."""
        environ = os.environ if environ is None else environ
        kwargs = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(cls.env_name(f.name))
            if raw is None or raw == "":
                continue
            kwargs[f.name] = _parse(f, raw)
        kwargs.update(overrides)
        return cls(**kwargs)


def _parse(f: dataclasses.Field, raw: str):
    name = Settings.env_name(f.name)
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "bool":
            if raw.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if raw.strip().lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a {kind} ({f.metadata.get('unit')}), got {raw!r}",
                          field=f.name) from None
    return raw
