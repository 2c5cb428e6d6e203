"""Run steps in-process by name: what ``recsys run``, the Airflow tasks and the tests call.

Each step is ``pipelines.steps.<name>.run(cfg, ds, run_id, **options) -> small dict``, reading the
inputs of ``ds`` and writing the outputs of ``ds``, so a rerun or a backfill of a ds gives the same
result. The order is ``pipelines.steps.STEPS``.
"""
from __future__ import annotations

import logging
import time
from datetime import date

from pipelines.config import Config
from pipelines.steps import STEPS, get_step

log = logging.getLogger(__name__)


def check_ds(ds: str) -> str:
    try:
        return date.fromisoformat(ds).isoformat()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"ds must be a date YYYY-MM-DD, got {ds!r}") from exc


def run_step(name: str, cfg: Config, ds: str, run_id: str, airflow_run_id: str | None = None,
             shard: int | None = None) -> dict:
    """One step of ``STEPS`` (or ``OTHER_STEPS``) for ``ds``; ``shard`` only for mapped steps (None
    runs every shard in turn), ``airflow_run_id`` only for the steps that record it."""
    step = get_step(name)
    ds = check_ds(ds)
    given = {"airflow_run_id": airflow_run_id, "shard": shard}
    return step.function()(cfg, ds, run_id, **{k: given[k] for k in step.options})


def run_all(cfg: Config, ds: str, run_id: str) -> dict:
    results = {}
    t_all = time.perf_counter()
    for i, name in enumerate(STEPS, 1):
        t0 = time.perf_counter()
        log.info("[%d/%d] %s ds=%s ...", i, len(STEPS), name, ds)
        results[name] = run_step(name, cfg, ds, run_id)
        log.info("[%d/%d] %s done in %.1fs", i, len(STEPS), name, time.perf_counter() - t0)
    log.info("run ds=%s finished in %.1fs", ds, time.perf_counter() - t_all)
    return results
