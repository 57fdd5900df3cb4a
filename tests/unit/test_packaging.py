"""The install is lean and polite, the version has one source, and the
implementation in use (compiled or pure) is never a secret (issue 11)."""
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

import stemedb
from stemedb import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def _names(reqs):
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("STEMEDB_PURE_PYTHON", "STEMEDB_REQUIRE_FAST")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


# ------------------------------------------------------------ dependencies
def test_runtime_dependencies_are_what_every_user_needs():
    runtime = _names(PROJECT["dependencies"])
    for optional in ("boto3", "lmdb", "rocksdict", "spectree", "moto"):
        assert optional not in runtime, f"{optional} is not a runtime dependency"
    extras = PROJECT["optional-dependencies"]
    assert "boto3" in _names(extras["s3"])
    assert {"lmdb", "rocksdict"} <= _names(extras["bench"])
    # make test and CI's benchmark smoke install the test extra: it must bring both.
    assert any(r.replace(" ", "").startswith("stemedb[") and "s3" in r and "bench" in r
               for r in extras["test"])
    everything = runtime.union(*(_names(v) for v in extras.values()))
    assert not {"spectree", "moto"} & everything, "unused packages are not installed at all"


@pytest.mark.parametrize("package", ["spectree", "moto"])
def test_dropped_packages_are_not_imported(package):
    pattern = re.compile(rf"^\s*(import|from)\s+{package}\b", re.M)
    users = [str(p.relative_to(ROOT)) for d in ("stemedb", "tests", "bench")
             for p in (ROOT / d).rglob("*.py") if pattern.search(p.read_text())]
    assert not users, f"{package} is imported by {users} but is no dependency"


def test_one_version_source():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "stemedb.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)?", stemedb.__version__)


def test_license():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    # No project URLs until the project has a public home: an invented address
    # on a package page would send users nowhere.
    assert "urls" not in PROJECT


# ------------------------------------------------------------ the S3 extra
def test_archive_without_boto3_names_the_extra(monkeypatch, capsys, tmp_path):
    from stemedb.ops import archive
    monkeypatch.setitem(sys.modules, "boto3", None)   # import boto3 -> ImportError
    with pytest.raises(archive.S3Unavailable) as exc:
        archive.client()
    assert "pip install 'stemedb[s3]'" in str(exc.value)
    rc = archive.main(["push", "--to", "bucket/prefix", "--once", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "pip install 'stemedb[s3]'" in err and "Traceback" not in err


def test_restore_from_s3_without_boto3_names_the_extra(monkeypatch, capsys, tmp_path):
    from stemedb.ops import restore
    monkeypatch.setitem(sys.modules, "boto3", None)
    rc = restore.main(["--from-s3", "bucket/prefix", "--data-dir", str(tmp_path / "data"),
                       "--yes", "--systemctl", ""])
    err = capsys.readouterr().err
    assert rc != 0 and "pip install 'stemedb[s3]'" in err and "Traceback" not in err
    assert not (tmp_path / "data").exists(), "nothing is touched before the S3 client exists"


# ------------------------------------------------------------ set-up split
MAKE = shutil.which("make")


def _make_dry(target: str) -> str:
    # -B: as if nothing were built yet; -n: print the commands, run none.
    r = subprocess.run([MAKE, "-n", "-B", target], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.skipif(not MAKE, reason="make is not installed")
def test_make_serve_installs_only_what_serving_needs():
    serve = _make_dry("serve")
    assert "pip install --quiet -e ." in serve and "import stemedb.core._fast" in serve
    assert "setup-test-system" not in serve and "[test]" not in serve
    assert "stemedb serve" in serve
    test = _make_dry("test")
    assert "setup-test-system.sh" in test and "-e '.[test]'" in test
    assert "setup-test-system.sh" in _make_dry("setup"), "CI's `make setup` sets up the tests too"


def test_set_up_scripts_never_stop_or_kill_anything():
    for name in ("setup-system.sh", "setup-test-system.sh"):
        code = "\n".join(line.split("#", 1)[0]
                         for line in (ROOT / "scripts" / name).read_text().splitlines())
        for word in ("pkill", "killall", "kill ", "systemctl", "service "):
            assert word not in code, f"scripts/{name} runs {word.strip()}"
    assert "setup-system.sh" not in (ROOT / "scripts" / "setup-test-system.sh").read_text() \
        .replace("setup-test-system.sh", "")


# ------------------------------------------------------------ version and implementation
def test_version_names_the_implementation(capsys):
    from stemedb.core import fast
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out
    want = "compiled" if fast.COMPILED else "pure"
    assert out.strip() == f"stemedb {stemedb.__version__} (implementation: {want})"


def test_python_dash_m_stemedb():
    r = subprocess.run([sys.executable, "-m", "stemedb", "--version"], capture_output=True,
                       text=True, timeout=120, env=_env(), cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"stemedb {stemedb.__version__} (implementation: ")
    r = subprocess.run([sys.executable, "-m", "stemedb", "--help"], capture_output=True,
                       text=True, timeout=120, env=_env(), cwd=ROOT)
    assert r.returncode == 0 and "serve" in r.stdout and "--version" in r.stdout


# Runs as if a compiled extension (argv[2]) had not been built.
_NO_FAST = """
import logging, sys
sys.modules[sys.argv[2]] = None
from stemedb import cli, open_store
rc = cli.main(["--version"])
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
with open_store(sys.argv[1]) as s:
    pass
sys.exit(rc)
"""


@pytest.mark.parametrize("missing", ["stemedb.core._fast", "stemedb.core._query"])
def test_pure_fallback_is_loud(tmp_path, missing):
    r = subprocess.run([sys.executable, "-c", _NO_FAST, str(tmp_path / "data"), missing],
                       capture_output=True, text=True, timeout=120, env=_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"stemedb {stemedb.__version__} (implementation: pure)"
    assert f"compiled extension not built: {missing}" in r.stderr
    warning = [line for line in r.stderr.splitlines()
               if line.startswith("WARNING Implementation: pure Python")]
    assert warning, r.stderr
    assert "slower" in warning[0] and "gcc" in warning[0], "says what it costs and how to fix it"
    assert r.stderr.index("WARNING Implementation") < r.stderr.index("Startup complete")


def test_require_fast_contradiction_is_reported(capsys, monkeypatch):
    from stemedb.core import implementation

    def contradiction():
        raise ImportError("STEMEDB_PURE_PYTHON=1 and STEMEDB_REQUIRE_FAST=1 contradict each other")
    monkeypatch.setattr(implementation, "describe", contradiction)
    assert cli.main(["--version"]) == 2
    cap = capsys.readouterr()
    assert "unavailable" in cap.out and "contradict" in cap.err


def test_start_up_log_names_the_implementation(tmp_path, caplog):
    from stemedb import open_store
    from stemedb.core import fast
    with caplog.at_level(logging.INFO, logger="stemedb"):
        with open_store(str(tmp_path / "data")):
            pass
    lines = [r for r in caplog.records if r.getMessage().startswith("Implementation: ")]
    assert len(lines) == 1
    if fast.COMPILED:
        assert lines[0].levelno == logging.INFO and "compiled" in lines[0].getMessage()
    else:
        assert "pure Python" in lines[0].getMessage() and "slower" in lines[0].getMessage()
