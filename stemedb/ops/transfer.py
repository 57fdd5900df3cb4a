"""stemedb import / stemedb export: assertions in and out as JSON Lines.

    stemedb export [FILE] [--data-dir DIR]
    stemedb import FILE|- [--data-dir DIR] [--batch-size 1000]

Both open the store directly (the embedded API), so they run on a stopped
server: a running one holds ``LOCK`` and the command exits 2 saying so.

Export writes one line per stored assertion, exactly as the API returns it
(``GET /v1/assertion/{hash}``), in seq order, and one ``{"epoch": {...}}``
line per epoch at its place in that order, so every line's references
(``parent_hash``, ``derived_from``, ``epoch``) point to lines above it.
Import reads the same lines, or bare request bodies: a stored assertion's
extra fields (``hash``, ``seq``, ``recorded_at``, ``status``,
``retraction``) are ignored, except that ``hash``, when present, must be
what the body hashes to.  It stores them with ``put_batch`` (atomic per
batch); a hash already stored answers ``exists``, so running an import
again after it stopped skips what it stored and goes on.

Moved: assertions and epochs.  Not moved: retractions, votes and outcomes
(an exported retracted assertion is imported active), and ``recorded_at``
and ``seq``, which the target store assigns.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator

import orjson

from ..progress import Progress

if TYPE_CHECKING:
    from ..config import Settings
    from ..core.state import Epoch
    from ..core.store import Store

# The fields of a stored assertion that are not request fields.
STORED_ONLY = ("hash", "seq", "recorded_at", "status", "retraction")
EPOCH_FIELDS = ("name", "supersedes", "description")
EPOCH_STORED_ONLY = ("seq", "recorded_at")
PROGRESS_SECONDS = 5.0

LOCKED_HINT = ("import and export open the store directly: stop the server first "
               "(systemctl stop stemedb-api), or export from a copy of a backup")


class BadLine(Exception):
    """A line that cannot be imported: its number and the field at fault."""

    def __init__(self, lineno: int, field: str | None, message: str):
        super().__init__(message)
        self.lineno = lineno
        self.field = field
        self.message = message

    def __str__(self) -> str:
        where = f"line {self.lineno}" + (f", field {self.field}" if self.field else "")
        return f"{where}: {self.message}"


# ---------------------------------------------------------------- export
def export_lines(store: Store) -> Iterator[bytes]:
    """Every assertion as the API returns it, and every epoch, in seq order."""
    reader = store.reader
    with reader.lock:
        epochs = sorted(reader.state.epochs.values(), key=lambda e: e.seq)
    from ..timeutil import format_time
    e = 0
    for a in reader.in_seq_order():
        while e < len(epochs) and epochs[e].seq < a.seq:
            yield _epoch_line(epochs[e], format_time)
            e += 1
        yield orjson.dumps(a.to_dict())
    for ep in epochs[e:]:
        yield _epoch_line(ep, format_time)


def _epoch_line(ep: Epoch, format_time: Callable[[int], str]) -> bytes:
    return orjson.dumps({"epoch": {"name": ep.name, "supersedes": list(ep.supersedes),
                                   "description": ep.description, "seq": ep.seq,
                                   "recorded_at": format_time(ep.recorded_at)}})


def export(store: Store, out: IO[bytes], progress: Progress | None = None) -> tuple[int, int]:
    """Write the store to ``out``; ``(assertions, epochs)`` written."""
    assertions = epochs = 0
    for line in export_lines(store):
        out.write(line + b"\n")
        is_epoch = line.startswith(b'{"epoch":{')
        if is_epoch:
            epochs += 1
        else:
            assertions += 1
        if progress is not None:
            progress.update(records=0 if is_epoch else 1, bytes=len(line) + 1)
    return assertions, epochs


# ---------------------------------------------------------------- import
class Importer:
    """Stores parsed lines in batches; counts what was created and what existed."""

    def __init__(self, store: Store, *, batch_size: int = 1000, require_signatures: bool = False,
                 progress: Progress | None = None):
        self.store = store
        self.batch_size = batch_size
        self.require_signatures = require_signatures
        self.progress = progress
        self.pending: list[tuple[int, dict[str, Any]]] = []     # (line number, request body)
        self.records = self.created = self.existing = 0
        self.epochs_created = self.epochs_existing = 0
        self.untimed = 0
        self.stored_through = 0                       # the last line number stored
        self.pending_bytes = 0                        # of the lines in pending, for progress

    def add_line(self, lineno: int, raw: bytes) -> None:
        self.pending_bytes += len(raw)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadLine(lineno, None, f"not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise BadLine(lineno, None, "a line must be a JSON object: an assertion, or "
                                        "{\"epoch\": {...}}")
        if isinstance(doc.get("epoch"), dict):
            self.flush()   # the assertions above it go first: the target keeps the order
            self._epoch(lineno, doc)
            self.stored_through = lineno
            return
        self.pending.append((lineno, self._body(lineno, doc)))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def _body(self, lineno: int, doc: dict[str, Any]) -> dict[str, Any]:
        from ..errors import ValidationError
        from ..model import prepare_assertion
        given = doc.get("hash")
        body = {k: v for k, v in doc.items() if k not in STORED_ONLY}
        if "timestamp" not in body:
            self.untimed += 1
        try:
            rec = prepare_assertion(body, require_signatures=self.require_signatures)
        except ValidationError as exc:
            raise BadLine(lineno, exc.field, exc.message) from None
        if given is not None and rec.hash.hex() != given:
            raise BadLine(lineno, "hash", f"the line's fields hash to {rec.hash.hex()}, not to "
                                          f"the hash it gives ({given!r}): a field was changed "
                                          f"after export, or the hash is not StemeDB's")
        return body

    def _epoch(self, lineno: int, doc: dict[str, Any]) -> None:
        from ..errors import Conflict, StemeError
        if len(doc) != 1:
            raise BadLine(lineno, sorted(k for k in doc if k != "epoch")[0],
                          "an epoch line has the one key \"epoch\"")
        ep = {k: v for k, v in doc["epoch"].items() if k not in EPOCH_STORED_ONLY}
        unknown = sorted(set(ep) - set(EPOCH_FIELDS))
        if unknown:
            raise BadLine(lineno, f"epoch.{unknown[0]}", f"unknown field; an epoch line has "
                                                        f"{', '.join(EPOCH_FIELDS)}")
        name = ep.get("name")
        if not isinstance(name, str):
            raise BadLine(lineno, "epoch.name", "an epoch line needs the epoch's name (a string)")
        existing = self.store.state.epochs.get(name)  # type: ignore[attr-defined]
        if existing is not None:
            if (list(existing.supersedes) != list(ep.get("supersedes") or [])
                    or existing.description != ep.get("description")):
                raise BadLine(lineno, "epoch", f"epoch {name!r} exists in the target store with "
                                               f"other supersedes or description; epochs are "
                                               f"immutable")
            self.epochs_existing += 1
            return
        try:
            self.store.create_epoch(name, supersedes=ep.get("supersedes"),
                                    description=ep.get("description"))
        except Conflict:   # created by someone else meanwhile: cannot happen under LOCK
            self.epochs_existing += 1
            return
        except StemeError as exc:
            raise BadLine(lineno, f"epoch.{exc.field}" if exc.field else "epoch",
                          exc.message) from None
        self.epochs_created += 1

    def flush(self) -> None:
        """Store the pending lines as one atomic batch.  A reference to nothing
        stored (item i) stores the items before it, then names item i's line."""
        from ..errors import ValidationError
        batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            results = self.store.put_batch([b for _, b in batch],
                                           require_signatures=self.require_signatures)
        except ValidationError as exc:
            i, field = _item(exc.field)
            if i is None or not 0 <= i < len(batch):
                raise
            if i > 0:
                self.pending = batch[:i]
                self.flush()
            raise BadLine(batch[i][0], field, exc.message) from None
        for r in results:
            if r.created:
                self.created += 1
            else:
                self.existing += 1
        self.records += len(batch)
        self.stored_through = batch[-1][0]
        if self.progress is not None:
            self.progress.update(records=len(batch), bytes=self.pending_bytes,
                                 note=f"{self.created} created, {self.existing} existing")
            self.pending_bytes = 0


