"""The docs in the repository stay true (issue 11).

- docs/reference/settings.md is generated from the settings object and must
  be current (``python -m stemedb.docsgen`` rewrites it);
- docs/reference/http.md lists exactly the server's routes, which are
  exactly the paths of /openapi.json, and names every field and error code;
- docs/reference/cli.md names every command and option;
- the source-class table matches the code's tables;
- the Python in docs/concepts.md and docs/reference/*.md runs as written and
  prints what the page shows;
- no markdown file links outside the repository, or to a file that is not
  there.
"""
import contextlib
import dataclasses
import io
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from stemedb import docsgen

ROOT = pathlib.Path(__file__).resolve().parents[2]
REF = ROOT / "docs" / "reference"
HTTP_MD = (REF / "http.md").read_text()
CLI_MD = (REF / "cli.md").read_text()
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


# ------------------------------------------------------------------ settings
def test_settings_md_is_generated_from_the_settings_object():
    current = (REF / "settings.md").read_text()
    assert current == docsgen.settings_markdown(), (
        "docs/reference/settings.md is out of date: run `python -m stemedb.docsgen` "
        "(a setting was added, removed or changed in stemedb/config.py or .env.example)")


def test_settings_md_has_a_row_per_setting_with_its_default():
    from stemedb.config import Settings
    text = (REF / "settings.md").read_text()
    for f in dataclasses.fields(Settings):
        row = next((line for line in text.splitlines()
                    if line.startswith(f"| `{Settings.env_name(f.name)}` |")), None)
        assert row, f"{Settings.env_name(f.name)} has no row"
        default = f.default
        want = "unset" if default is None else (
            ("`1`" if default else "`0`") if isinstance(default, bool) else f"`{default}`")
        assert row.split(" | ")[1] == want
        assert row.rstrip(" |").split(" | ")[-1].strip(), "every setting says what it means"


def test_docsgen_check_finds_a_stale_file_and_regenerates_it(tmp_path, capsys):
    (tmp_path / "docs" / "reference").mkdir(parents=True)
    (tmp_path / ".env.example").write_text((ROOT / ".env.example").read_text())
    stale = tmp_path / "docs" / "reference" / "settings.md"
    fresh = (REF / "settings.md").read_text()
    stale.write_text("\n".join(line for line in fresh.splitlines() if "_BIND` |" not in line))
    assert docsgen.main(["--check", "--root", str(tmp_path)]) == 1
    assert "python -m stemedb.docsgen" in capsys.readouterr().err
    assert docsgen.main(["--root", str(tmp_path)]) == 0
    assert docsgen.main(["--check", "--root", str(tmp_path)]) == 0
    assert stale.read_text() == docsgen.settings_markdown()


def test_a_setting_without_a_description_is_refused(tmp_path):
    env = "\n".join(line for line in (ROOT / ".env.example").read_text().splitlines()
                    if not line.startswith("# where backups go"))
    (tmp_path / ".env.example").write_text(env)
    with pytest.raises(ValueError, match="STEMEDB_BACKUP_DIR"):
        docsgen.settings_markdown(str(tmp_path / ".env.example"))


# ------------------------------------------------------------------ HTTP
def _app_routes(tmp_path) -> set[tuple[str, str]]:
    from stemedb import open_store
    from stemedb.http.app import create_app
    routes = set()
    with open_store(str(tmp_path / "data")) as store:
        app = create_app(store)

        def walk(nodes):
            for node in nodes:
                if node.resource is not None:
                    routes.update((m, node.uri_template) for m in METHODS
                                  if hasattr(node.resource, f"on_{m.lower()}"))
                walk(node.children)
        walk(app._router._roots)
    return routes


def _documented_endpoints() -> set[tuple[str, str]]:
    out = set()
    for line in HTTP_MD.splitlines():
        if line.startswith("### "):
            out.update(re.findall(r"`(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (/[^`\s]*)`", line))
    return out


def test_http_md_lists_exactly_the_routes_and_the_openapi_paths(tmp_path):
    from stemedb.http.openapi import build_openapi
    routes = _app_routes(tmp_path)
    documented = _documented_endpoints()
    assert documented == routes, (
        f"docs/reference/http.md (### headings) and the app differ: documented only "
        f"{sorted(documented - routes)}, served only {sorted(routes - documented)}")
    spec = {(m.upper(), path) for path, ops in build_openapi()["paths"].items() for m in ops}
    # HEAD is GET without a body; OpenAPI does not list it separately.
    assert spec == {r for r in routes if r[0] != "HEAD"}
    # The summary table lists the same endpoints.
    table = set(re.findall(r"^\| `(?:[A-Z]+ /[^`]*`(?:, )?`?)+", HTTP_MD, re.M))
    assert table, "the summary table of endpoints is there"
    for method, path in routes:
        assert f"`{method} {path}`" in HTTP_MD.split("### ")[0], f"{method} {path} not in the table"


