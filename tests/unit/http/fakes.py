"""A small in-memory stand-in for :class:`stemedb.core.store.Store`.

Used only where the real store cannot do what a test needs (a storage fault
on demand); everything else runs against the real store.
"""
from __future__ import annotations

import threading

from stemedb.core.store import PutResult, QueryResult, RetractResult
from stemedb.errors import NotFound, StoreFaulted
from stemedb.model import Assertion, prepare_assertion
from stemedb.timeutil import now_us


class FakeStore:
    implementation = "pure"

    def __init__(self):
        self._lock = threading.Lock()
        self._by_hash: dict[str, Assertion] = {}
        self.last_seq = 0
        self.wal_segments = 1
        self.fault = None
        self.observer = None
        self.closed = False
        self.snapshots = 0

    @property
    def count(self):
        return len(self._by_hash)

    def set_commit_observer(self, fn):
        self.observer = fn

    def _check(self):
        if self.fault:
            raise StoreFaulted(f"writes stopped: {self.fault}")

    def put(self, body, *, require_signatures=False):
        return self.put_batch([body], require_signatures=require_signatures, _single=True)[0]

    def put_batch(self, bodies, *, require_signatures=False, _single=False):
        self._check()
        recs = []
        for i, b in enumerate(bodies):
            try:
                recs.append(prepare_assertion(b, require_signatures=require_signatures))
            except Exception as exc:
                if _single or not hasattr(exc, "prefixed"):
                    raise
                raise exc.prefixed(f"assertions[{i}]") from None
        out = []
        with self._lock:
            for r in recs:
                h = r.hash.hex()
                if h in self._by_hash:
                    out.append(PutResult(h, self._by_hash[h].seq, False))
                    continue
                self.last_seq += 1
                rec = r.__class__(**{**{f: getattr(r, f) for f in r.__struct_fields__},
                                     "recorded_at": now_us()})
                self._by_hash[h] = Assertion(rec, self.last_seq)
                out.append(PutResult(h, self.last_seq, True))
        if self.observer:
            self.observer(len(recs), 0.0001)
        return out

    def get(self, hash):
        return self._by_hash.get(hash)

    def query(self, concept_path, *, predicate=None, lens="recency", limit=100, **kw):
        cands = [a for a in self._by_hash.values() if a.concept_path == concept_path
                 and (predicate is None or a.predicate == predicate)]
        cands.sort(key=lambda a: (a.timestamp_us, a.seq), reverse=True)
        results = []
        if cands:
            results.append({"concept_path": concept_path, "predicate": cands[0].predicate,
                            "winner": cands[0], "confidence": cands[0].confidence,
                            "conflict_score": 0.0, "candidates_count": len(cands)})
        return QueryResult(concept_path, lens, results, cands[:limit], None)

    def skeptic(self, concept_path, predicate, **filters):
        return {"status": "no_claims", "conflict_score": 0.0, "claims": []}

    def trace(self, hash):
        a = self._by_hash.get(hash)
        if a is None:
            return None
        return {"assertion": a, "parents": [], "derived_from": [], "dependents": [],
                "dependents_count": 0, "source": None, "retraction": None}

    def retract(self, *, hash=None, concept_path=None, source=None, reason, cascade=False, by=None):
        self._check()
        if hash is not None and hash not in self._by_hash:
            raise NotFound(f"no assertion {hash}", field="hash")
        self.last_seq += 1
        return RetractResult(0, [], self.last_seq)

    def vote(self, assertion_hash, weight, *, agent_id=None, signature=None, timestamp=None,
             require_signatures=False):
        self._check()
        if assertion_hash not in self._by_hash:
            raise NotFound("unknown assertion", field="assertion_hash")
        self.last_seq += 1
        return self.last_seq

    def create_epoch(self, name, *, supersedes=None, description=None):
        self._check()
        self.last_seq += 1
        return self.last_seq

    def record_outcome(self, agent_id, accurate):
        return 0.55 if accurate else 0.4

    def audit_queries(self, *, limit=100, agent=None, from_=None, to=None):
        return []

    def audit_query(self, id):
        return None

    def snapshot(self):
        self.snapshots += 1

    def close(self):
        self.closed = True
