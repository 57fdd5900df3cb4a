"""Settings are one documented table: .env.example lists every variable."""
import dataclasses
import inspect
import json
import logging
import os
import pathlib
import re
import time

import pytest

from stemedb import cli
from stemedb.config import (
    Settings, known_variables, load_env_file, read_env_file, unknown_variables,
)
from stemedb.core.store import STORE_SETTINGS, Store, open_store
from stemedb.errors import ConfigError
from stemedb.http.app import open_store_for
from tests.conftest import NoFsyncFS, body

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONTRACT_NAMES = {
    "STEMEDB_DATA_DIR", "STEMEDB_BIND", "STEMEDB_DASHBOARD_BIND", "STEMEDB_DURABILITY",
    "STEMEDB_SEGMENT_SIZE", "STEMEDB_API_KEYS_FILE", "STEMEDB_ALLOW_ANONYMOUS",
    "STEMEDB_REQUIRE_SIGNATURES", "STEMEDB_RATE_LIMITS", "STEMEDB_TRUSTED_PROXIES",
    "STEMEDB_BACKUP_DIR", "STEMEDB_PURE_PYTHON", "STEMEDB_REQUIRE_FAST",
    "STEMEDB_METRICS_REQUIRE_KEY",
}


def env_example() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


def test_env_example_lists_every_setting_with_its_default():
    listed = env_example()
    names = {Settings.env_name(f.name) for f in dataclasses.fields(Settings)}
    assert set(listed) == names, "every setting must appear in .env.example, and nothing else"
    assert CONTRACT_NAMES <= names, "the contract's variable names are fixed"
    parsed = Settings.from_env(listed)
    assert parsed == Settings(), ".env.example must state the real defaults"


def test_contract_defaults():
    s = Settings()
    assert s.data_dir == "./data" and s.bind == "127.0.0.1:18180"
    assert s.dashboard_bind == "127.0.0.1:18188" and s.durability == "fsync"
    assert s.segment_size == 67108864 and s.backup_dir == "./backups"


@pytest.mark.parametrize("var,value,field", [
    ("STEMEDB_DURABILITY", "sometimes", "durability"),
    ("STEMEDB_SEGMENT_SIZE", "big", "segment_size"),
    ("STEMEDB_ALLOW_ANONYMOUS", "maybe", "allow_anonymous"),
])
def test_bad_setting_names_the_variable(var, value, field):
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({var: value})
    assert exc.value.field == field
    assert var in str(exc.value) or field.upper() in str(exc.value)


# --------------------------------------------------------------- every field is used

def test_every_setting_is_read_somewhere():
    """A Settings field nobody reads is a setting the user changes in vain."""
    sources = {p: p.read_text() for p in (ROOT / "stemedb").rglob("*.py")
               if p.name != "config.py"}
    sources[ROOT / "ops/gunicorn.conf.py"] = (ROOT / "ops/gunicorn.conf.py").read_text()
    text = "\n".join(sources.values())
    dead = [f.name for f in dataclasses.fields(Settings)
            if not re.search(rf"\.{f.name}\b|\"{f.name}\"|{Settings.env_name(f.name)}\b", text)]
    assert not dead, f"settings read by nothing (remove them or use them): {dead}"


def test_store_settings_are_settings_and_store_options():
    params = inspect.signature(Store.__init__).parameters
    fields = {f.name for f in dataclasses.fields(Settings)}
    for name in STORE_SETTINGS:
        assert name in fields and name in params, name
    # every Settings field that the Store takes goes through open_store(settings=)
    assert set(STORE_SETTINGS) == fields & set(params), \
        "a Settings field the Store takes must be listed in store.STORE_SETTINGS"


def test_open_store_turns_the_audit_setting_into_the_store_option(tmp_path):
    with open_store(settings=Settings(data_dir=str(tmp_path / "a"), audit="off"),
                    fs=NoFsyncFS()) as s:
        assert s.audit is None, "STEMEDB_AUDIT=off: no audit trail"
    with open_store(settings=Settings(data_dir=str(tmp_path / "b")), fs=NoFsyncFS()) as s:
        assert s.audit is not None


