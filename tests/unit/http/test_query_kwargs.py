"""``schemas.query_kwargs`` leaves out the fields at their default: each default
of ``QueryIn`` must then be what ``run_query`` uses without the argument,
or a query would change meaning between the HTTP API and the embedded one."""
from __future__ import annotations

import inspect

import msgspec
import pytest

from stemedb.core.query import run_query
from stemedb.http import schemas as S


def test_every_query_default_is_the_engines():
    params = inspect.signature(run_query).parameters
    for f in msgspec.structs.fields(S.QueryIn):
        if f.required or f.name == "min_seq":    # min_seq is the HTTP layer's own
            continue
        assert f.name in params, f"QueryIn.{f.name} is no run_query argument"
        assert params[f.name].default == f.default, \
            f"QueryIn.{f.name} defaults to {f.default!r}, run_query to {params[f.name].default!r}"


@pytest.mark.parametrize("body", [
    b'{"concept_path": "a/b"}',
    b'{"concept_path": "a/b", "predicate": "p", "lens": "consensus", "limit": 5}',
    b'{"concept_path": "a/b", "lens": "recency", "limit": 100, "decay": false}',
    b'{"concept_path": "a/b", "predicate": null, "as_of": 1700000000, "since": "2024-01-01T00:00:00Z",'
    b' "include_retracted": true, "lifecycle": "any", "epoch": "e", "cursor": "c", "min_seq": 0}',
])
def test_query_kwargs_are_to_kwargs_without_the_defaults(body):
    q = S.DECODERS[S.QueryIn].decode(body)
    full = S.to_kwargs(q)
    lean = S.query_kwargs(q)
    defaults = {f.name: f.default for f in msgspec.structs.fields(S.QueryIn) if not f.required}
    # every field given and not at its default is passed, with its value;
    # a field left out is at its default (msgspec may also pass one that is)
    assert {k: v for k, v in full.items() if defaults.get(k, object()) != v}.items() \
        <= lean.items() <= full.items()
    assert all(full[k] == defaults[k] for k in full.keys() - lean.keys())
