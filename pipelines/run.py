"""Run steps in-process by name: what ``recsys run``, the Airflow tasks and the tests call.

Each step is ``pipelines.steps.<name>.run(cfg, ds, run_id, **options) -> small dict``, reading the
inputs of ``ds`` and writing the outputs of ``ds``, so a rerun or a backfill of a ds gives the same
result. The order is ``pipelines.steps.STEPS``.
"""
from __future__ import annotations

import logging
import time
from datetime import date, datetime, timezone

from threadpoolctl import threadpool_limits

from pipelines.config import Config
from pipelines.steps import STEPS, get_step

log = logging.getLogger(__name__)


class FutureDs(ValueError):
    """A ds after today (UTC): refused unless the caller allows it."""


def check_ds(ds: str, allow_future: bool = False) -> str:
    """``ds`` as YYYY-MM-DD; a ds after today (UTC) is refused unless ``allow_future``.

    The guard reads the clock (steps never do): a future ds would publish lists built from no
    events for days nobody has reached, and a mistyped year would otherwise look like the newest
    night. ``allow_future`` is for deliberate tests and simulations.
    """
    try:
        day = date.fromisoformat(str(ds))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"ds must be a date YYYY-MM-DD, got {ds!r}") from exc
    today = datetime.now(timezone.utc).date()
    if day > today and not allow_future:
        raise FutureDs(f"ds {day} is after today ({today}, UTC): a night can only be built for a day that has "
                       "begun. Check the date, or pass --allow-future to build it on purpose")
    return day.isoformat()


def run_step(name: str, cfg: Config, ds: str, run_id: str, airflow_run_id: str | None = None,
             shard: int | None = None, allow_future: bool = False) -> dict:
    """One step of ``STEPS`` (or ``OTHER_STEPS``) for ``ds``; ``shard`` only for mapped steps (None
    runs every shard in turn), ``airflow_run_id`` only for the steps that record it."""
    step = get_step(name)
    ds = check_ds(ds, allow_future)
    given = {"airflow_run_id": airflow_run_id, "shard": shard}
    # Every thread pool of the step (OpenMP, BLAS) sized to the CPUs it is given (config threads):
    # pools wider than the free cores spin against other busy processes instead of slowing down.
    with threadpool_limits(limits=cfg.scale.thread_count()):
        return step.function()(cfg, ds, run_id, **{k: given[k] for k in step.options})


def run_all(cfg: Config, ds: str, run_id: str, allow_future: bool = False) -> dict:
    ds = check_ds(ds, allow_future)
    results = {}
    t_all = time.perf_counter()
    for i, name in enumerate(STEPS, 1):
        t0 = time.perf_counter()
        log.info("[%d/%d] %s ds=%s ...", i, len(STEPS), name, ds)
        results[name] = run_step(name, cfg, ds, run_id, allow_future=allow_future)
        log.info("[%d/%d] %s done in %.1fs", i, len(STEPS), name, time.perf_counter() - t0)
    log.info("run ds=%s finished in %.1fs", ds, time.perf_counter() - t_all)
    return results
