"""snapshot.encode fills a buffer it did not zero first: every byte of the
file must still be written (header, meta, the alignment gaps, the arrays).
With the buffer handed over full of garbage the bytes are the same as with
a zeroed one, the gaps are zeros, each array sits at its directory offset,
the header's digest covers the rest, and the file reads back."""
from __future__ import annotations

import blake3
import msgspec
import numpy as np
import pytest

from stemedb.core import snapshot
from stemedb.core.format import SNAPSHOT_HEADER
from tests.conftest import NoFsyncFS
from tests.unit.test_snapshot import dump, rich_store


def _encode_with(monkeypatch, state, pos, fill):
    monkeypatch.setattr(snapshot, "_buffer", lambda n: np.full(n, fill, dtype=np.uint8))
    data = bytes(snapshot.encode(state, pos))
    monkeypatch.undo()
    return data


@pytest.mark.parametrize("align", [64, 1, 24])
def test_every_byte_is_written(tmp_path, monkeypatch, align):
    s = rich_store(str(tmp_path / "d"))
    pos = s._position()
    monkeypatch.setattr(snapshot, "ALIGN", align)
    a = _encode_with(monkeypatch, s.state, pos, 0x00)
    monkeypatch.setattr(snapshot, "ALIGN", align)
    b = _encode_with(monkeypatch, s.state, pos, 0xAB)
    monkeypatch.setattr(snapshot, "ALIGN", align)
    plain = snapshot.encode(s.state, pos)
    assert isinstance(plain, memoryview) and plain.readonly
    assert a == b == bytes(plain), "no byte depends on what the buffer held"

    magic, _maj, _min, meta_len, digest = SNAPSHOT_HEADER.unpack_from(b, 0)
    hs = SNAPSHOT_HEADER.size
    assert digest == blake3.blake3(b[hs:]).digest()
    meta = msgspec.msgpack.decode(b[hs:hs + meta_len])
    base = hs + meta_len
    if align == 64:
        assert base % 64 == 0
    covered = np.zeros(len(b) - base, dtype=bool)
    arrays = {}
    for name, dt, shape, off, nbytes in meta["arrays"]:
        arrays[name] = np.frombuffer(b, dtype=dt, count=int(np.prod(shape)),
                                     offset=base + off).reshape(shape)
        covered[off:off + nbytes] = True
    body = np.frombuffer(b, np.uint8, offset=base)
    assert not body[~covered].any(), "the alignment gaps are zeros"
    if align != 1:
        assert (~covered).any(), "the layout has gaps to check"
    st = s.state
    for name, arr in st.cols.arrays().items():
        assert np.array_equal(arrays["col." + name], arr), name
    for m in ("by_hash", "by_key", "by_path", "by_source"):
        assert np.array_equal(arrays[m + ".keys"], getattr(st, m).keys), m

    monkeypatch.setattr(snapshot, "ALIGN", 64)
    path = snapshot.write(NoFsyncFS(), str(tmp_path / f"db{align}"), plain)
    got, pos2 = snapshot.read(path)
    assert pos2 == pos and dump(got) == dump(st)
    s.close()
