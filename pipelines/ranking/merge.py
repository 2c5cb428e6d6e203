"""Row-wise merge of ranked candidate lists: each row's first list, then each next list's items not
already present, cut to a width; the list each slot came from is kept (its source)."""
from __future__ import annotations

import numpy as np

from models.base import NO_ITEM
from models.rows import compact, first_occurrence


def merge_many(lists: list[tuple[np.ndarray, np.ndarray]], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise: the first list's ids, then each next list's ids not already present, cut to n.

    ``lists`` holds (ids, scores) pairs of shape (rows, k_j) (a 1-d pair is shared by every row).
    Returns (ids, source, scores) of shape (rows, n): the index of the list each slot came from and
    that list's score; an empty slot has id -1 and source -1. Vectorised: no loop over rows.
    """
    rows = max(l[0].shape[0] for l in lists if l[0].ndim == 2) if any(l[0].ndim == 2 for l in lists) else 1
    first_ids, first_scores = lists[0]
    if first_ids.ndim == 2 and first_ids.shape[1] >= n:
        # Rows whose first list already fills n slots are that list (a list's ids are distinct in a
        # row, as every ranked list here is): only the other rows go through the merge.
        full_rows = (first_ids[:, :n] != NO_ITEM).all(axis=1)
        if full_rows.any():
            out_ids = np.array(first_ids[:, :n], dtype=np.int64)
            out_src = np.zeros((rows, n), dtype=np.int8)
            out_scores = np.array(first_scores[:, :n], dtype=np.float32)
            rest = np.flatnonzero(~full_rows)
            if len(rest):
                sub = [(i[rest], v[rest]) if i.ndim == 2 else (i, v) for i, v in lists]
                out_ids[rest], out_src[rest], out_scores[rest] = _merge_rows(sub, n, len(rest))
            return out_ids, out_src, out_scores
    return _merge_rows(lists, n, rows)


def _merge_rows(lists: list[tuple[np.ndarray, np.ndarray]], n: int, rows: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids_parts, score_parts, src_parts = [], [], []
    for k, (ids, scores) in enumerate(lists):
        if ids.ndim == 1:
            ids, scores = np.broadcast_to(ids, (rows, len(ids))), np.broadcast_to(scores, (rows, len(scores)))
        if ids.shape[1] > n:  # at most its first n listed ids can be reached
            _, ids, scores = compact(ids != NO_ITEM, ids, np.asarray(scores, dtype=np.float32), width=n)
        ids_parts.append(ids)
        score_parts.append(np.asarray(scores, dtype=np.float32))
        src_parts.append(np.full(ids.shape, k, dtype=np.int8))
    cand, cand_scores, src = np.hstack(ids_parts), np.hstack(score_parts), np.hstack(src_parts)
    ok, out_ids, out_src, out_scores = compact(first_occurrence(cand, cand != NO_ITEM), cand, src, cand_scores,
                                               width=n)
    out_ids = np.where(ok, out_ids, NO_ITEM)
    out_src = np.where(ok, out_src, -1).astype(np.int8)
    out_scores = np.where(ok, out_scores, np.nan).astype(np.float32)
    return out_ids, out_src, out_scores
