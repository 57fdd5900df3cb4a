"""API keys: the keys file, constant-time checks, scopes, and the bind rule.

The keys file (``STEMEDB_API_KEYS_FILE``) is JSON::

    {"keys": [{"id": "ingest", "sha256": "<hex of SHA-256 of the key>",
               "scopes": ["write"]}]}

Only the SHA-256 of each key is stored; ``stemedb keys add`` prints a new key
once.  A presented key is hashed and compared with *every* stored hash by
:func:`hmac.compare_digest`, so neither the comparison nor the number of
comparisons depends on which key (if any) matched.  Scopes are ranked:
``admin`` implies ``write``, which implies ``read``.  The file is re-read
when its modification time changes (checked at most once a second), so a key
added while the server runs works without a restart.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass

from ..errors import ConfigError

SCOPES = ("read", "write", "admin")
SCOPE_RANK = {name: i for i, name in enumerate(SCOPES)}
_HEX64 = re.compile(r"[0-9a-fA-F]{64}\Z")
_ID_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,128}\Z")


@dataclass(frozen=True)
class ApiKey:
    id: str
    sha256: str
    scopes: frozenset

    @property
    def rank(self) -> int:
        return max(SCOPE_RANK[s] for s in self.scopes)

    def allows(self, scope: str) -> bool:
        return self.rank >= SCOPE_RANK[scope]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def parse_keys(doc, source: str = "keys file") -> list[ApiKey]:
    """Validate a keys document; :class:`ConfigError` says what is wrong where."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ConfigError(f'{source}: expected {{"keys": [{{"id", "sha256", "scopes"}}, ...]}}',
                          field="api_keys_file")
    keys, seen = [], set()
    for i, item in enumerate(doc["keys"]):
        where = f"{source}: keys[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be an object", field="api_keys_file")
        kid, digest, scopes = item.get("id"), item.get("sha256"), item.get("scopes")
        if not isinstance(kid, str) or not _ID_RE.match(kid):
            raise ConfigError(f"{where}.id must be 1-128 characters of letters, digits, _.:@-",
                              field="api_keys_file")
        if kid in seen:
            raise ConfigError(f"{where}.id {kid!r} appears twice", field="api_keys_file")
        if not isinstance(digest, str) or not _HEX64.match(digest):
            raise ConfigError(f"{where}.sha256 must be the 64 hex characters of the key's SHA-256",
                              field="api_keys_file")
        if (not isinstance(scopes, list) or not scopes
                or any(s not in SCOPE_RANK for s in scopes)):
            raise ConfigError(f"{where}.scopes must be a non-empty list of {', '.join(SCOPES)}",
                              field="api_keys_file")
        seen.add(kid)
        keys.append(ApiKey(kid, digest.lower(), frozenset(scopes)))
    return keys


def load_keys_file(path: str) -> list[ApiKey]:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except FileNotFoundError:
        raise ConfigError(f"STEMEDB_API_KEYS_FILE names {path}, which does not exist; create it "
                          f"with `stemedb keys add --id NAME --scopes read`",
                          field="api_keys_file") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the keys file {path}: {exc}", field="api_keys_file") from None
    return parse_keys(doc, path)


