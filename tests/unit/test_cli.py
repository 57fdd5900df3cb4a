"""One stemedb command: every subcommand's help, its exit codes, --bind checks,
fsync-check's missing directory, and import/export of JSON Lines."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

import stemedb
from stemedb import cli
from stemedb.config import Settings
from stemedb.ops import transfer

SUBCOMMANDS = [["serve"], ["verify"], ["keys"], ["keys", "add"], ["keys", "list"], ["backup"],
               ["restore"], ["archive"], ["archive", "push"], ["retention"], ["drill"],
               ["fsync-check"], ["salvage"], ["import"], ["export"]]
REST_MARKUP = ("``", ":func:", ":class:", ":mod:", ":meth:")


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEMEDB_")}
    env.update(extra)
    return env


def run(args, cwd=None, input=None, **env):
    return subprocess.run([sys.executable, "-m", "stemedb", *args], env=_clean_env(**env),
                          capture_output=True, text=True, timeout=60, cwd=cwd, input=input)


def call(argv, capsys) -> tuple[int, str, str]:
    """cli.main in process: (exit status, stdout, stderr); argparse's exits included."""
    try:
        rc = cli.main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------- help
@pytest.mark.parametrize("cmd", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_help_exits_0_in_plain_text(cmd, capsys):
    rc, out, err = call([*cmd, "--help"], capsys)
    assert rc == 0, err
    assert out.startswith(f"usage: stemedb {' '.join(cmd)}"), out[:80]
    for mark in REST_MARKUP:
        assert mark not in out, f"{mark} in `stemedb {' '.join(cmd)} --help`"


def test_top_level_help_lists_every_command_and_the_exit_status(capsys):
    rc, out, _ = call(["--help"], capsys)
    assert rc == 0
    for cmd in {c[0] for c in SUBCOMMANDS}:
        assert f"\n    {cmd}" in out, cmd
    assert "exit status" in out and not any(m in out for m in REST_MARKUP)


def test_serve_help_lists_every_setting_with_its_default(capsys):
    rc, out, _ = call(["serve", "--help"], capsys)
    assert rc == 0
    for f in dataclasses.fields(Settings):
        line = next((ln for ln in out.splitlines() if ln.split()[:1] == [Settings.env_name(f.name)]),
                    None)
        assert line is not None, f"{Settings.env_name(f.name)} missing from serve --help"
        if isinstance(f.default, str) and len(f.default) <= 24:
            assert f.default in line
    assert "127.0.0.1:18180" in out and ".env" in out


def test_python_m_forms_keep_working(tmp_path):
    r = run(["--help"])
    assert r.returncode == 0 and "verify" in r.stdout and "import" in r.stdout
    r = subprocess.run([sys.executable, "-m", "stemedb.ops.retention", "--backup-dir",
                        str(tmp_path), "--dry-run"], env=_clean_env(), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "no verified backup" in r.stderr
    r = subprocess.run([sys.executable, "-m", "stemedb.core.verify", str(tmp_path / "none")],
                       env=_clean_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2


# ---------------------------------------------------------------- exit codes
def _store(path, n=5):
    s = stemedb.open_store(str(path), durability="none")
    for i in range(n):
        s.put({"concept_path": "a/b", "predicate": "p", "value": i, "confidence": 0.5,
               "timestamp": 1_700_000_000 + i})
    return s


def test_usage_errors_exit_2(capsys):
    assert call([], capsys)[0] == 2
    assert call(["no-such-command"], capsys)[0] == 2
    assert call(["verify"], capsys)[0] == 2
    rc, _, err = call(["keys"], capsys)
    assert rc == 2 and "add or list" in err
    assert call(["restore"], capsys)[0] == 2
    assert call(["salvage"], capsys)[0] == 2
    assert call(["import"], capsys)[0] == 2
    assert call(["import", "x", "--batch-size", "0"], capsys)[0] == 2
    assert call(["retention", "--keep", "0"], capsys)[0] == 2
    assert call(["fsync-check", "--count", "many"], capsys)[0] == 2


def test_verify_exit_codes(tmp_path, capsys):
    assert call(["verify", str(tmp_path / "missing")], capsys)[0] == 2
    s = _store(tmp_path / "d")
    rc, out, _ = call(["verify", str(tmp_path / "d")], capsys)
    assert rc == 2 and "locked" in out, "a running store cannot be verified"
    s.close()
    rc, out, _ = call(["verify", str(tmp_path / "d")], capsys)
    assert rc == 0 and "consistent" in out
    seg = sorted((tmp_path / "d" / "wal").glob("segment-*"))[0]
    data = bytearray(seg.read_bytes())
    data[len(data) // 3] ^= 0xFF   # inside a record, not at the tail
    seg.write_bytes(bytes(data))
    rc, out, _ = call(["verify", str(tmp_path / "d")], capsys)
    assert rc == 1, out


def test_tools_that_cannot_run_exit_2(tmp_path, capsys, monkeypatch):
    missing = str(tmp_path / "missing")
    rc, _, err = call(["backup", "--data-dir", missing, "--backup-dir", str(tmp_path / "b")],
                      capsys)
    assert rc == 2 and "not a directory" in err and not os.path.exists(tmp_path / "b")
    rc, _, err = call(["restore", missing, "--data-dir", str(tmp_path / "d"), "--yes"], capsys)
    assert rc == 2 and "not a directory" in err and not os.path.exists(tmp_path / "d")
    rc, _, err = call(["retention", "--backup-dir", missing], capsys)
    assert rc == 2 and missing in err
    rc, _, err = call(["salvage", missing], capsys)
    assert rc == 2
    monkeypatch.delenv("STEMEDB_ARCHIVE_S3", raising=False)
    rc, _, err = call(["archive", "push", "--once"], capsys)
    assert rc == 2 and "STEMEDB_ARCHIVE_S3" in err
    monkeypatch.setenv("STEMEDB_DURABILITY", "sometimes")
    rc, _, err = call(["archive", "push", "--to", "b/p", "--once"], capsys)
    assert rc == 2 and "STEMEDB_DURABILITY" in err and "Traceback" not in err
    rc, _, err = call(["backup", "--data-dir", str(tmp_path)], capsys)
    assert rc == 2 and "STEMEDB_DURABILITY" in err
    monkeypatch.delenv("STEMEDB_DURABILITY")
    (tmp_path / "drill" / "data").mkdir(parents=True)
    rc, _, err = call(["drill", "--dir", str(tmp_path / "drill")], capsys)
    assert rc == 2 and "empty" in err


def test_retention_without_a_verified_backup_is_a_problem(tmp_path, capsys):
    rc, _, err = call(["retention", "--backup-dir", str(tmp_path), "--dry-run"], capsys)
    assert rc == 1 and "no verified backup" in err


def test_fsync_check_does_not_create_a_missing_directory(tmp_path, capsys):
    d = tmp_path / "not" / "there"
    rc, _, err = call(["fsync-check", str(d), "--count", "1", "--seconds", "0.1"], capsys)
    assert rc == 2
    assert str(d) in err and "Nothing was created" in err
    assert not (tmp_path / "not").exists()
    (tmp_path / "f").write_text("x")
    rc, _, err = call(["fsync-check", str(tmp_path / "f"), "--count", "1"], capsys)
    assert rc == 2 and "not a directory" in err


# ---------------------------------------------------------------- --bind
@pytest.mark.parametrize("bind", ["127.0.0.1:18180", "[::1]:18180", "localhost:1",
                                  "0.0.0.0:65535", ":8000", "db-1.example.com:443",
                                  "unix:/tmp/stemedb.sock", "fd://3"])
def test_good_binds(bind):
    assert cli.bind_problem(bind) is None


@pytest.mark.parametrize("bind, says", [
    ("nonsense", "no port"), ("127.0.0.1:99999", "1 to 65535"), ("127.0.0.1:0", "1 to 65535"),
    ("127.0.0.1:", "1 to 65535"), ("127.0.0.1:http", "1 to 65535"),
    ("::1:80", "brackets"), ("[nope]:80", "IPv6"), ("bad host:80", "host name"),
    ("-x:80", "host name"), ("unix:", "socket path"), ("fd://x", "file descriptor")])
def test_bad_binds(bind, says):
    problem = cli.bind_problem(bind)
    assert problem and says in problem and "HOST:PORT" in problem


@pytest.mark.parametrize("args, env, shown", [
    (["--bind", "nonsense"], {}, "--bind"),
    (["--bind", "127.0.0.1:99999"], {}, "--bind"),
    ([], {"STEMEDB_DASHBOARD_BIND": "::1:18188"}, "STEMEDB_DASHBOARD_BIND"),
])
def test_serve_with_a_bad_bind_exits_2_before_starting(tmp_path, args, env, shown):
    data = tmp_path / "data"
    r = run(["serve", *args, "--data-dir", str(data)], cwd=tmp_path, **env)
    assert r.returncode == 2, r.stderr
    assert "bad address" in r.stderr and shown in r.stderr and "HOST:PORT" in r.stderr
    assert "gunicorn" not in r.stderr.lower() and "Booting" not in r.stderr
    assert not data.exists(), "nothing started, nothing created"


def test_a_bad_bind_in_dot_env_names_the_file(tmp_path):
    (tmp_path / ".env").write_text("STEMEDB_BIND=localhost\n")
    r = run(["serve", "--data-dir", str(tmp_path / "data")], cwd=tmp_path)
    assert r.returncode == 2 and "STEMEDB_BIND" in r.stderr and ".env" in r.stderr


# ---------------------------------------------------------------- import / export
def _body(i, **kw):
    return {"concept_path": f"c/{i % 7}", "predicate": "p", "value": {"i": i},
            "confidence": 0.5, "timestamp": 1_700_000_000 + i, **kw}


def _populated(path):
    """Epochs, parents, derived_from, a retraction: what an export must carry."""
    s = stemedb.open_store(str(path), durability="none")
    s.create_epoch("e1", description="first")
    root = s.put(_body(0)).hash
    s.put(_body(1, parent_hash=root, epoch="e1"))
    s.create_epoch("e2", supersedes=["e1"])
    s.put_batch([_body(i, epoch="e2", derived_from=[root]) for i in range(2, 40)])
    s.retract(hash=root, reason="wrong")
    return s


def _lines(path):
    return [json.loads(ln) for ln in open(path, encoding="utf-8") if ln.strip()]


def test_export_then_import_reproduces_the_store(tmp_path, capsys):
    _populated(tmp_path / "src").close()
    out = tmp_path / "out.jsonl"
    rc, _, err = call(["export", str(out), "--data-dir", str(tmp_path / "src")], capsys)
    assert rc == 0, err
    assert "40 assertions and 2 epochs" in err
    lines = _lines(out)
    kinds = ["epoch" if isinstance(x.get("epoch"), dict) else "a" for x in lines]
    assert kinds[:4] == ["epoch", "a", "a", "epoch"], "epochs at their place in seq order"
    seqs = [x["epoch"]["seq"] if k == "epoch" else x["seq"] for x, k in zip(lines, kinds)]
    assert seqs == sorted(seqs)
    assert lines[1]["status"] == "retracted", "exported as the API returns it"

    rc, _, err = call(["import", str(out), "--data-dir", str(tmp_path / "dst"),
                       "--batch-size", "7"], capsys)
    assert rc == 0, err
    assert "40 assertions (40 created, 0 existing)" in err and "2 epochs (2 created)" in err
    with stemedb.open_store(str(tmp_path / "dst")) as d, \
            stemedb.open_store(str(tmp_path / "src")) as s:
        assert d.count == s.count == 40
        for x in lines:
            if "hash" in x:
                got = d.get(x["hash"])
                assert got is not None and got.request_dict() == s.get(x["hash"]).request_dict()
                assert got.status == "active", "retractions are not moved"
        assert d.state.epochs["e2"].supersedes == ["e1"]
    out2 = tmp_path / "out2.jsonl"
    assert call(["export", str(out2), "--data-dir", str(tmp_path / "dst")], capsys)[0] == 0
    assert [x.get("hash") for x in _lines(out2)] == [x.get("hash") for x in lines]


def test_import_resumes_by_hash(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    rows = [_body(i) for i in range(25)]
    (tmp_path / "half.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:10]))
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dst = str(tmp_path / "dst")
    assert call(["import", str(tmp_path / "half.jsonl"), "--data-dir", dst], capsys)[0] == 0
    rc, _, err = call(["import", str(src), "--data-dir", dst, "--batch-size", "4"], capsys)
    assert rc == 0 and "25 assertions (15 created, 10 existing)" in err, err
    rc, _, err = call(["import", str(src), "--data-dir", dst], capsys)
    assert rc == 0 and "(0 created, 25 existing)" in err
    with stemedb.open_store(dst) as d:
        assert d.count == 25


def test_a_bad_line_stops_after_storing_the_lines_above_it(tmp_path, capsys):
    rows = [json.dumps(_body(i)) for i in range(12)]
    rows[8] = json.dumps(_body(8, confidence=7))
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(rows) + "\n")
    dst = str(tmp_path / "dst")
    rc, _, err = call(["import", str(src), "--data-dir", dst, "--batch-size", "5"], capsys)
    assert rc == 1
    assert "line 9, field confidence" in err and "every line above it is stored" in err
    with stemedb.open_store(dst) as d:
        assert d.count == 8, "lines 1-8 stored, the 6-8 partial batch included"
    rows[8] = json.dumps(_body(8))
    src.write_text("\n".join(rows) + "\n")
    rc, _, err = call(["import", str(src), "--data-dir", dst, "--batch-size", "5"], capsys)
    assert rc == 0 and "(4 created, 8 existing)" in err


@pytest.mark.parametrize("line, says", [
    ("not json", "line 2: not valid JSON"),
    ("[1, 2]", "line 2: a line must be a JSON object"),
    (json.dumps({**_body(1), "colour": "red"}), "line 2, field colour"),
    (json.dumps({**_body(1), "hash": "ab" * 32}), "line 2, field hash"),
    (json.dumps(_body(1, parent_hash="cd" * 32)), "line 2, field parent_hash"),
    (json.dumps(_body(1, epoch="nope")), "line 2, field epoch"),
    (json.dumps({"epoch": {"name": "e", "colour": 1}}), "line 2, field epoch.colour"),
])
def test_bad_lines_name_line_and_field(tmp_path, capsys, line, says):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(_body(0)) + "\n" + line + "\n" + json.dumps(_body(2)) + "\n")
    rc, _, err = call(["import", str(src), "--data-dir", str(tmp_path / "d")], capsys)
    assert rc == 1 and says in err, err
    with stemedb.open_store(str(tmp_path / "d")) as d:
        assert d.count == 1, "line 1 stored, nothing after the bad line"


def test_a_changed_field_fails_its_hash(tmp_path, capsys):
    _populated(tmp_path / "src").close()
    out = tmp_path / "out.jsonl"
    call(["export", str(out), "--data-dir", str(tmp_path / "src")], capsys)
    lines = out.read_text().splitlines()
    doc = json.loads(lines[2])
    doc["confidence"] = 0.25
    lines[2] = json.dumps(doc)
    out.write_text("\n".join(lines) + "\n")
    rc, _, err = call(["import", str(out), "--data-dir", str(tmp_path / "d")], capsys)
    assert rc == 1 and "line 3, field hash" in err and doc["hash"] in err


def test_an_epoch_that_differs_in_the_target_is_refused(tmp_path, capsys):
    with stemedb.open_store(str(tmp_path / "d")) as s:
        s.create_epoch("e", description="mine")
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"epoch": {"name": "e", "description": "theirs"}}) + "\n")
    rc, _, err = call(["import", str(src), "--data-dir", str(tmp_path / "d")], capsys)
    assert rc == 1 and "line 1, field epoch" in err and "immutable" in err
    src.write_text(json.dumps({"epoch": {"name": "e", "description": "mine"}}) + "\n")
    rc, _, err = call(["import", str(src), "--data-dir", str(tmp_path / "d")], capsys)
    assert rc == 0 and "1 epochs (0 created)" in err


def test_import_and_export_refuse_a_locked_store(tmp_path, capsys):
    s = _store(tmp_path / "d")
    try:
        (tmp_path / "in.jsonl").write_text(json.dumps(_body(0)) + "\n")
        for argv in (["import", str(tmp_path / "in.jsonl")], ["export", str(tmp_path / "o")]):
            rc, _, err = call([*argv, "--data-dir", str(tmp_path / "d")], capsys)
            assert rc == 2 and "locked" in err and "stop the server" in err
        assert not (tmp_path / "o").exists()
        assert s.count == 5
    finally:
        s.close()


def test_export_needs_a_data_directory_and_import_a_file(tmp_path, capsys):
    rc, _, err = call(["export", "--data-dir", str(tmp_path / "none")], capsys)
    assert rc == 2 and "no StemeDB data directory" in err and not (tmp_path / "none").exists()
    rc, _, err = call(["import", str(tmp_path / "none.jsonl"), "--data-dir",
                       str(tmp_path / "d")], capsys)
    assert rc == 2 and "cannot read" in err and not (tmp_path / "d").exists()


def test_stdin_and_stdout(tmp_path):
    _populated(tmp_path / "src").close()
    r = run(["export", "--data-dir", str(tmp_path / "src")])
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 42, r.stderr
    r2 = run(["import", "-", "--data-dir", str(tmp_path / "dst")], input=r.stdout)
    assert r2.returncode == 0 and "40 created" in r2.stderr, r2.stderr


def test_progress_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(transfer, "PROGRESS_SECONDS", 0.0)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(_body(i)) + "\n" for i in range(9)))
    rc, _, err = call(["import", str(src), "--data-dir", str(tmp_path / "d"),
                       "--batch-size", "3"], capsys)
    assert rc == 0
    progress = [ln for ln in err.splitlines() if ln.startswith("import: ") and "/s" in ln
                and "records" in ln]
    assert [ln.split()[1] for ln in progress] == ["3", "6", "9"], err


