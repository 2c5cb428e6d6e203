"""Item-based k-nearest-neighbours: implicit's cosine or BM25 item-item similarity, top K neighbours kept."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.base import Recommender


class ItemKNNRecommender(Recommender):
    name = "itemknn"

    def __init__(self, neighbours: int = 100, weighting: str = "cosine") -> None:
        self.neighbours = neighbours
        self.weighting = weighting  # "cosine" or "bm25" (implicit's BM25-weighted item-item)

    def fit(self, user_items: sp.csr_matrix, items=None) -> "ItemKNNRecommender":
        import warnings

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

    def item_vectors(self):
        return self.similarity_

    def _arrays(self):
        return {"similarity_": self.similarity_}

    def _set_arrays(self, arrays):
        self.similarity_ = arrays["similarity_"]
