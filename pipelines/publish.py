"""Publish step: per-user recommendations, similar items and the evaluation, as one atomic ds.

* ``user_recommendations``: surface ``for_you``, exactly ``top_n`` rows for every user with a valid
  event up to ``ds``. The champion ranks first; users with no usable history (an empty row) and
  lists with empty slots are filled from the popularity list, without repeating an item.
  Inactive items are never published.
* ``similar_items``: content (TF-IDF) neighbours for every active item; items whose text matches
  nothing fall back to item-kNN neighbours.
* ``model_runs``: every candidate's holdout metrics.

All three tables of a ds become visible in DuckDB in one transaction (storage.publish_tables).
"""
from __future__ import annotations

import logging
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa

from features.interactions import load_features
from models import load_model
from models.base import NO_ITEM
from pipelines import constants as C
from pipelines import storage
from pipelines.config import Config

log = logging.getLogger(__name__)


def merge_ranked(primary: np.ndarray, fallback: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise: the primary ids, then fallback ids not already present, cut to n. Vectorised.

    Returns (ids, from_primary) of shape (rows, n); a slot that neither list fills holds -1.
    """
    rows = primary.shape[0]
    fallback = np.broadcast_to(fallback, (rows, fallback.shape[-1])) if fallback.ndim == 1 else fallback
    cand = np.hstack([primary, fallback])
    is_primary = np.hstack([np.ones_like(primary, bool), np.zeros(fallback.shape, bool)])
    order = np.argsort(cand, axis=1, kind="stable")
    sorted_ids = np.take_along_axis(cand, order, axis=1)
    dup_sorted = np.zeros_like(sorted_ids, dtype=bool)
    dup_sorted[:, 1:] = sorted_ids[:, 1:] == sorted_ids[:, :-1]
    dup = np.zeros_like(dup_sorted)
    np.put_along_axis(dup, order, dup_sorted, axis=1)  # stable sort: the first occurrence is kept
    invalid = dup | (cand == NO_ITEM)
    pick = np.argsort(invalid, axis=1, kind="stable")[:, :n]
    ids = np.take_along_axis(cand, pick, axis=1)
    ok = ~np.take_along_axis(invalid, pick, axis=1)
    return np.where(ok, ids, NO_ITEM), np.take_along_axis(is_primary, pick, axis=1) & ok


def user_recommendations(cfg: Config, ds: str, run_id: str, f: dict, champion_name: str) -> pa.Table:
    full, items = f["full"], f["items"]
    inactive = np.flatnonzero(~items["active"].to_numpy(dtype=bool))
    champion = load_model(cfg.models_dir(ds) / "champion")
    popularity = load_model(cfg.models_dir(ds) / "popularity")
    n_users = full.shape[0]
    users = np.arange(n_users)
    ids, scores = champion.recommend(users, full, cfg.top_n, filter_items=inactive)
    empty_history = np.diff(full.indptr) == 0
    ids[empty_history] = NO_ITEM  # a factor model's guess for an empty row is noise; use popularity
    pop_ids, pop_scores = popularity.recommend(np.zeros(1, np.int64), full, 2 * cfg.top_n, filter_items=inactive)
    merged, from_primary = merge_ranked(ids, pop_ids[0], cfg.top_n)
    # Champion scores where the champion chose the item, popularity scores for the backfill.
    pos = ids[:, :, None] == merged[:, None, :]  # (users, n, n) booleans; n = top_n is small
    champ_vals = np.where(np.isfinite(scores), scores, 0)[:, :, None]
    score = np.where(from_primary, (champ_vals * pos).sum(axis=1),
                     popularity.scores_[merged.clip(0)]).astype(np.float32)
    keep = merged.ravel() >= 0
    if not keep.all():
        log.warning("publish ds=%s: %d users get fewer than %d items (catalog too small)", ds,
                    int((merged < 0).any(axis=1).sum()), cfg.top_n)
    n = cfg.top_n
    user_ids = f["users"]["user_id"].to_numpy()
    item_ids = items["item_id"].to_numpy()
    table = pd.DataFrame({
        "ds": date.fromisoformat(ds),
        "run_id": run_id,
        "surface": C.SURFACE_FOR_YOU,
        "user_id": np.repeat(user_ids, n)[keep],
        "rank": np.tile(np.arange(1, n + 1, dtype=np.int32), n_users)[keep],
        "item_id": item_ids[merged.ravel()[keep]],
        "score": score.ravel()[keep],
        "model": np.where(from_primary.ravel(), champion_name, "popularity")[keep],
    })
    return pa.Table.from_pandas(table, preserve_index=False)


def similar_items(cfg: Config, ds: str, run_id: str, f: dict) -> pa.Table:
    items = f["items"]
    active = np.flatnonzero(items["active"].to_numpy(dtype=bool))
    inactive = np.flatnonzero(~items["active"].to_numpy(dtype=bool))
    n = cfg.similar_items_n
    content = load_model(cfg.models_dir(ds) / "content")
    knn = load_model(cfg.models_dir(ds) / "itemknn")
    c_ids, c_scores = content.similar_items(active, n, filter_items=inactive)
    k_ids, k_scores = knn.similar_items(active, n, filter_items=inactive)
    merged, from_content = merge_ranked(c_ids, k_ids, n)
    # Score: the cosine of whichever model supplied the item.
    c_pos = c_ids[:, :, None] == merged[:, None, :]
    k_pos = k_ids[:, :, None] == merged[:, None, :]
    c_val = np.where(np.isfinite(c_scores), c_scores, 0)[:, :, None]
    k_val = np.where(np.isfinite(k_scores), k_scores, 0)[:, :, None]
    score = np.where(from_content, (c_val * c_pos).sum(axis=1), (k_val * k_pos).sum(axis=1))
    keep = merged.ravel() >= 0
    item_ids = items["item_id"].to_numpy()
    table = pd.DataFrame({
        "ds": date.fromisoformat(ds),
        "run_id": run_id,
        "item_id": np.repeat(item_ids[active], n)[keep],
        "rank": np.tile(np.arange(1, n + 1, dtype=np.int32), len(active))[keep],
        "similar_item_id": item_ids[merged.ravel()[keep]],
        "score": score.ravel()[keep].astype(np.float32),
        "model": np.where(from_content.ravel(), "content", "itemknn")[keep],
    })
    return pa.Table.from_pandas(table, preserve_index=False)


def model_runs(cfg: Config, ds: str, run_id: str) -> pa.Table:
    m = pd.read_parquet(cfg.eval_dir(ds) / "metrics.parquet")
    m.insert(0, "run_id", run_id)
    m.insert(0, "ds", date.fromisoformat(ds))
    return pa.Table.from_pandas(m[["ds", "run_id", "model", "metric", "value"]], preserve_index=False)


def publish(cfg: Config, ds: str, run_id: str) -> dict:
    selected = storage.read_json(cfg.models_dir(ds) / "selected.json")
    f = load_features(cfg, ds)
    tables = {
        C.T_USER_RECS: user_recommendations(cfg, ds, run_id, f, selected["champion"]),
        C.T_SIMILAR: similar_items(cfg, ds, run_id, f),
        C.T_MODEL_RUNS: model_runs(cfg, ds, run_id),
    }
    counts = storage.publish_tables(cfg.duckdb_path, cfg.warehouse / "parquet", ds, tables)
    log.info("publish ds=%s: %s -> %s", ds, counts, cfg.duckdb_path)
    try:
        from pipelines import tracking

        mlflow = tracking.setup(cfg)
        with mlflow.start_run(run_id=selected["mlflow_run_id"]):
            mlflow.log_metrics({f"published.{k}": v for k, v in counts.items()})
            mlflow.set_tag("published", "true")
    except Exception as exc:  # the tables are already published; a tracking hiccup must not undo that
        log.warning("publish ds=%s: could not log counts to MLflow: %s", ds, exc)
    return {"ds": ds, "run_id": run_id, "rows": counts, "duckdb": str(cfg.duckdb_path)}
