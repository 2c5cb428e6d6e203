"""Item-based k-nearest-neighbours: implicit's cosine item-item similarity, top K neighbours kept."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.base import Recommender


class ItemKNNRecommender(Recommender):
    name = "itemknn"

    def __init__(self, neighbours: int = 100) -> None:
        self.neighbours = neighbours

    def fit(self, user_items: sp.csr_matrix, items=None) -> "ItemKNNRecommender":
        from implicit.nearest_neighbours import CosineRecommender

        import warnings

        model = CosineRecommender(K=self.neighbours)
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
