"""Block scoring with a fused top-K: the serving path for factor models at scale.

``block_topk`` scores users in blocks against every item with implicit's fused C++ top-K (the
routine behind implicit's own ``recommend``), which never materialises the full user x item score
matrix: memory is O(block x n), not O(users x items). The business rules that can be expressed as
masks are applied inside the top-K, per block: ``filter_items`` (inactive, out of stock) for every
user and ``exclude`` (a users x items pattern: already-bought non-repeatable items, or everything
the user touched) per user.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.rows import RowSet, compact


# Catalogs of at least this many items are scored with the norm bound (``_pruned_block``).
PRUNE_MIN_ITEMS = 16_384
# The head: the items of largest norm scored for every user first, at least this many (and 8 x k).
PRUNE_HEAD = 8192
# A bound's safety margin against float32 rounding of the dot products and norms.
BOUND_SLACK = 1e-4


def block_topk(user_factors: np.ndarray, item_factors: np.ndarray, users: np.ndarray, n: int,
               exclude: sp.csr_matrix | None = None, filter_items: np.ndarray | None = None,
               block: int = 8192, num_threads: int = 0, prune: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top n items per user of ``users`` by dot product, best first; (ids, scores) of shape
    (len(users), n), id -1 where fewer items are eligible.

    On a catalog of ``PRUNE_MIN_ITEMS`` items or more (``prune`` None), or with ``prune`` True, the
    exact top n with the norm bound (``_pruned_block``): the same lists, most items never scored."""
    from threadpoolctl import threadpool_limits

    if prune or (prune is None and item_factors.shape[0] >= PRUNE_MIN_ITEMS):
        return _pruned(user_factors, item_factors, users, n, exclude, filter_items, block, num_threads)

    users = np.asarray(users, dtype=np.int64)
    item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
    k = min(n, item_factors.shape[0])
    filt = None if filter_items is None or not len(filter_items) else np.asarray(filter_items, dtype=np.int32)
    ids = np.full((len(users), n), -1, dtype=np.int64)
    scores = np.full((len(users), n), -np.inf, dtype=np.float32)
    # implicit's own threads share the users; a threaded BLAS underneath would only oversubscribe.
    with threadpool_limits(1, "blas"):
        for start in range(0, len(users), block):
            b = users[start:start + block]
            q = np.ascontiguousarray(user_factors[b], dtype=np.float32)
            fq = exclude[b].tocsr() if exclude is not None else None
            ids[start:start + len(b), :k], scores[start:start + len(b), :k] = _topk(item_factors, q, k, fq, filt,
                                                                                    num_threads)
    return ids, scores


def block_topk_with_own(user_factors: np.ndarray, item_factors: np.ndarray, users: np.ndarray, n: int,
                        own: sp.csr_matrix, filter_items: np.ndarray | None = None, block: int = 8192,
                        num_threads: int = 0, slack: int = 16):
    """Two lists from one scoring pass: ((ids, scores) of the top n over all items, (ids, scores) of
    the top n leaving out each user's items in ``own``), both with ``filter_items`` left out.

    One fused top (n + slack) without the per-user filter gives both: its first n, and its first n
    items the user does not own. Rows where own items take more than ``slack`` of those places (a
    few heavy users) get the filtered top n in a second call."""
    users = np.asarray(users, dtype=np.int64)
    k = min(n + slack, item_factors.shape[0])
    ids, scores = block_topk(user_factors, item_factors, users, k, filter_items=filter_items, block=block,
                             num_threads=num_threads)
    all_ids, all_scores = ids[:, :n].copy(), scores[:, :n].copy()
    own_hit = RowSet(own, users, count="stored").has(ids)
    keep = (ids >= 0) & ~own_hit
    ok, new_ids, new_scores = compact(keep, ids, scores, width=n)
    new_ids, new_scores = np.where(ok, new_ids, -1), np.where(ok, new_scores, -np.inf).astype(np.float32)
    # Too few left where the list was full (more eligible items may follow): the exact filtered call.
    heavy = np.flatnonzero((keep.sum(axis=1) < n) & (ids[:, -1] >= 0))
    if len(heavy):
        new_ids[heavy], new_scores[heavy] = block_topk(user_factors, item_factors, users[heavy], n, exclude=own,
                                                       filter_items=filter_items, block=block,
                                                       num_threads=num_threads)
    return (all_ids, all_scores), (new_ids, new_scores)


