"""Per-row operations on rectangular (rows x slots) arrays, -1 marking an empty slot: membership in
a sparse matrix's rows, per-row counts of repeated keys, and moving kept cells left. Whole-array
numpy, no loop over rows: the rules layer (pipelines/rules.py) and the scoring of factor models
(models/scoring.py) build on them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.kernels import member


class RowSet:
    """The items (columns) of some rows of a sparse matrix, as int64 keys (row x columns + column)
    in a hash index: membership tests for a whole (rows, k) id array at once, without fancy
    indexing into the matrix. Row r of the set is row ``rows[r]`` of ``matrix``. ``count``: which
    stored entries are members: "positive" (> 0), "nonzero" or "stored" (all, as implicit's
    per-user filter reads them)."""

    def __init__(self, matrix: sp.csr_matrix, rows: np.ndarray, count: str = "positive") -> None:
        sub = matrix[np.asarray(rows, dtype=np.int64)].tocsr()
        sub.sum_duplicates()
        self.row_nnz = np.diff(sub.indptr)  # stored entries per row, whatever their value
        keep = {"positive": lambda d: d > 0, "nonzero": lambda d: d != 0,
                "stored": lambda d: np.ones(len(d), bool)}[count](sub.data)
        self.n_cols = sub.shape[1]
        r = np.repeat(np.arange(sub.shape[0], dtype=np.int64), self.row_nnz)
        self.index = pd.Index((r * self.n_cols + sub.indices.astype(np.int64))[keep])

    def has(self, ids: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Bool like ``ids`` (rows, k): is ids[r, c] >= 0 an entry of set row r (or ``rows[r]``)?"""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(self.index) or not ids.size:
            return np.zeros(ids.shape, bool)
        r = np.arange(ids.shape[0], dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        keys = r.reshape((-1,) + (1,) * (ids.ndim - 1)) * self.n_cols + np.maximum(ids, 0)
        return (self.index.get_indexer(keys.ravel()) >= 0).reshape(ids.shape) & (ids >= 0)


def row_cumcount(keys: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(rows, k): for each valid cell, how many valid cells before it in its row hold the same key
    (pandas' groupby([row, key]).cumcount(), on a rectangular layout). Invalid cells get 0.
    One stable sort along each (short) row."""
    rows, k = keys.shape
    if not keys.size:
        return np.zeros(keys.shape, np.int64)
    masked = np.where(valid, keys, np.iinfo(np.int64).max).astype(np.int64)
    order = np.argsort(masked, axis=1, kind="stable")
    sk = np.take_along_axis(masked, order, 1)
    start = np.ones(sk.shape, bool)
    start[:, 1:] = sk[:, 1:] != sk[:, :-1]
    col = np.arange(k)[None, :]
    within = col - np.maximum.accumulate(np.where(start, col, 0), axis=1)
    out = np.empty_like(within)
    np.put_along_axis(out, order, within, axis=1)
    return np.where(valid, out, 0)


def first_occurrence(ids: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(rows, k) bool: valid and no valid cell before it in its row holds the same id."""
    return valid & (row_cumcount(np.where(valid, ids, 0), valid) == 0)


def _empty_like(a: np.ndarray, shape: tuple) -> np.ndarray:
    """-1 for integer arrays (an empty id or code), False / 0 otherwise."""
    return np.full(shape, -1 if np.issubdtype(a.dtype, np.integer) else 0, dtype=a.dtype)


def place(dest: np.ndarray, width: int, *arrays: np.ndarray):
    """Scatter each row's cells to the columns ``dest`` (-1 or >= width: dropped): (valid, *arrays)
    of shape (rows, width); empty cells are -1 (integers) or 0 / False."""
    keep = (dest >= 0) & (dest < width)
    r, c = np.nonzero(keep)
    d = dest[r, c]
    valid = np.zeros((dest.shape[0], width), bool)
    valid[r, d] = True
    outs = []
    for a in arrays:
        o = _empty_like(a, valid.shape)
        o[r, d] = a[r, c]
        outs.append(o)
    return (valid, *outs)


def compact(valid: np.ndarray, *arrays: np.ndarray, width: int | None = None):
    """Per row, the valid cells moved left in their order, cut to ``width`` (default: the input
    width): (valid, *arrays); empty cells are -1 (integers) or 0 / False."""
    dest = np.where(valid, np.cumsum(valid, axis=1) - 1, -1)
    return place(dest, valid.shape[1] if width is None else width, *arrays)


def take_first(valid: np.ndarray, n: int) -> np.ndarray:
    """The first n valid cells of each row."""
    return valid & (np.cumsum(valid, axis=1) <= n)


def in_rows(ids: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(rows, k) bool: ids[r, c] >= 0 is among others[r, :] (rows x j, -1 = empty)."""
    if not others.shape[1] or not ids.size:
        return np.zeros(ids.shape, bool)
    n = int(max(ids.max(initial=0), others.max(initial=0))) + 1
    r = np.arange(ids.shape[0], dtype=np.int64)[:, None]
    keys = np.sort((r * n + others)[others >= 0])
    return member((r * n + np.maximum(ids, 0)).ravel(), keys).reshape(ids.shape) & (ids >= 0)
