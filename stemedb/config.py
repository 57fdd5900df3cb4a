"""Settings: one frozen dataclass, one documented table.

Every field maps to a ``STEMEDB_<NAME>`` environment variable, read only at
the edges (the CLI and the gunicorn entry) through :func:`Settings.from_env`.
``.env.example`` lists every variable with its default and unit; a unit test
keeps the two in step.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field

from .errors import ConfigError

DURABILITY_MODES = ("fsync", "batch", "none")
MIN_AUDIT_MAX_BYTES = 64 * 1024
MAX_READ_CACHE_BYTES = 1 << 40
# Settings.read_cache_bytes.  128 MiB since session 12: once records were
# read by pread (no WAL pages mapped; core/segment.py), RSS per assertion at
# 1,000,000 with a 48 MiB cache full read 111-120 bytes against a target of
# 300, and bench_http's query working set (4,771 answers of ~20 candidates,
# ~81 MB charged) first fits at 96 MiB (bench/results/http-2026-11-27-session12.md).
# 128 MiB leaves it room; bench/results/million-2026-11-27-session12.md has
# the RSS with this bound full.
DEFAULT_READ_CACHE_BYTES = 128 * 1024 * 1024

DEFAULT_RATE_LIMITS = (
    "assert=2000/second;batch=100/second;query=2000/second;"
    "retract=10/second;vote=1000/second;default=1000/second"
)

# ``STEMEDB_*`` variables the project reads that are not Settings fields.  This
# is the one list: the start-up warning about unknown variables
# (:func:`unknown_variables`) accepts these and the Settings fields, nothing else.
OTHER_VARIABLES = {
    # contract, "Cluster": read by the cluster node, not by a single store
    "STEMEDB_CLUSTER_NATS": "cluster mode: comma-separated NATS URLs",
    "STEMEDB_CLUSTER_STREAM": "cluster mode: the JetStream stream's name",
    "STEMEDB_NODE_ID": "cluster mode: this node's name",
    "STEMEDB_READ_WAIT_MS": "cluster mode: how long a read with min_seq waits",
    # internal: set by `stemedb serve`'s post_fork hook for the worker
    "STEMEDB_WORKER_RESPAWN": "internal: a reloaded worker waits for LOCK",
    # the shell scripts (scripts/_stemedb-cli.sh)
    "STEMEDB_CLI": "scripts: the stemedb command to run",
    "STEMEDB_PYTHON": "scripts: the Python next to that command",
    # tests and benchmarks
    "STEMEDB_SCHEMATHESIS_EXAMPLES": "tests: examples per schemathesis operation",
    "STEMEDB_BENCH_N": "benchmarks: workload size",
}


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
    log_format: str = field(default="text", metadata={"unit": "text|json"})
    access_log: str = field(default="on", metadata={"unit": "on|off"})
    pure_python: bool = field(default=False, metadata={"unit": "0|1"})
    require_fast: bool = field(default=False, metadata={"unit": "0|1"})
    audit: str = field(default="on", metadata={"unit": "on|off"})
    audit_max_bytes: int = field(default=1024 * 1024 * 1024, metadata={"unit": "bytes"})
    read_cache_bytes: int = field(default=DEFAULT_READ_CACHE_BYTES, metadata={"unit": "bytes"})

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
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"STEMEDB_LOG_FORMAT must be text or json, got "
                              f"{self.log_format!r}", field="log_format")
        if self.access_log not in ("on", "off"):
            raise ConfigError(f"STEMEDB_ACCESS_LOG must be on or off, got {self.access_log!r}",
                              field="access_log")
        if type(self.audit_max_bytes) is not int or self.audit_max_bytes < MIN_AUDIT_MAX_BYTES:
            raise ConfigError(
                f"STEMEDB_AUDIT_MAX_BYTES must be a whole number of bytes, at least "
                f"{MIN_AUDIT_MAX_BYTES} (64 KiB), got {self.audit_max_bytes!r}; to keep no "
                f"audit trail at all, set STEMEDB_AUDIT=off", field="audit_max_bytes")
        if (type(self.read_cache_bytes) is not int or self.read_cache_bytes < 0
                or self.read_cache_bytes > MAX_READ_CACHE_BYTES):
            raise ConfigError(
                f"STEMEDB_READ_CACHE_BYTES must be a whole number of bytes from 0 (no read "
                f"cache) to {MAX_READ_CACHE_BYTES} (1 TiB), got {self.read_cache_bytes!r}",
                field="read_cache_bytes")
        if self.snapshot_interval < 0:
            raise ConfigError(f"STEMEDB_SNAPSHOT_INTERVAL must be >= 0 records (0 = snapshot "
                              f"only at clean shutdown), got {self.snapshot_interval}",
                              field="snapshot_interval")
        if self.lock_timeout < 0:
            raise ConfigError(f"STEMEDB_LOCK_TIMEOUT must be >= 0 seconds, got "
                              f"{self.lock_timeout}", field="lock_timeout")

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


def known_variables() -> set[str]:
    """Every ``STEMEDB_*`` name the project reads: the Settings and OTHER_VARIABLES."""
    return {Settings.env_name(f.name) for f in dataclasses.fields(Settings)} | set(OTHER_VARIABLES)


def unknown_variables(environ=None) -> list[str]:
    """One warning per ``STEMEDB_*`` variable that is no setting, with the
    closest valid name when there is one (a misspelt setting would otherwise
    be silently ignored and its default used)."""
    environ = os.environ if environ is None else environ
    known = known_variables()
    out = []
    for name in sorted(environ):
        if not name.startswith("STEMEDB_") or name in known:
            continue
        # Compare the parts after the prefix: every name shares "STEMEDB_",
        # which would make anything look close to something.
        close = difflib.get_close_matches(name[8:], sorted(k[8:] for k in known), n=1,
                                          cutoff=0.6)
        if close:
            out.append(f"{name} is not a StemeDB setting; did you mean STEMEDB_{close[0]}?")
        else:
            out.append(f"{name} is not a StemeDB setting (.env.example lists them); "
                       f"it is ignored")
    return out


_ENV_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)")
_DQ_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "$": "$"}


def read_env_file(path: str) -> dict[str, str]:
    """``KEY=VALUE`` lines of a ``.env`` file.

    Blank lines and ``#`` comments are skipped; ``export KEY=VALUE`` is
    accepted; a value may be in single quotes (taken literally) or double
    quotes (``\\"``, ``\\\\``, ``\\n``, ``\\t`` escapes), and an unquoted value
    ends at `` #`` (a comment) with surrounding white space trimmed.  No
    variable expansion, no multi-line values.  Anything else is a ConfigError
    naming the file and line, never a line silently skipped.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    out = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        m = _ENV_LINE.fullmatch(text)
        if not m:
            raise ConfigError(f"{path}, line {number}: expected KEY=VALUE (a name of letters, "
                              f"digits and _, then =), got {line!r}")
        try:
            out[m.group(1)] = _env_value(m.group(2))
        except ValueError as exc:
            raise ConfigError(f"{path}, line {number}: {exc}, got {line!r}",
                              field=m.group(1)) from None
    return out


def _env_value(raw: str) -> str:
    if not raw or raw[0] not in "'\"":
        return re.split(r"\s#", raw, maxsplit=1)[0].rstrip()
    quote, i = raw[0], 1
    chars: list[str] = []
    while i < len(raw):
        c = raw[i]
        if c == quote:
            rest = raw[i + 1:].strip()
            if rest and not rest.startswith("#"):
                raise ValueError(f"text after the closing {quote} (quote the whole value)")
            return "".join(chars)
        if c == "\\" and quote == '"' and i + 1 < len(raw):
            nxt = raw[i + 1]
            if nxt not in _DQ_ESCAPES:
                raise ValueError(f"unknown escape \\{nxt} in a double-quoted value")
            chars.append(_DQ_ESCAPES[nxt])
            i += 2
            continue
        chars.append(c)
        i += 1
    raise ValueError(f"the value opens with {quote} but never closes it")


def load_env_file(path: str = ".env", environ=None) -> dict[str, str]:
    """Read ``path`` when it exists and set each of its variables that the
    environment does not already have (the environment wins).  Returns what
    was set.  ConfigError for a malformed line."""
    environ = os.environ if environ is None else environ
    if not os.path.isfile(path):
        return {}
    applied = {}
    for key, value in read_env_file(path).items():
        if key not in environ:
            environ[key] = value
            applied[key] = value
    return applied