# --------------------------------------------------------------- the server's store

def non_default_store_settings(data_dir) -> Settings:
    return Settings(data_dir=str(data_dir), durability="batch", segment_size=8192,
                    batch_delay_ms=7.5, snapshot_interval=5, lock_timeout=1.5)


def test_server_opens_the_store_with_every_store_setting(tmp_path):
    """stemedb serve's worker opens the store through open_store_for: before
    v1.1 it passed only durability, segment_size and lock_timeout, so
    STEMEDB_SNAPSHOT_INTERVAL and STEMEDB_BATCH_DELAY_MS were ignored."""
    settings = non_default_store_settings(tmp_path / "data")
    store = open_store_for(settings, settings.lock_timeout)
    try:
        assert store.path == str(tmp_path / "data")
        assert store.wal.durability == "batch"
        assert store.wal.segment_size == 8192
        assert store.wal.batch_delay == pytest.approx(0.0075), "STEMEDB_BATCH_DELAY_MS"
        assert store.snapshot_interval == 5, "STEMEDB_SNAPSHOT_INTERVAL"
        meta = tmp_path / "data" / "metadata.json"
        for i in range(6):
            store.put(body(i))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and json.loads(meta.read_text())["last_seq"] < 5:
            time.sleep(0.02)
        assert json.loads(meta.read_text())["last_seq"] >= 5, \
            "a snapshot follows every STEMEDB_SNAPSHOT_INTERVAL records under the server too"
    finally:
        store.close()


def test_open_store_takes_settings_and_keywords(tmp_path):
    settings = non_default_store_settings(tmp_path / "a")
    with open_store(settings=settings, fs=NoFsyncFS()) as s:
        assert s.path == str(tmp_path / "a") and s.snapshot_interval == 5
        assert s.wal.batch_delay == pytest.approx(0.0075)
    # keyword arguments win over settings; the contract's form keeps working
    with open_store(tmp_path / "b", settings=settings, durability="none",
                    snapshot_interval=0) as s:
        assert s.path == str(tmp_path / "b") and s.wal.durability == "none"
        assert s.snapshot_interval == 0 and s.wal.segment_size == 8192
    with open_store(tmp_path / "c", durability="none", segment_size=65536) as s:
        assert s.wal.segment_size == 65536 and s.snapshot_interval == 100_000


@pytest.mark.parametrize("kw,field", [({"snapshot_interval": -1}, "snapshot_interval"),
                                      ({"lock_timeout": -2.0}, "lock_timeout"),
                                      ({"batch_delay_ms": -1}, "batch_delay_ms")])
def test_bad_store_settings_are_refused_before_anything_opens(tmp_path, kw, field):
    with pytest.raises(ConfigError) as exc:
        open_store(tmp_path / "d", **kw)
    assert exc.value.field == field and Settings.env_name(field) in str(exc.value)
    assert not (tmp_path / "d").exists(), "a refused setting creates nothing"


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def stemedb_log():
    logger = logging.getLogger("stemedb")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_a_changed_segment_size_is_a_warning_and_applies_to_new_segments(tmp_path, stemedb_log):
    data = tmp_path / "data"
    with open_store(data, fs=NoFsyncFS(), segment_size=1 << 20) as s:
        for i in range(20):
            s.put(body(i, value="x" * 500))
        assert s.wal_segments == 1
    assert json.loads((data / "metadata.json").read_text())["segment_size"] == 1 << 20
    assert not [m for m in stemedb_log if "SEGMENT_SIZE" in m]
    with open_store(data, fs=NoFsyncFS(), segment_size=4096) as s:
        warned = [m for m in stemedb_log if "STEMEDB_SEGMENT_SIZE" in m]
        assert len(warned) == 1 and "4096" in warned[0] and str(1 << 20) in warned[0], warned
        for i in range(20, 40):
            s.put(body(i, value="x" * 500))
        assert s.wal_segments >= 3, "the new size seals the active segment and new ones"
        assert s.count == 40
    assert json.loads((data / "metadata.json").read_text())["segment_size"] == 4096
    stemedb_log.clear()
    with open_store(data, fs=NoFsyncFS(), segment_size=4096) as s:
        assert s.count == 40
    assert not [m for m in stemedb_log if "SEGMENT_SIZE" in m], "no warning once recorded"


