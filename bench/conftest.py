"""Fixtures of the pytest-benchmark suite (``pytest bench/``).

Small versions of ``bench/run.py``'s workloads, sized to run in about a
minute on two cores: a workload of :data:`BENCH_N` assertions, every
available engine (StemeDB is skipped with the reason when ``open_store``
does not work yet).  Timing targets are not asserted here (``bench/run.py``
reports the ratios); correctness of the answers is.

``--bench-quick`` (CI's smoke, ``make bench-smoke``) runs the same
benchmarks smaller: a workload of :data:`QUICK_N` and the counts of
:data:`QUICK_SIZES` in place of the test module's own.  Every benchmark
still measures (:data:`QUICK_SIZES` keeps three rounds each), unlike
``--benchmark-disable``, which runs each once as a plain test.
"""
from __future__ import annotations

import gc
import os

import pytest

from .peers import ENGINES, open_engine
from .workload import generate

BENCH_N = int(os.environ.get("STEMEDB_BENCH_N", "20000"))

# --bench-quick: the workload size (STEMEDB_BENCH_N, when set, still wins) and
# the module constants of test_engine_bench.py it replaces.
QUICK_N = 10_000
QUICK_SIZES = {
    "W1_COUNT": 100,       # durable commits per round
    "W2_COUNT": 160,       # 8 threads x 20
    "W3_COUNT": 5000,      # 5 batches of 1,000
    "R1_KEYS": 500,
    "R2_PREFIXES": 25,
    "ROUNDS": 3,           # measured rounds per benchmark (the reads also have a warm-up)
}


def pytest_addoption(parser):
    parser.addoption("--bench-quick", action="store_true", default=False,
                     help="StemeDB benchmarks: small sizes and three rounds each, for CI's "
                          "smoke (bench/conftest.py QUICK_N, QUICK_SIZES)")


def _quick(config) -> bool:
    return bool(config.getoption("--bench-quick", default=False))


def workload_size(config) -> int:
    if _quick(config) and "STEMEDB_BENCH_N" not in os.environ:
        return QUICK_N
    return BENCH_N


@pytest.fixture(scope="module", autouse=True)
def bench_sizes(request):
    """With --bench-quick, the module's counts replaced by QUICK_SIZES."""
    if not _quick(request.config):
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        for name, value in QUICK_SIZES.items():
            if hasattr(request.module, name):
                mp.setattr(request.module, name, value)
        yield

_unavailable: dict[str, str | None] = {}


def unavailable(name: str) -> str | None:
    if name not in _unavailable:
        _unavailable[name] = ENGINES[name].available()
    return _unavailable[name]


@pytest.fixture(scope="session")
def workload(request):
    w = generate(workload_size(request.config))
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
