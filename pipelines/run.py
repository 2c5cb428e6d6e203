"""The nightly steps in order, in-process: what ``recsys run`` and the Airflow DAG both call.

Each step is a plain function ``step(cfg, ds, run_id) -> small dict`` reading the inputs of ``ds``
and writing the outputs of ``ds``, so a rerun or a backfill of a ds gives the same result.
"""
from __future__ import annotations

import logging
import time
from datetime import date

from features.interactions import build_features
from pipelines.config import Config
from pipelines.evaluate import evaluate
from pipelines.hybrid import rank
from pipelines.publish import publish
from pipelines.select import select
from pipelines.surfaces import surfaces
from pipelines.train import train
from pipelines.validate import validate

log = logging.getLogger(__name__)

from pipelines.constants import STEPS


def check_ds(ds: str) -> str:
    try:
        return date.fromisoformat(ds).isoformat()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"ds must be a date YYYY-MM-DD, got {ds!r}") from exc


def run_step(name: str, cfg: Config, ds: str, run_id: str, airflow_run_id: str | None = None,
             shard: int | None = None) -> dict:
    ds = check_ds(ds)
    if name == "validate":
        return validate(cfg, ds, run_id)
    if name == "features":
        return build_features(cfg, ds, run_id)
    if name == "train":
        return train(cfg, ds, run_id)
    if name == "evaluate":
        return evaluate(cfg, ds, run_id)
    if name == "rank":
        return rank(cfg, ds, run_id)
    if name == "select":
        return select(cfg, ds, run_id, airflow_run_id)
    if name == "ab_report":  # the recsys_ab_report DAG's one task, not a nightly step
        from pipelines.ab_report import ab_report

        return ab_report(cfg, ds, run_id)
    if name == "surfaces":
        return surfaces(cfg, ds, run_id)
    if name == "score":
        from pipelines.publish import score

        return score(cfg, ds, run_id, shard)
    if name == "publish":
        return publish(cfg, ds, run_id)
    raise ValueError(f"unknown step {name!r}; steps: {STEPS}")


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
