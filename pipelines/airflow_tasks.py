"""Glue between an Airflow task context and the step functions (kept out of the DAG file so that
the scheduler's parse stays cheap and the glue is unit-testable)."""
from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Mapping

log = logging.getLogger(__name__)


# The Airflow Assets `publish` updates, one per family of published tables (its asset event carries the
# ds in `extra`). recsys_ab_report is scheduled on the personal lists: it runs once a nightly (or a
# rebuild of a past ds) has published them, for that ds, and never on the previous night's lists.
ASSET_TABLES: dict[str, tuple[str, ...]] = {
    "personal_lists": ("user_recommendations", "ab_assignments", "user_category_affinity", "homepage"),
    "item_surfaces": ("similar_items", "frequently_bought_together", "complete_the_look", "cart_cross_sell",
                      "trending", "best_sellers", "session_next_items", "context_defaults"),
    "email": ("post_purchase_email",),
    "model_runs": ("model_runs",),
}
AB_REPORT_ASSETS = ("personal_lists",)


def asset_uri(family: str) -> str:
    """URI of a published table family's Asset (an ``x-`` scheme: Airflow leaves it as written)."""
    if family not in ASSET_TABLES:
        raise KeyError(f"unknown published table family {family!r}; known: {sorted(ASSET_TABLES)}")
    return f"x-recsys://warehouse/{family}"


def published_assets(families=None) -> list:
    """``airflow.sdk.Asset`` objects of the published table families (all, or those named)."""
    from airflow.sdk import Asset

    return [Asset(name=f"recsys_{f}", uri=asset_uri(f), group="recsys",
                  extra={"tables": ",".join(ASSET_TABLES[f])}) for f in (families or ASSET_TABLES)]


# Run types whose logical date, if any, is a trigger instant rather than a data interval of the
# schedule: manual (UI, REST, CLI), TriggerDagRunOperator, asset materialisation.
_TRIGGERED_RUN_TYPES = {"manual", "operator_triggered", "asset_materialization"}


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(str(value))
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _run_type(context: Mapping[str, Any]) -> str:
    value = getattr(context.get("dag_run"), "run_type", None) or context.get("run_type") or ""
    return str(getattr(value, "value", value))


def ds_from_asset_events(events: Any) -> str | None:
    """The ds of an asset-triggered run: the ``ds`` in the ``extra`` of the newest triggering asset
    event that carries one (``publish`` writes it), else None."""
    if not events:
        return None
    found = []
    for asset in events:
        for event in events[asset]:
            extra = getattr(event, "extra", None) or {}
            if extra.get("ds"):
                found.append((_utc(getattr(event, "timestamp", None)) or datetime.min.replace(tzinfo=timezone.utc),
                              date.fromisoformat(str(extra["ds"])).isoformat()))
    return max(found)[1] if found else None


def resolve_ds(context: Mapping[str, Any]) -> str:
    """The day a run builds (UTC), by run type (``dag_run.run_type``); never the wall clock.

    1. ``params.ds`` (trigger conf) always wins.
    2. Asset-triggered runs (recsys_ab_report): the ``ds`` of the newest triggering asset event
       (``publish`` puts it in the event's extra); without one, as a manual run.
    3. Manual runs (UI, REST, ``airflow dags test``, TriggerDagRunOperator): a logical date at exactly
       00:00 UTC names that day; any other logical date is a trigger instant and the run builds the
       day before it (the latest complete UTC day), as does a run triggered without a logical date
       (from ``run_after``). A trigger at 2026-11-30T16:05 builds 2026-11-29.
    4. Scheduled and backfill runs (and contexts without a run type): the day of the logical date,
       the start of the data interval (the 02:00 run of D+1 has interval D 02:00 -> D+1 02:00: ds D);
       else the day of ``run_after``.
    """
    params = context.get("params") or {}
    if params.get("ds"):
        return date.fromisoformat(str(params["ds"])).isoformat()
    run_type = _run_type(context)
    run_after = _utc(getattr(context.get("dag_run"), "run_after", None))
    logical = _utc(context.get("logical_date") or context.get("data_interval_start"))
    if run_type == "asset_triggered":
        ds = ds_from_asset_events(context.get("triggering_asset_events"))
        if ds:
            return ds
        run_type = "manual"
    if run_type in _TRIGGERED_RUN_TYPES:
        logical = _utc(context.get("logical_date"))
        if logical is not None and logical.time() == time(0):
            return logical.date().isoformat()
        when = logical or run_after
        if when is None:
            raise ValueError("cannot tell the ds of this manual run: no params.ds, logical_date or run_after")
        return (when.date() - timedelta(days=1)).isoformat()
    if logical is not None:
        return logical.date().isoformat()
    if run_after is not None:
        return run_after.date().isoformat()
    raise ValueError("cannot tell the ds of this run: no params.ds, logical_date or run_after in the context")