# --------------------------------------------------------------- unknown variables

def misspelt(name: str) -> str:
    # built at run time, so that the repository scan below never meets it
    return name + "L"


def test_a_misspelt_variable_is_named_with_the_closest_setting():
    warnings = unknown_variables({misspelt("STEMEDB_SNAPSHOT_INTERVAL"): "5", "HOME": "/"})
    assert warnings == [f"{misspelt('STEMEDB_SNAPSHOT_INTERVAL')} is not a StemeDB setting; "
                        f"did you mean STEMEDB_SNAPSHOT_INTERVAL?"]
    far = "STEMEDB_" + "QQQ"
    assert unknown_variables({far: "1"}) == [
        f"{far} is not a StemeDB setting (.env.example lists them); it is ignored"]


def test_known_variables_are_not_warned_about():
    env = {name: "1" for name in known_variables()}
    assert unknown_variables(env) == []
    assert {"STEMEDB_CLUSTER_NATS", "STEMEDB_CLUSTER_STREAM", "STEMEDB_NODE_ID",
            "STEMEDB_READ_WAIT_MS", "STEMEDB_AUDIT", "STEMEDB_AUDIT_MAX_BYTES",
            "STEMEDB_PURE_PYTHON", "STEMEDB_REQUIRE_FAST"} <= known_variables(), \
        "the contract's variables outside the Settings table are known"


def test_every_variable_the_repository_uses_is_known():
    """One list: a STEMEDB_* name read anywhere in the project (code, scripts,
    ops files, docs, tests, benchmarks) is a setting or in OTHER_VARIABLES, so
    the start-up warning never names a variable the project itself uses."""
    names = set()
    files = [ROOT / ".env.example"]
    for top in ("stemedb", "scripts", "ops", "docs", "tests", "bench"):
        files += [p for p in (ROOT / top).rglob("*") if p.is_file() and p.suffix in (
            ".py", ".sh", ".md", ".service", ".conf", ".toml", ".yml", ".yaml", ".txt", "")]
    for p in files:
        # a name ending in "_" is a family (STEMEDB_CLUSTER_*), not a variable
        names |= {n for n in re.findall(r"STEMEDB_[A-Z0-9_]*", p.read_text(errors="replace"))
                  if not n.endswith("_")}
    # the misspelling the docs and the server test use as their example
    names.discard(misspelt("STEMEDB_SNAPSHOT_INTERVAL"))
    assert not sorted(names - known_variables()), \
        "add these to Settings or to stemedb.config.OTHER_VARIABLES"


# --------------------------------------------------------------- .env

def test_env_file_syntax(tmp_path):
    p = tmp_path / ".env"
    p.write_text("# a comment\n\n"
                 "STEMEDB_DURABILITY=batch\n"
                 "  STEMEDB_RATE_LIMITS = assert=5/second;query=off   # inline comment\n"
                 "export STEMEDB_LOG_LEVEL=debug\n"
                 "STEMEDB_DATA_DIR=\"/srv/stemedb data\"\n"
                 "STEMEDB_BACKUP_DIR='/srv/#backups'\n"
                 "STEMEDB_TRUSTED_PROXIES=\"a\\\"b\\\\c\"\n"
                 "STEMEDB_API_KEYS_FILE=\n")
    assert read_env_file(str(p)) == {
        "STEMEDB_DURABILITY": "batch",
        "STEMEDB_RATE_LIMITS": "assert=5/second;query=off",
        "STEMEDB_LOG_LEVEL": "debug",
        "STEMEDB_DATA_DIR": "/srv/stemedb data",
        "STEMEDB_BACKUP_DIR": "/srv/#backups",
        "STEMEDB_TRUSTED_PROXIES": 'a"b\\c',
        "STEMEDB_API_KEYS_FILE": "",
    }


