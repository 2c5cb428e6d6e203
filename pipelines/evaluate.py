"""Evaluate step: temporal holdout of the last ``holdout_days`` days up to ``ds``.

Each candidate (fitted on the events before the window) ranks ``eval_k`` items for every user who
bought something in the window and has history before it (segment ``returning``); the truth is the
set of distinct items the user bought in the window (repeat purchases count: retail customers
re-buy). Users whose first event is inside the window (segment ``new``) are scored on the lists
they would get: popularity, trending and popular-in-their-country. Inactive items are never
recommended. Metrics per model and segment go to ``eval/ds=<ds>/metrics.parquet``.
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
from pipelines.metrics import intra_list_diversity, novelty, ranking_metrics, sample_users, segment_recall
import time

from pipelines.train import SEARCH_SPACE, active_candidates, items_for_fit, make_model

log = logging.getLogger(__name__)


def evaluation_users(f: dict, returning: bool = True, limit: int = 0, seed: int = 0
                     ) -> tuple[np.ndarray, sp.csr_matrix]:
    """Users with a holdout purchase and their truth rows: returning users (with training history)
    or, with ``returning=False``, new users (whose first event falls inside the holdout window).
    Above ``limit`` users, a fixed random sample of ``limit`` (config eval_max_users)."""
    train, hold = f["train"], f["holdout"]
    truth = sp.csr_matrix((np.ones(len(hold), dtype=np.float32), (hold["user_idx"], hold["item_idx"])),
                          shape=train.shape)
    has_history = np.diff(train.indptr) > 0
    has_truth = np.diff(truth.indptr) > 0
    users = np.flatnonzero((has_history if returning else ~has_history) & has_truth)
    users = sample_users(users, limit, seed)
    return users, truth[users]


COLD_START = ("popularity", "trending", "popular_in_country")


def cold_start_metrics(cfg: Config, ds: str, f: dict, inactive: np.ndarray, n_catalog: int) -> dict:
    """The new-user segment: the non-personalised lists a user without history gets, scored on the
    purchases of users whose first event is inside the holdout window."""
    from pipelines.publish import country_popularity
    from pipelines.train import items_for_fit

    users, truth = evaluation_users(f, returning=False, limit=cfg.eval_max_users, seed=cfg.seed)
    if not len(users):
        return {}
    items = items_for_fit(f["items"], "pop_train")
    out = {}
    for name in COLD_START:
        if name == "popular_in_country":
            ids, _ = country_popularity(f["users"], f["train"], cfg.eval_k, None, inactive)
            recs = ids[users]
        else:
            recs, _ = make_model(name, cfg).fit(f["train"], items).recommend(users, f["train"], cfg.eval_k,
                                                                          filter_items=inactive)
        out[name] = ranking_metrics(recs, truth, cfg.eval_k, n_catalog)
        log.info("evaluate ds=%s: new users %-18s ndcg@%d=%.4f (%d users)", ds, name, cfg.eval_k,
                 out[name][f"ndcg_at_{cfg.eval_k}"], len(users))
    return out


def beyond_accuracy(cfg: Config, ds: str, f: dict):
    """Novelty, intra-list diversity (over the content model's TF-IDF vectors) and recall on head
    (the most popular 20% of items by buyers before the holdout) vs tail items."""
    k = cfg.eval_k
    train = f["train"]
    buyers = np.asarray((train > 0).sum(axis=0)).ravel()
    share = (buyers + 1.0) / (train.shape[0] + 1.0)
    head = np.zeros(train.shape[1], bool)
    head[np.argsort(-buyers, kind="stable")[: max(1, int(0.2 * train.shape[1]))]] = True
    content_dir = cfg.models_dir(ds) / "holdout" / "content"
    vectors = load_model(content_dir).item_vectors() if (content_dir / "params.json").exists() else None

    def metrics(recs, truth) -> dict:
        out = {f"novelty_at_{k}": novelty(recs[:, :k], share),
               f"recall_head_at_{k}": segment_recall(recs, truth, k, head),
               f"recall_tail_at_{k}": segment_recall(recs, truth, k, ~head)}
        if vectors is not None:
            out[f"diversity_at_{k}"] = intra_list_diversity(recs[:, :k], vectors)
        return out

    return metrics


def evaluate(cfg: Config, ds: str, run_id: str) -> dict:
    f = load_features(cfg, ds)
    users, truth = evaluation_users(f, limit=cfg.eval_max_users, seed=cfg.seed)
    inactive = np.flatnonzero(~f["items"]["active"].to_numpy(dtype=bool))
    n_catalog = int(f["items"]["active"].sum())
    summary = {}
    candidates = active_candidates(cfg, f["train"].shape[1])
    extra = beyond_accuracy(cfg, ds, f)
    for name in candidates:
        model = load_model(cfg.models_dir(ds) / "holdout" / name)
        recs, _ = model.recommend(users, f["train"], cfg.eval_k, filter_items=inactive)
        m = {**ranking_metrics(recs, truth, cfg.eval_k, n_catalog), **extra(recs, truth)}
        summary[name] = m
        log.info("evaluate ds=%s: %-10s ndcg@%d=%.4f recall@%d=%.4f precision@%d=%.4f coverage=%.3f (%d users)",
                 ds, name, cfg.eval_k, m[f"ndcg_at_{cfg.eval_k}"], cfg.eval_k, m[f"recall_at_{cfg.eval_k}"],
                 cfg.eval_k, m[f"precision_at_{cfg.eval_k}"], m[f"coverage_at_{cfg.eval_k}"], m["users"])
    key = f"ndcg_at_{cfg.eval_k}"
    trials, params = search(cfg, ds, f, users, truth, inactive, n_catalog, summary, candidates)
    cold = cold_start_metrics(cfg, ds, f, inactive, n_catalog)
    rows = [{"model": name, "segment": "returning", "metric": k, "value": float(v)}
            for name, m in summary.items() for k, v in m.items()]
    rows += [{"model": name, "segment": "new", "metric": k, "value": float(v)}
             for name, m in cold.items() for k, v in m.items()]
    table = pd.DataFrame(rows)
    storage.atomic_write_parquet(pa.Table.from_pandas(table, preserve_index=False),
                                 cfg.eval_dir(ds) / "metrics.parquet")
    # Ties go to the earlier candidate in the config (simpler models are listed first).
    best = max(candidates, key=lambda n: (summary[n][key], -candidates.index(n)))
    result = {"ds": ds, "run_id": run_id, "eval_users": int(len(users)), "best_model": best,
              "best_ndcg": summary[best][key], "metrics": summary, "params": params, "search": trials,
              "new_users": cold}
    storage.write_json(result, cfg.eval_dir(ds) / "summary.json")
    return {k: v for k, v in result.items() if k not in ("metrics", "search", "new_users")}


def search(cfg: Config, ds: str, f: dict, users, truth, inactive, n_catalog: int, summary: dict,
           candidates) -> tuple[list[dict], dict]:
    """Try SEARCH_SPACE alternatives on the same holdout until ``search_budget_seconds`` run out.

    A trial that beats a candidate's current NDCG replaces its metrics and its saved holdout model;
    the winning overrides are returned per candidate (the select step refits with them).
    Returns (trials, overrides).
    """
    key = f"ndcg_at_{cfg.eval_k}"
    items = items_for_fit(f["items"], "pop_train")
    extra = beyond_accuracy(cfg, ds, f)
    trials, overrides = [], {}
    deadline = time.perf_counter() + cfg.search_budget_seconds
    for name in candidates:
        for alt in SEARCH_SPACE.get(name, []):
            if time.perf_counter() >= deadline:
                log.info("evaluate ds=%s: search budget of %ss used up", ds, cfg.search_budget_seconds)
                return trials, overrides
            t0 = time.perf_counter()
            model = make_model(name, cfg, alt).fit(f["train"], items)
            recs, _ = model.recommend(users, f["train"], cfg.eval_k, filter_items=inactive)
            m = {**ranking_metrics(recs, truth, cfg.eval_k, n_catalog), **extra(recs, truth)}
            won = m[key] > summary[name][key]
            trials.append({"model": name, "params": alt, "ndcg": m[key], "seconds": round(time.perf_counter() - t0, 2),
                           "improved": bool(won)})
            log.info("evaluate ds=%s: search %s %s ndcg@%d=%.4f%s", ds, name, alt, cfg.eval_k, m[key],
                     " (better)" if won else "")
            if won:
                summary[name] = m
                overrides[name] = alt
                model.save(cfg.models_dir(ds) / "holdout" / name)
    return trials, overrides
