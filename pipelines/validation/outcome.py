"""What one validate run counted, and how it is recorded.

``Outcome`` holds the counts of one dataset (``items``, ``users`` or ``events``); from the outcomes
of a run come the rows of the DuckDB table ``validation_runs`` (``run_records``), the run's
``summary.json`` (``build_summary``) and the small, XCom-safe dict the step returns
(``step_result``). Accounting: rows in = rows valid + rows quarantined.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Outcome:
    dataset: str
    rows_in: int = 0
    rows_valid: int = 0
    rows_quarantined: int = 0
    partitions: int = 0
    rule_counts: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    expectations: list = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.errors


def events_outcome(outcomes: list[Outcome]) -> Outcome:
    return next(o for o in outcomes if o.dataset == "events")


def run_records(outcomes: list[Outcome], ds: str, run_id: str, failure: str | None, report: Path) -> list[dict]:
    """One ``validation_runs`` row per dataset; a failed run marks every dataset failed. ``rule_counts``:
    the rules that fired, {rule: rows} (a MAP(VARCHAR, BIGINT) in DuckDB)."""
    return [{"ds": ds, "run_id": run_id, "dataset": o.dataset, "rows_in": o.rows_in, "rows_valid": o.rows_valid,
             "rows_quarantined": o.rows_quarantined, "success": o.success and failure is None,
             "partitions": o.partitions, "rule_counts": {k: int(v) for k, v in o.rule_counts.items() if v},
             "warnings": "\n".join(o.warnings), "message": "\n".join(o.errors) or (failure or ""),
             "data_docs": report.as_uri()} for o in outcomes]


def build_summary(outcomes: list[Outcome], ds: str, run_id: str, failure: str | None, report: Path) -> dict:
    """The run's ``summary.json``: the events counts at the top, every dataset and the Great
    Expectations results below."""
    events = events_outcome(outcomes)
    return {
        "ds": ds, "run_id": run_id, "success": failure is None, "partitions_validated": events.partitions,
        "rows_in": events.rows_in, "rows_valid": events.rows_valid, "rows_quarantined": events.rows_quarantined,
        "rule_counts": events.rule_counts, "warnings": events.warnings, "data_docs": str(report),
        "error": failure,
        "datasets": {o.dataset: {"rows_in": o.rows_in, "rows_valid": o.rows_valid,
                                 "rows_quarantined": o.rows_quarantined, "rule_counts": o.rule_counts} for o in outcomes},
        "great_expectations": {o.dataset: o.expectations for o in outcomes},
    }


def step_result(summary: dict) -> dict:
    """The summary without its large parts (what the step returns)."""
    return {k: v for k, v in summary.items() if k not in ("great_expectations", "datasets", "error")}
