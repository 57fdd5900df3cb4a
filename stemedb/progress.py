"""Progress of long operations: a bar on a terminal, periodic lines otherwise.

    p = Progress(total_bytes=size, what="verify")
    for chunk in work:
        ...
        p.update(records=n, bytes=len(chunk))    # increments
    p.done()

Output goes to stderr (``out``), never stdout: the tools' findings and the
paths they print on stdout stay exactly as they are.

* On a terminal (``out.isatty()``): one line redrawn in place (``\\r``) at
  most every ``redraw`` seconds, with a bar when a total is known.
* Otherwise (a pipe, a log file, cron, systemd): a whole line at most every
  ``every`` seconds (default 5), ``what: N records, M MB, R records/s,
  X MB/s, T s, about S s left``.
* Nothing at all before ``delay`` seconds (default 2, or ``every`` when that
  is shorter): a short run prints nothing, so quick commands and tests stay
  quiet.  ``done()`` ends the bar's line, or writes a last line, only when
  something was shown.

Time left comes from bytes when ``total_bytes`` is known, else from records
when ``total_records`` is; without a total there is no bar and no estimate.
"""
from __future__ import annotations

import shutil
import sys
import time
from typing import IO, Callable

EVERY_SECONDS = 5.0      # between two lines when stderr is not a terminal
REDRAW_SECONDS = 0.2     # between two redraws of the bar on a terminal
DELAY_SECONDS = 2.0      # silence at the start: short runs print nothing
BAR_WIDTH = 24


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns at GB


def _duration(seconds: float) -> str:
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Reports the progress of one long operation on ``out`` (stderr by default)."""

    def __init__(self, total_bytes: int | None = None, total_records: int | None = None,
                 what: str = "rebuild", *, out: IO[str] | None = None,
                 every: float | None = None, delay: float | None = None,
                 redraw: float = REDRAW_SECONDS, clock: Callable[[], float] = time.monotonic,
                 tty: bool | None = None):
        self.total_bytes = total_bytes if total_bytes and total_bytes > 0 else None
        self.total_records = total_records if total_records and total_records > 0 else None
        self.what = what
        self.out = out if out is not None else sys.stderr
        self.every = EVERY_SECONDS if every is None else max(0.0, every)
        self.delay = min(DELAY_SECONDS, self.every) if delay is None else max(0.0, delay)
        self.redraw = redraw
        self.clock = clock
        if tty is None:
            try:
                tty = bool(self.out.isatty())
            except (AttributeError, ValueError):   # a closed or odd stream
                tty = False
        self.tty = tty
        self.records = 0
        self.bytes = 0
        self.start = clock()
        self.last: float | None = None      # when the last line or redraw was written
        self.shown = False                  # anything written yet
        self.finished = False
        self._width = 0                     # of the bar line now on the terminal
        self.note = ""                      # extra text at the end of the line

    # ------------------------------------------------------------ counting
    def update(self, records: int = 0, bytes: int = 0,  # noqa: A002 - the API's word
               note: str | None = None) -> None:
        """Count ``records`` and ``bytes`` more done; writes when it is time to.

        ``note`` (optional) replaces the text added at the end of the line,
        e.g. ``"40 created, 2 existing"``.
        """
        self.records += records
        self.bytes += bytes
        if note is not None:
            self.note = note
        now = self.clock()
        elapsed = now - self.start
        if elapsed < self.delay or self.finished:
            return
        interval = self.redraw if self.tty else self.every
        if self.last is not None and now - self.last < interval:
            return
        if self.last is None and not self.tty and elapsed < self.every:
            return   # the first line after `every` seconds, as every line after it
        self.last = now
        self._emit(now, final=False)

    def done(self, summary: bool = True) -> None:
        """The operation ended: finish the bar's line, or write a last line,
        if anything was shown (nothing for a short run).  ``summary=False``:
        the caller prints its own closing line, so none is written when
        stderr is not a terminal (the bar's line is still finished)."""
        if self.finished:
            return
        if self.shown and (self.tty or summary):
            self._emit(self.clock(), final=True)
        self.finished = True

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.done()

    # ------------------------------------------------------------ figures
    def elapsed(self) -> float:
        return self.clock() - self.start

    def rate(self, records: int | None = None) -> str:
        """Records per second so far, e.g. ``1234/s``."""
        n = self.records if records is None else records
        elapsed = self.elapsed()
        return f"{n / elapsed:.0f}/s" if elapsed > 0 else "-/s"

    def fraction(self) -> float | None:
        """Done so far, 0 to 1, when a total is known."""
        if self.total_bytes:
            return min(1.0, self.bytes / self.total_bytes)
        if self.total_records:
            return min(1.0, self.records / self.total_records)
        return None

    def seconds_left(self, now: float | None = None) -> float | None:
        frac = self.fraction()
        elapsed = (self.clock() if now is None else now) - self.start
        if frac is None or not 0 < frac < 1 or elapsed <= 0:
            return None
        return elapsed * (1 - frac) / frac

    def line(self, now: float | None = None, *, final: bool = False) -> str:
        """The progress line as written when stderr is not a terminal."""
        now = self.clock() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        parts = [f"{self.records} records"]
        if self.total_records:
            parts[0] += f" of {self.total_records}"
        if self.bytes or self.total_bytes:
            parts.append(_size(self.bytes) + (f" of {_size(self.total_bytes)}"
                                              if self.total_bytes else ""))
        parts.append(f"{self.records / elapsed:.0f} records/s")
        if self.bytes:
            parts.append(f"{_size(self.bytes / elapsed)}/s")
        frac = self.fraction()
        if frac is not None:
            parts.append(f"{frac * 100:.0f}%")
        parts.append(_duration(elapsed))
        if self.note:
            parts.append(self.note)
        if final:
            parts.append("done")
        else:
            left = self.seconds_left(now)
            if left is not None:
                parts.append(f"about {_duration(left)} left")
        return f"{self.what}: " + ", ".join(parts)

    def bar(self, now: float | None = None, *, final: bool = False) -> str:
        """The one line redrawn on a terminal."""
        now = self.clock() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        frac = 1.0 if final and self.fraction() is not None else self.fraction()
        text = f"{self.what} "
        if frac is not None:
            fill = int(frac * BAR_WIDTH)
            text += f"[{'#' * fill}{'.' * (BAR_WIDTH - fill)}] {frac * 100:3.0f}% "
        text += f"{self.records} records"
        if self.bytes or self.total_bytes:
            text += f" {_size(self.bytes)}"
        text += f" {self.records / elapsed:.0f}/s"
        if self.bytes:
            text += f" {_size(self.bytes / elapsed)}/s"
        left = None if final else self.seconds_left(now)
        text += f" {_duration(elapsed)}" + (f" ~{_duration(left)} left" if left is not None else "")
        columns = shutil.get_terminal_size((80, 24)).columns
        return text[:max(columns - 1, 20)]

    # ------------------------------------------------------------ writing
    def _emit(self, now: float, *, final: bool) -> None:
        try:
            if self.tty:
                text = self.bar(now, final=final)
                pad = " " * max(0, self._width - len(text))
                self.out.write("\r" + text + pad + ("\n" if final else ""))
                self._width = len(text)
            else:
                self.out.write(self.line(now, final=final) + "\n")
            self.out.flush()
            self.shown = True
        except (OSError, ValueError):   # stderr closed or full: progress is never worth failing
            self.finished = True
            self.shown = False
