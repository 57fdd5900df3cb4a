"""Fixtures of the pytest-benchmark suite (``pytest bench/``).

Small versions of ``bench/run.py``'s workloads, sized to run in about a
minute on two cores: a workload of :data:`BENCH_N` assertions, every
available engine (StemeDB is skipped with the reason when ``open_store``
does not work yet).  Timing targets are not asserted here (``bench/run.py``
reports the ratios); correctness of the answers is.
"""
from __future__ import annotations

import gc
import os

import pytest

from .peers import ENGINES, open_engine
from .workload import generate

BENCH_N = int(os.environ.get("STEMEDB_BENCH_N", "20000"))

_unavailable: dict[str, str | None] = {}


def unavailable(name: str) -> str | None:
    if name not in _unavailable:
        _unavailable[name] = ENGINES[name].available()
    return _unavailable[name]


@pytest.fixture(scope="session")
def workload():
    w = generate(BENCH_N)
    gc.collect()
    gc.freeze()         # the harness's data stays out of every engine's GC pauses
    return w


@pytest.fixture(params=list(ENGINES))
def engine_name(request):
    why = unavailable(request.param)
    if why:
        pytest.skip(f"{request.param}: {why}")
    return request.param


class Loaded:
    """One store per engine holding the whole workload, opened once per session."""

    def __init__(self, factory, workload):
        self.factory = factory
        self.workload = workload
        self.open: dict = {}
        self.paths: dict[str, str] = {}

    def __call__(self, name: str):
        if name not in self.open:
            path = str(self.factory.mktemp(f"loaded-{name}"))
            eng = open_engine(name, path)
            for batch in self.workload.batches(1000):
                eng.put_batch(batch)
            self.open[name], self.paths[name] = eng, path
        return self.open[name]

    def close(self):
        for eng in self.open.values():
            eng.close()
        self.open.clear()


@pytest.fixture(scope="session")
def loaded(tmp_path_factory, workload):
    stores = Loaded(tmp_path_factory, workload)
    yield stores
    stores.close()


@pytest.fixture
def fresh(tmp_path_factory):
    """fresh(name) -> an adapter on an empty directory; closed at teardown."""
    made = []

    def make(name: str):
        eng = open_engine(name, str(tmp_path_factory.mktemp(f"fresh-{name}")))
        made.append(eng)
        return eng

    yield make
    for eng in made:
        eng.close()
