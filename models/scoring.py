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


def block_topk(user_factors: np.ndarray, item_factors: np.ndarray, users: np.ndarray, n: int,
               exclude: sp.csr_matrix | None = None, filter_items: np.ndarray | None = None,
               block: int = 8192, num_threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top n items per user of ``users`` by dot product, best first; (ids, scores) of shape
    (len(users), n), id -1 where fewer items are eligible."""
    from implicit.cpu.topk import topk

    users = np.asarray(users, dtype=np.int64)
    item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
    filt = None if filter_items is None or not len(filter_items) else np.asarray(filter_items, dtype=np.int32)
    ids = np.empty((len(users), n), dtype=np.int64)
    scores = np.empty((len(users), n), dtype=np.float32)
    for start in range(0, len(users), block):
        b = users[start:start + block]
        q = np.ascontiguousarray(user_factors[b], dtype=np.float32)
        fq = exclude[b].tocsr() if exclude is not None else None
        i, s = topk(item_factors, q, n, filter_query_items=fq, filter_items=filt, num_threads=num_threads)
        i = np.where(np.isfinite(s), i, -1)
        ids[start:start + len(b)], scores[start:start + len(b)] = i, s
    return ids, scores
