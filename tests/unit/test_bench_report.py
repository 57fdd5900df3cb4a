"""bench.run's compiled-vs-pure section: each figure of the compiled pass
over the pure pass's, and through the peer each pass measured itself."""
from bench.run import _compiled_vs_pure


def _doc(pure_w3=40_000.0, impl="compiled"):
    return {
        "implementation": {"stemedb": impl, "stemedb-pure": "pure"},
        "results": {
            "stemedb": {"W3": {"throughput_median": 150_000.0},
                        "R1": {"throughput_median": 300_000.0},
                        "REC": {"rebuild_records_per_s": 1_200_000.0}},
            "stemedb-pure": {"W3": {"throughput_median": pure_w3},
                             "R1": {"throughput_median": 120_000.0},
                             "REC": {"rebuild_records_per_s": 100_000.0}},
            "rocksdb": {"W3": {"throughput_median": 100_000.0}},
            "lmdb": {"R1": {"throughput_median": 200_000.0}},
        },
        "pure_pass_peers": {"rocksdb": {"W3": {"throughput_median": 80_000.0}},
                            "lmdb": {"R1": {"throughput_median": 160_000.0}}},
    }


def test_ratios_and_verdicts():
    rows = {line.split(" | ")[0]: line for line in _compiled_vs_pure(_doc())
            if line.startswith("| ") and "---" not in line and "figure" not in line}
    assert "**3.75x**" in rows["| bulk load (W3)"] and "met" in rows["| bulk load (W3)"]
    # through the peers: (150,000 / 100,000) / (40,000 / 80,000) = 3.00
    assert "3.00x (1.50 / 0.50 rocksdb)" in rows["| bulk load (W3)"]
    assert "**2.50x**" in rows["| R1 candidates"] and "MISSED" in rows["| R1 candidates"]
    assert "2.00x (1.50 / 0.75 lmdb)" in rows["| R1 candidates"]
    assert "**12.00x**" in rows["| rebuild from the WAL"]


def test_a_slow_pure_pass_changes_the_verdict():
    line = next(x for x in _compiled_vs_pure(_doc(pure_w3=60_000.0)) if "W3" in x)
    assert "**2.50x**" in line and "MISSED" in line


def test_no_section_without_both_builds():
    doc = _doc()
    doc["results"].pop("stemedb-pure")
    assert _compiled_vs_pure(doc) == []
    assert _compiled_vs_pure(_doc(impl="pure")) == []
