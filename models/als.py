"""Implicit-feedback matrix factorisation: implicit's ALS, scored with its fused top-k."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from models.base import Recommender
from models.registry import register
from models.scoring import block_topk, block_topk_with_own


@register
class ALSRecommender(Recommender):
    name = "als"
    # recommend_with_own: extra places in the unfiltered top n for the user's own items.
    own_slack: int = 16

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

    def score_pairs(self, users, items, user_items):
        users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
        out = np.empty(len(users), np.float32)
        for s in range(0, len(users), 1_000_000):
            out[s:s + 1_000_000] = np.einsum("ij,ij->i", self.user_factors_[users[s:s + 1_000_000]],
                                             self.item_factors_[items[s:s + 1_000_000]])
        return out

    def recommend(self, users, user_items, n, exclude=None, filter_items=None):

        return block_topk(self.user_factors_, self.item_factors_, users, n, exclude=exclude,
                          filter_items=filter_items, block=self.block_users)

    def recommend_with_own(self, users, user_items, n, own, filter_items=None):
        """Both lists from one fused top (n + own_slack) (models.scoring.block_topk_with_own)."""

        return block_topk_with_own(self.user_factors_, self.item_factors_, users, n, own, filter_items=filter_items,
                                   block=self.block_users, slack=self.own_slack)

    def _arrays(self):
        return {"user_factors_": self.user_factors_, "item_factors_": self.item_factors_}

    def _set_arrays(self, arrays):
        self.user_factors_ = arrays["user_factors_"]
        self.item_factors_ = arrays["item_factors_"]
