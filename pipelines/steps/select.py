"""Select step: the champion/challenger gate, the night's MLflow runs and the model registry.

The challenger is the candidate with the highest NDCG@eval_k on tonight's temporal holdout
(evaluate step). The gate (pipelines/evaluation/gate.py) promotes it only if it beats the model
type holding the ``champion`` alias and the baselines by ``gate_margin`` without losing more than
``gate_coverage_tolerance`` of coverage; otherwise the alias stays and tonight's lists come from the
champion's model type, refitted on the newest data. The aliases follow the newest ds only: a
backfill (a ds before the one a version holding ``champion`` or ``challenger`` was built for) logs
its runs and registers its version (tag ``backfill``) but moves no alias. The serving model is saved as ``champion``;
content, item-kNN and popularity models (similar items and fallbacks) are refitted beside it. The
MLflow record is pipelines/evaluation/night_log.py.
"""
from __future__ import annotations

import logging
import time

from models.registry import fit_model, items_for_fit, make_model, warm_from
from pipelines.artifacts import (
    layout,
    read_eval_summary,
    read_features,
    write_selection,
)
from pipelines.config import Config
from pipelines.evaluation.gate import alias_ds, current_champion, gate, newest_alias_ds
from pipelines.evaluation.night_log import Decision, log_night
from pipelines.infra import tracking
from pipelines.session_artifacts import read_sequences

log = logging.getLogger(__name__)

# Refitted beside the champion on all data: similar items, new-item slots and the fallbacks use them.
HELPER_MODELS = ("content", "popularity", "itemknn")
COLD_ITEM_MODELS = ("content", "two_tower")


def helper_models(cfg: Config) -> tuple[str, ...]:
    """HELPER_MODELS, and the two-tower model when it places the never-bought items (cold_item_model)."""
    if cfg.ranking.cold_item_model not in COLD_ITEM_MODELS:
        raise ValueError(f"cold_item_model must be one of {COLD_ITEM_MODELS}, not {cfg.ranking.cold_item_model!r}")
    return HELPER_MODELS + (("two_tower",) if cfg.ranking.cold_item_model == "two_tower" else ())


def run(cfg: Config, ds: str, run_id: str, airflow_run_id: str | None = None) -> dict:
    summary = read_eval_summary(cfg, ds)
    challenger = summary["best_model"]
    mlflow = tracking.setup(cfg)
    current, current_version = current_champion(cfg, mlflow)
    held = alias_ds(cfg, mlflow)
    promote, reason = gate(summary["metrics"], challenger, current, cfg, ds=ds,
                           champion_ds=held.get("champion", (None, None))[1])
    # Tonight's lists follow the gate on this ds's holdout; the aliases only move for the newest ds.
    serving = challenger if promote else current
    newest = newest_alias_ds(held)
    backfill = newest is not None and ds < newest
    if backfill:
        reason = f"backfill of {ds}: aliases stay on ds {newest}; the gate on this ds: {reason}"
        log.warning("select ds=%s: %s", ds, reason)
    else:
        log.info("select ds=%s: gate %s: %s", ds, "PROMOTES" if promote else "KEEPS the champion", reason)
    f = read_features(cfg, ds)
    items = items_for_fit(f.items, "pop_full")
    paths = layout(cfg)
    t0 = time.perf_counter()
    tuned = summary.get("params", {})
    sequences = lambda: read_sequences(cfg, ds, "full")  # noqa: E731  (read only for a sequence model)
    champ_dir = fit_model(warm_from(make_model(serving, cfg, tuned.get(serving)), paths.holdout_model(ds, serving)),
                          f.full, items, sequences, f.users).save(paths.model(ds, "champion"))
    fit_seconds = time.perf_counter() - t0
    chall_dir = champ_dir if serving == challenger else fit_model(
        make_model(challenger, cfg, tuned.get(challenger)), f.full, items, sequences, f.users).save(
        paths.model(ds, "challenger"))
    for name in helper_models(cfg):
        fit_model(make_model(name, cfg), f.full, items, users=f.users).save(paths.model(ds, name))
    log.info("select ds=%s: serving %s, refitted on full data in %.2fs", ds, serving, fit_seconds)
    decision = Decision(ds=ds, run_id=run_id, airflow_run_id=airflow_run_id or "", champion=serving,
                        challenger=challenger, promote=promote and not backfill, reason=reason,
                        fit_seconds=fit_seconds, backfill=backfill)
    mlflow_run_id, version = log_night(mlflow, cfg, decision, summary, f, chall_dir)
    champion_version = version if decision.promote else current_version
    if backfill:
        log.info("select ds=%s: MLflow run %s; %s version %s registered as a backfill, no alias moved", ds,
                 mlflow_run_id, cfg.gate.registered_model, version)
    else:
        log.info("select ds=%s: MLflow run %s; %s version %s is the challenger, version %s the champion", ds,
                 mlflow_run_id, cfg.gate.registered_model, version, champion_version)
    out = {"ds": ds, "champion": serving, "challenger": challenger, "promoted": decision.promote, "reason": reason,
           "mlflow_run_id": mlflow_run_id, "model_version": version, "champion_version": champion_version,
           "backfill": backfill}
    write_selection(cfg, ds, out)
    return out
