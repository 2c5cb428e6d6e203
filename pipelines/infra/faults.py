"""Named fault points for crash tests and the chaos script: a real SIGKILL at a chosen instant.

Every writer of the warehouse calls ``fault_point(name)`` at the instants where a crash matters
(docs/tables.md, "Reading while the pipeline writes"). Nothing happens unless the environment
variable ``RECSYS_FAULT_POINT`` names that point:

* ``RECSYS_FAULT_POINT=publish.journal_written``: the process kills itself (SIGKILL, no cleanup,
  no ``finally``) the first time it reaches that point;
* a comma-separated list kills at the first of them reached;
* ``name:N`` kills at the N-th time the point is reached (1 = the first).

This is a test hook, not a setting, so it is read here and not through pipelines/config.py.
"""
from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "RECSYS_FAULT_POINT"

# The stages every warehouse transaction passes (pipelines/infra/journal.py), per writer.
TX_STAGES = ("duckdb_staged", "journal_written", "mid_replace", "before_journal_delete")
WRITERS = ("publish", "validation", "forget", "rebuild")

FAULT_POINTS: tuple[str, ...] = (
    "publish.parquet_staged",           # every Parquet copy of the ds written beside its final place
    "forget.suppressed",                # the salted hash recorded, nothing scrubbed yet
    "forget.files_staged",              # every rewritten file staged, DuckDB scrubbed in its copy
    *(f"{w}.{s}" for w in WRITERS for s in TX_STAGES),
)

_hits: Counter = Counter()


def _wanted() -> dict[str, int]:
    out: dict[str, int] = {}
    for part in os.environ.get(ENV, "").split(","):
        part = part.strip()
        if not part:
            continue
        name, _, nth = part.partition(":")
        out[name.strip()] = int(nth) if nth.strip().isdigit() else 1
    return out


def fault_point(name: str) -> None:
    """SIGKILL this process here when RECSYS_FAULT_POINT names this point (and this is the hit
    it asks for); otherwise nothing."""
    wanted = _wanted()
    if name not in wanted:
        return
    _hits[name] += 1
    if _hits[name] == wanted[name]:
        os.kill(os.getpid(), signal.SIGKILL)
