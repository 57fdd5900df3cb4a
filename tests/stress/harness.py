"""What a crash test asked of the store, what was acknowledged, and the checks
every recovered store must pass (see tests/stress/crashfs.py for the crash)."""
from __future__ import annotations

from dataclasses import dataclass, field

from stemedb import open_store
from stemedb.model import prepare_assertion
from tests.conftest import abandon  # noqa: F401  (re-exported for the tests)
from tests.stress.crashfs import CrashFS


def hash_of(b: dict) -> str:
    return prepare_assertion(b).hash.hex()


@dataclass
class Group:
    kind: str                      # "put" (one or a batch of assertions), "retract", "epoch"
    hashes: list[str]
    acked: bool = False
    seqs: list[int] = field(default_factory=list)
    name: str | None = None


class Ledger:
    """Every write intended (before the call) and whether it returned."""

    def __init__(self):
        self.groups: list[Group] = []

    def put(self, store, bodies: list[dict], batch: bool) -> Group:
        g = Group("put", [hash_of(b) for b in bodies])
        self.groups.append(g)
        res = store.put_batch(bodies) if batch else [store.put(bodies[0])]
        g.seqs = [r.seq for r in res]
        g.acked = True
        return g

    def retract(self, store, h: str) -> Group:
        g = Group("retract", [h])
        self.groups.append(g)
        store.retract(hash=h, reason="crash test")
        g.acked = True
        return g

    def epoch(self, store, name: str) -> Group:
        g = Group("epoch", [], name=name)
        self.groups.append(g)
        store.create_epoch(name)
        g.acked = True
        return g

    def acked_hashes(self) -> list[str]:
        return [h for g in self.groups if g.kind == "put" and g.acked for h in g.hashes]


def check_recovered(store, ledger: Ledger, what: str = "") -> None:
    """Every acknowledged write survived, nothing half-written appeared, and
    nothing appeared that was never asked for."""
    assert store.check() == [], f"{what}: the recovered indexes check clean"
    intended: set[str] = set()
    present: set[str] = set()
    for g in ledger.groups:
        if g.kind != "put":
            continue
        got = [store.get(h) for h in g.hashes]
        intended.update(g.hashes)
        present.update(h for h, a in zip(g.hashes, got) if a is not None)
        if g.acked:
            assert all(got), f"{what}: an acknowledged write was lost"
            assert [a.seq for a in got] == g.seqs, f"{what}: acknowledged seqs are kept"
        else:
            assert all(got) or not any(got), \
                f"{what}: a batch must come back whole or not at all"
    assert store.count == len(present), \
        f"{what}: the store holds {store.count} assertions, {len(present)} of them asked for"
    for g in ledger.groups:
        if g.kind == "retract" and g.acked:
            assert store.get(g.hashes[0]).status == "retracted", \
                f"{what}: an acknowledged retraction was lost"
        if g.kind == "epoch" and g.acked:
            assert g.name in store.state.epochs, f"{what}: an acknowledged epoch was lost"
    seqs = [store.get(h).seq for h in present]
    assert len(set(seqs)) == len(seqs), f"{what}: seqs are unique"


def open_on(fs: CrashFS, **kw):
    kw.setdefault("audit", False)
    kw.setdefault("snapshot_interval", 0)
    return open_store(fs.root, fs=fs, **kw)


def open_crashable(root: str, seed: int = 0, crash_after: int | None = None, **kw):
    fs = CrashFS(root, seed, crash_after=crash_after)
    return open_on(fs, **kw), fs


def crash(store, fs: CrashFS, keep_unsynced: bool) -> None:
    """Power cut: the disk keeps what the model says; the process state is
    dropped (``store`` may be None, or already closed)."""
    fs.crash(keep_unsynced=keep_unsynced)
    if store is not None and not store._closed:
        abandon(store)
