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
