"""StemeDB engine benchmarks: the same workloads against StemeDB and its peers.

``python -m bench.run`` writes ``bench/results/``; ``pytest bench/`` runs the
small pytest-benchmark versions.  See ``bench/README.md``.
"""
