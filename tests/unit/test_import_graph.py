"""No import cycles among StemeDB's modules (issue 9: codec -> model ->
timeutil -> fast -> codec, http/app <-> http/dashboard, ops/archive <->
ops/restore were closed by patching at import time or by imports hidden in
functions).

The graph is every ``import``/``from ... import`` of ``stemedb`` modules in
a module's top level and in its functions alike: an import moved into a
function to dodge a cycle is still the cycle.  The one kind left out is a
guarded optional import of the compiled extension (``_fast``/``_canon``),
which is a leaf.
"""
from __future__ import annotations

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "stemedb")
LEAVES = {"stemedb.core._fast", "stemedb.core._canon"}


def module_name(path: str) -> str:
    rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def modules() -> dict[str, str]:
    out = {}
    for d, _dirs, files in os.walk(ROOT):
        for n in files:
            if n.endswith(".py"):
                p = os.path.join(d, n)
                out[module_name(p)] = p
    return out


def imports_of(name: str, path: str, known: set[str]) -> set[str]:
    with open(path) as f:
        tree = ast.parse(f.read())
    pkg = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and t not in LEAVES:
                found.add(t)
    return found


def test_no_import_cycles():
    mods = modules()
    known = set(mods) | LEAVES
    graph = {m: imports_of(m, p, known) for m, p in mods.items()}
    # a package's __init__ importing its own submodules is how packages work
    for m in graph:
        graph[m] = {t for t in graph[m] if not (mods[m].endswith("__init__.py")
                                                 and t.startswith(m + "."))}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
