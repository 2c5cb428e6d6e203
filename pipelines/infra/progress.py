"""Progress lines for long steps: ``laps(log, prefix)`` returns ``lap(label)``, which logs the seconds
since the previous lap (or since ``laps`` was called)."""
from __future__ import annotations

import logging
import time
from typing import Callable


def laps(log: logging.Logger, prefix: str) -> Callable[[str], None]:
    last = [time.perf_counter()]

    def lap(label: str) -> None:
        now = time.perf_counter()
        log.info("%s: %s in %.1fs", prefix, label, now - last[0])
        last[0] = now
    return lap
