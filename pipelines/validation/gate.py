"""The validation gate: the Great Expectations 1.x gate over everything landed, with row-level quarantine.

For the run of ``ds`` (``validate``, which the validate step runs):

* **catalog and users**: every landed batch not validated yet is checked (null or duplicate ids,
  negative prices); failing rows go to ``quarantine/<dataset>/``, valid rows to
  ``validated/<dataset>/`` (the features step reads the catalog from there).
* **events**: every landing partition ``event_date <= ds`` whose files changed since it was last
  validated (normally just ``ds``; on the first run, all imported history) is read once
  (validation/events.py).

Two levels of rule (docs/validation.md):

* **row rules** (validation/rules.py), vectorised: a failing row goes to the quarantine zone and the
  ``quarantined_events`` table with every rule it broke; valid rows go on.
* **batch rules**: an unreadable file, a missing (or renamed) required column, a wrong column type,
  an empty file, an import batch not judged before with a quarantine share above
  ``max_quarantine_share`` (the batch is then marked failed: later runs quarantine its rows with a
  warning and go on; validation/batches.py) fail the task, and so do volume and freshness anomalies
  when configured to ("warn" by default). Withdrawn batches are not read. A failure names the file, the
  column, the rule, counts and example rows, writes nothing to the validated zone, and so leaves
  every published table as it was.

Accounting: rows in = rows valid + rows quarantined, asserted per partition and recorded in the
DuckDB table ``validation_runs`` (failed runs too; validation/outcome.py). The rules also run as
Great Expectations suites (validation/expectations.py) whose results are rendered as Data Docs
under ``validation/ds=<ds>/data_docs/``, linked from the run's report (validation/report.py).
"""
from __future__ import annotations

import logging

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.artifacts import layout, write_validation_summary
from pipelines.config import Config
from pipelines.infra import storage, warehouse
from pipelines.validation import batches
from pipelines.validation.events import validate_events, write_events
from pipelines.validation.expectations import ExpectationRunner
from pipelines.validation.outcome import (
    Outcome,
    build_summary,
    events_outcome,
    run_records,
    step_result,
)
from pipelines.validation.report import render_report
from pipelines.validation.rules import (
    QUARANTINE_SCHEMA,
    ValidationError,
    encode_rules,
    reference_rule_masks,
    rule_names,
)