def _struct_fields(struct) -> list[str]:
    import msgspec
    return [f.encode_name for f in msgspec.structs.fields(struct)]


def test_http_md_names_every_field():
    from stemedb.http import schemas as S
    missing = {f"{t.__name__}.{name}" for t in S.REQUEST_TYPES + S.RESPONSE_TYPES
               for name in _struct_fields(t) if f"`{name}`" not in HTTP_MD
               and f'"{name}"' not in HTTP_MD}
    assert not missing, f"docs/reference/http.md does not name these fields: {sorted(missing)}"


def _error_codes() -> set[str]:
    """Every error code the API port can send, read from the code."""
    import stemedb.errors as E
    from stemedb.http import errors as H
    codes = {cls.code for cls in vars(E).values()
             if isinstance(cls, type) and issubclass(cls, E.StemeError)
             and (400 <= cls.status < 500 or cls.code in ("storage_fault", "store_closed"))}
    codes |= set(H._FALCON_CODES.values()) | {"internal_error", "http_error"}
    for path in (ROOT / "stemedb" / "http").glob("*.py"):
        text = path.read_text()
        codes |= set(re.findall(r"\(\s*\d{3},\s*\"([a-z_]+)\"", text))      # HTTPProblem(400, "x" / tuples
        codes |= set(re.findall(r"\bcode\s*=\s*\"([a-z_]+)\"", text))
        codes |= set(re.findall(r"None,\s*\"([a-z_]+)\"\)", text))          # bad_request(msg, None, "x")
    return codes


def test_http_md_names_every_error_code():
    codes = _error_codes()
    assert {"invalid_field", "stale_vote", "rate_limited", "uri_too_long"} <= codes
    missing = sorted(c for c in codes if f"`{c}`" not in HTTP_MD)
    assert not missing, f"docs/reference/http.md does not document error codes {missing}"


def test_http_md_names_every_metric(tmp_path):
    from stemedb import open_store
    from stemedb.http.app import create_app
    from prometheus_client.exposition import generate_latest
    with open_store(str(tmp_path / "data")) as store:
        text = generate_latest(create_app(store).state.metrics.registry).decode()
    names = set(re.findall(r"^# TYPE (stemedb_\w+)", text, re.M))
    assert "stemedb_assertions" in names
    missing = sorted(n for n in names if f"`{n}`" not in HTTP_MD)
    assert not missing, f"docs/reference/http.md does not list metrics {missing}"


# ------------------------------------------------------------------ assertion
def test_source_class_table_matches_the_code():
    from stemedb.core.lens import HALF_LIFE_DAYS, TIER_MULTIPLIER
    from stemedb.model import SCHEME_CLASS, SOURCE_CLASSES
    text = (REF / "assertion.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (\d) \| (.*?) \| (never|\d+ days) \| ([\d.]+) \|$", text, re.M)
    assert [r[0] for r in rows] == list(SOURCE_CLASSES)
    for name, rank, schemes, half_life, multiplier in rows:
        assert int(rank) == SOURCE_CLASSES.index(name)
        want_days = HALF_LIFE_DAYS[name]
        assert half_life == ("never" if want_days is None else f"{want_days} days")
        assert float(multiplier) == TIER_MULTIPLIER[name]
        listed = set(re.findall(r"`([a-z]+)`", schemes))
        assert listed == {s for s, c in SCHEME_CLASS.items() if c == name}


# ------------------------------------------------------------------ CLI
def _subcommands(parser) -> dict:
    import argparse
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def test_cli_md_names_every_command_and_option():
    from stemedb import cli
    parser = cli._parser()
    assert "`stemedb --version`" in CLI_MD
    for name, sub in _subcommands(parser).items():
        assert f"`stemedb {name}" in CLI_MD, f"stemedb {name} is not in docs/reference/cli.md"
        for sub_name, subsub in _subcommands(sub).items():
            assert f"stemedb {name} {sub_name}" in CLI_MD
            for action in subsub._actions:
                for opt in action.option_strings:
                    assert opt in CLI_MD or opt in ("-h", "--help"), f"stemedb {name} {sub_name} {opt}"
        for action in sub._actions:
            for opt in action.option_strings:
                assert opt in CLI_MD or opt in ("-h", "--help"), f"stemedb {name} {opt}"


def _tools():
    """Every `stemedb` command whose code lives in a module of its own
    (``OPS_COMMANDS``: name -> (module, help[, function])), with the words
    that reach its options."""
    from stemedb.cli import OPS_COMMANDS
    return sorted((name, ("push",) if name == "archive" else ()) for name in OPS_COMMANDS)