def _item(field: str | None) -> tuple[int | None, str | None]:
    """``assertions[3].parent_hash`` -> ``(3, "parent_hash")``."""
    if not field or not field.startswith("assertions["):
        return None, field
    idx, _, rest = field[len("assertions["):].partition("]")
    try:
        return int(idx), rest.lstrip(".") or None
    except ValueError:
        return None, field


def read_lines(f: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """``(line number, line)`` for every line that is not blank."""
    for lineno, raw in enumerate(f, 1):
        if raw.strip():
            yield lineno, raw


# ---------------------------------------------------------------- commands
EXIT_STATUS = """\
exit status:
  0  done
  1  a line could not be imported (the lines above it are stored), or the
     operation failed
  2  cannot run: bad usage, a bad setting, FILE missing, the store locked by
     a running server
"""


EXPORT_EXIT_STATUS = """\
exit status:
  0  done
  1  writing FILE failed (no FILE is left behind)
  2  cannot run: bad usage, a bad setting, no data directory, the store
     locked by a running server
"""


def _fill(text: str) -> str:
    return textwrap.fill(text, width=78)


def _open(data_dir: str, settings: Settings, *,
          create: bool) -> tuple[Store | None, tuple[int, str] | None]:
    """The store at ``data_dir``, or an exit status and a message."""
    from ..core.store import open_store
    from ..errors import StemeError, StoreLocked
    if not create and not os.path.isdir(os.path.join(data_dir, "wal")):
        return None, (2, f"{data_dir} is no StemeDB data directory (it has no wal/); give "
                         f"--data-dir or set STEMEDB_DATA_DIR")
    try:
        return open_store(data_dir, settings=settings), None
    except StoreLocked as exc:
        return None, (2, f"{exc}. {LOCKED_HINT}")
    except (StemeError, OSError) as exc:
        return None, (2, f"cannot open the store at {data_dir}: {exc}")


def _settings(data_dir: str | None) -> Settings:
    from ..config import Settings
    return Settings.from_env(**({"data_dir": data_dir} if data_dir else {}))


def export_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="stemedb export",
        description=_fill("Write every stored assertion, as the API returns it, in seq order, as "
                    "JSON Lines; epochs as {\"epoch\": {...}} lines at their place in that "
                    "order. Retractions, votes and outcomes are not exported. Opens the store "
                    "directly: run it on a stopped server (or on a restored copy of a backup)."),
        epilog=EXPORT_EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", metavar="FILE",
                   help="where to write (default, or -: stdout); written to FILE.tmp, then "
                        "renamed, so FILE is never half written")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (default STEMEDB_DATA_DIR)")
    args = p.parse_args(argv)
    settings = _settings(args.data_dir)
    store, problem = _open(settings.data_dir, settings, create=False)
    if problem:
        print(f"stemedb export: {problem[1]}", file=sys.stderr)
        return problem[0]
    assert store is not None
    progress = Progress(what="export", every=PROGRESS_SECONDS)
    to_stdout = args.file in (None, "-")
    tmp = None
    try:
        if to_stdout:
            out = sys.stdout.buffer
            n, e = export(store, out, progress)
            out.flush()
        else:
            tmp = args.file + ".tmp"
            with open(tmp, "wb") as out:
                n, e = export(store, out, progress)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, args.file)
            tmp = None
    except OSError as exc:
        print(f"stemedb export: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        progress.done(summary=False)   # the line below sums it up
        store.close()
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    print(f"export: {n} assertions and {e} epochs from {settings.data_dir}"
          f"{'' if to_stdout else ' to ' + args.file} in {progress.elapsed():.1f}s",
          file=sys.stderr)
    return 0


def import_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="stemedb import",
        description=_fill("Store assertions from JSON Lines: request bodies, or the lines stemedb "
                    "export writes (hash, seq, recorded_at, status and retraction are "
                    "ignored; a given hash must match the line). Batched, each batch atomic; "
                    "a hash already stored counts as existing, so running it again after it "
                    "stopped resumes. Epoch lines ({\"epoch\": {...}}) create the epoch; "
                    "without them, create the epochs the lines name before importing. "
                    "Opens the store directly: run it on a stopped server."),
        epilog=EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE", help="a JSON Lines file, or - for stdin")
    p.add_argument("--data-dir", metavar="DIR",
                   help="data directory (default STEMEDB_DATA_DIR); created when missing")
    p.add_argument("--batch-size", type=int, default=1000, metavar="N",
                   help="assertions per atomic batch, 1 to 10000 (default 1000)")
    args = p.parse_args(argv)
    if not 1 <= args.batch_size <= 10_000:
        p.error(f"--batch-size must be 1 to 10000, got {args.batch_size}")
    settings = _settings(args.data_dir)
    if args.file == "-":
        src = sys.stdin.buffer
    else:
        try:
            src = open(args.file, "rb")
        except OSError as exc:
            print(f"stemedb import: cannot read {args.file}: {exc}", file=sys.stderr)
            return 2
    store, problem = _open(settings.data_dir, settings, create=True)
    if problem:
        print(f"stemedb import: {problem[1]}", file=sys.stderr)
        return problem[0]
    assert store is not None
    size = None if args.file == "-" or not os.path.isfile(args.file) else os.path.getsize(args.file)
    progress = Progress(total_bytes=size, what="import", every=PROGRESS_SECONDS)
    imp = Importer(store, batch_size=args.batch_size,
                   require_signatures=settings.require_signatures, progress=progress)
    rc = 0
    try:
        try:
            for lineno, raw in read_lines(src):
                imp.add_line(lineno, raw)
        except BadLine:
            imp.flush()   # the lines above the bad one are stored; a bad one among them wins
            raise
        imp.flush()
    except BadLine as exc:
        rc = 1
        print(f"stemedb import: {exc}", file=sys.stderr)
        print(f"stemedb import: stopped at line {exc.lineno}; every line above it is stored "
              f"({imp.created} created, {imp.existing} existing). Fix that line and run the "
              f"same command again: stored lines are skipped.", file=sys.stderr)
    except OSError as exc:
        rc = 1
        print(f"stemedb import: FAILED after line {imp.stored_through}: {exc}; run it again "
              f"to resume", file=sys.stderr)
    finally:
        progress.done(summary=False)   # the lines below sum it up
        store.close()
        if src is not sys.stdin.buffer:
            src.close()
    if rc:
        return rc
    print(f"import: done: {imp.records} assertions ({imp.created} created, {imp.existing} "
          f"existing), {imp.epochs_created + imp.epochs_existing} epochs "
          f"({imp.epochs_created} created), {progress.rate(imp.records)}, "
          f"in {progress.elapsed():.1f}s", file=sys.stderr)
    if imp.untimed:
        print(f"import: {imp.untimed} line(s) had no timestamp and got the import time, so "
              f"their hashes are new: importing the same file again stores them again",
              file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m stemedb.ops.transfer import|export ...``"""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "import":
        return import_main(argv[1:])
    if argv and argv[0] == "export":
        return export_main(argv[1:])
    print("usage: python -m stemedb.ops.transfer import FILE | export [FILE] "
          "(the same as stemedb import / stemedb export)", file=sys.stderr)
    return 0 if argv and argv[0] in ("-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main())