def _pruned(user_factors, item_factors, users, n, exclude, filter_items, block, num_threads):
    """``block_topk`` with the norm bound, in blocks of users (items in order of decreasing norm)."""
    from threadpoolctl import threadpool_limits

    users = np.asarray(users, dtype=np.int64)
    f = np.asarray(item_factors, dtype=np.float32)
    norms = np.linalg.norm(f, axis=1)
    order = np.argsort(-norms, kind="stable")  # position -> item
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))  # item -> position
    ordered = _Ordered(np.ascontiguousarray(f[order]), norms[order], order, rank, filter_items)
    ids = np.full((len(users), n), -1, dtype=np.int64)
    scores = np.full((len(users), n), -np.inf, dtype=np.float32)
    with threadpool_limits(1, "blas"):
        for start in range(0, len(users), block):
            b = users[start:start + block]
            fq = exclude[b].tocsr() if exclude is not None else None
            i, s = _pruned_block(ordered, np.ascontiguousarray(user_factors[b], dtype=np.float32), fq, n, num_threads)
            ids[start:start + len(b)], scores[start:start + len(b)] = i, s
    return ids, scores


class _Ordered:
    """The item factors in order of decreasing norm, with the maps between positions and items and
    the filtered items as a mask over positions."""

    def __init__(self, factors, norms, order, rank, filter_items):
        self.factors, self.norms, self.order, self.rank = factors, norms, order, rank
        self.filtered = np.zeros(len(order), bool)
        if filter_items is not None and len(filter_items):
            self.filtered[rank[np.asarray(filter_items, dtype=np.int64)]] = True


def _pruned_block(o: _Ordered, q: np.ndarray, fq: sp.csr_matrix | None, n: int, num_threads: int):
    """The exact top n of one block of users, most items unscored. Cauchy-Schwarz: a user u's score
    for item v is at most |u| |v|. The items of largest norm (the head) are scored for every user;
    the n-th best score so far, theta_u, then rules out every item with |u| |v| < theta_u, and items
    come in order of decreasing norm, so each user scores only a prefix of the rest: chunks of
    doubling size, each for the users whose bound still reaches it (theta_u rises as chunks merge).
    Items with a bound equal to theta_u are scored, so ties are decided as in a full pass (by
    score, then item id). Users whose theta_u is not positive (fewer than n positive scores) score
    every item."""
    n_items = len(o.order)
    k = min(n, n_items)
    qn = np.linalg.norm(q, axis=1)
    fq = sp.csr_matrix((np.ones(fq.nnz, np.float32), o.rank[fq.indices], fq.indptr), shape=(len(q), n_items)) \
        if fq is not None else None
    if fq is not None:
        fq.sort_indices()
    head = min(n_items, max(PRUNE_HEAD, 8 * k))
    rows = np.arange(len(q))
    ids, vals = _chunk(o, q, fq, rows, 0, head, k, num_threads)
    lo = head
    while lo < n_items:
        theta = vals[:, k - 1]
        # Scored while the bound of the chunk's first (largest) norm reaches theta (with a margin).
        reach = ~(theta > 0) | (qn * o.norms[lo] * (1 + BOUND_SLACK) >= theta)
        rows = np.flatnonzero(reach)
        if not len(rows):
            break
        hi = min(n_items, 2 * lo)
        ci, cv = _chunk(o, q, fq, rows, lo, hi, k, num_threads)
        ids[rows], vals[rows] = _merge(ids[rows], vals[rows], ci, cv, o.order, k)
        lo = hi
    item = np.where(ids >= 0, o.order[np.maximum(ids, 0)], np.iinfo(np.int64).max)
    pick = np.lexsort((item, -vals), axis=1)  # ties by item id, whichever chunk they came from
    ids, vals = np.take_along_axis(ids, pick, axis=1), np.take_along_axis(vals, pick, axis=1)
    out_ids = np.where(ids >= 0, o.order[np.maximum(ids, 0)], -1)
    if k < n:
        out_ids = np.pad(out_ids, ((0, 0), (0, n - k)), constant_values=-1)
        vals = np.pad(vals, ((0, 0), (0, n - k)), constant_values=-np.inf)
    return out_ids.astype(np.int64), vals.astype(np.float32)


