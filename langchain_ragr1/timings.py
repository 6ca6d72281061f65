"""Where the seconds of a run go: named phases, kept only while :func:`recording`.

``ragr1 ask --timings`` prints them on stderr. Library code marks its phases with :func:`phase` (a span,
e.g. ``"model load"``) and :func:`mark` (a moment, e.g. the policies' ``"first token"``); with nothing
recording, both cost one global read.

>>> with recording() as timings:
...     with phase("work"):
...         pass
>>> "work" in timings.spans
True
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

_IMPORTED = time.perf_counter()


def process_start() -> float:
    """The ``time.perf_counter()`` reading at which this process started (Linux: from ``/proc/self/stat``;
    elsewhere, or where that cannot be read, when this module was imported)."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()  # after "pid (comm)": field 3 onwards
        started_s = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time, clock ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started_s
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORTED
    now = time.perf_counter()
    # the process is at least as old as this module; a clock that says otherwise is not trusted
    return now - age if age >= now - _IMPORTED else _IMPORTED


@dataclass
class Timings:
    """Spans (``name -> (start, end)``) and moments (``name -> at``), ``time.perf_counter()`` readings;
    the first of each name is kept. ``origin`` is what :meth:`lines` counts from (the process's start)."""

    origin: float = field(default_factory=process_start)
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)
    moments: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_span(self, name: str, start: float, end: float) -> None:
        with self._lock:
            self.spans.setdefault(name, (start, end))

    def add_moment(self, name: str, at: float) -> None:
        with self._lock:
            self.moments.setdefault(name, at)

    def lines(self, notes: dict[str, str] | None = None) -> list[str]:
        """A table, in order of start: each span's start, end and seconds, each moment's time, counted from
        :attr:`origin`; ``notes`` adds a remark after a phase's row."""
        notes = notes or {}
        with self._lock:
            rows: list[tuple[float, float | None, str]] = [(start, end, name) for name, (start, end) in self.spans.items()]
            rows += [(at, None, name) for name, at in self.moments.items()]
        out = [f"{'phase':<16} {'start':>6} {'end':>6} {'seconds':>8}   (seconds from the process's start)"]
        for start, end, name in sorted(rows, key=lambda row: (row[0], row[1] is not None)):
            begin = f"{start - self.origin:6.2f}" if end is not None else " " * 6
            finish = f"{(end if end is not None else start) - self.origin:6.2f}"
            seconds = f"{end - start:8.2f}" if end is not None else " " * 8
            note = f"   {notes[name]}" if name in notes else ""
            out.append(f"{name:<16} {begin} {finish} {seconds}{note}".rstrip())
        return out


_active: Timings | None = None


@contextmanager
def recording(timings: Timings | None = None) -> Iterator[Timings]:
    """Record the phases and moments of this process (every thread) into ``timings`` (a new
    :class:`Timings` by default) until the block ends."""
    global _active
    previous, _active = _active, timings if timings is not None else Timings()
    try:
        yield _active
    finally:
        _active = previous


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block as the span ``name`` if something is :func:`recording` (a span that raises is kept too)."""
    timings = _active
    if timings is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        timings.add_span(name, start, time.perf_counter())


def mark(name: str, at: float | None = None) -> None:
    """Note the moment ``name`` (its first occurrence; ``at``, a ``time.perf_counter()`` reading, or now) if
    something is :func:`recording`."""
    timings = _active
    if timings is not None:
        timings.add_moment(name, time.perf_counter() if at is None else at)


def current() -> Timings | None:
    """What is :func:`recording` now, if anything."""
    return _active
