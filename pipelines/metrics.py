"""Offline ranking metrics, vectorised over users (definitions in docs/metrics.md).

``recs`` is an (n_users, >=k) array of item indices (-1 = empty slot); ``truth`` a CSR matrix whose
row r holds the relevant items of the user of ``recs`` row r. Binary relevance throughout.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def relevance(recs: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """Boolean (n_users, k): is recs[u, j] in the truth of row u? Via sorted int64 keys, no loop."""
    n_items = truth.shape[1]
    t = truth.tocoo()
    truth_keys = np.unique(t.row.astype(np.int64) * n_items + t.col)
    rows = np.arange(recs.shape[0], dtype=np.int64)[:, None]
    keys = rows * n_items + np.where(recs >= 0, recs, 0)
    return np.isin(keys, truth_keys) & (recs >= 0)


def ranking_metrics(recs: np.ndarray, truth: sp.csr_matrix, k: int, n_catalog: int) -> dict[str, float]:
    """precision@k, recall@k, ndcg@k, map@k, hit_rate@k averaged over rows with any truth; coverage@k."""
    recs = np.asarray(recs)[:, :k]
    n_truth = np.diff(truth.tocsr().indptr)
    has = n_truth > 0
    recs, n_truth = recs[has], n_truth[has]
    truth = truth.tocsr()[has]
    if len(recs) == 0:
        return {f"{m}_at_{k}": 0.0 for m in ("precision", "recall", "ndcg", "map", "hit_rate", "coverage")} | {"users": 0}
    rel = relevance(recs, truth).astype(np.float64)
    hits = rel.sum(axis=1)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (rel * discount).sum(axis=1)
    ideal = np.cumsum(discount)[np.minimum(n_truth, k) - 1]
    precision_at_i = np.cumsum(rel, axis=1) / np.arange(1, k + 1)
    ap = (precision_at_i * rel).sum(axis=1) / np.minimum(n_truth, k)
    recommended = np.unique(recs[recs >= 0])
    return {
        f"precision_at_{k}": float((hits / k).mean()),
        f"recall_at_{k}": float((hits / n_truth).mean()),
        f"ndcg_at_{k}": float((dcg / ideal).mean()),
        f"map_at_{k}": float(ap.mean()),
        f"hit_rate_at_{k}": float((hits > 0).mean()),
        f"coverage_at_{k}": float(len(recommended) / n_catalog) if n_catalog else 0.0,
        "users": int(len(recs)),
    }
