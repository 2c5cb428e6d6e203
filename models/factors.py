"""Factor models: a user's score for an item is the dot product of their factor vectors.

``FactorRecommender`` holds everything ALS and BPR share: the fitted ``user_factors_`` /
``item_factors_``, scoring (dense blocks, pairs, and implicit's fused top-K per user block through
models.scoring), the item vectors for ``similar_items`` and the arrays that ``save`` writes. A
subclass defines ``__init__`` (its hyperparameters) and ``fit``, which usually hands one of
implicit's models to ``_fit_implicit``.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from models.base import Recommender
from models.scoring import block_topk, block_topk_with_own

# score_pairs: pairs per einsum (bounds the gathered factor rows).
PAIR_BLOCK = 1_000_000


class FactorRecommender(Recommender):
    """Scores ``user_factors_ @ item_factors_.T`` (float32, C-contiguous), never formed in full."""

    # recommend_with_own: extra places in the unfiltered top n for the user's own items.
    own_slack: int = 16

    def _fit_implicit(self, make: Callable[[], object], user_items: sp.csr_matrix,
                      start: tuple[np.ndarray, np.ndarray] | None = None) -> FactorRecommender:
        """Build (``make()``) and fit one of implicit's factor models, keep its factors; ``self``.
        ``start``: (user factors, item factors) to start from (copied) instead of random ones."""
        # implicit's own threads do the work; threaded BLAS underneath only oversubscribes the cores.
        with threadpool_limits(1, "blas"):
            model = make(num_threads=self.num_threads)
            if start is not None:
                model.user_factors = np.array(start[0], dtype=np.float32, order="C")
                model.item_factors = np.array(start[1], dtype=np.float32, order="C")
            model.fit(user_items.tocsr().astype(np.float32), show_progress=False)
        self.fit_threads_ = int(model.num_threads)  # what implicit ran with (not saved)
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
        for s in range(0, len(users), PAIR_BLOCK):
            out[s:s + PAIR_BLOCK] = np.einsum("ij,ij->i", self.user_factors_[users[s:s + PAIR_BLOCK]],
                                              self.item_factors_[items[s:s + PAIR_BLOCK]])
        return out

    def recommend(self, users, user_items, n, exclude=None, filter_items=None):
        """implicit's fused top-K per block of ``block_users`` (models.scoring.block_topk)."""
        return block_topk(self.user_factors_, self.item_factors_, users, n, exclude=exclude,
                          filter_items=filter_items, block=self.block_users, num_threads=self.num_threads)

    def recommend_with_own(self, users, user_items, n, own, filter_items=None):
        """Both lists from one fused top (n + own_slack) (models.scoring.block_topk_with_own)."""
        return block_topk_with_own(self.user_factors_, self.item_factors_, users, n, own, filter_items=filter_items,
                                   block=self.block_users, slack=self.own_slack, num_threads=self.num_threads)

    def _arrays(self):
        return {"user_factors_": self.user_factors_, "item_factors_": self.item_factors_}

    def _set_arrays(self, arrays):
        self.user_factors_ = arrays["user_factors_"]
        self.item_factors_ = arrays["item_factors_"]
