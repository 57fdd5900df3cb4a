"""``stemedb``: serve | keys add | backup | restore | fsync-check.

Settings come from ``STEMEDB_*`` variables (see ``.env.example``); the few
flags of ``serve`` override them for one run.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Commands whose code lives in stemedb.ops; each module has main(argv) -> int.
OPS_COMMANDS = {
    "backup": ("stemedb.ops.backup", "take a backup of STEMEDB_DATA_DIR into STEMEDB_BACKUP_DIR"),
    "restore": ("stemedb.ops.restore", "restore a backup: stemedb restore BACKUP_DIR"),
    "fsync-check": ("stemedb.ops.fsync_check",
                    "check that the file system honours fsync: stemedb fsync-check [DIR] [--json]"),
    "salvage": ("stemedb.ops.salvage",
                "cut a damaged WAL at its first bad record, quarantining the rest: "
                "stemedb salvage DATA_DIR [--dry-run]"),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stemedb", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="store_true",
                   help="print the version and the implementation in use (compiled or pure)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    s = sub.add_parser("serve", help="run the API and the dashboard under gunicorn")
    s.add_argument("--bind", help="API address (STEMEDB_BIND)")
    s.add_argument("--dashboard-bind", help="dashboard address (STEMEDB_DASHBOARD_BIND)")
    s.add_argument("--data-dir", help="data directory (STEMEDB_DATA_DIR)")
    k = sub.add_parser("keys", help="manage API keys")
    ksub = k.add_subparsers(dest="keys_command", metavar="ACTION")
    add = ksub.add_parser("add", help="create a key; prints it once, stores only its SHA-256")
    add.add_argument("--id", required=True, help="a name for the key, e.g. ingest-service")
    add.add_argument("--scopes", required=True, help="comma-separated: read, write, admin")
    add.add_argument("--file", help="keys file (default: STEMEDB_API_KEYS_FILE)")
    add.add_argument("--force", action="store_true", help="replace a key with the same id")
    ksub.add_parser("list", help="list key ids and scopes").add_argument("--file")
    for name, (_, text) in OPS_COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return p


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
    if args.command == "keys":
        if args.keys_command == "add":
            return _keys_add(args)
        if args.keys_command == "list":
            return _keys_list(args)
        parser.parse_args(["keys", "--help"])
    parser.print_help()
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
    module_name = OPS_COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"stemedb {name}: not available yet in this build ({module_name} is not "
                  f"installed)", file=sys.stderr)
            return 2
        raise
    return int(module.main(argv) or 0)


def _serve(args) -> int:
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
    from .http.logs import configure_logging
    from .http.server import serve
    configure_logging(settings.log_level)
    log = logging.getLogger("stemedb")
    if from_file:
        log.info(f"Read {len(from_file)} variables from {env_file} (the environment wins over it)")
    for warning in unknown_variables():
        log.warning(warning)
    return serve(settings)


def _keys_file(args) -> str | None:
    return args.file or os.environ.get("STEMEDB_API_KEYS_FILE") or None


def _keys_add(args) -> int:
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


def _keys_list(args) -> int:
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
