"""stemedb: one command for the server and every tool.

Settings come from STEMEDB_* variables (see .env.example); the few flags of
serve override them for one run.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import ipaddress
import logging
import os
import re
import sys
import textwrap

# Exit status of every subcommand (docs/reference/cli.md has the same table).
EXIT_STATUS = """\
exit status (every command):
  0  done; for a check: nothing wrong was found (warnings may be printed)
  1  a check found a problem, or the operation failed (the message says why)
  2  cannot run: bad usage, a bad setting or address, a missing directory,
     the store is locked by a running server
"""

# Commands whose code lives in a module with main(argv) -> int; the rest of
# the command line goes to it unchanged.  name -> (module, help[, function]).
OPS_COMMANDS = {
    "backup": ("stemedb.ops.backup", "take a backup of STEMEDB_DATA_DIR into STEMEDB_BACKUP_DIR"),
    "restore": ("stemedb.ops.restore",
                "restore a backup (stemedb restore BACKUP_DIR) or a point in time from S3"),
    "archive": ("stemedb.ops.archive", "copy sealed WAL segments and the snapshot to S3"),
    "retention": ("stemedb.ops.retention",
                  "prune old backups, only ever behind a newer one that verifies"),
    "drill": ("stemedb.ops.drill",
              "disaster-recovery drill in a scratch directory: backup, destroy, restore"),
    "fsync-check": ("stemedb.ops.fsync_check",
                    "check that the file system honours fsync: stemedb fsync-check [DIR] [--json]"),
    "salvage": ("stemedb.ops.salvage",
                "cut a damaged WAL at its first bad record, quarantining the rest: "
                "stemedb salvage DATA_DIR [--dry-run]"),
    "cluster": ("stemedb.cluster.cli", "cluster mode: stemedb cluster init (create or check "
                "the NATS JetStream stream)"),
    "import": ("stemedb.ops.transfer", "store assertions from a JSON Lines file (server stopped)",
               "import_main"),
    "export": ("stemedb.ops.transfer",
               "write every stored assertion as JSON Lines (server stopped)", "export_main"),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stemedb", description=__doc__.split("\n")[0],
                                epilog=EXIT_STATUS,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="store_true",
                   help="print the version and the implementation in use (compiled or pure)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    s = sub.add_parser("serve", help="run the API and the dashboard under gunicorn",
                       description=_fill("Run the API and the dashboard under gunicorn. Reads "
                                         ".env in the working directory when there is one (the "
                                         "environment wins over it); the flags win over both."),
                       epilog=_settings_help() + "\n" + EXIT_STATUS,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--bind", metavar="HOST:PORT", help="API address (STEMEDB_BIND)")
    s.add_argument("--dashboard-bind", metavar="HOST:PORT",
                   help="dashboard address (STEMEDB_DASHBOARD_BIND)")
    s.add_argument("--data-dir", metavar="DIR", help="data directory (STEMEDB_DATA_DIR)")
    v = sub.add_parser("verify", help="offline check of a stopped store or a backup",
                       description=_fill("Offline check of a stopped store or a backup: segment "
                                         "headers, every record checksum and seq order, the "
                                         "index snapshot against the WAL, the counts against "
                                         "metadata.json. Writes nothing. One line per finding on "
                                         "stdout. A torn tail is a warning (exit 0)."),
                       epilog=EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("data_dir", metavar="DATA_DIR", help="a stopped store's data directory, or a "
                   "backup directory")
    k = sub.add_parser("keys", help="manage API keys", epilog=EXIT_STATUS,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ksub = k.add_subparsers(dest="keys_command", metavar="ACTION")
    add = ksub.add_parser("add", help="create a key; prints it once, stores only its SHA-256")
    add.add_argument("--id", required=True, help="a name for the key, e.g. ingest-service")
    add.add_argument("--scopes", required=True, help="comma-separated: read, write, admin")
    add.add_argument("--file", help="keys file (default: STEMEDB_API_KEYS_FILE)")
    add.add_argument("--force", action="store_true", help="replace a key with the same id")
    ksub.add_parser("list", help="list key ids and scopes").add_argument(
        "--file", help="keys file (default: STEMEDB_API_KEYS_FILE)")
    for name, (_, text, *_rest) in OPS_COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return p


def _fill(text: str) -> str:
    return textwrap.fill(text, width=78)


def _settings_help() -> str:
    """The settings table of ``serve --help``: every Settings field."""
    from .config import Settings
    rows = []
    for f in dataclasses.fields(Settings):
        default = f.default
        if default is None:
            shown = "unset"
        elif isinstance(default, bool):
            shown = "1" if default else "0"
        else:
            shown = str(default)
        rows.append((Settings.env_name(f.name), shown, f.metadata.get("unit", "")))
    w0 = max(len(r[0]) for r in rows)
    w1 = min(max(len(r[1]) for r in rows), 24)
    lines = ["settings (environment variables: name, default, unit):"]
    for name, shown, unit in rows:
        if len(shown) > w1:   # the rate limits: on a line of their own
            lines.append(f"  {name:<{w0}}  {unit}")
            lines.append(f"      default {shown}")
        else:
            lines.append(f"  {name:<{w0}}  {shown:<{w1}}  {unit}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in OPS_COMMANDS:
        return _run_ops(argv[0], argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        return _version()
    if args.command == "serve":
        return _serve(args)
    if args.command == "verify":
        from .core.verify import verify
        return verify(args.data_dir, out=sys.stdout)
    if args.command == "keys":
        if args.keys_command == "add":
            return _keys_add(args)
        if args.keys_command == "list":
            return _keys_list(args)
        print("stemedb keys: give an action: add or list (stemedb keys --help)", file=sys.stderr)
        return 2
    parser.print_help(sys.stderr)
    return 2


def _version() -> int:
    """``stemedb --version``: the version and the implementation in use."""
    from . import __version__
    try:
        from .core.implementation import describe
        name, detail = describe()
    except ImportError as exc:  # STEMEDB_REQUIRE_FAST=1 without a build, or a contradiction
        print(f"stemedb {__version__} (implementation: unavailable)")
        print(f"stemedb: {exc}", file=sys.stderr)
        return 2
    print(f"stemedb {__version__} (implementation: {name})")
    if name == "pure":
        print(f"stemedb: {detail}", file=sys.stderr)
    return 0


def _run_ops(name: str, argv: list[str]) -> int:
    module_name, _help, *rest = OPS_COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"stemedb {name}: not available yet in this build ({module_name} is not "
                  f"installed)", file=sys.stderr)
            return 2
        raise
    from .errors import ConfigError, StoreLocked
    try:
        return int(getattr(module, rest[0] if rest else "main")(argv) or 0)
    except (ConfigError, StoreLocked) as exc:  # a bad setting, a running server: cannot run
        print(f"stemedb {name}: {exc}", file=sys.stderr)
        return 2


_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def bind_problem(bind: str) -> str | None:
    """Why ``bind`` is no address gunicorn can listen on, or None.

    Takes HOST:PORT (a name, an IPv4 address, or [IPv6] in brackets; an
    empty HOST is every interface), unix:PATH and fd://N.
    """
    how = ("give HOST:PORT (e.g. 127.0.0.1:18180), [IPV6]:PORT (e.g. [::1]:18180) or "
           "unix:PATH")
    if bind.startswith("unix:"):
        return None if len(bind) > 5 else f"unix: needs a socket path; {how}"
    if bind.startswith("fd://"):
        return None if bind[5:].isdigit() else f"fd:// needs a file descriptor number; {how}"
    host, sep, port = bind.rpartition(":")
    if not sep:
        return f"no port; {how}"
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        return f"the port must be a number from 1 to 65535, got {port!r}; {how}"
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{host[1:-1]!r} is no IPv6 address; {how}"
        return None
    if ":" in host:
        return f"an IPv6 address goes in brackets, e.g. [::1]:{port}; {how}"
    if host and not _HOSTNAME.fullmatch(host):
        return f"{host!r} is no host name or IP address; {how}"
    return None


def _serve(args: argparse.Namespace) -> int:
    # .env first, before anything imports the engine: STEMEDB_PURE_PYTHON and
    # STEMEDB_REQUIRE_FAST are read when stemedb.core.fast is imported.
    from .config import Settings, load_env_file, unknown_variables
    from .errors import ConfigError
    env_file = os.path.join(os.getcwd(), ".env")
    try:
        from_file = load_env_file(env_file)  # the environment wins over the file
    except (ConfigError, OSError, UnicodeDecodeError) as exc:
        print(f"stemedb serve: cannot read {env_file}: {exc}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in (("bind", args.bind), ("dashboard_bind", args.dashboard_bind),
                                   ("data_dir", args.data_dir)) if v}
    try:
        settings = Settings.from_env(**overrides)
    except ConfigError as exc:
        name = Settings.env_name(exc.field) if exc.field else None
        where = f" (set in {env_file})" if name in from_file else ""
        print(f"stemedb serve: {exc}{where}", file=sys.stderr)
        return 2
    if os.environ.get("STEMEDB_CLUSTER_NATS"):
        # cluster mode (stemedb/cluster): its settings and client checked up front
        from .cluster.stream import ClusterSettings
        try:
            ClusterSettings.from_env()
            importlib.import_module("nats")
        except ConfigError as exc:
            print(f"stemedb serve: {exc}", file=sys.stderr)
            return 2
        except ImportError:
            print("stemedb serve: STEMEDB_CLUSTER_NATS is set but the NATS client is not "
                  "installed: pip install 'stemedb[cluster]'", file=sys.stderr)
            return 2
    for name, flag, value in (("bind", "--bind", settings.bind),
                              ("dashboard_bind", "--dashboard-bind", settings.dashboard_bind)):
        problem = bind_problem(value) if value else None
        if problem:
            where = flag if overrides.get(name) else Settings.env_name(name)
            if where in from_file:
                where += f" in {env_file}"
            print(f"stemedb serve: bad address {value!r} ({where}): {problem}", file=sys.stderr)
            return 2
    from .http.logs import configure_logging
    from .http.server import serve
    configure_logging(settings.log_level)
    log = logging.getLogger("stemedb")
    if from_file:
        log.info(f"Read {len(from_file)} variables from {env_file} (the environment wins over it)")
    for warning in unknown_variables():
        log.warning(warning)
    # With STEMEDB_LOCK_TIMEOUT the server waits for the lock (503 meanwhile),
    # as during a reload; without it a held lock is a refusal up front.
    held = _lock_holder(settings.data_dir) if settings.lock_timeout <= 0 else None
    if held is not None:
        print(f"stemedb serve: Store is locked by PID {held}: another process (a server, an "
              f"import or export) has {settings.data_dir}; stop it or give another --data-dir",
              file=sys.stderr)
        return 2
    rc = serve(settings)
    # gunicorn's own statuses (3: the worker failed to boot, e.g. a damaged
    # store; 4: the app failed to load) are failures: 1, as for every command
    return rc if rc in (0, 1, 2) else 1


def _lock_holder(data_dir: str) -> str | None:
    """The PID in ``data_dir/LOCK`` when a process holds it, else None (and
    nothing created): a second server would only fail in its worker."""
    import fcntl
    path = os.path.join(data_dir, "LOCK")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    finally:
        os.close(fd)


def _keys_file(args: argparse.Namespace) -> str | None:
    return args.file or os.environ.get("STEMEDB_API_KEYS_FILE") or None


def _keys_add(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .http.auth import add_key
    path = _keys_file(args)
    if not path:
        print("stemedb keys add: no keys file: set STEMEDB_API_KEYS_FILE (the server reads "
              "keys from there) or pass --file", file=sys.stderr)
        return 2
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    try:
        key = add_key(path, args.id, scopes, force=args.force)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"stemedb keys add: {exc}", file=sys.stderr)
        return 1
    print(f"Added key {args.id!r} with scopes {','.join(scopes)} to {path}. This is the only "
          f"time the key is shown; keep it now:", file=sys.stderr)
    print(key)
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .http.auth import load_keys_file
    path = _keys_file(args)
    if not path:
        print("stemedb keys list: set STEMEDB_API_KEYS_FILE or pass --file", file=sys.stderr)
        return 2
    try:
        keys = load_keys_file(path)
    except ConfigError as exc:
        print(f"stemedb keys list: {exc}", file=sys.stderr)
        return 1
    for k in keys:
        print(f"{k.id}\t{','.join(sorted(k.scopes))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
