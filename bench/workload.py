"""The benchmark workload: deterministic assertions and the keys to read back.

Everything comes from one ``random.Random(seed)``, so the same ``(n, seed)``
gives the same assertions, in the same order, on every machine and Python
(``random.Random`` is specified to be reproducible across versions for the
methods used here).  Generation costs about 5 us per assertion (200,000 in
about a second).

Shape (issue 2, "Benchmarks"):

* ``n`` assertions (default 200,000), about 250 bytes each as compact JSON of
  the request dict (:func:`encoded_size_stats` measures it);
* 10,000 concept paths ``domain/entity/aspect``: 10 domains x 100 entities x
  10 aspects;
* 50 predicates; each concept path uses 5 of them (fixed per path), so there
  are 50,000 possible ``(concept_path, predicate)`` keys, about 4 candidates
  each at 200,000 and 20 at 1,000,000;
* values mixing strings, numbers, booleans, lists and small objects;
* confidences in 0.05..1.0; sources with URI schemes of every source class
  (``fda://``, ``pubmed://``, ``cohort://``, ``guideline://``, ``forum://``,
  ``blog://``...), 10% without a source;
* timestamps as integer Unix seconds, strictly increasing with the index
  inside 2020-01-01..2025-12-31, so no two assertions hash the same.

What it leaves out on purpose: ``lifecycle`` is only ever ``proposed``,
``under_review`` or ``approved`` (the default query filter hides
``rejected``/``deprecated``, which would make StemeDB return fewer candidates
than the peers for the same key), and there are no ``parent_hash``,
``derived_from`` or ``epoch`` references (revisions drop out of queries, and
references must exist first).  The lens benchmarks (``bench/lens_bench.py``)
add those on top.
"""
from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass, field

import orjson

SEED = 20260211
DEFAULT_N = 200_000

DOMAINS = ("drugs", "devices", "genes", "proteins", "diseases",
           "trials", "foods", "chemicals", "organisms", "procedures")
ENTITIES_PER_DOMAIN = 100
ASPECTS = ("safety", "efficacy", "dosing", "interactions", "mechanism",
           "pharmacokinetics", "contraindications", "adverse_events", "regulatory", "cost")
PREDICATES_PER_PATH = 5

PREDICATES = (
    "risk_level", "incidence_rate", "onset_days", "half_life_hours", "approved_indication",
    "max_daily_dose_mg", "min_effective_dose_mg", "interaction_severity", "mechanism_class",
    "target_receptor", "bioavailability", "clearance_route", "black_box_warning",
    "pregnancy_category", "pediatric_use", "geriatric_use", "renal_adjustment",
    "hepatic_adjustment", "common_side_effect", "rare_side_effect", "contraindicated_with",
    "efficacy_vs_placebo", "number_needed_to_treat", "number_needed_to_harm",
    "cost_per_month_usd", "generic_available", "market_status", "recall_status",
    "evidence_grade", "trial_phase", "primary_endpoint", "secondary_endpoint",
    "sample_size", "follow_up_months", "hazard_ratio", "odds_ratio", "relative_risk",
    "confidence_interval", "p_value", "mutation_frequency", "expression_level",
    "binding_affinity_nm", "pathway", "biomarker", "diagnostic_accuracy",
    "prevalence_per_100k", "mortality_rate", "storage_temperature_c", "shelf_life_months",
    "consensus_statement",
)
assert len(PREDICATES) == 50 and len(set(PREDICATES)) == 50

