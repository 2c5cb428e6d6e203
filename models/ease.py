"""EASE (Steck, 2019): a closed-form item-item model, B = I - P / diag(P), P = (X'X + lambda I)^-1.

Dense in items (n_items^2 floats), so it is skipped above ``max_items`` (config ``ease_max_items``).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from models.base import Recommender
from models.registry import register


def spd_inverse(a: np.ndarray, block: int = 1024) -> np.ndarray:
    """The inverse of the symmetric positive definite ``a`` (float64, overwritten), by Cholesky
    (LAPACK potrf + potri): half the time of a general inverse, and in place (one n x n array, where
    ``np.linalg.inv`` holds two); the lower triangle is mirrored up in row blocks."""
    from scipy.linalg import lapack

    if not a.size:  # no items: LAPACK refuses an empty matrix
        return a
    with threadpool_limits(2, "blas"):
        c, info = lapack.dpotrf(a, lower=1, overwrite_a=1, clean=0)
        if info != 0:
            raise np.linalg.LinAlgError(f"EASE: X'X + lambda I is not positive definite (potrf info {info})")
        p, info = lapack.dpotri(c, lower=1, overwrite_c=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"EASE: X'X + lambda I is singular (potri info {info})")
    n = len(p)
    for i in range(0, n, block):
        j = min(i + block, n)
        p[i:j, j:] = p[j:, i:j].T
        blk = p[i:j, i:j]
        blk[np.triu_indices(j - i, 1)] = blk.T[np.triu_indices(j - i, 1)]
    return p


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
        p = spd_inverse(gram)
        p /= -np.diag(p)[None, :]  # B = -P / diag(P) column-wise, with a zero diagonal
        np.fill_diagonal(p, 0.0)
        self.weights_ = p.astype(np.float32)
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
