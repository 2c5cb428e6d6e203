"""Buy again: the user's own past items, ranked by how much they bought them and how repeatable the
item is, then (for users with few items) by popularity.

Retail customers re-buy; on real retail data this simple list is a strong baseline (docs/benchmarks.md).
Repeatability is learned from the data, not hand-set: the share of an item's buyers who bought it
on two or more days (``items['repeat_rate']`` from the features step, smoothed towards the
catalog-wide share), so consumables rise and one-off purchases sink.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.base import Recommender
from models.registry import register


def smoothed_repeat_rate(repeat_buyers: np.ndarray, buyers: np.ndarray, smoothing: float = 10.0) -> np.ndarray:
    """Share of an item's buyers who bought it again, shrunk towards the catalog-wide share so that
    an item with one buyer is neither 0% nor 100% repeatable."""
    repeat_buyers, buyers = np.asarray(repeat_buyers, float), np.asarray(buyers, float)
    prior = repeat_buyers.sum() / max(buyers.sum(), 1.0)
    return (repeat_buyers + smoothing * prior) / (buyers + smoothing)


@register
class BuyAgainRecommender(Recommender):
    name = "buy_again"
    sparse = True
    # Unseen items come in popularity order, the same for everyone; no item similarity.
    ranks_unseen_by_history = False
    item_similarity = False

    def __init__(self, smoothing: float = 10.0) -> None:
        self.smoothing = smoothing

    def fit(self, user_items: sp.csr_matrix, items=None) -> "BuyAgainRecommender":
        ui = user_items.tocsr()
        if items is not None and "popularity" in items:
            pop = np.asarray(items["popularity"], dtype=np.float64)
        else:
            pop = np.asarray((ui > 0).sum(axis=0), dtype=np.float64).ravel()
        if items is not None and "repeat_rate" in items:
            self.repeat_rate_ = np.asarray(items["repeat_rate"], dtype=np.float32)
        else:
            # Without purchase counts from the features, a cell above the smallest positive weight
            # (one interaction) counts as bought again.
            coo = ui.tocoo()
            unit = coo.data.min() if coo.nnz else 1.0
            buyers = np.bincount(coo.col, minlength=ui.shape[1]).astype(np.float64)
            repeat = np.bincount(coo.col, weights=(coo.data > unit).astype(float), minlength=ui.shape[1])
            self.repeat_rate_ = smoothed_repeat_rate(repeat, buyers, self.smoothing).astype(np.float32)
        self.popularity_ = (pop / max(pop.max(initial=0.0), 1.0)).astype(np.float32)
        return self

    def score(self, users, user_items):
        s, b = self.sparse_scores(users, user_items)
        return s.toarray() + b

    def sparse_scores(self, users, user_items):
        own = user_items[users].tocsr().astype(np.float32)
        own.data = np.log1p(own.data)
        own = (own @ sp.diags(0.1 + self.repeat_rate_)).tocsr()
        # Own items always outrank the rest (+1); popularity (scaled into [0, 1e-3]) orders the rest.
        own.data = own.data + (own.data > 0)
        return own, self.popularity_ * np.float32(1e-3)

    def item_vectors(self):
        raise NotImplementedError("buy again has no item similarity")

    def similar_items(self, items, n, filter_items=None):
        raise NotImplementedError("buy again has no item similarity")

    def _arrays(self):
        return {"repeat_rate_": self.repeat_rate_, "popularity_": self.popularity_}

    def _set_arrays(self, arrays):
        self.repeat_rate_ = arrays["repeat_rate_"]
        self.popularity_ = arrays["popularity_"]
