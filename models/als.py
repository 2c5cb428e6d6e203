"""Implicit-feedback matrix factorisation: implicit's ALS, scored with its fused top-k."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from models.base import NO_ITEM, Recommender


class ALSRecommender(Recommender):
    name = "als"

    def __init__(self, factors: int = 64, regularization: float = 0.05, alpha: float = 2.0,
                 iterations: int = 15, random_state: int = 42) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.random_state = random_state

    def fit(self, user_items: sp.csr_matrix, items=None) -> "ALSRecommender":
        from implicit.cpu.als import AlternatingLeastSquares

        # implicit's own threads do the work; threaded BLAS underneath only oversubscribes the cores.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(factors=self.factors, regularization=self.regularization,
                                            alpha=self.alpha, iterations=self.iterations,
                                            random_state=self.random_state)
            model.fit(user_items.tocsr().astype(np.float32), show_progress=False)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        return self

    def score(self, users, user_items):
        return self.user_factors_[users] @ self.item_factors_.T

    def item_vectors(self):
        return self.item_factors_

    def recommend(self, users, user_items, n, exclude=None, filter_items=None):
        from implicit.cpu.topk import topk as fused_topk

        users = np.asarray(users, dtype=np.int64)
        fi = None if filter_items is None or not len(filter_items) else np.asarray(filter_items, dtype=np.int32)
        ids, scores = [], []
        with threadpool_limits(1, "blas"):
            for start in range(0, len(users), self.block_users):
                block = users[start:start + self.block_users]
                fq = exclude[block].tocsr() if exclude is not None else None
                i, s = fused_topk(self.item_factors_, self.user_factors_[block], min(n, self.item_factors_.shape[0]),
                                  filter_query_items=fq, filter_items=fi)
                ids.append(np.asarray(i, dtype=np.int64))
                scores.append(np.asarray(s, dtype=np.float32))
        if not ids:
            return np.empty((0, n), np.int64), np.empty((0, n), np.float32)
        ids, scores = np.vstack(ids), np.vstack(scores)
        # implicit marks filtered slots with -FLT_MAX; the contract says -1 / -inf.
        empty = scores <= np.finfo(np.float32).min / 2
        ids[empty], scores[empty] = NO_ITEM, -np.inf
        if ids.shape[1] < n:
            ids = np.pad(ids, ((0, 0), (0, n - ids.shape[1])), constant_values=NO_ITEM)
            scores = np.pad(scores, ((0, 0), (0, n - scores.shape[1])), constant_values=-np.inf)
        return ids, scores

    def _arrays(self):
        return {"user_factors_": self.user_factors_, "item_factors_": self.item_factors_}

    def _set_arrays(self, arrays):
        self.user_factors_ = arrays["user_factors_"]
        self.item_factors_ = arrays["item_factors_"]
