"""Item-based k-nearest-neighbours: implicit's cosine or BM25 item-item similarity, top K neighbours kept."""
from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

from models.base import Recommender
from models.kernels import NO_ITEM, sparse_topk
from models.registry import register


@register
class ItemKNNRecommender(Recommender):
    name = "itemknn"
    sparse = True

    def __init__(self, neighbours: int = 100, weighting: str = "cosine") -> None:
        self.neighbours = neighbours
        self.weighting = weighting  # "cosine" or "bm25" (implicit's BM25-weighted item-item)

    def fit(self, user_items: sp.csr_matrix, items=None) -> "ItemKNNRecommender":
        from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

        if self.weighting not in ("cosine", "bm25"):
            raise ValueError(f"itemknn weighting must be 'cosine' or 'bm25', got {self.weighting!r}")
        model = BM25Recommender(K=self.neighbours) if self.weighting == "bm25" else CosineRecommender(K=self.neighbours)
        with warnings.catch_warnings():
            # implicit converts to COO internally and then warns about its own conversion.
            warnings.simplefilter("ignore")
            model.fit(user_items.tocsr().astype(np.float32), show_progress=False)
        self.similarity_ = model.similarity.tocsr().astype(np.float32)
        return self

    def score(self, users, user_items):
        return (user_items[users] @ self.similarity_).toarray()

    def sparse_scores(self, users, user_items):
        return (user_items[users] @ self.similarity_).tocsr(), None

    def item_vectors(self):
        return self.similarity_

    def similar_items(self, items, n, filter_items=None):
        """An item's own neighbours (the rows of the K-nearest similarity matrix, as implicit's
        ``similar_items``), scaled by the item's strongest neighbour so scores lie in (0, 1]: no
        second product, so the cost is the stored neighbours only."""

        items = np.asarray(items, dtype=np.int64)
        n_items = self.similarity_.shape[1]
        if not len(items) or not n_items:  # an empty catalog (a ds before the first event)
            return np.full((len(items), n), NO_ITEM, np.int64), np.full((len(items), n), -np.inf, np.float32)
        rows = self.similarity_[items].tocsr().astype(np.float32)
        rows.data[rows.data <= 0] = 0
        rows.eliminate_zeros()
        peak = rows.max(axis=1).toarray().ravel().astype(np.float32)
        rows = (sp.diags(1.0 / np.where(peak > 0, peak, 1.0)) @ rows).tocsr()
        own = sp.csr_matrix((np.ones(len(items), np.float32), (np.arange(len(items)), items)),
                            shape=(len(items), n_items))
        filt = np.zeros(n_items, bool)
        if filter_items is not None and len(filter_items):
            filt[np.asarray(filter_items, dtype=np.int64)] = True
        return sparse_topk(rows, None, n, n_items, own, filt, fill=False)

    def _arrays(self):
        return {"similarity_": self.similarity_}

    def _set_arrays(self, arrays):
        self.similarity_ = arrays["similarity_"]
