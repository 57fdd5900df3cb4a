"""stemedb.progress: quiet for short runs, a line every few seconds off a
terminal, a bar redrawn in place on one; figures and time left."""
from __future__ import annotations

import io
import re

from stemedb.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(tty: bool = False, **kw):
    out, clock = io.StringIO(), Clock()
    return Progress(out=out, clock=clock, tty=tty, **kw), out, clock


def test_a_short_run_prints_nothing():
    p, out, clock = make(total_bytes=1000, what="verify")
    for _ in range(10):
        clock.t += 0.1
        p.update(records=5, bytes=100)
    p.done()
    assert out.getvalue() == ""
    assert (p.records, p.bytes) == (50, 1000)


def test_a_short_run_on_a_terminal_prints_nothing_either():
    p, out, clock = make(tty=True, total_records=10)
    clock.t += 1.5
    p.update(records=10)
    p.done()
    assert out.getvalue() == ""


def test_lines_at_most_every_few_seconds_with_records_bytes_rate_and_time_left():
    p, out, clock = make(total_bytes=100_000_000, what="backup")
    for _ in range(40):                    # 20 s of work in half-second steps
        clock.t += 0.5
        p.update(records=1000, bytes=2_500_000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4, lines          # at 5, 10, 15, 20 s
    first = lines[0]
    assert first.startswith("backup: 10000 records, 25.0 MB of 100.0 MB, 2000 records/s, "
                            "5.0 MB/s, 25%, 5s, about 15s left"), first
    assert lines[-1].endswith("100%, 20s"), lines[-1]   # all done: no estimate
    p.done()
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("backup: 40000 records, 100.0 MB of 100.0 MB") and last.endswith("done")


def test_time_left_from_records_when_bytes_are_unknown():
    p, out, clock = make(total_records=400, what="rebuild", every=1.0)
    clock.t += 3
    p.update(records=100)
    line = out.getvalue().strip()
    assert "100 records of 400" in line and "25%" in line and "about 9s left" in line, line
    assert " MB" not in line and " B" not in line      # no bytes counted, none shown


def test_without_a_total_there_is_no_percentage_and_no_estimate():
    p, out, clock = make(what="import", every=1.0)
    clock.t += 3
    p.update(records=30, note="30 created, 0 existing")
    line = out.getvalue().strip()
    assert line == "import: 30 records, 10 records/s, 3s, 30 created, 0 existing", line


def test_nothing_before_the_delay_even_with_frequent_lines():
    p, out, clock = make(every=0.5)        # the delay is then 0.5 s too
    clock.t += 0.4
    p.update(records=1)
    assert out.getvalue() == ""
    clock.t += 0.2
    p.update(records=1)
    assert out.getvalue().startswith("rebuild: 2 records")
    p2, out2, clock2 = make(every=0.5, delay=2.0)
    clock2.t += 1.0
    p2.update(records=1)
    assert out2.getvalue() == ""


def test_every_zero_writes_a_line_per_update():
    p, out, clock = make(every=0.0, what="import")
    for _ in range(3):
        p.update(records=3)
    assert [ln.split()[1] for ln in out.getvalue().splitlines()] == ["3", "6", "9"]


def test_terminal_bar_redrawn_in_place_and_finished_with_a_newline():
    p, out, clock = make(tty=True, total_bytes=1000, what="restore")
    for _ in range(30):                    # 3 s in 0.1 s steps
        clock.t += 0.1
        p.update(bytes=10)
    text = out.getvalue()
    assert "\n" not in text and text.count("\r") >= 4, repr(text)
    frames = text.split("\r")[1:]
    assert all(f.startswith("restore [") for f in frames)
    assert re.search(r"\[#{7}\.{17}\]  30%", frames[-1]), frames[-1]
    assert "left" in frames[-1]
    p.done()
    final = out.getvalue().split("\r")[-1]
    assert final.endswith("\n") and "100%" in final and "left" not in final


def test_bar_redraws_at_most_every_redraw_interval():
    p, out, clock = make(tty=True, redraw=1.0)
    clock.t += 2.0
    for _ in range(50):                    # 50 updates within 0.5 s: one draw
        clock.t += 0.01
        p.update(records=1)
    assert out.getvalue().count("\r") == 1


def test_done_without_summary_writes_no_line_off_a_terminal_but_ends_the_bar():
    p, out, clock = make(every=1.0)
    clock.t += 2
    p.update(records=1)
    before = out.getvalue()
    p.done(summary=False)
    assert out.getvalue() == before != ""
    q, qout, qclock = make(tty=True)
    qclock.t += 3
    q.update(records=1)
    q.done(summary=False)
    assert qout.getvalue().endswith("\n")


def test_done_is_idempotent_and_updates_after_it_are_silent():
    p, out, clock = make(every=1.0)
    clock.t += 2
    p.update(records=1)
    p.done()
    p.done()
    clock.t += 10
    p.update(records=1)
    assert len(out.getvalue().splitlines()) == 2


def test_a_closed_stream_never_fails_the_operation():
    out = io.StringIO()
    clock = Clock()
    p = Progress(out=out, clock=clock, tty=False, every=1.0)
    out.close()
    clock.t += 5
    p.update(records=1)                    # must not raise
    p.done()


def test_the_default_stream_is_stderr_and_isatty_decides(capsys):
    p = Progress(total_records=1)
    assert p.tty is False                  # capsys's stderr is no terminal
    p.clock = lambda: p.start + 10
    p.update(records=1)
    p.done()
    err = capsys.readouterr()
    assert err.out == "" and err.err.startswith("rebuild: 1 records of 1")


# ------------------------------------------------- the tools that use it
# With the delay and the interval at 0 every update writes a line, so each
# tool's progress shows up in a test without waiting seconds.

def _fast_progress(monkeypatch):
    import stemedb.progress as progress
    monkeypatch.setattr(progress, "EVERY_SECONDS", 0.0)
    monkeypatch.setattr(progress, "DELAY_SECONDS", 0.0)


def _store_with_segments(path, n: int = 300):
    from stemedb import open_store
    from tests.conftest import body
    with open_store(str(path), durability="none", segment_size=16 * 1024) as s:
        for i in range(0, n, 10):
            s.put_batch([body(i + j) for j in range(10)])
    return path


def test_verify_reports_progress_on_stderr_and_the_same_findings_on_stdout(tmp_path, capsys,
                                                                              monkeypatch):
    from stemedb.core.verify import verify
    data = _store_with_segments(tmp_path / "data")
    quiet_out = io.StringIO()
    assert verify(str(data), out=quiet_out) == 0
    assert capsys.readouterr().err == "", "a short verify prints no progress"
    _fast_progress(monkeypatch)
    out = io.StringIO()
    assert verify(str(data), out=out) == 0
    assert out.getvalue() == quiet_out.getvalue(), "progress never changes the findings"
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("verify: ")]
    segments = len(list((data / "wal").glob("segment-*.log")))
    assert segments > 2 and len(lines) == segments + 1, lines   # one per segment, then done
    size = sum(p.stat().st_size for p in (data / "wal").glob("segment-*.log"))
    assert lines[-1].startswith(f"verify: 300 records, {size / 1000:.1f} KB of "
                                f"{size / 1000:.1f} KB, "), lines[-1]
    assert "100%" in lines[-1] and lines[-1].endswith("done"), lines[-1]


def test_backup_and_restore_report_their_copies(tmp_path, capsys, monkeypatch):
    from stemedb.ops.backup import take_backup
    from stemedb.ops.restore import Systemd, restore_backup
    data = _store_with_segments(tmp_path / "data")
    _fast_progress(monkeypatch)
    res = take_backup(str(data), str(tmp_path / "backups"))
    err = capsys.readouterr().err
    backup_lines = [ln for ln in err.splitlines() if ln.startswith("backup: ")]
    assert backup_lines and backup_lines[-1].endswith("done"), err
    assert f"{res.metadata['record_count']} records" in backup_lines[-1]
    restore_backup(res.path, str(tmp_path / "restored"), systemd=Systemd(None), ask=lambda q: True)
    captured = capsys.readouterr()
    restore_lines = [ln for ln in captured.err.splitlines() if ln.startswith("restore: ")]
    assert restore_lines and "100%" in restore_lines[-1], captured.err
    assert "restore: " not in captured.out, "progress goes to stderr, the messages to stdout"
    assert "Restore complete" in captured.out
