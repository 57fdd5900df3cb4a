"""``_fast.no_refs`` against its pure twin ``fast.no_refs_py``: whether no
record of a batch names a parent, a source assertion or an epoch (the
writer's check before a batch's per-batch path, ``Writer._put_many``).
Records of the type the compiled build reads at slot offsets, of another
type (attribute lookups), and bad input (not a list, a record lacking a
field) must give the same answer or the same error.

The compiled half is skipped in the pure run (STEMEDB_PURE_PYTHON=1).
"""
from types import SimpleNamespace

import pytest

from stemedb.core import fast
from stemedb.model import prepare_assertion

_fast = fast._fast
compiled = pytest.mark.skipif(_fast is None, reason="pure-Python run")
IMPLS = [pytest.param(fast.no_refs_py, id="pure"),
         pytest.param(getattr(_fast, "no_refs", None), id="compiled", marks=compiled)]
H = "ab" * 32


def rec(i, **kw):
    return prepare_assertion({"concept_path": f"d/e{i}/a", "predicate": "p", "value": i,
                              "confidence": 0.5, "timestamp": 1_700_000_000 + i, **kw},
                             default_time_us=1)


def ns(**kw):
    base = {"parent_hash": None, "derived_from": None, "epoch": None}
    return SimpleNamespace(**{**base, **kw})


def test_the_chooser():
    assert fast.no_refs is (fast.no_refs_py if _fast is None else _fast.no_refs)


CASES = [
    [],
    [rec(i) for i in range(20)],
    [rec(0), rec(1, parent_hash=H)],
    [rec(0), rec(1, derived_from=[H])],
    [rec(0), rec(1, epoch="e1")],
    [ns(), ns()],                                 # another type: attribute lookups
    [ns(), ns(epoch="x")],
    [rec(0), ns(derived_from=[b"x"])],
]


@pytest.mark.parametrize("fn", IMPLS)
@pytest.mark.parametrize("i", range(len(CASES)))
def test_answers(fn, i):
    want = all(getattr(r, f) is None for r in CASES[i]
               for f in ("parent_hash", "derived_from", "epoch"))
    assert fn(CASES[i]) is want


@pytest.mark.parametrize("fn", IMPLS)
def test_bad_input(fn):
    with pytest.raises(TypeError):
        fn(tuple(CASES[1]))
    with pytest.raises(AttributeError):
        fn([rec(0), SimpleNamespace(parent_hash=None)])       # lacks derived_from
    # a named parent is seen before a missing epoch is read (field by field)
    assert fn([rec(0, parent_hash=H), SimpleNamespace(parent_hash=None,
                                                      derived_from=None)]) is False
    # every record's parent is read before deciding: a missing one raises
    with pytest.raises(AttributeError):
        fn([rec(0, parent_hash=H), SimpleNamespace()])