# (scheme, weight, path maker): every source class of the contract's table is
# present, plus an unknown scheme (anecdotal).  Paths are sized so the
# assertion averages ~250 bytes.
_SOURCES = (
    ("fda", 6, lambda r: f"fda://label/{r.randrange(2015, 2026)}-{r.randrange(1, 13):02d}/"
                         f"nda{r.randrange(10000, 99999)}"),
    ("ema", 3, lambda r: f"ema://epar/emea-h-c-{r.randrange(1000, 9999)}"),
    ("pubmed", 20, lambda r: f"pubmed://{r.randrange(10_000_000, 39_999_999)}"),
    ("doi", 8, lambda r: f"doi://10.{r.randrange(1000, 9999)}/j.bench.{r.randrange(10**6):06d}"),
    ("nct", 6, lambda r: f"nct://NCT{r.randrange(10**7, 10**8)}"),
    ("medrxiv", 5, lambda r: f"medrxiv://2024.{r.randrange(1, 13):02d}.{r.randrange(1, 29):02d}."
                             f"{r.randrange(10**7, 10**8)}"),
    ("cohort", 4, lambda r: f"cohort://ukbiobank/field-{r.randrange(1000, 99999)}"),
    ("guideline", 5, lambda r: f"guideline://nice/ng{r.randrange(1, 250)}"),
    ("expert", 4, lambda r: f"expert://panel/{r.randrange(1, 500)}"),
    ("forum", 14, lambda r: f"forum://reddit/r/medicine/comments/{r.randrange(36**6):x}"),
    ("faers", 5, lambda r: f"faers://case/{r.randrange(10**7, 10**8)}"),
    ("community", 4, lambda r: f"community://patientslikeme/post/{r.randrange(10**6)}"),
    ("blog", 6, lambda r: f"blog://health-{r.randrange(100)}.example.com/p/{r.randrange(10**5)}"),
)
_SOURCE_CUM_WEIGHTS = tuple(itertools.accumulate(w for _, w, _ in _SOURCES))
_NO_SOURCE_SHARE = 0.10

_WORDS = ("elevated", "reduced", "moderate", "severe", "mild", "transient", "persistent",
          "dose-dependent", "reversible", "rare", "common", "hepatic", "renal", "cardiac",
          "observed", "reported", "in", "with", "after", "weeks", "patients", "adults",
          "risk", "response", "exposure", "clearance", "increase", "decrease", "no", "change")
_UNITS = ("mg", "mg/kg", "ng/mL", "hours", "days", "percent", "per_100k", "USD")
_STATUSES = ("approved", "withdrawn", "pending", "restricted", "unknown")

TIME_START = 1577836800          # 2020-01-01T00:00:00Z
TIME_END = 1767139200            # 2025-12-31T00:00:00Z


def _value(r: random.Random):
    """A claimed value: 40% text, 30% number, 18% object, 12% bool/list."""
    x = r.random()
    if x < 0.40:
        return " ".join(r.choice(_WORDS) for _ in range(r.randrange(10, 30)))
    if x < 0.55:
        return r.randrange(0, 100_000)
    if x < 0.70:
        return round(r.uniform(0.001, 999.0), 4)
    if x < 0.88:
        lo = round(r.uniform(0, 100), 2)
        return {"min": lo, "max": round(lo + r.uniform(0.5, 50), 2),
                "unit": r.choice(_UNITS), "n": r.randrange(10, 5000),
                "method": r.choice(_WORDS) + " " + r.choice(_WORDS)}
    if x < 0.94:
        return r.random() < 0.5
    return [r.choice(_STATUSES) for _ in range(r.randrange(1, 4))]


@dataclass
class Workload:
    """``n`` assertion dicts (contract field names) and the keys to query.

    ``key_counts[(concept_path, predicate)]`` and ``prefix_counts[prefix]``
    are the exact number of assertions each R1 key / R2 prefix must return:
    the oracle every engine's answer is checked against.
    """

    n: int
    seed: int
    assertions: list[dict]
    paths: list[str]
    path_predicates: dict[str, tuple[str, ...]]
    key_counts: Counter = field(repr=False)
    prefix_counts: Counter = field(repr=False)

    def r1_keys(self, k: int, seed: int = 1) -> list[tuple[str, str]]:
        """``k`` existing ``(concept_path, predicate)`` keys, fixed by ``seed``."""
        keys = sorted(self.key_counts)
        r = random.Random(self.seed * 1000 + seed)
        return [keys[r.randrange(len(keys))] for _ in range(k)]

    def r2_prefixes(self, k: int, seed: int = 2) -> list[str]:
        """``k`` existing ``domain/entity/`` prefixes (with the trailing slash)."""
        prefixes = sorted(self.prefix_counts)
        r = random.Random(self.seed * 1000 + seed)
        return [prefixes[r.randrange(len(prefixes))] for _ in range(k)]

    def expected_r1(self, keys) -> int:
        return sum(self.key_counts[k] for k in keys)

    def expected_r2(self, prefixes) -> int:
        return sum(self.prefix_counts[p] for p in prefixes)

    def batches(self, size: int, items: list[dict] | None = None):
        items = self.assertions if items is None else items
        for i in range(0, len(items), size):
            yield items[i:i + size]


