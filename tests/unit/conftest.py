"""Fixtures shared by the engine's unit tests."""
from __future__ import annotations

import pytest

from stemedb import open_store
from tests.conftest import NoFsyncFS


@pytest.fixture
def data(tmp_path):
    """The test's data directory (not created: open_store creates it)."""
    return str(tmp_path / "data")


@pytest.fixture
def opener(data):
    """open_store on the test's data dir with the no-flush file layer and no
    audit; every store it opened is closed at the end (close is idempotent)."""
    opened = []

    def _open(**kw):
        kw.setdefault("fs", NoFsyncFS())
        kw.setdefault("audit", False)
        s = open_store(data, **kw)
        opened.append(s)
        return s
    yield _open
    for s in opened:
        s.close()
