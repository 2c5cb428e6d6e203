"""Validate step: the Great Expectations gate over catalog, users and every pending event partition
up to ``ds``; valid rows go on, bad rows to quarantine with the rule they broke (docs/validation.md;
the gate itself is pipelines/validation/gate.py)."""
from __future__ import annotations

from pipelines.config import Config
from pipelines.validation.gate import validate


def run(cfg: Config, ds: str, run_id: str) -> dict:
    """Returns the counts (small, XCom-safe). Raises ValidationError on a batch-rule failure, after
    recording it in ``validation_runs``."""
    return validate(cfg, ds, run_id)
