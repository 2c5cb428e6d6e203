"""Evaluate step: every candidate on the temporal holdout (precision@K, recall@K, NDCG@K,
coverage, diversity, novelty) for returning and new users, and the nightly hyperparameter search."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from models import load_model
from models.registry import active_candidates
from pipelines.artifacts import (
    layout,
    read_features,
    write_eval_metrics,
    write_eval_summary,
)
from pipelines.config import Config
from pipelines.evaluation.holdout import (
    beyond_accuracy,
    cold_start_metrics,
    evaluation_users,
)
from pipelines.evaluation.metrics import ranking_metrics
from pipelines.evaluation.search import search

log = logging.getLogger(__name__)


def run(cfg: Config, ds: str, run_id: str) -> dict:
    f = read_features(cfg, ds)
    users, truth = evaluation_users(f, limit=cfg.evaluation.eval_max_users, seed=cfg.seed)
    inactive = np.flatnonzero(~f.items["active"].to_numpy(dtype=bool))
    n_catalog = int(f.items["active"].sum())
    summary = {}
    candidates = active_candidates(cfg, f.train.shape[1])
    extra = beyond_accuracy(cfg, ds, f)
    for name in candidates:
        model = load_model(layout(cfg).holdout_model(ds, name), cfg)
        recs, _ = model.recommend(users, f.train, cfg.evaluation.eval_k, filter_items=inactive)
        m = {**ranking_metrics(recs, truth, cfg.evaluation.eval_k, n_catalog), **extra(recs, truth)}
        summary[name] = m
        log.info("evaluate ds=%s: %-10s ndcg@%d=%.4f recall@%d=%.4f precision@%d=%.4f coverage=%.3f (%d users)",
                 ds, name, cfg.evaluation.eval_k, m[f"ndcg_at_{cfg.evaluation.eval_k}"], cfg.evaluation.eval_k, m[f"recall_at_{cfg.evaluation.eval_k}"],
                 cfg.evaluation.eval_k, m[f"precision_at_{cfg.evaluation.eval_k}"], m[f"coverage_at_{cfg.evaluation.eval_k}"], m["users"])
    key = f"ndcg_at_{cfg.evaluation.eval_k}"
    if len(users):
        trials, params = search(cfg, ds, f, users, truth, inactive, n_catalog, summary, candidates)
    else:
        # A holdout window without a purchase of a user with history (a quiet period, a ds after
        # the last event): every metric is 0 over 0 users; no search, and the gate keeps the champion.
        log.warning("evaluate ds=%s: no user with history bought in the holdout window of %d days: nothing to "
                    "evaluate (metrics over 0 users, no search)", ds, cfg.features.holdout_days)
        trials, params = [], {}
    cold = cold_start_metrics(cfg, ds, f, inactive, n_catalog)
    rows = [{"model": name, "segment": "returning", "metric": k, "value": float(v)}
            for name, m in summary.items() for k, v in m.items()]
    rows += [{"model": name, "segment": "new", "metric": k, "value": float(v)}
             for name, m in cold.items() for k, v in m.items()]
    table = pd.DataFrame(rows)
    write_eval_metrics(cfg, ds, table)
    # Ties go to the earlier candidate in the config (simpler models are listed first).
    best = max(candidates, key=lambda n: (summary[n][key], -candidates.index(n)))
    result = {"ds": ds, "run_id": run_id, "eval_users": int(len(users)), "best_model": best,
              "best_ndcg": summary[best][key], "metrics": summary, "params": params, "search": trials,
              "new_users": cold}
    write_eval_summary(cfg, ds, result)
    return {k: v for k, v in result.items() if k not in ("metrics", "search", "new_users")}