def concept_paths() -> list[str]:
    """The 10,000 concept paths, in a fixed order."""
    out = []
    for d in DOMAINS:
        stem = d[:-1] if d.endswith("s") else d
        for e in range(ENTITIES_PER_DOMAIN):
            for a in ASPECTS:
                out.append(f"{d}/{stem}{e:03d}/{a}")
    return out


def generate(n: int = DEFAULT_N, seed: int = SEED) -> Workload:
    """The workload of ``n`` assertions.  Deterministic in ``(n, seed)``;
    the first ``m`` assertions of ``generate(n)`` do *not* equal
    ``generate(m)`` (timestamps are spread over the whole range)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    r = random.Random(seed)
    paths = concept_paths()
    path_predicates = {p: tuple(r.sample(PREDICATES, PREDICATES_PER_PATH)) for p in paths}
    schemes = list(range(len(_SOURCES)))
    stride = max(1, (TIME_END - TIME_START) // n)
    if stride * n > (TIME_END - TIME_START) * 4:
        raise ValueError("n too large for unique second timestamps")
    assertions = []
    key_counts: Counter = Counter()
    prefix_counts: Counter = Counter()
    rand, randrange, choice = r.random, r.randrange, r.choice
    for i in range(n):
        path = paths[randrange(len(paths))]
        pred = choice(path_predicates[path])
        a = {
            "concept_path": path,
            "predicate": pred,
            "value": _value(r),
            "confidence": round(0.05 + 0.95 * rand(), 3),
        }
        if rand() >= _NO_SOURCE_SHARE:
            k = r.choices(schemes, cum_weights=_SOURCE_CUM_WEIGHTS)[0]
            a["source"] = _SOURCES[k][2](r)
        lc = rand()
        if lc < 0.15:
            a["lifecycle"] = "approved"
        elif lc < 0.25:
            a["lifecycle"] = "under_review"
        # Strictly increasing, unique: no two assertions are byte-identical.
        a["timestamp"] = TIME_START + i * stride + randrange(stride)
        assertions.append(a)
        key_counts[(path, pred)] += 1
        prefix_counts[path.rsplit("/", 1)[0] + "/"] += 1
    return Workload(n=n, seed=seed, assertions=assertions, paths=paths,
                    path_predicates=path_predicates, key_counts=key_counts,
                    prefix_counts=prefix_counts)


def encoded_size_stats(w: Workload, sample: int = 20_000) -> dict:
    """Bytes of compact JSON per request dict (the "about 250 bytes")."""
    sizes = sorted(len(orjson.dumps(a)) for a in w.assertions[:sample])
    return {"mean": sum(sizes) / len(sizes), "p50": sizes[len(sizes) // 2],
            "min": sizes[0], "max": sizes[-1]}


if __name__ == "__main__":  # python -m bench.workload [n]
    import sys
    import time
    n = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_N
    t = time.perf_counter()
    w = generate(n)
    dt = time.perf_counter() - t
    print(f"{n} assertions in {dt:.2f}s; encoded bytes {encoded_size_stats(w)}; "
          f"{len(w.key_counts)} keys, {len(w.prefix_counts)} prefixes")
    print(orjson.dumps(w.assertions[0]).decode())
