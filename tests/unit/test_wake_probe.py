"""bench.wake_probe (the machine's hand-off and fdatasync costs, quoted in
docs/design.md beside W2) runs and reports each figure it names."""
import os
import re
import subprocess
import sys

from bench import wake_probe


def test_each_measurement_returns_positive_figures(tmp_path):
    woke, idle = wake_probe.release_cost(rounds=20)
    assert woke > 0 and idle > 0
    cpu = sorted(os.sched_getaffinity(0))[0]
    before = os.sched_getaffinity(0)
    assert wake_probe.round_trip((cpu, cpu), n=200) > 0
    assert os.sched_getaffinity(0) == before        # the caller's affinity is given back
    h = wake_probe.fdatasync_halves(str(tmp_path / "f"), n=20)
    assert set(h) == {"fdatasync", "cpu", "write-back", "flush", "split cpu"}
    assert all(v > 0 for v in h.values())
    assert not (tmp_path / "f").exists()            # the scratch file is removed


def test_the_command_prints_one_line_a_run(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench.wake_probe", "--reps", "1",
                          "--dir", str(tmp_path)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[0].startswith("bench.wake_probe: ") and "CPUs" in lines[0]
    assert re.match(r"run 1: release waking a sleeper [\d.]+ us .*round trip [\d.]+ us as "
                    r"scheduled, [\d.]+ on one CPU, ([\d.]+|n/a) across two; write\+fdatasync "
                    r"[\d.]+ us .*= write-back [\d.]+ \+ flush [\d.]+", lines[1]), lines[1]
    assert os.listdir(tmp_path) == []               # its scratch directory went too
