"""EASE (Steck, 2019): a closed-form item-item model, B = I - P / diag(P), P = (X'X + lambda I)^-1.

Dense in items (n_items^2 floats), so it is skipped above ``max_items`` (config ``ease_max_items``).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from models.base import Recommender
from models.registry import register


@register
class EASERecommender(Recommender):
    name = "ease"

    def __init__(self, regularization: float = 200.0, binary: bool = True) -> None:
        self.regularization = regularization
        self.binary = binary

    def fit(self, user_items: sp.csr_matrix, items=None) -> "EASERecommender":
        x = user_items.tocsr().astype(np.float64)
        if self.binary:
            x.data = np.ones_like(x.data)
        gram = (x.T @ x).toarray()
        gram[np.diag_indices_from(gram)] += self.regularization
        with threadpool_limits(2, "blas"):
            p = np.linalg.inv(gram)
        b = -p / np.diag(p)
        b[np.diag_indices_from(b)] = 0.0
        self.weights_ = b.astype(np.float32)
        return self

    def score(self, users, user_items):
        x = user_items[users].tocsr().astype(np.float32)
        if self.binary:
            x.data = np.ones_like(x.data)
        return np.asarray(x @ self.weights_)

    def item_vectors(self):
        return self.weights_

    def _arrays(self):
        return {"weights_": self.weights_}

    def _set_arrays(self, arrays):
        self.weights_ = arrays["weights_"]
