"""Bayesian Personalised Ranking: implicit's BPR matrix factorisation."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from models.als import ALSRecommender
from models.registry import register


@register
class BPRRecommender(ALSRecommender):
    """Same scoring and persistence as ALS (factor dot products); only the fit differs."""

    name = "bpr"

    def __init__(self, factors: int = 64, learning_rate: float = 0.01, regularization: float = 0.01,
                 iterations: int = 100, random_state: int = 42) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.random_state = random_state

    def fit(self, user_items: sp.csr_matrix, items=None) -> "BPRRecommender":
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        with threadpool_limits(1, "blas"):
            model = BayesianPersonalizedRanking(factors=self.factors, learning_rate=self.learning_rate,
                                                regularization=self.regularization, iterations=self.iterations,
                                                random_state=self.random_state)
            model.fit(user_items.tocsr().astype(np.float32), show_progress=False)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        return self
