"""The one model contract, after implicit's RecommenderBase and scikit-learn's estimator template.

* ``__init__`` stores hyperparameters only; ``fit`` returns ``self``; fitted attributes end in ``_``.
* ``recommend(users, user_items, n, exclude=..., filter_items=...)`` and ``similar_items(items, n)``
  are vectorised over batches and return ``(ids, scores)`` arrays of shape ``(len(batch), n)``;
  a slot with no eligible item holds id ``-1`` and score ``-inf``.
* ``save(dir)`` / ``load(dir)`` use ``np.savez`` / ``scipy.sparse.save_npz`` and JSON: no pickle.

Scores are computed in user blocks, so memory is bounded whatever the user count: a model whose
scores are a sparse matrix plus one item vector (``sparse_scores``: popularity, trending, buy again,
item-kNN, content) never forms a dense row at all (``sparse_topk``); factor models use implicit's
fused top-K (models/scoring.py); the others (EASE) score dense blocks of at most ``block_cells``
floats.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

NO_ITEM = -1


def topk(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top n of a dense block, best first; -inf entries come out as id -1."""
    n_items = scores.shape[1]
    k = min(n, n_items)
    if k < n_items:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
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


def _member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """keys in sorted_keys (ascending int64), by binary search."""
    if not len(sorted_keys) or not len(keys):
        return np.zeros(len(keys), bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[at] == keys


def _sort_rows(r: np.ndarray, items: np.ndarray, vals: np.ndarray, rows: int, n_items: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries ordered by (row, -value, item). When row, value and item fit one 64-bit key (rows and
    items of up to 32 bits together), a single sort of packed keys (order-preserving bits of the
    float32 value); otherwise numpy's lexsort."""
    r_bits, i_bits = max(int(rows - 1).bit_length(), 1), max(int(n_items - 1).bit_length(), 1)
    vals = np.asarray(vals, dtype=np.float32) + np.float32(0.0)  # -0.0 -> 0.0: equal values tie
    if r_bits + i_bits > 32:
        order = np.lexsort((items, -vals, r))
        return r[order], items[order], vals[order]
    bits = vals.view(np.uint32).astype(np.uint64)
    asc = np.where(bits >> np.uint64(31), ~bits & np.uint64(0xFFFFFFFF), bits | np.uint64(0x80000000))
    key = (r.astype(np.uint64) << np.uint64(32 + i_bits)) | ((np.uint64(0xFFFFFFFF) - asc) << np.uint64(i_bits)) \
        | items.astype(np.uint64)
    key.sort()
    asc = np.uint64(0xFFFFFFFF) - ((key >> np.uint64(i_bits)) & np.uint64(0xFFFFFFFF))
    bits = np.where(asc >> np.uint64(31), asc & np.uint64(0x7FFFFFFF), ~asc & np.uint64(0xFFFFFFFF))
    return ((key >> np.uint64(32 + i_bits)).astype(np.int64), (key & np.uint64((1 << i_bits) - 1)).astype(np.int64),
            bits.astype(np.uint32).view(np.float32))


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
    filt = np.zeros(n_items, bool) if filter_mask is None else filter_mask
    if base_order is None:
        base_order = np.lexsort((np.arange(n_items), -base))
        base_order = base_order[~filt[base_order]]
    scores = scores.tocsr()
    scores.sort_indices()
    row_of = np.repeat(np.arange(rows, dtype=np.int64), np.diff(scores.indptr))
    s_keys = row_of * n_items + scores.indices  # sorted: rows in order, indices sorted in each
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
        g_keep = ~_member(g_keys, s_keys)
        keys_parts.append(g_keys[g_keep])
        val_parts.append(base[g_items[g_keep]])
    keys, vals = np.concatenate(keys_parts), np.concatenate(val_parts)
    drop = filt[keys % n_items] | _member(keys, e_keys)
    keys, vals = keys[~drop], vals[~drop]
    r, items, vals = _sort_rows(keys // n_items, keys % n_items, vals, rows, n_items)
    rank = np.arange(len(r)) - np.searchsorted(r, r, side="left")
    keep = (rank < n) & np.isfinite(vals)
    ids = np.full((rows, n), NO_ITEM, dtype=np.int64)
    out = np.full((rows, n), -np.inf, dtype=np.float32)
    ids[r[keep], rank[keep]] = items[keep]
    out[r[keep], rank[keep]] = vals[keep]
    return ids, out


class Recommender:
    """Base class: subclasses implement ``fit`` and ``score`` (dense scores for a block of users),
    and ``sparse_scores`` where the scores are sparse plus one item vector."""

    name: ClassVar[str] = "base"
    # True when ``sparse_scores`` gives the scores (then no dense row is ever formed).
    sparse: ClassVar[bool] = False
    block_users: int = 4096
    # Dense blocks hold at most this many floats (rows = block_cells // n_items, at most block_users).
    block_cells: int = 16_777_216
    # similar_items: relative cost of sorting a stored cosine against a dense multiply-add.
    sparse_sort_cost: float = 8.0

    def get_params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items()
                if not k.endswith("_") and not k.startswith("_") and k not in ("block_users", "block_cells", "sparse_sort_cost", "own_slack")}

    # -- to implement
    def fit(self, user_items: sp.csr_matrix, items=None) -> "Recommender":
        raise NotImplementedError

    def score(self, users: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        raise NotImplementedError

    def item_vectors(self):
        """Item representation used by the default similar_items (rows are items)."""
        raise NotImplementedError

    def sparse_scores(self, users: np.ndarray, user_items: sp.csr_matrix
                      ) -> tuple[sp.csr_matrix | None, np.ndarray | None] | None:
        """(S, b) with scores = S + b (S: users x items sparse, b: one item vector), or None when the
        model's scores are not of that form (then ``score`` gives dense blocks)."""
        return None

    def rows_per_block(self, n_items: int) -> int:
        return max(1, min(self.block_users, self.block_cells // max(n_items, 1)))

    def score_pairs(self, users: np.ndarray, items: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        """The score of each (users[j], items[j]) pair, as ``score`` would give it, computed per
        distinct user block without a dense row where the model allows."""
        users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
        out = np.empty(len(users), np.float32)
        if not len(users):
            return out
        uniq, inv = np.unique(users, return_inverse=True)
        n_items = user_items.shape[1]
        step = self.block_users if self.sparse else self.rows_per_block(n_items)
        order = np.argsort(inv, kind="stable")
        bounds = np.searchsorted(inv[order], np.arange(0, len(uniq) + step, step))
        for k, start in enumerate(range(0, len(uniq), step)):
            sel = order[bounds[k]:bounds[k + 1]]
            local = inv[sel] - start
            if not self.sparse:
                out[sel] = np.asarray(self.score(uniq[start:start + step], user_items), np.float32)[local, items[sel]]
                continue
            s, b = self.sparse_scores(uniq[start:start + step], user_items)
            v = np.zeros(len(sel), np.float32) if b is None else np.asarray(b, np.float32)[items[sel]]
            if s is not None and s.nnz:
                v = v + np.asarray(s.tocsr()[local, items[sel]], dtype=np.float32).ravel()
            out[sel] = v
        return out

    # -- shared
    def recommend(self, users: np.ndarray, user_items: sp.csr_matrix, n: int,
                  exclude: sp.csr_matrix | None = None, filter_items: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Top n items for each user in ``users`` (row indices into ``user_items``).

        ``exclude``: a users x items matrix (same rows as ``user_items``) of items to leave out per user.
        ``filter_items``: item indices no user may get (inactive, out of stock).
        """
        users = np.asarray(users, dtype=np.int64)
        out_ids, out_scores = [], []
        n_items = user_items.shape[1]
        if self.sparse:
            filt = np.zeros(n_items, bool)
            if filter_items is not None and len(filter_items):
                filt[np.asarray(filter_items, dtype=np.int64)] = True
            base_order = None
            for start in range(0, len(users), self.block_users):
                block = users[start:start + self.block_users]
                s, b = self.sparse_scores(block, user_items)
                if base_order is None:
                    bb = np.zeros(n_items, np.float32) if b is None else np.asarray(b, np.float32)
                    base_order = np.lexsort((np.arange(n_items), -bb))
                    base_order = base_order[~filt[base_order]]
                i, v = sparse_topk(s, b, n, n_items, exclude[block] if exclude is not None else None, filt,
                                   base_order)
                out_ids.append(i)
                out_scores.append(v)
            if not out_ids:
                return np.empty((0, n), np.int64), np.empty((0, n), np.float32)
            return np.vstack(out_ids), np.vstack(out_scores)
        step = self.rows_per_block(n_items)
        for start in range(0, len(users), step):
            block = users[start:start + step]
            s = np.asarray(self.score(block, user_items), dtype=np.float32)
            mask_block(s, exclude[block] if exclude is not None else None, filter_items)
            i, v = topk(s, n)
            out_ids.append(i)
            out_scores.append(v)
        if not out_ids:
            return np.empty((0, n), np.int64), np.empty((0, n), np.float32)
        return np.vstack(out_ids), np.vstack(out_scores)

    def recommend_with_own(self, users: np.ndarray, user_items: sp.csr_matrix, n: int, own: sp.csr_matrix,
                           filter_items: np.ndarray | None = None
                           ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """Two lists in one scoring pass: (top n over all items, top n leaving out ``own``'s items).

        The first is the second merged with the scores of the user's own items (``score_pairs``):
        the best n of all items are the best n of (own items) and (the best n of the others), so
        the result equals two ``recommend`` calls, at the cost of one plus the own items.
        """
        users = np.asarray(users, dtype=np.int64)
        new_ids, new_scores = self.recommend(users, user_items, n, exclude=own, filter_items=filter_items)
        mine = own[users].tocsr()
        r = np.repeat(np.arange(len(users), dtype=np.int64), np.diff(mine.indptr))
        i = mine.indices.astype(np.int64)
        if filter_items is not None and len(filter_items):
            keep = ~np.isin(i, filter_items)
            r, i = r[keep], i[keep]
        v = self.score_pairs(users[r], i, user_items)
        listed = new_ids >= 0
        rr = np.concatenate([r, np.repeat(np.arange(len(users), dtype=np.int64), n)[listed.ravel()]])
        ii = np.concatenate([i, new_ids[listed]])
        vv = np.concatenate([v.astype(np.float32), new_scores[listed]])
        ok = np.isfinite(vv)
        rr, ii, vv = rr[ok], ii[ok], vv[ok]
        order = np.lexsort((ii, -vv, rr))
        rr, ii, vv = rr[order], ii[order], vv[order]
        rank = np.arange(len(rr)) - np.searchsorted(rr, rr, side="left")
        keep = rank < n
        all_ids = np.full((len(users), n), NO_ITEM, dtype=np.int64)
        all_scores = np.full((len(users), n), -np.inf, dtype=np.float32)
        all_ids[rr[keep], rank[keep]] = ii[keep]
        all_scores[rr[keep], rank[keep]] = vv[keep]
        return (all_ids, all_scores), (new_ids, new_scores)

    def similar_items(self, items: np.ndarray, n: int, filter_items: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Top n most similar items (cosine over ``item_vectors``), the item itself excluded."""
        vec = self.item_vectors()
        if sp.issparse(vec):
            norms = np.sqrt(np.asarray(vec.multiply(vec).sum(axis=1)).ravel())
            inv = sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0))
            unit = (inv @ vec).tocsr()
        else:
            norms = np.linalg.norm(vec, axis=1)
            unit = vec / np.where(norms > 0, norms, 1)[:, None]
        items = np.asarray(items, dtype=np.int64)
        out_ids, out_scores = [], []
        n_all = unit.shape[0]
        filt = np.zeros(n_all, bool)
        if filter_items is not None and len(filter_items):
            filt[np.asarray(filter_items, dtype=np.int64)] = True
        sparse_rows = 0
        if sp.issparse(unit) and len(items):
            # Sparse cosines (item-kNN neighbours) stay sparse: top n straight from the stored
            # entries. Text vectors share common terms, so their cosines are nearly dense: then dense
            # blocks. A probe of 64 rows tells which is cheaper, and how many rows a block may hold.
            unit_t = unit.T.tocsr()
            probe = unit[items[:64]] @ unit_t
            per_row = max(probe.nnz / max(len(items[:64]), 1), 1.0)
            # Work per query row: sorting its stored cosines (sparse) against a pass over every
            # stored entry of the matrix plus a dense top-K (dense).
            if self.sparse_sort_cost * per_row < unit.nnz + n_all:
                sparse_rows = int(max(1, min(self.block_users, self.block_cells // per_row)))
        if sparse_rows:
            for start in range(0, len(items), sparse_rows):
                block = items[start:start + sparse_rows]
                s = (unit[block] @ unit_t).tocsr()
                s.data[s.data <= 0] = 0  # nothing in common is not "similar"
                s.eliminate_zeros()
                own = sp.csr_matrix((np.ones(len(block), np.float32), (np.arange(len(block)), block)),
                                    shape=(len(block), n_all))
                i, v = sparse_topk(s, None, n, n_all, own, filt, fill=False)
                out_ids.append(i)
                out_scores.append(v)
            return np.vstack(out_ids), np.vstack(out_scores)
        step = max(1, min(self.block_users, self.block_cells // max(n_all, unit.shape[1], 1)))
        for start in range(0, len(items), step):
            block = items[start:start + step]
            if sp.issparse(unit):
                # A dense block of query vectors times the sparse matrix (cost nnz x rows).
                qt = np.asarray(unit[block].T.toarray(), dtype=np.float32)  # C-contiguous (features x rows)
                s = np.asarray(unit @ qt, dtype=np.float32).T.copy()
            else:
                s = np.asarray(unit[block] @ unit.T, dtype=np.float32)
            s[np.arange(len(block)), block] = -np.inf
            s[s <= 0] = -np.inf  # nothing in common is not "similar"
            if filter_items is not None and len(filter_items):
                s[:, filter_items] = -np.inf
            i, v = topk(s, n)
            out_ids.append(i)
            out_scores.append(v)
        return np.vstack(out_ids), np.vstack(out_scores)

    # -- persistence
    def _arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "params.json").write_text(json.dumps({"name": self.name, "params": self.get_params()}, indent=2))
        arrays = self._arrays()
        dense = {k: v for k, v in arrays.items() if not sp.issparse(v)}
        np.savez(path / "model.npz", **dense)
        for k, v in arrays.items():
            if sp.issparse(v):
                sp.save_npz(path / f"{k}.npz", v.tocsr())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Recommender":
        path = Path(path)
        meta = json.loads((path / "params.json").read_text())
        model = cls(**meta["params"])
        arrays = dict(np.load(path / "model.npz", allow_pickle=False))
        for f in path.glob("*.npz"):
            if f.name != "model.npz":
                arrays[f.stem] = sp.load_npz(f).tocsr()
        model._set_arrays(arrays)
        return model

