"""Implicit-feedback matrix factorisation: implicit's ALS, scored with its fused top-k (models.factors).

Warm start (``warm_start``): the select step refits the serving model on all data after the train
step fitted it on the data before the holdout window, with the same hyperparameters and the same
user and item index. ALS started from those factors needs ``warm_iterations`` iterations, not
``iterations``: on Online Retail, 3 to 5 warm iterations from a fit that lacked the last 7 or 14
days score NDCG@10 0.2766 to 0.2772 (task all) and 0.0955 to 0.0964 (task new) against a cold
15-iteration fit's 0.2778 / 0.0948 (0.2750 / 0.0924 with another seed); at ten million demo
events the refit takes a third of the time (docs/benchmarks.md). The nightly search's trials with
the candidate's factors (or fewer: its fit truncated to their rank, ``truncate``) start from the
candidate's holdout fit too: 5 warm iterations from the
regularization-0.05 fit gave 0.2769 / 0.0950 (regularization 0.01), 0.2804 / 0.0957 (1.0) and
0.2848 / 0.0967 (10.0) against cold fits' 0.2741-0.2760 / 0.0923-0.0949, 0.2749-0.2779 /
0.0918-0.0944 and 0.2837-0.2838 / 0.0946-0.0959 (two seeds)."""
from __future__ import annotations

import logging
from functools import partial

import numpy as np
import scipy.sparse as sp

from models.factors import FactorRecommender
from models.registry import register

log = logging.getLogger(__name__)


@register
class ALSRecommender(FactorRecommender):
    name = "als"

    def __init__(self, factors: int = 64, regularization: float = 0.05, alpha: float = 2.0,
                 iterations: int = 15, warm_iterations: int = 5, random_state: int = 42) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.warm_iterations = warm_iterations
        self.random_state = random_state

    def warm_start(self, previous) -> bool:
        """Start the next ``fit`` from ``previous``'s factors, with ``warm_iterations`` iterations:
        only when ``previous`` is a fitted ALS model with at least as many factors and
        ``warm_iterations`` > 0 (its regularization or alpha may differ: the search's trials start from
        the candidate's fit). From more factors, the start is the best approximation of ``previous``'s
        scores with this model's factors (``truncate``). The matrix shape is checked at the fit
        (another shape: a cold fit). True when the next fit will be warm."""
        ok = (self.warm_iterations > 0 and isinstance(previous, ALSRecommender) and previous.factors >= self.factors
              and getattr(previous, "user_factors_", None) is not None)
        self.warm_ = (previous.user_factors_, previous.item_factors_) if ok else None
        return ok

    def fit_share(self) -> float:
        """The next fit's iterations as a share of a cold fit's (the search's expected trial time)."""
        return self.warm_iterations / max(self.iterations, 1) if getattr(self, "warm_", None) is not None else 1.0

    def fit(self, user_items: sp.csr_matrix, items=None) -> "ALSRecommender":
        from implicit.cpu.als import AlternatingLeastSquares

        warm = getattr(self, "warm_", None)
        if warm is not None and (warm[0].shape[0], warm[1].shape[0]) != user_items.shape:
            log.info("als: no warm start: the previous fit had %d x %d, this matrix %d x %d", warm[0].shape[0],
                     warm[1].shape[0], *user_items.shape)
            warm = None
        self.warm_ = None
        if warm is not None and warm[0].shape[1] > self.factors:
            warm = truncate(*warm, self.factors)
            if not (np.abs(warm[1]).sum(axis=0) > 0).all():  # zero columns would stay zero: a cold fit
                log.info("als: no warm start: the previous fit has rank below %d", self.factors)
                warm = None
        self.iterations_run_ = self.warm_iterations if warm is not None else self.iterations
        return self._fit_implicit(partial(AlternatingLeastSquares, factors=self.factors,
                                          regularization=self.regularization, alpha=self.alpha,
                                          iterations=self.iterations_run_, random_state=self.random_state),
                                  user_items, start=warm)


def truncate(users: np.ndarray, items: np.ndarray, factors: int) -> tuple[np.ndarray, np.ndarray]:
    """Factors (users', items') of width ``factors`` whose product users' @ items'.T is the best
    approximation of users @ items.T of that rank (the truncated SVD of the product), without
    forming the product: from the two k x k Gram matrices and an SVD of a k x k core (k = the
    current width), so the cost is linear in users and items. The singular values are split evenly
    between the two sides, as ALS's regularization balances them. Where the product's rank is below
    ``factors``, the missing columns are zero."""
    u, v = users.astype(np.float64), items.astype(np.float64)
    hu, hv = _half_inverse(u.T @ u), _half_inverse(v.T @ v)  # (k x k): u @ hu has orthonormal columns
    a, s, bt = np.linalg.svd(np.linalg.pinv(hu) @ np.linalg.pinv(hv).T)
    s = s[:factors]
    root = np.sqrt(np.where(s > s.max(initial=0.0) * 1e-6, s, 0.0))  # directions the product lacks: zero columns
    return ((u @ (hu @ a[:, :factors] * root)).astype(np.float32),
            (v @ (hv @ bt[:factors].T * root)).astype(np.float32))


def _half_inverse(gram: np.ndarray) -> np.ndarray:
    """E D^-1/2 for gram = E D E^T (directions with no weight are dropped: their columns are 0)."""
    d, e = np.linalg.eigh(gram)
    keep = d > d.max() * 1e-10
    return e * np.where(keep, 1.0 / np.sqrt(np.where(keep, d, 1.0)), 0.0)
