"""The command line: keys add, the ops dispatch, and serve's start-up refusals."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from stemedb import cli
from stemedb.http.auth import KeyRing, hash_key


def test_keys_add_prints_the_key_once(tmp_path, capsys, monkeypatch):
    path = tmp_path / "keys.json"
    monkeypatch.setenv("STEMEDB_API_KEYS_FILE", str(path))
    assert cli.main(["keys", "add", "--id", "ingest", "--scopes", "read,write"]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert key and "\n" not in key, "stdout is the key alone"
    assert "only time" in err
    doc = json.loads(path.read_text())
    assert doc["keys"][0]["sha256"] == hash_key(key) and key not in path.read_text()
    assert KeyRing(str(path)).authenticate(key).scopes == frozenset({"read", "write"})
    assert cli.main(["keys", "add", "--id", "ingest", "--scopes", "read"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["keys", "list"]) == 0
    assert capsys.readouterr().out.strip() == "ingest\tread,write"


def test_keys_add_needs_a_file(capsys, monkeypatch):
    monkeypatch.delenv("STEMEDB_API_KEYS_FILE", raising=False)
    assert cli.main(["keys", "add", "--id", "x", "--scopes", "read"]) == 2
    assert "STEMEDB_API_KEYS_FILE" in capsys.readouterr().err


def test_keys_add_refuses_bad_scopes(tmp_path, capsys):
    assert cli.main(["keys", "add", "--id", "x", "--scopes", "root",
                     "--file", str(tmp_path / "k.json")]) == 1
    assert "scopes" in capsys.readouterr().err


def test_ops_commands_dispatch_or_say_not_available(capsys, monkeypatch):
    monkeypatch.setitem(cli.OPS_COMMANDS, "backup", ("stemedb.ops.no_such_module", "x"))
    assert cli.main(["backup"]) == 2
    assert "not available yet" in capsys.readouterr().err

    import types
    seen = {}
    mod = types.ModuleType("stemedb_fake_restore")
    mod.main = lambda argv: seen.setdefault("argv", argv) and 0
    monkeypatch.setitem(sys.modules, "stemedb_fake_restore", mod)
    monkeypatch.setitem(cli.OPS_COMMANDS, "restore", ("stemedb_fake_restore", "x"))
    assert cli.main(["restore", "/backups/b1", "--yes"]) == 0
    assert seen["argv"] == ["/backups/b1", "--yes"], "the rest of argv goes to main(argv)"


def _serve(env, timeout=20):
    full = {k: v for k, v in os.environ.items() if not k.startswith("STEMEDB_")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "stemedb.cli", "serve"], env=full,
                          capture_output=True, text=True, timeout=timeout)


def test_serve_refuses_a_public_bind_without_keys(tmp_path):
    r = _serve({"STEMEDB_BIND": "0.0.0.0:18999", "STEMEDB_DATA_DIR": str(tmp_path)})
    assert r.returncode != 0
    assert "0.0.0.0:18999" in r.stderr and "STEMEDB_ALLOW_ANONYMOUS" in r.stderr
    assert not os.path.exists(tmp_path / "LOCK"), "refused before anything started"


def test_serve_refuses_bad_settings(tmp_path):
    r = _serve({"STEMEDB_RATE_LIMITS": "assert=lots", "STEMEDB_DATA_DIR": str(tmp_path)})
    assert r.returncode != 0 and "STEMEDB_RATE_LIMITS" in r.stderr
    r = _serve({"STEMEDB_API_KEYS_FILE": str(tmp_path / "missing.json"),
                "STEMEDB_DATA_DIR": str(tmp_path)})
    assert r.returncode != 0 and "missing.json" in r.stderr
    r = _serve({"STEMEDB_DURABILITY": "sometimes", "STEMEDB_DATA_DIR": str(tmp_path)})
    assert r.returncode != 0 and "STEMEDB_DURABILITY" in r.stderr


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name in ("serve", "keys", "backup", "restore", "fsync-check"):
        assert name in out
