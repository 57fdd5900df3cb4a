"""The built wheel, installed into a fresh virtualenv with nothing of the
checkout on its path, serves, backs up, restores and verifies.

This is what a user who only has ``pip install`` runs: the wheel is built
from a copy of the working tree (``pip wheel --no-deps``), installed with
``pip install`` into a plain ``python -m venv`` (its dependencies come from
the package index), and every command runs from an empty temporary
directory with a clean environment, so ``import stemedb`` can only find the
installed package.  Takes a minute or two (the compiled extension is built
once): marked slow.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tests.conftest import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 600
INSTALL_TIMEOUT = 600
STEP_TIMEOUT = 120
NETWORK_WORDS = ("NewConnectionError", "Temporary failure in name resolution",
                 "No matching distribution found", "Could not find a version that satisfies")


def _source_copy(dest: Path) -> Path:
    """The working tree (tracked and new files, nothing ignored: no .venv,
    no build/, no compiled extension) copied to ``dest``."""
    r = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       cwd=ROOT, capture_output=True, timeout=60)
    if r.returncode != 0:
        pytest.skip(f"git cannot list the working tree: {r.stderr.decode(errors='replace')}")
    for rel in filter(None, r.stdout.decode().split("\0")):
        src = ROOT / rel
        if not src.is_file():          # listed but deleted in the working tree
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    return dest


def _build_wheel(tmp: Path) -> Path:
    src = _source_copy(tmp / "src")
    out = tmp / "wheels"
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-w", str(out), "-q"]
    try:   # the build tools of this interpreter, when it has them: no download for the build
        import Cython  # noqa: F401
        import numpy  # noqa: F401
        import setuptools  # noqa: F401
        cmd.append("--no-build-isolation")
    except ImportError:
        pass
    r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert r.returncode == 0, f"pip wheel failed:\n{r.stdout}\n{r.stderr}"
    wheels = sorted(out.glob("stemedb-*.whl"))
    assert len(wheels) == 1, f"expected one stemedb wheel, got {wheels}"
    return wheels[0]


# CI's two runs pass these on: the installed wheel then must carry the
# compiled extension (REQUIRE_FAST), or runs the pure-Python path (PURE).
PASSED_ON = ("STEMEDB_REQUIRE_FAST", "STEMEDB_PURE_PYTHON")


def _clean_env(**extra: str) -> dict:
    """The environment without anything pointing into the checkout."""
    env = {k: v for k, v in os.environ.items()
           if k in PASSED_ON or not k.startswith(("STEMEDB_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and not p.startswith(str(ROOT)))
    env.update(extra)
    return env


def _run(cmd: list[str], cwd: Path, env: dict, timeout: float = STEP_TIMEOUT,
         **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def _http(url: str, body: dict | None = None, timeout: float = 5.0) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the venv's bin directory, a scratch working directory): the wheel installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(tmp)
    venv = tmp / "venv"
    r = subprocess.run([sys.executable, "-m", "venv", str(venv)], cwd=tmp, capture_output=True,
                       text=True, timeout=STEP_TIMEOUT, env=_clean_env())
    assert r.returncode == 0, f"python -m venv failed:\n{r.stderr}"
    bin_dir = venv / "bin"
    r = _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel)], tmp,
             _clean_env(), timeout=INSTALL_TIMEOUT)
    if r.returncode != 0 and any(w in r.stderr for w in NETWORK_WORDS):
        pytest.skip(f"the package index is not reachable for the wheel's dependencies:\n"
                    f"{r.stderr[-2000:]}")
    assert r.returncode == 0, f"pip install of {wheel.name} failed:\n{r.stdout}\n{r.stderr}"
    work = tmp / "work"            # an empty directory: nothing importable from the cwd
    work.mkdir()
    return bin_dir, work


def test_installed_package_is_not_the_checkout(installed):
    bin_dir, work = installed
    r = _run([str(bin_dir / "python"), "-c", "import stemedb, sys; print(stemedb.__file__); "
              "print(any(p.startswith(sys.argv[1]) for p in sys.path))", str(ROOT)],
             work, _clean_env())
    assert r.returncode == 0, r.stderr
    where, on_path = r.stdout.split()
    assert where.startswith(str(bin_dir.parent)), f"stemedb imported from {where}, not the venv"
    assert on_path == "False", "the checkout must not be on sys.path"
    r = _run([str(bin_dir / "stemedb"), "--version"], work, _clean_env())
    assert r.returncode == 0 and r.stdout.startswith("stemedb "), r.stdout + r.stderr


def test_serve_backup_restore_verify_from_the_wheel(installed):
    bin_dir, work = installed
    stemedb = str(bin_dir / "stemedb")
    data, backups, restored = work / "data", work / "backups", work / "restored"
    port = free_port()
    env = _clean_env(STEMEDB_DATA_DIR=str(data), STEMEDB_BACKUP_DIR=str(backups),
                     STEMEDB_BIND=f"127.0.0.1:{port}",
                     STEMEDB_DASHBOARD_BIND=f"127.0.0.1:{free_port()}")

    # serve: healthy, takes one assertion, stops cleanly on SIGTERM
    log = open(work / "serve.log", "w+")
    proc = subprocess.Popen([stemedb, "serve"], cwd=work, env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        health = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, health = _http(url + "/v1/health", timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        log.seek(0)
        assert health is not None and proc.poll() is None, \
            f"stemedb serve from the wheel did not become healthy:\n{log.read()[-4000:]}"
        status, put = _http(url + "/v1/assert", {
            "concept_path": "drugs/aspirin", "predicate": "max_dose_mg", "value": 4000,
            "confidence": 0.9, "source": "pubmed://1", "timestamp": 1_700_000_000})
        assert status == 201 and len(put["hash"]) == 64, (status, put)
        status, health = _http(url + "/v1/health")
        assert status == 200 and health["assertion_count"] == 1, health
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            code = None
        log.seek(0)
        out = log.read()
        log.close()
    assert code == 0, f"stemedb serve did not stop cleanly on SIGTERM ({code}):\n{out[-4000:]}"

    # backup: the path is the last line of stdout
    r = _run([stemedb, "backup"], work, env)
    assert r.returncode == 0, r.stdout + r.stderr
    backup = r.stdout.strip().splitlines()[-1]
    assert Path(backup).parent == backups and (Path(backup) / "metadata.json").is_file()
    assert json.loads((Path(backup) / "metadata.json").read_text())["assertion_count"] == 1

    # restore into a new data directory, without a question (no terminal, and --yes)
    r = _run([stemedb, "restore", backup, "--yes", "--data-dir", str(restored)], work, env)
    assert r.returncode == 0 and "Restore complete" in r.stdout, r.stdout + r.stderr

    # verify the restored store and the backup: consistent, the one assertion there
    for target in (restored, Path(backup)):
        r = _run([stemedb, "verify", str(target)], work, env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "1 assertions" in r.stdout and r.stdout.rstrip().endswith("consistent"), r.stdout
