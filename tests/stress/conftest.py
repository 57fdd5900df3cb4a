"""Fixtures for the crash and stress tests."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest


@pytest.fixture
def fast_tmp(tmp_path):
    """A scratch directory on tmpfs when there is one.

    CrashFS decides what a crash keeps, so these tests need no real disk, and
    they create and delete thousands of files: tmpfs makes that ~4x faster.
    """
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    if base is None:
        yield tmp_path
        return
    d = tempfile.mkdtemp(prefix="stemedb-test-", dir=base)
    try:
        import pathlib
        yield pathlib.Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)