def publish_asset_events(context: Mapping[str, Any], ds: str) -> None:
    """Attach the ds to the asset events of the task's outlets (``publish``): asset-scheduled DAGs read it."""
    outlet_events = context.get("outlet_events")
    task = context.get("task")
    if outlet_events is None or task is None:
        return
    for outlet in getattr(task, "outlets", None) or []:
        outlet_events[outlet].extra = {"ds": ds}


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
            result = run_step(step, cfg, ds, run_id, airflow_run_id=run_id, shard=shard)
    except (ValidationError, FeatureError, ArtifactMissing, FutureDs) as exc:
        # Bad data (or a missing input) does not get better by waiting: fail at once, no retries.
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from exc
    publish_asset_events(context, ds)
    # The ds in every task's XCom: the built day is visible in the UI whatever the run id says.
    return {"ds": ds, **result} if isinstance(result, dict) else {"ds": ds, "result": result}


def _first_line(error: Any) -> str:
    """``Type: first line of the message`` of the task's exception (Airflow may pass a string)."""
    if error is None:
        return "unknown error (no exception in the context)"
    text = str(error).strip().splitlines()
    first = text[0].strip() if text else ""
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {first}" if first else type(error).__name__
    return first or "unknown error"


def failure_summary(context: Mapping[str, Any]) -> str:
    """The one-line summary of a failed task: dag, task (with its map index), ds, run id, try, the
    exception's first line and the log URL when the context has one."""
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", None) or "?"
    task_id = getattr(ti, "task_id", None) or getattr(context.get("task"), "task_id", None) or "?"
    map_index = getattr(ti, "map_index", None)
    if isinstance(map_index, int) and map_index >= 0:
        task_id = f"{task_id}[{map_index}]"
    try:
        ds = resolve_ds(context)
    except Exception:  # noqa: BLE001 - a summary must come out whatever the context holds
        ds = str(context.get("ds") or "?")
    run_id = context.get("run_id") or getattr(context.get("dag_run"), "run_id", None) or "?"
    try_number = getattr(ti, "try_number", None)
    line = (f"recsys task failed: dag={dag_id} task={task_id} ds={ds} run={run_id} "
            f"try={try_number if try_number is not None else '?'} error={_first_line(context.get('exception'))}")
    try:
        log_url = getattr(ti, "log_url", None)
    except Exception:  # noqa: BLE001 - the URL is read from Airflow's config; its absence is no error
        log_url = None
    return f"{line} log={log_url}" if log_url else line


def _import_callback(path: str):
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"failure_callback {path!r} is not 'module:function'")
    import importlib

    return getattr(importlib.import_module(module_name), attr)


def on_failure(context: Mapping[str, Any]) -> None:
    """Airflow ``on_failure_callback`` of every task of both DAGs (called once a task has failed for
    good, after its retries): logs one summary line, then calls the function named by the
    ``failure_callback`` setting ("module:function") with the same context, e.g. to page someone.
    Errors in that function are logged, never raised (the task has failed already)."""
    log.error("%s", failure_summary(context))
    path = "?"
    try:
        from pipelines.config import load_config

        path = load_config().scale.failure_callback.strip()
        if path:
            _import_callback(path)(context)
    except Exception:  # noqa: BLE001 - alerting must never mask or replace the task's own failure
        log.exception("recsys failure_callback %r failed; the task's own failure stands", path)