class KeyRing:
    """The configured keys; thread-safe; reloads the file when it changes."""

    RELOAD_EVERY = 1.0  # seconds between stat() calls

    def __init__(self, path: str | None = None, keys: list[ApiKey] | None = None,
                 clock=time.monotonic):
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._mtime = None
        self._checked = clock()
        if keys is not None:
            self._keys = list(keys)
        elif path:
            self._mtime = _mtime(path)
            self._keys = load_keys_file(path)
        else:
            self._keys = []

    @property
    def configured(self) -> bool:
        self._maybe_reload()
        return bool(self._keys)

    def authenticate(self, presented: str | None) -> ApiKey | None:
        """The key whose hash matches ``presented``, else None (constant time)."""
        self._maybe_reload()
        if not presented:
            return None
        digest = hash_key(presented).encode()
        found = None
        for key in self._keys:  # no early exit: timing does not tell which matched
            if hmac.compare_digest(digest, key.sha256.encode()):
                found = key
        return found

    def _maybe_reload(self) -> None:
        if not self.path:
            return
        now = self._clock()
        if now - self._checked < self.RELOAD_EVERY:
            return
        with self._lock:
            if now - self._checked < self.RELOAD_EVERY:
                return
            self._checked = now
            mtime = _mtime(self.path)
            if mtime == self._mtime:
                return
            try:
                keys = load_keys_file(self.path)
            except ConfigError:
                # A half-edited file must not lock everyone out (or let everyone
                # in): keep the keys we had and try again on the next change.
                import logging
                logging.getLogger("stemedb.http").error(
                    "keys file %s is invalid; keeping the previous keys", self.path)
                self._mtime = mtime
                return
            self._keys, self._mtime = keys, mtime


def _mtime(path: str):
    try:
        st = os.stat(path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)
    except OSError:
        return None


def new_key() -> str:
    """A fresh API key: a recognisable prefix and 256 random bits."""
    return "stm_" + secrets.token_urlsafe(32)


def add_key(path: str, key_id: str, scopes: list[str], *, force: bool = False) -> str:
    """Add a key to the keys file (created when missing) and return the key.

    The file is replaced atomically (temp file, fsync, rename) and kept
    readable by its owner only, since hashes of short keys could be guessed.
    """
    if not _ID_RE.match(key_id or ""):
        raise ConfigError("--id must be 1-128 characters of letters, digits, _.:@-", field="id")
    if not scopes or any(s not in SCOPE_RANK for s in scopes):
        raise ConfigError(f"--scopes must be a comma-separated list of {', '.join(SCOPES)}",
                          field="scopes")
    if os.path.exists(path):
        with open(path, "rb") as f:
            raw = f.read()
        doc = json.loads(raw) if raw.strip() else {"keys": []}
        parse_keys(doc, path)  # refuse to rewrite a file we do not understand
    else:
        doc = {"keys": []}
    existing = [k for k in doc["keys"] if k.get("id") == key_id]
    if existing and not force:
        raise ConfigError(f"a key with id {key_id!r} already exists in {path}; "
                          f"pass --force to replace it", field="id")
    key = new_key()
    doc["keys"] = [k for k in doc["keys"] if k.get("id") != key_id]
    doc["keys"].append({"id": key_id, "sha256": hash_key(key),
                        "scopes": sorted(set(scopes), key=SCOPE_RANK.__getitem__)})
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".keys-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return key


# ---------------------------------------------------------------- the bind

def bind_host(bind: str) -> str | None:
    """The host part of a gunicorn bind (None for a unix socket)."""
    bind = bind.strip()
    if bind.startswith("unix:") or bind.startswith("fd://"):
        return None
    if bind.startswith("["):  # [::1]:18180
        return bind[1:bind.index("]")] if "]" in bind else bind
    if bind.count(":") > 1:  # a bare IPv6 address
        return bind
    return bind.rsplit(":", 1)[0] if ":" in bind else bind


def is_loopback(bind: str) -> bool:
    """True for 127.0.0.0/8, ::1, localhost and unix sockets."""
    host = bind_host(bind)
    if host is None:
        return True
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or empty (all interfaces): not provably loopback


def check_anonymous_bind(binds: list[str], keys_configured: bool, allow_anonymous: bool):
    """The refusal message when an open server would listen beyond loopback."""
    if keys_configured or allow_anonymous:
        return None
    wide = [b for b in binds if not is_loopback(b)]
    if not wide:
        return None
    return (f"refusing to listen on {', '.join(wide)} without API keys: anyone who can reach "
            f"it could read and write. Either create keys (stemedb keys add --id NAME --scopes "
            f"read,write, with STEMEDB_API_KEYS_FILE set), bind to 127.0.0.1, or set "
            f"STEMEDB_ALLOW_ANONYMOUS=1 if the network itself is trusted.")
