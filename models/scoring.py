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


def block_topk(user_factors: np.ndarray, item_factors: np.ndarray, users: np.ndarray, n: int,
               exclude: sp.csr_matrix | None = None, filter_items: np.ndarray | None = None,
               block: int = 8192, num_threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top n items per user of ``users`` by dot product, best first; (ids, scores) of shape
    (len(users), n), id -1 where fewer items are eligible."""
    from implicit.cpu.topk import topk
    from threadpoolctl import threadpool_limits

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
            i, s = topk(item_factors, q, k, filter_query_items=fq, filter_items=filt, num_threads=num_threads)
            # implicit marks slots without an eligible item with -FLT_MAX; the contract says -1 / -inf.
            empty = ~np.isfinite(s) | (s <= np.finfo(np.float32).min / 2)
            ids[start:start + len(b), :k] = np.where(empty, -1, i)
            scores[start:start + len(b), :k] = np.where(empty, -np.inf, s)
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