@pytest.mark.parametrize("line,says", [
    ("STEMEDB_DURABILITY", "expected KEY=VALUE"),
    ("1STEMEDB=x", "expected KEY=VALUE"),
    ("STEMEDB_BIND=\"127.0.0.1:1", "never closes"),
    ("STEMEDB_BIND='a' b", "text after the closing"),
    ("STEMEDB_BIND=\"a\\qb\"", "unknown escape"),
])
def test_a_malformed_env_line_names_its_line(tmp_path, line, says):
    p = tmp_path / ".env"
    p.write_text(f"# settings\nSTEMEDB_DURABILITY=batch\n{line}\n")
    with pytest.raises(ConfigError) as exc:
        read_env_file(str(p))
    assert f"{p}, line 3:" in str(exc.value) and says in str(exc.value)


def test_the_environment_wins_over_the_env_file(tmp_path):
    p = tmp_path / ".env"
    p.write_text("STEMEDB_DURABILITY=batch\nSTEMEDB_SEGMENT_SIZE=8192\n")
    environ = {"STEMEDB_DURABILITY": "none"}
    assert load_env_file(str(p), environ) == {"STEMEDB_SEGMENT_SIZE": "8192"}
    assert Settings.from_env(environ) == Settings(durability="none", segment_size=8192)
    assert load_env_file(str(tmp_path / "absent"), environ) == {}


def test_env_example_copied_to_env_gives_the_defaults(tmp_path):
    """.env.example says "copy to .env": doing so must change nothing."""
    environ: dict = {}
    load_env_file(str(ROOT / ".env.example"), environ)
    assert Settings.from_env(environ) == Settings()
    assert unknown_variables(environ) == []


# --------------------------------------------------------------- stemedb serve, up to gunicorn

@pytest.fixture
def serve_cwd(tmp_path, monkeypatch):
    """``stemedb serve`` in tmp_path with a clean STEMEDB_* environment; gunicorn
    is replaced by a recorder of the settings it would have been given."""
    import stemedb.http.server as server_mod
    for k in list(os.environ):
        if k.startswith("STEMEDB_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    seen = []
    monkeypatch.setattr(server_mod, "serve", lambda settings: seen.append(settings) or 0)
    yield seen
    for k in list(os.environ):  # load_env_file set them in os.environ
        if k.startswith("STEMEDB_"):
            os.environ.pop(k)


def test_serve_reads_dotenv_and_the_environment_wins(serve_cwd, tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("STEMEDB_SNAPSHOT_INTERVAL=50\nSTEMEDB_DURABILITY=batch\n")
    monkeypatch.setenv("STEMEDB_DURABILITY", "none")
    assert cli.main(["serve"]) == 0
    (settings,) = serve_cwd
    assert settings.snapshot_interval == 50 and settings.durability == "none"


def test_serve_refuses_a_malformed_env_file(serve_cwd, tmp_path, capsys):
    (tmp_path / ".env").write_text("STEMEDB_DURABILITY=batch\n\nSTEMEDB_BIND 127.0.0.1:1\n")
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and ".env" in err and "KEY=VALUE" in err
    assert serve_cwd == [], "nothing starts"


def test_serve_names_the_env_file_for_a_bad_value(serve_cwd, tmp_path, capsys):
    (tmp_path / ".env").write_text("STEMEDB_DURABILITY=sometimes\n")
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "STEMEDB_DURABILITY" in err and str(tmp_path / ".env") in err
    assert serve_cwd == []


def test_serve_warns_about_unknown_variables(serve_cwd, tmp_path, monkeypatch, stemedb_log):
    monkeypatch.setenv(misspelt("STEMEDB_SNAPSHOT_INTERVAL"), "5")
    (tmp_path / ".env").write_text(misspelt("STEMEDB_BATCH_DELAY_MS") + "=5\n")
    assert cli.main(["serve"]) == 0
    assert (f"{misspelt('STEMEDB_SNAPSHOT_INTERVAL')} is not a StemeDB setting; "
            f"did you mean STEMEDB_SNAPSHOT_INTERVAL?") in stemedb_log
    assert (f"{misspelt('STEMEDB_BATCH_DELAY_MS')} is not a StemeDB setting; "
            f"did you mean STEMEDB_BATCH_DELAY_MS?") in stemedb_log
