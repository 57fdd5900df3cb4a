# StemeDB: `make serve` runs the server, `make test` runs the tests.
# Both do all the set-up first (a virtualenv in .venv with every Python
# package, the Cython build, and the Debian packages the tests drive).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp-setup
PYTEST_ARGS ?=

.PHONY: setup serve test test-pure test-fast bench bench-smoke clean-build

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py stemedb/core/_fast.pyx scripts/setup-system.sh
	bash scripts/setup-system.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel "Cython>=3.0"
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -c "import stemedb.core._fast" || (echo "the Cython extension did not build" >&2; exit 1)
	touch $@

serve: $(STAMP)
	$(BIN)/stemedb serve

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	STEMEDB_REQUIRE_FAST=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

test-pure: $(STAMP)
	STEMEDB_PURE_PYTHON=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-smoke: $(STAMP)
	$(BIN)/python -m bench.run --quick

clean-build:
	rm -rf build stemedb/core/_fast.c stemedb/core/_fast*.so $(STAMP)
