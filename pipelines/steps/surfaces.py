"""Surfaces step: the non-personal and pair tables of docs/tables.md (frequently bought together,
complete the look, cart cross-sell, others bought next, post-purchase email, trending, best
sellers, category affinity, session next items, context defaults), staged for the publish step; the session model
chosen on held-out sessions (pipelines/ranking/session_surface.py), its metrics logged to the
night's MLflow run."""
from __future__ import annotations

import logging
import time

import pandas as pd

from pipelines.artifacts import Features, layout, read_features, read_selection, write_surfaces
from pipelines.config import Config
from pipelines.infra import storage, tracking
from pipelines.ranking.context_tables import context_defaults
from pipelines.ranking.rules import item_flags, load_rules
from pipelines.ranking.session_surface import session_surface
from pipelines.ranking.surface_tables import (
    category_affinity,
    others_bought_next,
    pair_tables,
    popularity_tables,
    post_purchase_email,
    purchases,
)
from pipelines.session_artifacts import (
    read_sessions,
    write_session_metrics,
    write_session_model,
)

log = logging.getLogger(__name__)


def run(cfg: Config, ds: str, run_id: str) -> dict:
    t0 = time.perf_counter()
    f = read_features(cfg, ds)
    # DuckDB spills beyond duckdb_memory_limit (thirty million events: 15.7 GiB in RAM without it).
    with storage.scratch_duckdb(cfg.scale.duckdb_memory_limit, layout(cfg).surfaces_dir(ds).parent) as con:
        purchases(cfg, ds, f, con)
        cats = f.items[["item_id", "category_key"]].rename(columns={"category_key": "category"})
        tables = pair_tables(cfg, con, cats)
        tables["others_bought_next"] = others_bought_next(cfg, con)
        tables.update(popularity_tables(cfg, con, ds))
        tables["post_purchase_email"] = post_purchase_email(
            cfg, con, ds, tables["frequently_bought_together"], tables["others_bought_next"], tables["best_sellers"])
    tables["user_category_affinity"] = category_affinity(cfg, f)
    tables["context_defaults"] = context_defaults(cfg, ds, f)
    tables["session_next_items"] = _sessions(cfg, ds, f)
    write_surfaces(cfg, ds, tables)
    counts = {k: len(v) for k, v in tables.items()}
    log.info("surfaces ds=%s: %s in %.1fs", ds, counts, time.perf_counter() - t0)
    return {"ds": ds, "rows": counts}


def _sessions(cfg: Config, ds: str, f: Features) -> pd.DataFrame:
    """session_next_items; the chosen session model and the models' metrics saved, and logged to the
    night's MLflow run (the select step's) when there is one."""
    available = item_flags(f.items, load_rules(cfg))["available"].to_numpy()
    item_ids = f.items["item_id"].astype(str).to_numpy()
    table, metrics, summary, model = session_surface(
        cfg, item_ids, read_sessions(cfg, ds, "train"), read_sessions(cfg, ds, "holdout"), available)
    if model is not None:
        write_session_model(cfg, ds, model, item_ids)
    write_session_metrics(cfg, ds, metrics, summary)
    try:
        run_id = read_selection(cfg, ds).get("mlflow_run_id")
        if run_id and summary["model"]:
            mlflow = tracking.setup(cfg)
            with mlflow.start_run(run_id=run_id):
                mlflow.set_tag("session_model", summary["model"])
                mlflow.log_metrics({f"session.{r.model}.{r.metric}": float(r.value) for r in metrics.itertuples()}
                                   | {f"session.{k}": float(v) for k, v in summary.items() if k != "model"},
                                   step=tracking.ds_step(ds))
    except Exception as exc:  # the metrics are on disk (and in model_runs); tracking must not fail the night
        log.warning("surfaces ds=%s: could not log the session metrics to MLflow: %s", ds, exc)
    return table
