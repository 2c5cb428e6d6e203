"""Log hygiene shared by every step: progress lines on long loops, and records free of terminal colour.

* ``Progress``: a long loop logs where it is (which stage, how many done, time left) at most every
  ``every_s`` seconds and once at the end, so no step is silent for minutes;
* ``laps``: a step of a few long phases logs each phase's time as it ends;
* ``StripAnsi`` / ``install``: no ANSI colour code reaches a log (MLflow wraps some warnings in them),
  and Python warnings go through logging (one line, with a level) instead of raw stderr, which
  Airflow shows as ERROR.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Callable

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


class StripAnsi(logging.Filter):
    """Removes ANSI escape sequences from a record's message (and its exception text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "\x1b" in message:
            record.msg, record.args = strip_ansi(message), None
        if record.exc_text and "\x1b" in record.exc_text:
            record.exc_text = strip_ansi(record.exc_text)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Warnings through logging, and ``StripAnsi`` on the handlers of ``logger`` (default: the root
    logger) and on ``py.warnings``. Idempotent."""
    logging.captureWarnings(True)
    targets: list = [logging.getLogger("py.warnings"), *(logger or logging.getLogger()).handlers]
    for t in targets:
        if not any(isinstance(f, StripAnsi) for f in t.filters):
            t.addFilter(StripAnsi())


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 600:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Progress of a loop over ``total`` units: ``advance(n)`` after each piece of work. Logs at INFO
    at most every ``every_s`` seconds, and once when ``total`` is reached, e.g.
    ``rank task all: scoring candidates: 12,000/50,000 users (24%), 41 s elapsed, about 130 s left``.
    ``clock``: seconds, monotonic (tests pass a fake one)."""

    def __init__(self, log: logging.Logger, what: str, total: int, unit: str = "users", every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log, self.what, self.total, self.unit = log, what, int(total), unit
        self.every_s, self.clock = every_s, clock
        self.done = 0
        self.start = self.last = clock()
        self.finished = False

    def advance(self, n: int = 1) -> None:
        self.done += int(n)
        now = self.clock()
        if self.done >= self.total and not self.finished:
            self.finished = True
            self._emit(now)
        elif not self.finished and now - self.last >= self.every_s:
            self._emit(now)

    def _emit(self, now: float) -> None:
        self.last = now
        elapsed = now - self.start
        pct = 100 * self.done // self.total if self.total else 100
        line = (f"{self.what}: {self.done:,}/{self.total:,} {self.unit} ({pct}%), "
                f"{_duration(elapsed)} elapsed")
        if self.done >= self.total:
            line += ", done"
        elif self.done:
            line += f", about {_duration(elapsed * (self.total - self.done) / self.done)} left"
        self.log.info("%s", line)


def laps(log: logging.Logger, prefix: str) -> Callable[[str], None]:
    """``lap(label)`` logs "<prefix>: <label> in <seconds>s", the time since the previous lap (or
    since ``laps`` was called)."""
    last = [time.perf_counter()]

    def lap(label: str) -> None:
        now = time.perf_counter()
        log.info("%s: %s in %.1fs", prefix, label, now - last[0])
        last[0] = now
    return lap
