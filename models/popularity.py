"""Popularity baseline: the same list for everyone, ranked by an item popularity vector."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.base import Recommender
from models.kernels import mask_block, topk
from models.registry import register


@register
class PopularityRecommender(Recommender):
    """Score = ``items['popularity']`` if given (e.g. distinct recent buyers), else the column sums."""

    name = "popularity"
    sparse = True
    # One list for everyone; similar_items is that list too (no item similarity).
    ranks_unseen_by_history = False
    item_similarity = False
    column = "popularity"

    def __init__(self) -> None:
        pass

    def fit(self, user_items: sp.csr_matrix, items=None) -> "PopularityRecommender":
        if items is not None and self.column in items:
            pop = np.asarray(items[self.column], dtype=np.float64)
        else:
            pop = np.asarray((user_items > 0).sum(axis=0), dtype=np.float64).ravel()
        # A tiny tie-breaker on total weight keeps the order stable and meaningful.
        total = np.asarray(user_items.sum(axis=0), dtype=np.float64).ravel()
        self.scores_ = (pop + total / (total.max(initial=0.0) + 1.0) * 1e-3).astype(np.float32)
        return self

    def score(self, users, user_items):
        return np.broadcast_to(self.scores_, (len(users), len(self.scores_))).copy()

    def sparse_scores(self, users, user_items):
        return sp.csr_matrix((len(users), len(self.scores_)), dtype=np.float32), self.scores_

    def item_vectors(self):
        raise NotImplementedError("popularity has no item similarity")

    def similar_items(self, items, n, filter_items=None):
        s = np.broadcast_to(self.scores_, (len(items), len(self.scores_))).copy()
        s[np.arange(len(items)), np.asarray(items)] = -np.inf

        mask_block(s, None, filter_items)
        return topk(s, n)

    def _arrays(self):
        return {"scores_": self.scores_}

    def _set_arrays(self, arrays):
        self.scores_ = arrays["scores_"]


@register
class TrendingRecommender(PopularityRecommender):
    """Time-decayed popularity: score = ``items['trending']``, the item's purchases each weighted by
    ``0.5 ** (age_days / trending_half_life_days)`` before the cut-off (features step), so what sells
    this week outranks what sold a month ago. Falls back to the column sums without that column."""

    name = "trending"
    column = "trending"