__all__ = ["ExpectationRunner", "Outcome", "ValidationError", "catalog_ids", "validate", "validate_reference"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ catalog and users
def validate_reference(cfg: Config, dataset: str, runner: ExpectationRunner) -> Outcome:
    """Validate catalog (items) or users batches that have not been validated yet."""
    key = "item_id" if dataset == "items" else "user_id"
    out = Outcome(dataset)
    gone = batches.ids_with(batches.read_ledger(cfg), batches.WITHDRAWN)
    for f in storage.landing_files(layout(cfg).landing, dataset):
        target = layout(cfg).validated_dataset(dataset) / f.name
        if batches.batch_of(f) in gone:
            # Derived copies only (the landing file stays): restoring the batch validates it again.
            target.unlink(missing_ok=True)
            (layout(cfg).quarantine_dataset(dataset) / f.name).unlink(missing_ok=True)
            continue
        if target.exists():
            continue
        try:
            df = pq.read_table(f).to_pandas()
        except Exception as exc:
            raise ValidationError(f"{f}: rule unreadable_file: cannot be read as Parquet ({exc})") from exc
        if key not in df:
            raise ValidationError(f"{f}: rule missing_column: required column {key!r} missing; "
                                  f"the file has columns {list(df.columns)}")
        masks = reference_rule_masks(df, key)
        codes, names = encode_rules(masks)
        bad = codes != 0
        out.expectations += runner.run(dataset, df, name=f"{dataset}_{f.stem}") if len(df) else []
        storage.atomic_write_parquet(pa.Table.from_pandas(df[~bad], preserve_index=False), target)
        if bad.any():
            q = df[bad].assign(rule=rule_names(codes[bad], names).to_numpy())
            storage.atomic_write_parquet(pa.Table.from_pandas(q, preserve_index=False),
                                         layout(cfg).quarantine_dataset(dataset) / f.name)
        out.rows_in += len(df)
        out.rows_valid += int((~bad).sum())
        out.rows_quarantined += int(bad.sum())
        out.partitions += 1
        for r, m in masks.items():
            out.rule_counts[r] = out.rule_counts.get(r, 0) + int(m.sum())
    return out


def catalog_ids(cfg: Config) -> pd.Index:
    """Every item id of the validated catalog (the ``unknown_item`` rule's reference)."""
    items = layout(cfg).validated_dataset("items")
    files = sorted(items.glob("batch-*.parquet")) if items.exists() else []
    if not files:
        return pd.Index([], dtype="string")
    return pd.Index(pd.concat([pq.read_table(f, columns=["item_id"]).to_pandas()["item_id"] for f in files]).unique())


# ------------------------------------------------------------------ one run of the gate
def _run_gate(cfg: Config, ds: str, run_id: str,
              runner: ExpectationRunner) -> tuple[list[Outcome], str | None, pa.Table, list[str]]:
    """Validate catalog, users and events, and write the validated and quarantine zones unless a
    batch rule failed. Returns the outcomes, the failure message (None on success), the quarantined
    event rows and the event dates published."""
    outcomes: list[Outcome] = []
    failure: str | None = None
    quarantined = QUARANTINE_SCHEMA.empty_table()
    work: dict = {}
    try:
        for dataset in ("items", "users"):
            outcomes.append(validate_reference(cfg, dataset, runner))
        events, work = validate_events(cfg, ds, run_id, runner, catalog_ids(cfg))
        outcomes.append(events)
        verdicts = work.get("verdicts", {})
        if events.errors:
            failure = "\n".join(events.errors)
            # A failed batch is marked failed even though nothing is published: it fails this night only.
            batches.record_judgements(cfg, ds, run_id, {b: j for b, j in verdicts.items()
                                                        if j["status"] == batches.FAILED}, None)
        elif work:
            quarantined = write_events(cfg, ds, run_id, work)
            batches.record_judgements(cfg, ds, run_id, verdicts, work["counts"])
    except ValidationError as exc:
        failure = str(exc)
        if not any(o.dataset == "events" for o in outcomes):
            outcomes.append(Outcome("events", errors=[failure]))
    published = [d.name.split("=", 1)[1] for d in work.get("pending", [])] if failure is None else []
    return outcomes, failure, quarantined, published


def validate(cfg: Config, ds: str, run_id: str) -> dict:
    """Validate catalog, users and every pending event partition up to ``ds``; record the run in
    ``validation_runs``, write its summary and report.

    Returns the counts (small, XCom-safe). Raises ValidationError on a batch-rule failure, after
    recording it in ``validation_runs``.
    """
    docs_dir, report = layout(cfg).data_docs(ds), layout(cfg).validation_report(ds)
    runner = ExpectationRunner(docs_dir, run_id, ds, cfg)
    outcomes, failure, quarantined, published = _run_gate(cfg, ds, run_id, runner)
    for o in outcomes:
        for w in o.warnings:
            log.warning("validate ds=%s: %s", ds, w)
    records = run_records(outcomes, ds, run_id, failure, report) + batches.withdrawn_records(cfg, ds, run_id, report)
    warehouse.record_validation(layout(cfg).duckdb_path, ds, run_id, records, quarantined, published)
    summary = build_summary(outcomes, ds, run_id, failure, report)
    write_validation_summary(cfg, ds, summary)
    render_report(summary, docs_dir, report)
    log.info("validate ds=%s: Data Docs: %s", ds, report.as_uri())
    if failure is not None:
        raise ValidationError(f"validation failed for ds={ds} (run {run_id}); nothing was published:\n{failure}")
    events = events_outcome(outcomes)
    log.info("validate ds=%s: %d rows in, %d valid, %d quarantined %s", ds, events.rows_in, events.rows_valid,
             events.rows_quarantined, {k: v for k, v in events.rule_counts.items() if v})
    return step_result(summary)