def test_untimed_lines_are_counted_in_a_warning(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    body = {k: v for k, v in _body(0).items() if k != "timestamp"}
    src.write_text(json.dumps(body) + "\n")
    rc, _, err = call(["import", str(src), "--data-dir", str(tmp_path / "d")], capsys)
    assert rc == 0 and "1 line(s) had no timestamp" in err


# ---------------------------------------------------------------- serve's store
def test_serve_on_a_locked_store_exits_2_before_starting(tmp_path):
    s = _store(tmp_path / "d")
    try:
        r = run(["serve", "--data-dir", str(tmp_path / "d"), "--bind", "127.0.0.1:1",
                 "--dashboard-bind", "127.0.0.1:2"], cwd=tmp_path)
        assert r.returncode == 2 and f"Store is locked by PID {os.getpid()}" in r.stderr
        assert "Booting" not in r.stderr
    finally:
        s.close()


def test_serve_on_a_damaged_store_exits_1_not_gunicorns_3(tmp_path):
    import socket
    _store(tmp_path / "d").close()
    seg = sorted((tmp_path / "d" / "wal").glob("segment-*"))[0]
    seg.write_bytes(b"NOTMAGIC" + seg.read_bytes()[8:])
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    r = run(["serve", "--data-dir", str(tmp_path / "d"), "--bind", f"127.0.0.1:{ports[0]}",
             "--dashboard-bind", f"127.0.0.1:{ports[1]}"], cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "WAL magic byte validation failed" in r.stderr


def test_serve_refuses_a_bad_cluster_setting_before_opening(tmp_path):
    """Cluster mode's settings are checked up front: a bad one is exit 2,
    named, and no data directory is created."""
    import subprocess
    import sys
    env = dict(os.environ, STEMEDB_CLUSTER_NATS="nats://127.0.0.1:4222",
               STEMEDB_READ_WAIT_MS="soon", STEMEDB_DATA_DIR=str(tmp_path / "data"))
    r = subprocess.run([sys.executable, "-m", "stemedb", "serve"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "STEMEDB_READ_WAIT_MS" in r.stderr, r.stderr
    assert not (tmp_path / "data").exists()


def test_cluster_init_needs_the_nats_urls(tmp_path):
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "STEMEDB_CLUSTER_NATS"}
    r = subprocess.run([sys.executable, "-m", "stemedb", "cluster", "init"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "STEMEDB_CLUSTER_NATS" in r.stderr, r.stderr
