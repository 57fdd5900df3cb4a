# StemeDB: `make serve` runs the server, `make test` runs the tests.
#
# Each does its own set-up first, once (a virtualenv in .venv):
#   setup-serve  what serving needs: the runtime Python packages and the
#                Cython build of stemedb/core/_fast.pyx. Nothing else.
#   setup-test   setup-serve, then the test extras (pytest, the S3 client,
#                the benchmark peers) and the Debian packages the tests drive
#                (chromium, nginx, prometheus, jq, openssl: see
#                scripts/setup-test-system.sh). Only `make test` and the
#                targets after it need these.
#   setup        = setup-test (CI runs `make setup`).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP_SERVE := $(VENV)/.stamp-serve
STAMP_TEST  := $(VENV)/.stamp-test
PYTEST_ARGS ?=

.PHONY: setup setup-serve setup-test serve test test-pure test-fast bench bench-smoke clean-build

setup: setup-test
setup-serve: $(STAMP_SERVE)
setup-test: $(STAMP_TEST)

$(STAMP_SERVE): pyproject.toml setup.py stemedb/core/_fast.pyx stemedb/core/_canon.pyx \
		stemedb/core/_query.pyx \
		stemedb/core/crc32c.h $(wildcard stemedb/core/blake3/*.c stemedb/core/blake3/*.h stemedb/core/blake3/*.S) \
		scripts/setup-system.sh
	PYTHON=$(PYTHON) bash scripts/setup-system.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel "Cython>=3.0"
	$(BIN)/pip install --quiet -e .
	@$(BIN)/python -c "import stemedb.core._fast, stemedb.core._canon, stemedb.core._query" || { \
	  echo "setup: the Cython extensions (stemedb.core._fast, _canon, _query) did not build (a C compiler and the" >&2; \
	  echo "Python headers are needed: Debian: apt-get install gcc python3-dev). To run on the" >&2; \
	  echo "slower pure-Python path instead: STEMEDB_PURE_PYTHON=1 $(BIN)/stemedb serve" >&2; \
	  exit 1; }
	touch $@

$(STAMP_TEST): $(STAMP_SERVE) scripts/setup-test-system.sh
	bash scripts/setup-test-system.sh
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

serve: $(STAMP_SERVE)
	$(BIN)/stemedb serve

test: $(STAMP_TEST)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP_TEST)
	STEMEDB_REQUIRE_FAST=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

test-pure: $(STAMP_TEST)
	STEMEDB_PURE_PYTHON=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP_TEST)
	$(BIN)/python -m bench.run

# CI's benchmark smoke: bench.run's quick report, then the pytest-benchmark
# suite at its quick size (bench/conftest.py: --bench-quick; under a minute).
bench-smoke: $(STAMP_TEST)
	$(BIN)/python -m bench.run --quick
	$(BIN)/python -m pytest bench/test_engine_bench.py --bench-quick -q

clean-build:
	rm -rf build stemedb/core/_fast.c stemedb/core/_fast*.so stemedb/core/_query.c \
		stemedb/core/_query*.so $(STAMP_SERVE) $(STAMP_TEST)
