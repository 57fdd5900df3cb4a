"""The WAL's group write: ``_fast.write_sync`` (write + fdatasync in one
release of the GIL) against its pure twin, ``File.write`` then ``File.sync``.

The parity tests import the built extension themselves, so they run in the
pure run too (they skip only where it is not built); the WAL test checks
which of the two the store uses with the plain file layer and with a file
layer that does its own syncs (the tests' injected faults and crash model
must keep seeing every write and sync).
"""
from __future__ import annotations

import errno
import os

import pytest

from stemedb import open_store
from stemedb.core import fast
from stemedb.core.fileio import File, FileSystem
from tests.conftest import NoFsyncFS

_fast = pytest.importorskip("stemedb.core._fast", reason="compiled extension not built")


def _pure(path: str, data, sync: bool) -> None:
    f = FileSystem().open_append(path)
    try:
        f.write(data)
        if sync:
            f.sync()
    finally:
        f.close()


@pytest.mark.parametrize("sync", [True, False])
@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview-slice"])
def test_same_bytes_as_write_then_sync(tmp_path, sync, kind):
    chunks = [b"", b"x", bytes(range(256)) * 7, os.urandom(1 << 20)]
    a, b = str(tmp_path / "compiled"), str(tmp_path / "pure")
    for p in (a, b):
        with open(p, "wb") as fh:
            fh.write(b"head")
    fa = FileSystem().open_append(a)
    try:
        for c in chunks:
            data = {"bytes": c, "bytearray": bytearray(c),
                    "memoryview-slice": memoryview(b"??" + c + b"!!")[2:2 + len(c)]}[kind]
            _fast.write_sync(fa.fd, data, sync)
            _pure(b, data, sync)
    finally:
        fa.close()
    with open(a, "rb") as x, open(b, "rb") as y:
        got, want = x.read(), y.read()
    assert got == want == b"head" + b"".join(chunks)


def test_errors_are_the_ones_os_write_and_fdatasync_raise(tmp_path):
    # a closed descriptor: the write fails (EBADF), as os.write does
    fd = os.open(str(tmp_path / "f"), os.O_WRONLY | os.O_CREAT)
    os.close(fd)
    with pytest.raises(OSError) as want:
        os.write(fd, b"x")
    with pytest.raises(OSError) as got:
        _fast.write_sync(fd, b"x", True)
    assert got.value.errno == want.value.errno == errno.EBADF
    assert got.value.strerror == want.value.strerror
    # a read-only descriptor: the write fails, nothing is synced
    ro = os.open(str(tmp_path / "f"), os.O_RDONLY)
    try:
        with pytest.raises(OSError) as got:
            _fast.write_sync(ro, b"x", True)
        assert got.value.errno == errno.EBADF
    finally:
        os.close(ro)
    # a pipe takes the write, but fdatasync refuses it (EINVAL): the data is
    # written and the sync's error raised, as write then os.fdatasync would
    r, w = os.pipe()
    try:
        with pytest.raises(OSError) as want:
            os.fdatasync(w)
        with pytest.raises(OSError) as got:
            _fast.write_sync(w, b"abc", True)
        assert got.value.errno == want.value.errno
        assert os.read(r, 10) == b"abc"
        _fast.write_sync(w, b"de", False)       # no sync asked: no error
        assert os.read(r, 10) == b"de"
    finally:
        os.close(r)
        os.close(w)


def test_the_wal_uses_it_only_with_the_plain_file_layer(tmp_path):
    class OwnWrite(File):
        def write(self, data):
            super().write(data)

    class OwnWriteFS(FileSystem):
        file_class = OwnWrite
    cases = [(FileSystem(), fast.write_sync),       # None in the pure build
             (NoFsyncFS(), None),                   # its own sync: sees every one
             (OwnWriteFS(), None)]
    for i, (fs, want) in enumerate(cases):
        s = open_store(str(tmp_path / f"s{i}"), fs=fs, audit=False)
        try:
            assert s.wal._write_sync is want
            s.put({"concept_path": "a/b/c", "predicate": "p", "value": i, "confidence": 0.5})
            assert s.count == 1 and s.check() == []
        finally:
            s.close()
        s = open_store(str(tmp_path / f"s{i}"), fs=fs, audit=False)
        assert s.count == 1
        s.close()
