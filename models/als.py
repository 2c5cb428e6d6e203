"""Implicit-feedback matrix factorisation: implicit's ALS, scored with its fused top-k (models.factors)."""
from __future__ import annotations

from functools import partial

import scipy.sparse as sp

from models.factors import FactorRecommender
from models.registry import register


@register
class ALSRecommender(FactorRecommender):
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

        return self._fit_implicit(partial(AlternatingLeastSquares, factors=self.factors,
                                          regularization=self.regularization, alpha=self.alpha,
                                          iterations=self.iterations, random_state=self.random_state),
                                  user_items)
