"""Which engine implementation is in use, and what the pure fallback costs.

StemeDB runs on the compiled extensions (``stemedb.core._fast``, ``_canon``
and ``_query``) when they were built, else on the pure-Python reference;
``compiled`` means all three are in use.  Both give the same answers; the
pure path is slower.  ``stemedb --version``, ``/v1/health``
(``implementation``) and the start-up log all say which one is running, so a
build without a compiler never goes unnoticed.
"""
from __future__ import annotations

import logging
import os

# Measured in bench/results/engine-2026-11-25.md (compiled vs pure, same run).
PURE_COST = ("the pure-Python path recovers and rebuilds indexes about 4x slower than "
             "the compiled one, and its writes and queries are slower")
HOW_TO_BUILD = ("to build it, install a C compiler and the Python headers (Debian: apt-get "
                "install gcc python3-dev), then reinstall: pip install --no-cache-dir "
                "--force-reinstall --no-deps stemedb (in a checkout: make setup-serve)")


def _forced() -> bool:
    return os.environ.get("STEMEDB_PURE_PYTHON", "0") not in ("", "0")


def describe() -> tuple[str, str]:
    """``(name, detail)``: name is ``compiled`` or ``pure``; detail says why and what
    it costs.  Raises ImportError when the settings contradict each other or
    ``STEMEDB_REQUIRE_FAST=1`` finds no compiled build."""
    from . import fast, qfast
    built = {"stemedb.core._fast": fast.COMPILED, "stemedb.core._canon": fast.CANON_COMPILED,
             "stemedb.core._query": qfast.COMPILED}
    if all(built.values()):
        return "compiled", "compiled extensions " + ", ".join(built)
    if _forced():
        return "pure", f"pure Python, forced by STEMEDB_PURE_PYTHON=1; {PURE_COST}"
    missing = ", ".join(name for name, ok in built.items() if not ok)
    return "pure", (f"pure Python: compiled extension not built: {missing}; "
                    f"{PURE_COST}; {HOW_TO_BUILD}")


def log_startup(log: logging.Logger) -> str:
    """Log the implementation in use (a warning for an unplanned pure fallback)."""
    name, detail = describe()
    if name == "compiled":
        log.info("Implementation: %s", detail)
    elif _forced():
        log.info("Implementation: %s", detail)
    else:
        log.warning("Implementation: %s", detail)
    return name
