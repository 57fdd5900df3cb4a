"""One adapter interface over StemeDB and its peers (sqlite3, LMDB, RocksDB).

Every adapter does the same work for the same call:

``put(a)``
    one assertion, one durable commit, returns after fsync (W1, W2).  Safe to
    call from many threads at once.
``put_batch(items)``
    one atomic durable commit of many assertions (W3).
``candidates(concept_path, predicate)``
    every stored assertion of that key, decoded (R1).
``prefix(prefix)``
    every stored assertion whose concept path starts with ``prefix``, a
    ``domain/entity/`` string with its trailing slash, decoded (R2).
``count()``, ``close()``.

What "the same work" means, decided once here (README "Fairness"):

* **Serialize, hash, index, store.** A peer serializes the request dict with
  orjson (sorted keys), takes BLAKE3-256 of those bytes as the record's key
  (StemeDB's hash is BLAKE3-256 of the JCS form, which orjson with sorted
  keys equals for this workload), stamps ``recorded_at``, stores the full
  record and its ``(concept_path, predicate)`` index entry in the same
  transaction.  Peers are *not* handed a precomputed hash: hashing is part
  of a content-addressed write.
* **StemeDB does more per write**, and that is counted against it: it
  validates every field per the contract, resolves ``source_class`` and
  ``lifecycle``, checks for an existing hash (``created``) and assigns a seq.
  A peer's insert is "insert if absent" where the engine has it natively
  (sqlite ``INSERT OR IGNORE``, LMDB ``overwrite=False``); RocksDB writes
  blindly, which is correct for a content-addressed key (same key, same
  bytes) and is what a RocksDB user would do.
* **Reads return decoded records** for every engine: peers ``orjson.loads``
  each record into a dict (sqlite builds the dict from its columns and
  decodes the JSON value column); StemeDB returns its ``Assertion`` objects.
  StemeDB's ``query`` also resolves the lens (a winner per key), which the
  peers do not do; that too is counted against it.
* **Durability**: sqlite ``journal_mode=WAL`` + ``synchronous=FULL`` (fsync of
  the WAL at each commit); LMDB ``sync=True, metasync=True``; RocksDB
  ``WriteOptions.sync = True`` (fsync of its WAL at each write); StemeDB
  ``durability="fsync"``.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time

import blake3
import orjson

_SORT = orjson.OPT_SORT_KEYS
LMDB_MAP_SIZE = 64 << 30          # address space only; the file grows with use


def now_us() -> int:
    return time.time_ns() // 1000


def encode_record(a: dict) -> tuple[bytes, bytes]:
    """(32-byte BLAKE3 key, stored JSON bytes) for a peer.

    The stored bytes are the sorted-key serialization with ``hash`` and
    ``recorded_at`` spliced in before the closing brace: one serialization,
    one hash, no second ``dumps``.
    """
    body = orjson.dumps(a, option=_SORT)
    h = blake3.blake3(body).digest()
    doc = body[:-1] + b',"hash":"' + h.hex().encode() + b'","recorded_at":' \
        + str(now_us()).encode() + b"}"
    return h, doc


def dir_bytes(path: str) -> dict:
    """Bytes on disk under ``path``: allocated (st_blocks) and apparent."""
    alloc = apparent = files = 0
    for root, _dirs, names in os.walk(path):
        for n in names:
            try:
                st = os.stat(os.path.join(root, n))
            except FileNotFoundError:
                continue
            alloc += st.st_blocks * 512
            apparent += st.st_size
            files += 1
    return {"allocated": alloc, "apparent": apparent, "files": files}


class EngineUnavailable(RuntimeError):
    """The engine cannot run here (not installed, or not implemented yet)."""


class Adapter:
    """The common interface; see the module docstring for the contract."""

    name = "?"
    durable_put_threads_safe = True

    def __init__(self, path: str):
        self.path = path

    @classmethod
    def available(cls) -> str | None:
        """None when usable, else the reason it is not."""
        return None

    def put(self, a: dict) -> None: raise NotImplementedError
    def put_batch(self, items: list[dict]) -> None: raise NotImplementedError
    def candidates(self, concept_path: str, predicate: str) -> list: raise NotImplementedError
    def prefix(self, prefix: str) -> list: raise NotImplementedError
    def count(self) -> int: raise NotImplementedError
    def close(self) -> None: raise NotImplementedError
    def info(self) -> dict: return {}

    def disk(self) -> dict:
        return dir_bytes(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------ sqlite3

class SqliteAdapter(Adapter):
    """sqlite3, WAL journal, ``synchronous=FULL``.

    ``seq INTEGER PRIMARY KEY`` (the rowid, like StemeDB's seq), ``hash`` a
    32-byte BLOB with a UNIQUE index, the fields as columns with ``value``
    JSON-encoded, and an index on ``(concept_path, predicate)``.  One
    connection shared by all threads behind a lock: measured faster for W2
    than a connection per thread, whose busy handler sleeps (milliseconds)
    when the write lock is taken (``bench/README.md``).
    """

    name = "sqlite"
    _COLS = ("concept_path", "predicate", "value", "confidence", "source", "source_class",
             "lifecycle", "parent_hash", "epoch", "timestamp", "recorded_at")

    def __init__(self, path: str):
        super().__init__(path)
        os.makedirs(path, exist_ok=True)
        self.file = os.path.join(path, "bench.sqlite3")
        self.db = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS assertions ("
            " seq INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE,"
            " concept_path TEXT NOT NULL, predicate TEXT NOT NULL, value TEXT NOT NULL,"
            " confidence REAL NOT NULL, source TEXT, source_class TEXT, lifecycle TEXT,"
            " parent_hash TEXT, epoch TEXT, timestamp INTEGER, recorded_at INTEGER NOT NULL)")
        self.db.execute("CREATE INDEX IF NOT EXISTS assertions_cp_pred"
                        " ON assertions(concept_path, predicate)")
        self.lock = threading.Lock()
        self._insert = ("INSERT OR IGNORE INTO assertions(hash, " + ", ".join(self._COLS)
                        + ") VALUES (" + ", ".join("?" * (len(self._COLS) + 1)) + ")")

    @staticmethod
    def _row(a: dict) -> tuple:
        h = blake3.blake3(orjson.dumps(a, option=_SORT)).digest()
        g = a.get
        return (h, a["concept_path"], a["predicate"], orjson.dumps(a["value"]).decode(),
                a["confidence"], g("source"), g("source_class"), g("lifecycle"),
                g("parent_hash"), g("epoch"), g("timestamp"), now_us())

    def put(self, a):
        row = self._row(a)
        with self.lock:
            self.db.execute(self._insert, row)       # autocommit: one durable commit

    def put_batch(self, items):
        rows = [self._row(a) for a in items]
        with self.lock:
            self.db.execute("BEGIN")
            try:
                self.db.executemany(self._insert, rows)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    _SELECT = ("SELECT hash, concept_path, predicate, value, confidence, source, source_class,"
               " lifecycle, parent_hash, epoch, timestamp, recorded_at, seq FROM assertions ")

    @staticmethod
    def _decode(rows) -> list[dict]:
        loads = orjson.loads
        return [{"hash": r[0].hex(), "concept_path": r[1], "predicate": r[2],
                 "value": loads(r[3]), "confidence": r[4], "source": r[5],
                 "source_class": r[6], "lifecycle": r[7], "parent_hash": r[8],
                 "epoch": r[9], "timestamp": r[10], "recorded_at": r[11], "seq": r[12]}
                for r in rows]

    def candidates(self, concept_path, predicate):
        with self.lock:
            rows = self.db.execute(self._SELECT + "WHERE concept_path = ? AND predicate = ?",
                                   (concept_path, predicate)).fetchall()
        return self._decode(rows)

    def prefix(self, prefix):
        # A range on the index (LIKE would not use it without
        # case_sensitive_like); '/' + 1 == '0' closes the range.
        hi = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        with self.lock:
            rows = self.db.execute(self._SELECT + "WHERE concept_path >= ? AND concept_path < ?",
                                   (prefix, hi)).fetchall()
        return self._decode(rows)

    def count(self):
        with self.lock:
            return self.db.execute("SELECT count(*) FROM assertions").fetchone()[0]


    def close(self):
        if self.db is not None:
            self.db.close()          # the last connection checkpoints and removes the WAL
            self.db = None

    def info(self):
        return {"sqlite_version": sqlite3.sqlite_version, "journal_mode": "wal",
                "synchronous": "FULL"}


# --------------------------------------------------------------------- LMDB

class LmdbAdapter(Adapter):
    """LMDB (py-lmdb), ``sync=True``: every write transaction's commit syncs.

    ``main``: 32-byte hash -> record JSON.  ``by_key`` (dupsort):
    ``concept_path \\0 predicate`` -> hash; R1 walks one key's duplicates, R2
    a ``set_range`` prefix scan.  Reads use ``buffers=True`` (zero-copy) and
    decode with orjson inside the read transaction.  LMDB's 511-byte key
    limit is fine for this workload (keys < 80 bytes).
    """

    name = "lmdb"

    @classmethod
    def available(cls):
        try:
            import lmdb  # noqa: F401
        except ImportError as e:
            return f"lmdb not installed ({e})"
        return None

    def __init__(self, path: str):
        super().__init__(path)
        import lmdb
        os.makedirs(path, exist_ok=True)
        self.env = lmdb.open(path, map_size=LMDB_MAP_SIZE, max_dbs=2, sync=True,
                             metasync=True, writemap=False, readahead=False, lock=True,
                             max_spare_txns=16)
        self.main = self.env.open_db(b"main")
        self.by_key = self.env.open_db(b"by_key", dupsort=True)

    def put(self, a):
        h, doc = encode_record(a)
        k = (a["concept_path"] + "\0" + a["predicate"]).encode()
        with self.env.begin(write=True) as txn:
            if txn.put(h, doc, db=self.main, overwrite=False):
                txn.put(k, h, db=self.by_key)

    def put_batch(self, items):
        recs = [(encode_record(a), (a["concept_path"] + "\0" + a["predicate"]).encode())
                for a in items]
        with self.env.begin(write=True) as txn:
            for (h, doc), k in recs:
                if txn.put(h, doc, db=self.main, overwrite=False):
                    txn.put(k, h, db=self.by_key)

    def candidates(self, concept_path, predicate):
        k = (concept_path + "\0" + predicate).encode()
        loads = orjson.loads
        with self.env.begin(buffers=True) as txn:
            cur = txn.cursor(db=self.by_key)
            if not cur.set_key(k):
                return []
            get, main = txn.get, self.main
            return [loads(get(h, db=main)) for h in cur.iternext_dup()]

    def prefix(self, prefix):
        p = prefix.encode()
        loads = orjson.loads
        out = []
        with self.env.begin(buffers=True) as txn:
            cur = txn.cursor(db=self.by_key)
            get, main = txn.get, self.main
            if not cur.set_range(p):
                return out
            for k, h in cur.iternext():
                if bytes(k[:len(p)]) != p:
                    break
                out.append(loads(get(h, db=main)))
        return out

    def count(self):
        with self.env.begin() as txn:
            return txn.stat(self.main)["entries"]


    def close(self):
        if self.env is not None:
            self.env.close()
            self.env = None

    def info(self):
        import lmdb
        return {"lmdb_version": ".".join(map(str, lmdb.version())), "py_lmdb": lmdb.__version__,
                "sync": True}


# ------------------------------------------------------------------ RocksDB

class RocksAdapter(Adapter):
    """RocksDB (rocksdict, raw mode), ``WriteOptions.sync = True``.

    One key space with two prefixes designed for seeks: ``a`` + hash ->
    record JSON; ``i`` + concept_path + ``\\0`` + predicate + ``\\0`` + hash ->
    empty.  R1 seeks to ``i cp \\0 pred \\0``, R2 to ``i domain/entity/``,
    then multi-gets the records.  Each put is one WriteBatch (record + index
    entry).  Default options plus a 10-bit bloom filter.
    """

    name = "rocksdb"

    @classmethod
    def available(cls):
        try:
            import rocksdict  # noqa: F401 - only whether it imports
        except ImportError as e:
            return f"rocksdict not installed ({e})"
        return None

    def __init__(self, path: str):
        super().__init__(path)
        import rocksdict as r
        self.r = r
        opts = r.Options(raw_mode=True)
        opts.create_if_missing(True)
        table = r.BlockBasedOptions()
        table.set_bloom_filter(10, False)
        opts.set_block_based_table_factory(table)
        self.db = r.Rdict(os.path.join(path, "rocksdb"), opts)
        wo = r.WriteOptions()
        wo.sync = True
        self.db.set_write_options(wo)

    def _batch(self, items):
        wb = self.r.WriteBatch(raw_mode=True)
        for a in items:
            h, doc = encode_record(a)
            wb.put(b"a" + h, doc)
            wb.put(b"i" + (a["concept_path"] + "\0" + a["predicate"] + "\0").encode() + h, b"")
        return wb

    def put(self, a):
        self.db.write(self._batch((a,)))

    def put_batch(self, items):
        self.db.write(self._batch(items))

    def _scan(self, p: bytes) -> list:
        hashes = []
        it = self.db.iter()
        it.seek(p)
        while it.valid():
            k = it.key()
            if not k.startswith(p):
                break
            hashes.append(b"a" + k[-32:])
            it.next()
        del it
        if not hashes:
            return []
        loads = orjson.loads
        return [loads(v) for v in self.db.get(hashes)]

    def candidates(self, concept_path, predicate):
        return self._scan(b"i" + (concept_path + "\0" + predicate + "\0").encode())

    def prefix(self, prefix):
        return self._scan(b"i" + prefix.encode())

    def count(self):
        n = 0
        for k in self.db.keys(from_key=b"a"):
            if not k.startswith(b"a"):
                break
            n += 1
        return n


    def close(self):
        if self.db is not None:
            self.db.close()
            self.db = None

    def info(self):
        from importlib.metadata import version
        return {"rocksdict": version("rocksdict"), "sync": True, "bloom_bits": 10}


# ------------------------------------------------------------------ StemeDB

_IMPLEMENTATION: list[str] = []


def stemedb_implementation() -> str:
    """``store.implementation`` ("compiled" or "pure") of this process."""
    if not _IMPLEMENTATION:
        stemedb_unavailable()
    return _IMPLEMENTATION[0] if _IMPLEMENTATION else "unavailable"


def stemedb_unavailable() -> str | None:
    """None when ``open_store`` works here, else why not (one line)."""
    import tempfile
    try:
        from stemedb import open_store
    except Exception as e:  # noqa: BLE001 - any import failure is the reason
        return f"import stemedb.open_store failed: {type(e).__name__}: {e}"
    d = tempfile.mkdtemp(prefix="stemedb-probe-")
    try:
        s = open_store(os.path.join(d, "data"), durability="none")
        try:
            r = s.put({"concept_path": "bench/probe", "predicate": "p", "value": 1,
                       "confidence": 0.5})
            if r is None or not getattr(r, "hash", None):
                return "store.put returned no PutResult (the engine is a skeleton)"
            if s.get(r.hash) is None:
                return "store.get did not return the assertion just put"
            _IMPLEMENTATION[:] = [str(getattr(s, "implementation", "?"))]
        finally:
            s.close()
    except NotImplementedError as e:
        return f"open_store is not implemented yet (NotImplementedError{': ' + str(e) if str(e) else ''})"
    except Exception as e:  # noqa: BLE001
        return f"StemeDB probe failed: {type(e).__name__}: {e}"
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return None


class StemeAdapter(Adapter):
    """StemeDB through the embedded API, ``durability="fsync"``.

    ``path`` is the data directory itself (``LOCK``, ``wal/``, ``db/``).
    Reads go through ``store.query`` (the only read API of the contract),
    paging with ``limit=1000`` and ``next_cursor``; R2 asks for
    ``domain/entity`` with ``include_descendants=True`` (the workload stores
    nothing at ``domain/entity`` itself, so that is the prefix's set).
    """

    name = "stemedb"
    MAX_PAGES = 100_000     # a bound on cursor loops, far above any real answer

    @classmethod
    def available(cls):
        return stemedb_unavailable()

    def __init__(self, path: str, durability: str = "fsync", **settings):
        super().__init__(path)
        from stemedb import open_store
        self.store = open_store(path, durability=durability, **settings)

    def put(self, a):
        self.store.put(a)

    def put_batch(self, items):
        self.store.put_batch(items)

    def _all(self, concept_path, **kw) -> list:
        out = []
        cursor = None
        for _ in range(self.MAX_PAGES):
            res = self.store.query(concept_path, limit=1000, cursor=cursor, **kw)
            out.extend(res.assertions)
            cursor = res.next_cursor
            if not cursor:
                return out
        raise RuntimeError(f"query {concept_path!r} {kw} did not finish in {self.MAX_PAGES} pages")

    def candidates(self, concept_path, predicate):
        return self._all(concept_path, predicate=predicate)

    def prefix(self, prefix):
        return self._all(prefix.rstrip("/"), include_descendants=True)

    def settle(self):
        """Write the queued query audit entries (bench.suite._reads times it
        with the reads that queued them)."""
        audit = self.store.reader.audit
        if audit is not None:
            audit.flush()

    def count(self):
        return self.store.count


    def close(self):
        if self.store is not None:
            self.store.close()
            self.store = None

    @property
    def implementation(self) -> str:
        return getattr(self.store, "implementation", "?")

    def info(self):
        return {"implementation": self.implementation, "durability": "fsync"}


ENGINES: dict[str, type[Adapter]] = {
    "sqlite": SqliteAdapter,
    "lmdb": LmdbAdapter,
    "rocksdb": RocksAdapter,
    "stemedb": StemeAdapter,
}
PEERS = ("sqlite", "lmdb", "rocksdb")


def open_engine(name: str, path: str) -> Adapter:
    try:
        cls = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; the engines are {', '.join(ENGINES)}") from None
    return cls(path)
