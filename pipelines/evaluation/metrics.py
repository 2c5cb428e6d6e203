"""Offline ranking metrics, vectorised over users (definitions in docs/metrics.md).

``recs`` is an (n_users, >=k) array of item indices (-1 = empty slot); ``truth`` a CSR matrix whose
row r holds the relevant items of the user of ``recs`` row r. Binary relevance throughout.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def sample_users(users: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` of ``users`` (sorted), drawn uniformly without replacement with a fixed
    seed, so a night's evaluation is repeatable; all of them when there are no more than ``limit``."""
    users = np.asarray(users)
    if limit <= 0 or len(users) <= limit:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size=limit, replace=False))


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


def novelty(recs: np.ndarray, item_share: np.ndarray) -> float:
    """Mean self-information -log2(p_i) of the recommended items, p_i = the share of users who had
    interacted with item i (smoothed: (n_i + 1) / (n_users + 1)). Higher = less obvious items."""
    valid = recs[recs >= 0]
    if not len(valid):
        return 0.0
    return float(np.mean(-np.log2(item_share[valid])))


def intra_list_diversity(recs: np.ndarray, item_vectors) -> float:
    """Mean over lists of 1 - the mean pairwise cosine similarity of their items.

    Uses sum-of-unit-vectors algebra, no loop over users: for a list with unit vectors v_1..v_k,
    sum over pairs i != j of v_i . v_j = |sum v|^2 - k.
    """
    vec = sp.csr_matrix(item_vectors, dtype=np.float64)
    norms = np.sqrt(np.asarray(vec.multiply(vec).sum(axis=1)).ravel())
    unit = sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ vec
    rows = np.repeat(np.arange(recs.shape[0]), recs.shape[1])
    flat = recs.ravel()
    ok = flat >= 0
    member = sp.csr_matrix((np.ones(ok.sum()), (rows[ok], flat[ok])), shape=(recs.shape[0], vec.shape[0]))
    summed = member @ unit
    sq = np.asarray(summed.multiply(summed).sum(axis=1)).ravel()
    k = np.asarray(member.sum(axis=1)).ravel()
    has_pairs = k >= 2
    if not has_pairs.any():
        return 0.0
    # Items without a vector (norm 0) count as dissimilar to everything.
    mean_cos = (sq[has_pairs] - np.asarray((member[has_pairs] @ sp.diags((norms > 0).astype(float))).sum(axis=1)).ravel()) \
        / (k[has_pairs] * (k[has_pairs] - 1))
    return float(np.mean(1.0 - mean_cos))


def segment_recall(recs: np.ndarray, truth: sp.csr_matrix, k: int, segment: np.ndarray) -> float:
    """recall@k restricted to the truth items inside ``segment`` (boolean per item), over users with
    at least one such item: e.g. head vs tail items."""
    t = truth.tocsr().multiply(sp.csr_matrix(segment.astype(np.float32))).tocsr()
    t.eliminate_zeros()
    n = np.diff(t.indptr)
    has = n > 0
    if not has.any():
        return 0.0
    hits = relevance(np.asarray(recs)[:, :k][has], t[has]).sum(axis=1)
    return float((hits / n[has]).mean())
