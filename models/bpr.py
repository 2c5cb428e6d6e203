"""Bayesian Personalised Ranking: implicit's BPR matrix factorisation (scoring and persistence as
every factor model, models.factors; only the fit differs from ALS).

One of implicit's BPR iterations draws as many (user, bought item, other item) samples as the matrix
has stored cells, so its cost grows with the data. ``max_samples`` caps the samples of a fit:
``iterations`` are cut to ``ceil(max_samples / cells)`` (never below ``min_iterations``) when the data
is large. On Online Retail (about 180,000 cells) the 100 iterations are 18 million samples and
nothing is cut; at ten million demo events (8.5 million cells) 200 million samples are 24 iterations:
the fit's time stops growing with the data (docs/benchmarks.md). 0: no cap."""
from __future__ import annotations

import logging
from functools import partial

import scipy.sparse as sp

from models.factors import FactorRecommender
from models.registry import register

log = logging.getLogger(__name__)


@register
class BPRRecommender(FactorRecommender):
    name = "bpr"
    # implicit's BPR is SGD whose threads update shared factors: not reproducible to the bit.
    deterministic = False

    def __init__(self, factors: int = 64, learning_rate: float = 0.01, regularization: float = 0.01,
                 iterations: int = 100, max_samples: int = 200_000_000, min_iterations: int = 10,
                 random_state: int = 42) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.max_samples = max_samples
        self.min_iterations = min_iterations
        self.random_state = random_state

    def fit(self, user_items: sp.csr_matrix, items=None) -> "BPRRecommender":
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        self.iterations_run_ = capped_iterations(self.iterations, user_items.nnz, self.max_samples, self.min_iterations)
        if self.iterations_run_ < self.iterations:
            log.info("bpr: %d iterations instead of %d: %d cells x %d iterations would pass max_samples %d",
                     self.iterations_run_, self.iterations, user_items.nnz, self.iterations, self.max_samples)
        return self._fit_implicit(partial(BayesianPersonalizedRanking, factors=self.factors,
                                          learning_rate=self.learning_rate, regularization=self.regularization,
                                          iterations=self.iterations_run_, random_state=self.random_state),
                                  user_items)


def capped_iterations(iterations: int, cells: int, max_samples: int, min_iterations: int) -> int:
    """``iterations``, cut to ``ceil(max_samples / cells)`` (at least ``min_iterations``) when
    ``cells * iterations`` samples would pass ``max_samples`` (<= 0: no cap)."""
    if max_samples <= 0 or cells <= 0 or cells * iterations <= max_samples:
        return int(iterations)
    return int(min(iterations, max(min_iterations, -(-max_samples // cells))))
