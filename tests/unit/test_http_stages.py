"""bench.http_stages names the functions it times by module and qualified
name; one renamed in stemedb/ would drop out of its table with only a line
on stderr (as ``Store.put_records`` did, which hid a single put's engine
cost).  Every stage it names must exist, and its wrapper must pass calls
through unchanged."""
import importlib

import pytest

from bench import http_stages


@pytest.mark.parametrize("modname,qual,label", http_stages.STAGES,
                         ids=[q for _, q, _ in http_stages.STAGES])
def test_every_stage_names_a_function_of_this_tree(modname, qual, label):
    target = importlib.import_module(modname)
    for part in qual.split("."):
        target = getattr(target, part, None)
        assert target is not None, f"{modname}.{qual} ({label!r}) is not in the tree"
    assert callable(target)


def test_a_timed_stage_returns_and_raises_what_it_wraps():
    def f(x, *, y=1):
        if x is None:
            raise KeyError("x")
        return x + y
    g = http_stages._timed("probe", f)
    assert g(1, y=2) == 3
    with pytest.raises(KeyError):
        g(None)
