"""AuditLog._write appends the lines it is given in the same runs, and
rotates at the same places, whether they all fit in the current file (its
one-run way: their lengths summed in C) or not (the line-by-line loop): held
here to the loop alone (``_reference``, the loop as it was before the one-run
way), for any line lengths, file fill and rotation size."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stemedb.core.audit import AuditLog


class _Recorded(AuditLog):
    """An AuditLog whose file operations are recorded, not done."""

    def __init__(self, directory, rotate_at, used, fail):
        self.events: list = []
        self.fail = False
        super().__init__(directory, rotate_at=rotate_at)
        self._sizes[self._number] = used
        self.events.clear()
        self.fail = fail

    def _append(self, data, entries):
        self.events.append(("append", data, entries))
        if self.fail:
            return              # (as a failed write: nothing counted as written)
        self._sizes[self._number] += len(data)

    def _rotate(self):
        self.events.append(("rotate",))
        self._number += 1
        self._sizes[self._number] = 0

    def _prune(self):
        self.events.append(("prune",))


def _reference(lines, rotate_at, used, fail):
    """The events of the line-by-line loop alone."""
    events = []
    sizes = [used]

    def rotate():
        events.append(("rotate",))
        sizes.append(0)
    i = 0
    while i < len(lines):
        cur = sizes[-1]
        j, size = i, 0
        while j < len(lines) and (cur + size + len(lines[j]) <= rotate_at or cur + size == 0):
            size += len(lines[j])
            j += 1
        if j == i:
            rotate()
            continue
        data = b"".join(lines[i:j])
        events.append(("append", data, j - i))
        if not fail:
            sizes[-1] += len(data)
        i = j
        if sizes[-1] >= rotate_at:
            rotate()
    events.append(("prune",))
    return events


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 300), max_size=30), st.integers(1, 2000),
       st.integers(0, 2500), st.booleans())
def test_write_takes_the_loops_runs(tmp_path_factory, lengths, rotate_at, used, fail):
    lines = [bytes([97 + i % 26]) * (n - 1) + b"\n" for i, n in enumerate(lengths)]
    log = _Recorded(str(tmp_path_factory.mktemp("a")), rotate_at, used, fail)
    try:
        log._write(lines)
        assert log.events == _reference(lines, rotate_at, used, fail)
    finally:
        log.fail = True
        log._queue.clear()
        log.close()


def test_a_flush_of_lines_that_fit_is_one_write(tmp_path):
    """250 queued lines that fit: one append of all of them, in order."""
    log = _Recorded(str(tmp_path), 1 << 20, 0, False)
    try:
        lines = [b'{"id":"q%d"}\n' % i for i in range(250)]
        for x in lines:
            log.add(x)
        log.flush()
        appends = [e for e in log.events if e[0] == "append"]
        assert b"".join(e[1] for e in appends) == b"".join(lines)
        assert sum(e[2] for e in appends) == 250
    finally:
        log.close()
