"""Validate step: the Great Expectations gate over catalog, users and every pending event partition
up to ``ds``; valid rows go on, bad rows to quarantine with the rule they broke (docs/validation.md)."""
from __future__ import annotations

import json
import logging

from pipelines.artifacts import layout, write_validation_summary
from pipelines.config import Config
from pipelines.infra import warehouse
from pipelines.validation.gate import (
    QUARANTINE_SCHEMA,
    ExpectationRunner,
    Outcome,
    ValidationError,
    catalog_ids,
    render_report,
    validate_events,
    validate_reference,
    write_events,
)

log = logging.getLogger(__name__)


def run(cfg: Config, ds: str, run_id: str) -> dict:
    """Validate catalog, users and every pending event partition up to ``ds``.

    Returns the counts (small, XCom-safe). Raises ValidationError on a batch-rule failure, after
    recording it in ``validation_runs``.
    """
    docs_dir = layout(cfg).data_docs(ds)
    runner = ExpectationRunner(docs_dir, run_id, ds, cfg)
    outcomes: list[Outcome] = []
    failure: str | None = None
    quarantined = QUARANTINE_SCHEMA.empty_table()
    work: dict = {}
    try:
        for dataset in ("items", "users"):
            outcomes.append(validate_reference(cfg, dataset, runner))
        events, work = validate_events(cfg, ds, run_id, runner, catalog_ids(cfg))
        outcomes.append(events)
        if events.errors:
            failure = "\n".join(events.errors)
        elif work:
            quarantined = write_events(cfg, ds, run_id, work)
    except ValidationError as exc:
        failure = str(exc)
        if not any(o.dataset == "events" for o in outcomes):
            outcomes.append(Outcome("events", errors=[failure]))
    for o in outcomes:
        for w in o.warnings:
            log.warning("validate ds=%s: %s", ds, w)
    report = layout(cfg).validation_report(ds)
    docs = report
    rows = [{"ds": ds, "run_id": run_id, "dataset": o.dataset, "rows_in": o.rows_in, "rows_valid": o.rows_valid,
             "rows_quarantined": o.rows_quarantined, "success": o.success and failure is None,
             "partitions": o.partitions, "rule_counts": json.dumps({k: v for k, v in o.rule_counts.items() if v}),
             "warnings": "\n".join(o.warnings), "message": "\n".join(o.errors) or (failure or ""),
             "data_docs": docs.as_uri() if docs else ""} for o in outcomes]
    warehouse.record_validation(layout(cfg).duckdb_path, ds, run_id, rows, quarantined,
                              [d.name.split("=", 1)[1] for d in work.get("pending", [])] if failure is None else [])
    events = next(o for o in outcomes if o.dataset == "events")
    summary = {
        "ds": ds, "run_id": run_id, "success": failure is None, "partitions_validated": events.partitions,
        "rows_in": events.rows_in, "rows_valid": events.rows_valid, "rows_quarantined": events.rows_quarantined,
        "rule_counts": events.rule_counts, "warnings": events.warnings, "data_docs": str(report),
        "error": failure,
        "datasets": {o.dataset: {"rows_in": o.rows_in, "rows_valid": o.rows_valid,
                                 "rows_quarantined": o.rows_quarantined, "rule_counts": o.rule_counts} for o in outcomes},
        "great_expectations": {o.dataset: o.expectations for o in outcomes},
    }
    write_validation_summary(cfg, ds, summary)
    render_report(summary, docs_dir, report)
    log.info("validate ds=%s: Data Docs: %s", ds, report.as_uri())
    if failure is not None:
        raise ValidationError(f"validation failed for ds={ds} (run {run_id}); nothing was published:\n{failure}")
    log.info("validate ds=%s: %d rows in, %d valid, %d quarantined %s", ds, events.rows_in, events.rows_valid,
             events.rows_quarantined, {k: v for k, v in events.rule_counts.items() if v})
    return {k: v for k, v in summary.items() if k not in ("great_expectations", "datasets", "error")}
