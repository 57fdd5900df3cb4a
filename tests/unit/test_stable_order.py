"""index.stable_order is numpy's stable argsort, on every key shape the
rebuild gives it and on the ones that take its other branches: 64-bit keys
that do not leave room for the index's bits (hash prefixes, source keys)
sort by their top bits and index, then fix the entries whose top bits tie
with a neighbour's; those ties are forced here (equal keys, keys differing
only in their low bits, all keys equal, signed keys of both signs)."""
import numpy as np
import pytest

from stemedb.core.index import stable_order


def _cases(n, rng):
    return {
        "uint64 random": rng.integers(0, 2**64, n, dtype=np.uint64),
        "int64 both signs": rng.integers(-2**63, 2**63, n, dtype=np.int64),
        "uint64 repeated": np.repeat(rng.integers(0, 2**64, max(1, n // 5), dtype=np.uint64), 5)[:n],
        "uint64 low bits only": rng.integers(0, 2**20, n, dtype=np.uint64) | np.uint64(2**63),
        "uint64 four values, high": rng.integers(0, 4, n, dtype=np.uint64) | np.uint64(2**63),
        "int64 small both signs": rng.integers(-5, 5, n, dtype=np.int64),
        "int64 low bits only, negative": rng.integers(-2**63, -2**63 + 2**20, n, dtype=np.int64),
        "uint64 all max": np.full(n, 2**64 - 1, dtype=np.uint64),
        "int64 all min": np.full(n, -2**63, dtype=np.int64),
        "int64 paths": rng.integers(0, 10_000, n, dtype=np.int64),
    }


@pytest.mark.parametrize("n", [0, 1, 2, 3, 17, 1000, 65_537])
def test_stable_order_is_numpys_stable_argsort(n):
    rng = np.random.default_rng(n)
    for name, keys in _cases(n, rng).items():
        keys = keys[rng.permutation(len(keys))]
        got, want = stable_order(keys), np.argsort(keys, kind="stable")
        assert got.dtype == np.int64, name
        assert got.tolist() == want.tolist(), (name, n)


def test_a_strided_view_sorts_as_its_copy():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**64, 4000, dtype=np.uint64)
    base[::7] = base[1::7][:len(base[::7])]
    view = base[::2]
    assert stable_order(view).tolist() == np.argsort(view, kind="stable").tolist()
    assert view.tolist() == base[::2].tolist(), "the keys are not changed"
