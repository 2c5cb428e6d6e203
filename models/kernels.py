"""Top-K kernels: the best n items per row of a score block, with the business-rule masks.

* ``topk``: row-wise top n of a dense block (ties by item index, -inf slots as id ``NO_ITEM``).
* ``mask_block``: set excluded (per row) and filtered (for everyone) items of a dense block to -inf.
* ``sparse_topk``: the same top n of a sparse block plus one item vector shared by every row,
  without forming a dense row (``sort_rows`` orders its entries, ``member`` tests membership).

Whole-array numpy, no loop over rows; nothing here knows about models (models.base builds the
``Recommender`` contract on them; models.rows uses ``member``).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

NO_ITEM = -1


def topk(scores: np.ndarray, n: int, owned: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top n of a dense block, best first; -inf entries come out as id -1. ``owned``: the
    caller gives up ``scores`` (negated in place instead of copied; its content is lost)."""
    n_items = scores.shape[1]
    k = min(n, n_items)
    if k < n_items:
        neg = np.negative(scores, out=scores) if owned else -scores
        part = np.argpartition(neg, k - 1, axis=1)[:, :k]
        part_scores = -np.take_along_axis(neg, part, axis=1)  # negation is exact: the same values
    else:
        part = np.broadcast_to(np.arange(n_items), (scores.shape[0], n_items)).copy()
        part_scores = np.take_along_axis(scores, part, axis=1)
    # Ties broken by item index, so results do not depend on argpartition internals.
    order = np.lexsort((part, -part_scores), axis=1)
    ids = np.take_along_axis(part, order, axis=1)
    vals = np.take_along_axis(part_scores, order, axis=1)
    ids = np.where(np.isfinite(vals), ids, NO_ITEM)
    if k < n:
        ids = np.pad(ids, ((0, 0), (0, n - k)), constant_values=NO_ITEM)
        vals = np.pad(vals, ((0, 0), (0, n - k)), constant_values=-np.inf)
    return ids.astype(np.int64), vals.astype(np.float32)


def mask_block(scores: np.ndarray, rows: sp.csr_matrix | None, filter_items: np.ndarray | None) -> np.ndarray:
    """Set excluded (per-row sparse pattern) and filtered (global) items to -inf, in place."""
    if filter_items is not None and len(filter_items):
        scores[:, filter_items] = -np.inf
    if rows is not None and rows.nnz:
        r = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
        scores[r, rows.indices] = -np.inf
    return scores