@pytest.mark.parametrize("name,argv", _tools())
def test_cli_md_names_every_command_and_option_of_the_tools(name, argv):
    from stemedb import cli
    assert f"`stemedb {name}" in CLI_MD, f"stemedb {name} is not in docs/reference/cli.md"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            cli.main([name, *argv, "--help"])
        except SystemExit:
            pass
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", out.getvalue())) - {"--help"}
    missing = sorted(o for o in options if o not in CLI_MD)
    assert not missing, f"docs/reference/cli.md does not name stemedb {name}'s {missing}"


# ------------------------------------------------------------------ runnable examples
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
_RUNNER = r"""
import contextlib, io, json, sys
blocks = json.load(sys.stdin)
ns = {"__name__": "__main__"}
outs = []
for code in blocks:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, "<doc block>", "exec"), ns)
    outs.append(buf.getvalue())
print(json.dumps(outs))
"""


def _examples(path: pathlib.Path) -> list[tuple[str, str | None]]:
    """(python code, the text block right after it or None), in page order."""
    blocks = [(m.group(1), m.group(2)) for m in _BLOCK.finditer(path.read_text())]
    out = []
    for i, (lang, body) in enumerate(blocks):
        if lang == "python":
            nxt = blocks[i + 1] if i + 1 < len(blocks) else None
            out.append((body, nxt[1] if nxt and nxt[0] == "text" else None))
    return out


DOC_PAGES = [ROOT / "docs" / "concepts.md"] + sorted(
    p for p in REF.glob("*.md") if "```python" in p.read_text())


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_in_the_docs_runs_as_written(page, tmp_path):
    examples = _examples(page)
    assert examples, f"{page} has no python block"
    env = {k: v for k, v in os.environ.items() if k != "STEMEDB_DATA_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-c", _RUNNER], input=json.dumps([c for c, _ in examples]),
                       capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert r.returncode == 0, f"{page.name}: {r.stderr[-3000:]}"
    outs = json.loads(r.stdout.strip().splitlines()[-1])
    for (code, expected), got in zip(examples, outs):
        if expected is not None:
            assert got == expected, f"{page.name}: the block\n{code}\nprinted\n{got}\nnot\n{expected}"


def test_concepts_example_prints_what_it_shows():
    # The worked example has an expected output under every block.
    assert all(expected for _, expected in _examples(ROOT / "docs" / "concepts.md"))


# ------------------------------------------------------------------ links
_SKIP_DIRS = {".git", ".venv", "node_modules", "build", "dist", ".pytest_cache",
              ".hypothesis", ".benchmarks"}
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.M)
_HREF = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""")


def _markdown_files():
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(".egg-info")]
        for name in filenames:
            if name.endswith(".md"):
                yield pathlib.Path(dirpath) / name


def _links(text: str) -> list[str]:
    text = _BLOCK.sub("", text)                 # code blocks hold no links
    text = re.sub(r"`[^`\n]*`", "", text)       # nor does inline code
    return _LINK.findall(text) + _REF_LINK.findall(text) + _HREF.findall(text)


def _slug(heading: str) -> str:
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def _anchors(path: pathlib.Path) -> set[str]:
    text = _BLOCK.sub("", path.read_text())
    return {_slug(h) for h in re.findall(r"^#{1,6} (.*)$", text, re.M)}


def test_no_markdown_links_outside_the_repository():
    bad, checked = [], 0
    for md in _markdown_files():
        for target in _links(md.read_text()):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
                continue                        # a URL (https:, mailto:) or an anchor here
            checked += 1
            where = target.split("#", 1)[0]
            resolved = (md.parent / where).resolve() if not where.startswith("/") else None
            rel = md.relative_to(ROOT)
            if resolved is None or not resolved.is_relative_to(ROOT):
                bad.append(f"{rel}: {target} points outside the repository")
            elif not resolved.exists():
                bad.append(f"{rel}: {target} does not exist")
    assert checked > 20
    assert not bad, "\n".join(bad)


def test_no_text_sends_readers_to_the_shared_contract():
    offenders = [str(md.relative_to(ROOT)) for md in _markdown_files()
                 if re.search(r"\.\./shared\b|shared/API\.md", md.read_text())]
    assert not offenders, f"these pages send readers outside the repository: {offenders}"


@pytest.mark.parametrize("page", [ROOT / "README.md", ROOT / "docs" / "concepts.md"]
                         + sorted(REF.glob("*.md")), ids=lambda p: str(p.relative_to(ROOT)))
def test_anchors_in_our_pages_exist(page):
    bad = []
    for target in _links(page.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or "#" not in target:
            continue
        where, anchor = target.split("#", 1)
        dest = page if not where else (page.parent / where).resolve()
        if dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(target)
    assert not bad, f"{page.name}: links to missing anchors {bad}"
