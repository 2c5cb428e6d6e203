"""Glue between an Airflow task context and the step functions (kept out of the DAG file so that
the scheduler's parse stays cheap and the glue is unit-testable)."""
from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Any, Mapping

log = logging.getLogger(__name__)


def resolve_ds(context: Mapping[str, Any]) -> str:
    """The logical date of the run: ``params.ds`` if the user set one when triggering, else the date of
    the run's logical date (the start of its data interval), else of ``run_after`` for runs triggered
    without a logical date. Never the wall clock."""
    params = context.get("params") or {}
    if params.get("ds"):
        return date.fromisoformat(str(params["ds"])).isoformat()
    for key in ("logical_date", "data_interval_start"):
        value = context.get(key)
        if value is not None:
            return value.date().isoformat() if isinstance(value, datetime) else str(value)[:10]
    dag_run = context.get("dag_run")
    run_after = getattr(dag_run, "run_after", None)
    if run_after is not None:
        return run_after.date().isoformat()
    raise ValueError("cannot tell the ds of this run: no params.ds, logical_date or run_after in the context")


def run_task(step: str, context: Mapping[str, Any], shard: int | None = None) -> dict:
    """Run one pipeline step for the DAG run in ``context``; returns the step's small result for XCom."""
    from features.interactions import FeatureError
    from pipelines.artifacts import ArtifactMissing
    from pipelines.config import load_config
    from pipelines.infra.locks import task_lock
    from pipelines.run import FutureDs, run_step
    from pipelines.validation.gate import ValidationError

    ds = resolve_ds(context)
    run_id = str(context.get("run_id") or getattr(context.get("dag_run"), "run_id", "airflow"))
    cfg = load_config()
    log.info("recsys step %s for ds=%s, run %s, data root %s", step, ds, run_id, cfg.home)
    try:
        # The data root shared with the night's other tasks (a `recsys run` beside it is refused), this
        # task of this ds exclusively (a second copy of it is refused, naming the first).
        with task_lock(cfg.home, ds, step, shard, command=f"airflow task {step} of run {run_id}"):
            return run_step(step, cfg, ds, run_id, airflow_run_id=run_id, shard=shard)
    except (ValidationError, FeatureError, ArtifactMissing, FutureDs) as exc:
        # Bad data (or a missing input) does not get better by waiting: fail at once, no retries.
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from exc
