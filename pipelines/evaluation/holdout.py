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
import scipy.sparse as sp

from models import load_model
from models.registry import items_for_fit, make_model
from pipelines.artifacts import Features, layout
from pipelines.config import Config
from pipelines.evaluation.metrics import (
    intra_list_diversity,
    novelty,
    ranking_metrics,
    sample_users,
    segment_recall,
)
from pipelines.ranking.sources import country_popularity

log = logging.getLogger(__name__)


def evaluation_users(f: Features, returning: bool = True, limit: int = 0, seed: int = 0
                     ) -> tuple[np.ndarray, sp.csr_matrix]:
    """Users with a holdout purchase and their truth rows: returning users (with training history)
    or, with ``returning=False``, new users (whose first event falls inside the holdout window).
    Above ``limit`` users, a fixed random sample of ``limit`` (config eval_max_users)."""
    train, hold = f.train, f.holdout
    truth = sp.csr_matrix((np.ones(len(hold), dtype=np.float32), (hold["user_idx"], hold["item_idx"])),
                          shape=train.shape)
    has_history = np.diff(train.indptr) > 0
    has_truth = np.diff(truth.indptr) > 0
    users = np.flatnonzero((has_history if returning else ~has_history) & has_truth)
    users = sample_users(users, limit, seed)
    return users, truth[users]


COLD_START = ("popularity", "trending", "popular_in_country")


def cold_start_metrics(cfg: Config, ds: str, f: Features, inactive: np.ndarray, n_catalog: int) -> dict:
    """The new-user segment: the non-personalised lists a user without history gets, scored on the
    purchases of users whose first event is inside the holdout window."""

    users, truth = evaluation_users(f, returning=False, limit=cfg.evaluation.eval_max_users, seed=cfg.seed)
    if not len(users):
        return {}
    items = items_for_fit(f.items, "pop_train")
    out = {}
    for name in COLD_START:
        if name == "popular_in_country":
            ids, _ = country_popularity(f.users, f.train, cfg.evaluation.eval_k, None, inactive)
            recs = ids[users]
        else:
            recs, _ = make_model(name, cfg).fit(f.train, items).recommend(users, f.train, cfg.evaluation.eval_k,
                                                                          filter_items=inactive)
        out[name] = ranking_metrics(recs, truth, cfg.evaluation.eval_k, n_catalog)
        log.info("evaluate ds=%s: new users %-18s ndcg@%d=%.4f (%d users)", ds, name, cfg.evaluation.eval_k,
                 out[name][f"ndcg_at_{cfg.evaluation.eval_k}"], len(users))
    return out


def beyond_accuracy(cfg: Config, ds: str, f: Features):
    """Novelty, intra-list diversity (over the content model's TF-IDF vectors) and recall on head
    (the most popular 20% of items by buyers before the holdout) vs tail items."""
    k = cfg.evaluation.eval_k
    train = f.train
    buyers = np.asarray((train > 0).sum(axis=0)).ravel()
    share = (buyers + 1.0) / (train.shape[0] + 1.0)
    head = np.zeros(train.shape[1], bool)
    head[np.argsort(-buyers, kind="stable")[: max(1, int(0.2 * train.shape[1]))]] = True
    content_dir = layout(cfg).models_dir(ds) / "holdout" / "content"
    vectors = load_model(content_dir).item_vectors() if (content_dir / "params.json").exists() else None

    def metrics(recs, truth) -> dict:
        out = {f"novelty_at_{k}": novelty(recs[:, :k], share),
               f"recall_head_at_{k}": segment_recall(recs, truth, k, head),
               f"recall_tail_at_{k}": segment_recall(recs, truth, k, ~head)}
        if vectors is not None:
            out[f"diversity_at_{k}"] = intra_list_diversity(recs[:, :k], vectors)
        return out

    return metrics
