"""Evaluate step: temporal holdout of the last ``holdout_days`` days up to ``ds``.

Each candidate (fitted on the events before the window) ranks ``eval_k`` items for every user who
bought something in the window and has history before it; the truth is the set of distinct items
the user bought in the window (repeat purchases count: retail customers re-buy). Inactive items
are never recommended. Metrics per model go to ``eval/ds=<ds>/metrics.parquet``.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from features.interactions import load_features
from models import load_model
from pipelines import storage
from pipelines.config import Config
from pipelines.metrics import ranking_metrics
from pipelines.train import active_candidates

log = logging.getLogger(__name__)


def evaluation_users(f: dict) -> tuple[np.ndarray, sp.csr_matrix]:
    """Users with a holdout purchase and with training history; their truth rows."""
    train, hold = f["train"], f["holdout"]
    truth = sp.csr_matrix((np.ones(len(hold), dtype=np.float32), (hold["user_idx"], hold["item_idx"])),
                          shape=train.shape)
    has_history = np.diff(train.indptr) > 0
    has_truth = np.diff(truth.indptr) > 0
    users = np.flatnonzero(has_history & has_truth)
    return users, truth[users]


def evaluate(cfg: Config, ds: str, run_id: str) -> dict:
    f = load_features(cfg, ds)
    users, truth = evaluation_users(f)
    inactive = np.flatnonzero(~f["items"]["active"].to_numpy(dtype=bool))
    n_catalog = int(f["items"]["active"].sum())
    rows, summary = [], {}
    candidates = active_candidates(cfg, f["train"].shape[1])
    for name in candidates:
        model = load_model(cfg.models_dir(ds) / "holdout" / name)
        recs, _ = model.recommend(users, f["train"], cfg.eval_k, filter_items=inactive)
        m = ranking_metrics(recs, truth, cfg.eval_k, n_catalog)
        summary[name] = m
        rows += [{"model": name, "metric": k, "value": float(v)} for k, v in m.items()]
        log.info("evaluate ds=%s: %-10s ndcg@%d=%.4f recall@%d=%.4f precision@%d=%.4f coverage=%.3f (%d users)",
                 ds, name, cfg.eval_k, m[f"ndcg_at_{cfg.eval_k}"], cfg.eval_k, m[f"recall_at_{cfg.eval_k}"],
                 cfg.eval_k, m[f"precision_at_{cfg.eval_k}"], m[f"coverage_at_{cfg.eval_k}"], m["users"])
    table = pd.DataFrame(rows)
    storage.atomic_write_parquet(pa.Table.from_pandas(table, preserve_index=False),
                                 cfg.eval_dir(ds) / "metrics.parquet")
    key = f"ndcg_at_{cfg.eval_k}"
    # Ties go to the earlier candidate in the config (simpler models are listed first).
    best = max(candidates, key=lambda n: (summary[n][key], -candidates.index(n)))
    result = {"ds": ds, "run_id": run_id, "eval_users": int(len(users)), "best_model": best,
              "best_ndcg": summary[best][key], "metrics": summary}
    storage.write_json(result, cfg.eval_dir(ds) / "summary.json")
    return {k: v for k, v in result.items() if k != "metrics"}