def member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """keys in sorted_keys (ascending int64), by binary search."""
    if not len(sorted_keys) or not len(keys):
        return np.zeros(len(keys), bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[at] == keys


def sort_rows(r: np.ndarray, items: np.ndarray, vals: np.ndarray, rows: int, n_items: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries ordered by (row, -value, item), by sorts of packed 64-bit keys (row, order-preserving
    bits of the float32 value, item). When rows and items together need more than 32 bits, the
    entries are first grouped by ranges of rows that do fit (a stable radix sort of the range
    number), then each range is sorted alone: numpy's lexsort of the three columns took 20 times as
    long (4.6 s against 0.24 s for ten million entries). Items of more than 31 bits: lexsort. NaN
    values count as -inf."""
    i_bits = max(int(n_items - 1).bit_length(), 1)
    vals = np.asarray(vals, dtype=np.float32) + np.float32(0.0)  # -0.0 -> 0.0: equal values tie
    vals = np.where(np.isnan(vals), np.float32(-np.inf), vals)
    if i_bits > 31:
        order = np.lexsort((items, -vals, r))
        return r[order], items[order], vals[order]
    r_bits = max(int(rows - 1).bit_length(), 1)
    span = 32 - i_bits  # the row bits a packed key has room for
    if r_bits <= span or not len(r):
        return _sort_packed(r, items, vals, i_bits)
    group = (r >> span).astype(np.uint16 if r_bits - span <= 16 else np.int64)
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(int(group.max()) + 2))
    parts = []
    for g in range(len(bounds) - 1):
        at = order[bounds[g]:bounds[g + 1]]
        if len(at):
            gr, gi, gv = _sort_packed(r[at] - (g << span), items[at], vals[at], i_bits)
            parts.append((gr + (g << span), gi, gv))
    return tuple(np.concatenate(c) for c in zip(*parts))


def _sort_packed(r: np.ndarray, items: np.ndarray, vals: np.ndarray, i_bits: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``sort_rows`` for rows of at most 32 - i_bits bits: one sort of packed keys."""
    bits = vals.view(np.uint32).astype(np.uint64)
    asc = np.where(bits >> np.uint64(31), ~bits & np.uint64(0xFFFFFFFF), bits | np.uint64(0x80000000))
    key = (r.astype(np.uint64) << np.uint64(32 + i_bits)) | ((np.uint64(0xFFFFFFFF) - asc) << np.uint64(i_bits)) \
        | items.astype(np.uint64)
    key.sort()
    asc = np.uint64(0xFFFFFFFF) - ((key >> np.uint64(i_bits)) & np.uint64(0xFFFFFFFF))
    bits = np.where(asc >> np.uint64(31), asc & np.uint64(0x7FFFFFFF), ~asc & np.uint64(0xFFFFFFFF))
    return ((key >> np.uint64(32 + i_bits)).astype(np.int64), (key & np.uint64((1 << i_bits) - 1)).astype(np.int64),
            bits.astype(np.uint32).view(np.float32))


def row_rank(r: np.ndarray, rows: int) -> np.ndarray:
    """Each entry's position within its row, for entries sorted by row (linear: no search)."""
    counts = np.bincount(r, minlength=rows)
    return np.arange(len(r), dtype=np.int64) - (np.cumsum(counts) - counts)[r]


def sparse_topk(scores: sp.csr_matrix, base: np.ndarray | None, n: int, n_items: int,
                exclude: sp.csr_matrix | None = None, filter_mask: np.ndarray | None = None,
                base_order: np.ndarray | None = None, fill: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top n of ``scores + base`` (a sparse block plus one dense item vector shared by every
    row; None = zeros) without forming a dense row: the same ids and scores as ``topk`` of the dense
    matrix with ``mask_block`` applied (ties by item index), in time and memory of the order of the
    block's stored entries plus rows x n.

    The best items outside a row's stored entries are the first ones of the global ``base`` order
    that the row neither stores nor excludes, so only ``n + stored + excluded`` of that order are
    looked at per row. ``base_order``: the items by (-base, index) with filtered ones left out
    (computed when not given; pass it to reuse across blocks). ``fill=False`` (with ``base`` None):
    entries not stored count as -inf, so a row gets only its stored entries.
    """
    rows = scores.shape[0]
    base = np.zeros(n_items, np.float32) if base is None else np.asarray(base, dtype=np.float32)
    filt = np.zeros(n_items, bool) if filter_mask is None else np.asarray(filter_mask, bool)
    if filt.shape != (n_items,):
        raise ValueError(f"filter_mask: one flag per item ({n_items}), not shape {filt.shape}")
    if base_order is None and fill:
        base_order = np.lexsort((np.arange(n_items), -base))
        base_order = base_order[~filt[base_order]]
    scores = scores.tocsr()
    if fill:
        scores.sort_indices()  # ``member`` below needs the stored keys in order
    row_of = np.repeat(np.arange(rows, dtype=np.int64), np.diff(scores.indptr))
    s_keys = row_of * n_items + scores.indices  # with ``fill``: sorted (rows in order, indices sorted in each)
    s_vals = scores.data.astype(np.float32) + base[scores.indices]
    e_keys = np.empty(0, np.int64)
    if exclude is not None and exclude.nnz:
        exclude = exclude.tocsr()
        exclude.sort_indices()
        e_keys = np.repeat(np.arange(rows, dtype=np.int64), np.diff(exclude.indptr)) * n_items + exclude.indices
    keys_parts, val_parts = [s_keys], [s_vals]
    if fill and len(base_order):
        # The head of the global order a row needs: n, plus each of its stored or excluded items that
        # lies early enough in that order to push the head further (a safe over-count).
        blocked = np.concatenate([s_keys, e_keys])
        b_rows, b_items = blocked // n_items, blocked % n_items
        where = np.full(n_items, np.iinfo(np.int64).max, dtype=np.int64)
        where[base_order] = np.arange(len(base_order))
        total = np.bincount(b_rows, minlength=rows)
        early = where[b_items] < n + total[b_rows]
        take = np.minimum(n + np.bincount(b_rows[early], minlength=rows), len(base_order))
        starts = np.cumsum(take) - take
        pos = np.arange(int(take.sum()), dtype=np.int64) - np.repeat(starts, take)
        g_items = base_order[pos]
        g_keys = np.repeat(np.arange(rows, dtype=np.int64), take) * n_items + g_items
        g_keep = ~member(g_keys, s_keys)
        keys_parts.append(g_keys[g_keep])
        val_parts.append(base[g_items[g_keep]])
    keys, vals = np.concatenate(keys_parts), np.concatenate(val_parts)
    drop = filt[keys % n_items] | member(keys, e_keys)
    keys, vals = keys[~drop], vals[~drop]
    r, items, vals = sort_rows(keys // n_items, keys % n_items, vals, rows, n_items)
    rank = row_rank(r, rows)
    keep = (rank < n) & np.isfinite(vals)
    ids = np.full((rows, n), NO_ITEM, dtype=np.int64)
    out = np.full((rows, n), -np.inf, dtype=np.float32)
    ids[r[keep], rank[keep]] = items[keep]
    out[r[keep], rank[keep]] = vals[keep]
    return ids, out
