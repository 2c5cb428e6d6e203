"""Bayesian Personalised Ranking: implicit's BPR matrix factorisation (scoring and persistence as
every factor model, models.factors; only the fit differs from ALS)."""
from __future__ import annotations

from functools import partial

import scipy.sparse as sp

from models.factors import FactorRecommender
from models.registry import register


@register
class BPRRecommender(FactorRecommender):
    name = "bpr"
    # implicit's BPR is SGD whose threads update shared factors: not reproducible to the bit.
    deterministic = False

    def __init__(self, factors: int = 64, learning_rate: float = 0.01, regularization: float = 0.01,
                 iterations: int = 100, random_state: int = 42) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.random_state = random_state

    def fit(self, user_items: sp.csr_matrix, items=None) -> "BPRRecommender":
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return self._fit_implicit(partial(BayesianPersonalizedRanking, factors=self.factors,
                                          learning_rate=self.learning_rate, regularization=self.regularization,
                                          iterations=self.iterations, random_state=self.random_state),
                                  user_items)