def _chunk(o: _Ordered, q, fq, rows, lo: int, hi: int, k: int, num_threads: int, slack: int = 16):
    """implicit's fused top k of users ``rows`` over the item positions [lo, hi): positions (global)
    and scores, -1 / -inf where none is eligible. The users' own items (``fq``) are dropped from a
    top (k + ``slack``) computed without them, as in ``block_topk_with_own`` (implicit slices a
    per-user filter for every 100 users, which costs more than the scoring); rows whose own items
    take more than ``slack`` places are scored again with the filter."""
    kk = min(k, hi - lo)
    filt = np.flatnonzero(o.filtered[lo:hi]).astype(np.int32)
    filt = filt if len(filt) else None
    sub = fq[rows][:, lo:hi].tocsr() if fq is not None else None
    if sub is not None and not sub.nnz:
        sub = None
    kw = kk if sub is None else min(kk + slack, hi - lo)
    i, s = _topk(o.factors[lo:hi], q[rows], kw, None, filt, num_threads)
    if sub is not None:
        keep = (i >= 0) & ~RowSet(sub, np.arange(len(rows)), count="stored").has(i)
        full = i[:, -1] >= 0  # more eligible items may follow the kw found
        ok, i, s = compact(keep, i, s, width=kk)
        i, s = np.where(ok, i, -1), np.where(ok, s, -np.inf).astype(np.float32)
        heavy = np.flatnonzero((keep.sum(axis=1) < kk) & full)
        if len(heavy):
            i[heavy], s[heavy] = _topk(o.factors[lo:hi], q[rows[heavy]], kk, sub[heavy], filt, num_threads)
    ids = np.full((len(rows), k), -1, np.int64)
    vals = np.full((len(rows), k), -np.inf, np.float32)
    ids[:, :kk] = np.where(i >= 0, i + lo, -1)
    vals[:, :kk] = s[:, :kk]
    return ids, vals


def _topk(factors, q, k, fq, filt, num_threads):
    """implicit's fused top k: (ids, scores), -1 / -inf where no item is eligible (implicit marks
    such slots with -FLT_MAX)."""
    from implicit.cpu.topk import topk

    i, s = topk(factors, q, k, filter_query_items=fq, filter_items=filt, num_threads=num_threads)
    empty = ~np.isfinite(s) | (s <= np.finfo(np.float32).min / 2)
    return np.where(empty, -1, i).astype(np.int64), np.where(empty, -np.inf, s).astype(np.float32)


def _merge(ids_a, vals_a, ids_b, vals_b, order, k):
    """The top k of two (ids, scores) sets per row: by score, ties by item id (``order[position]``)."""
    ids = np.hstack([ids_a, ids_b])
    vals = np.hstack([vals_a, vals_b])
    item = np.where(ids >= 0, order[np.maximum(ids, 0)], np.iinfo(np.int64).max)
    pick = np.lexsort((item, -vals), axis=1)[:, :k]
    return np.take_along_axis(ids, pick, axis=1), np.take_along_axis(vals, pick, axis=1)
