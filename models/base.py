"""The one model contract, after implicit's RecommenderBase and scikit-learn's estimator template.

* ``__init__`` stores hyperparameters only, each under its own name: ``get_params`` reads them back
  by the constructor's signature (as scikit-learn does), and they are what ``save`` writes.
* ``fit(user_items, items=None)`` returns ``self``; fitted attributes end in ``_``. A sequence
  model (``uses_sequences``) also takes ``sequences=``, each user's events in time order
  (models.registry.fit_model passes them where the model needs them).
* ``recommend(users, user_items, n, exclude=..., filter_items=...)``, ``recommend_with_own``,
  ``similar_items(items, n)``, ``score``, ``sparse_scores`` and ``score_pairs`` are vectorised
  over batches; the top-K methods return ``(ids, scores)`` arrays of shape ``(len(batch), n)``, a
  slot with no eligible item holding id ``NO_ITEM`` (-1) and score ``-inf``.
* ``save(dir)`` / ``load(dir)`` write ``params.json`` ({"name", "params"}), ``model.npz`` (dense
  arrays) and one ``<name>.npz`` per sparse array, with ``np.savez`` / ``scipy.sparse.save_npz``
  and JSON: no pickle.

Scores are computed in user blocks, so memory is bounded whatever the user count: a model whose
scores are a sparse matrix plus one item vector (``sparse_scores``: popularity, trending, buy again,
item-kNN, content) never forms a dense row at all (models.kernels.sparse_topk); factor models
(models.factors) use implicit's fused top-K (models.scoring); the others (EASE) score dense blocks
of at most ``block_cells`` floats (models.kernels.topk).

``NO_ITEM`` and ``topk`` live in models.kernels; they are imported here and remain importable from
this module for existing callers.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from models.kernels import NO_ITEM, mask_block, sparse_topk, topk

__all__ = ["NO_ITEM", "Recommender", "topk"]


def unit_rows(vec):
    """The rows of ``vec`` (dense or sparse) scaled to unit L2 norm (zero rows stay zero)."""
    if sp.issparse(vec):
        norms = np.sqrt(np.asarray(vec.multiply(vec).sum(axis=1)).ravel())
        inv = sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0))
        return (inv @ vec).tocsr()
    norms = np.linalg.norm(vec, axis=1)
    return vec / np.where(norms > 0, norms, 1)[:, None]


def _stack(blocks: Iterator[tuple[np.ndarray, np.ndarray]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The (ids, scores) blocks stacked; (0, n) arrays when there is none."""
    out_ids, out_scores = [], []
    for i, v in blocks:
        out_ids.append(i)
        out_scores.append(v)
    if not out_ids:
        return np.empty((0, n), np.int64), np.empty((0, n), np.float32)
    return np.vstack(out_ids), np.vstack(out_scores)


class Recommender:
    """Base class: subclasses implement ``__init__`` (hyperparameters), ``fit`` and ``score``
    (dense scores for a block of users), ``sparse_scores`` where the scores are sparse plus one
    item vector, ``item_vectors`` for the default ``similar_items``, and ``_arrays`` /
    ``_set_arrays`` (the fitted state, for ``save`` / ``load``)."""

    name: ClassVar[str] = "base"
    # True when ``sparse_scores`` gives the scores (then no dense row is ever formed).
    sparse: ClassVar[bool] = False
    # Tags, as scikit-learn's estimator tags: what the shared contract test (tests/models) may
    # expect of the model on a toy matrix whose answers are known.
    # A user's unseen items are ranked from the user's own history (not one list for everyone,
    # not only the user's own items).
    ranks_unseen_by_history: ClassVar[bool] = True
    # ``similar_items`` ranks by a learnt item-item similarity.
    item_similarity: ClassVar[bool] = True
    # ``fit`` gives the same model for the same data and ``random_state`` (False: e.g. SGD whose
    # threads race, as implicit's BPR).
    deterministic: ClassVar[bool] = True
    # ``fit`` also takes ``sequences=`` (features.sequences.UserSequences: each user's events in time
    # order) and needs them; callers go through models.registry.fit_model, which passes them.
    uses_sequences: ClassVar[bool] = False
    # ``fit`` also takes ``users=`` (the features' users table: country, interests; rows = the
    # matrix's users) and uses them when given (models/two_tower.py); passed by fit_model.
    uses_users: ClassVar[bool] = False

    # Serving settings, not hyperparameters (make_model sets them from cfg.scale; never saved).
    block_users: int = 4096
    # Dense blocks hold at most this many floats (rows = block_cells // n_items, at most block_users).
    block_cells: int = 16_777_216
    # similar_items: relative cost of sorting a stored cosine against a dense multiply-add.
    sparse_sort_cost: float = 8.0
    # Threads of the model's own parallel loops (implicit's fit and fused top-K); 0 = the library's
    # default. make_model sets it from cfg.scale.threads (never saved).
    num_threads: int = 0

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """The hyperparameters: the named parameters of ``__init__``, in order (scikit-learn's
        ``_get_param_names``)."""
        if cls.__init__ is object.__init__:
            return ()
        names = []
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.name == "self" or p.kind == p.VAR_KEYWORD:
                continue
            if p.kind == p.VAR_POSITIONAL:
                raise TypeError(f"{cls.__name__}.__init__ takes *{p.name}: every hyperparameter must be named")
            names.append(p.name)
        return tuple(names)

    def get_params(self) -> dict[str, Any]:
        """Each hyperparameter (``param_names``) and its value, read from the attribute of the same
        name: ``type(self)(**self.get_params())`` is an unfitted copy."""
        return {k: getattr(self, k) for k in self.param_names()}

    # -- to implement
    def fit(self, user_items: sp.csr_matrix, items=None) -> Recommender:
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
        blocks = self._sparse_blocks if self.sparse else self._dense_blocks
        return _stack(blocks(users, user_items, n, exclude, filter_items), n)

    def _sparse_blocks(self, users: np.ndarray, user_items: sp.csr_matrix, n: int,
                       exclude: sp.csr_matrix | None, filter_items: np.ndarray | None
                       ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``recommend`` for sparse scores, per block of ``block_users`` users: ``sparse_topk``
        (the global order of the item vector is computed once)."""
        n_items = user_items.shape[1]
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
            yield sparse_topk(s, b, n, n_items, exclude[block] if exclude is not None else None, filt, base_order)

    def _dense_blocks(self, users: np.ndarray, user_items: sp.csr_matrix, n: int,
                      exclude: sp.csr_matrix | None, filter_items: np.ndarray | None
                      ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``recommend`` for dense scores, per block of ``rows_per_block`` users: masks, then ``topk``."""
        step = self.rows_per_block(user_items.shape[1])
        for start in range(0, len(users), step):
            block = users[start:start + step]
            s = np.asarray(self.score(block, user_items), dtype=np.float32)
            mask_block(s, exclude[block] if exclude is not None else None, filter_items)
            yield topk(s, n)

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

    def similar_items(self, items: np.ndarray, n: int, filter_items: np.ndarray | None = None,
                      within: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top n most similar items (cosine over ``item_vectors``), the item itself excluded; with
        ``within`` (a group code per item of the catalog) only items of the anchor's own group,
        each group's cosines computed apart: the work is the sum of the groups' squares, not the
        catalog's square. Missing neighbours: id -1."""
        unit = unit_rows(self.item_vectors())
        items = np.asarray(items, dtype=np.int64)
        if within is None:
            return self._similar(unit, items, n, filter_items)
        codes = np.unique(np.asarray(within), return_inverse=True)[1].ravel()
        filt = np.zeros(unit.shape[0], bool)
        if filter_items is not None and len(filter_items):
            filt[np.asarray(filter_items, dtype=np.int64)] = True
        ids = np.full((len(items), n), NO_ITEM, np.int64)
        scores = np.full((len(items), n), -np.inf, np.float32)
        order = np.argsort(codes, kind="stable")  # each group's items in item order
        bounds = np.searchsorted(codes[order], np.arange(codes.max(initial=-1) + 2))
        a_codes = codes[items]
        a_order = np.argsort(a_codes, kind="stable")
        a_bounds = np.searchsorted(a_codes[a_order], np.arange(codes.max(initial=-1) + 2))
        for g in range(len(bounds) - 1):
            members, pos = order[bounds[g]:bounds[g + 1]], a_order[a_bounds[g]:a_bounds[g + 1]]
            if not len(pos):
                continue
            i, v = self._similar(unit[members], np.searchsorted(members, items[pos]), n, np.flatnonzero(filt[members]))
            ids[pos, :i.shape[1]] = np.where(i >= 0, members[np.maximum(i, 0)], NO_ITEM)
            scores[pos, :i.shape[1]] = v
        return ids, scores

    def _similar(self, unit, items: np.ndarray, n: int, filter_items: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """``similar_items`` over the unit vectors ``unit`` (rows = the candidates)."""
        n_all = unit.shape[0]
        filt = np.zeros(n_all, bool)
        if filter_items is not None and len(filter_items):
            filt[np.asarray(filter_items, dtype=np.int64)] = True
        sparse_rows, unit_t = self._sparse_similar_rows(unit, items)
        if sparse_rows:
            out_ids, out_scores = [], []
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
            return _stack(zip(out_ids, out_scores), n)
        return self._similar_dense(unit, items, n, filter_items)

    def _sparse_similar_rows(self, unit, items: np.ndarray) -> tuple[int, sp.csr_matrix | None]:
        """(rows per block, transposed unit vectors) when the cosines of ``items`` are cheaper kept
        sparse, else (0, None).

        Sparse cosines (item-kNN neighbours) stay sparse: top n straight from the stored entries.
        Text vectors share common terms, so their cosines are nearly dense: then dense blocks. A
        probe of 64 rows tells which is cheaper, and how many rows a block may hold."""
        if not (sp.issparse(unit) and len(items)):
            return 0, None
        unit_t = unit.T.tocsr()
        probe = unit[items[:64]] @ unit_t
        per_row = max(probe.nnz / max(len(items[:64]), 1), 1.0)
        # Work per query row: sorting its stored cosines (sparse) against a pass over every
        # stored entry of the matrix plus a dense top-K (dense).
        if self.sparse_sort_cost * per_row < unit.nnz + unit.shape[0]:
            return int(max(1, min(self.block_users, self.block_cells // per_row))), unit_t
        return 0, unit_t

    def _similar_dense(self, unit, items: np.ndarray, n: int, filter_items: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """``similar_items`` by dense cosine blocks of at most ``block_cells`` floats, on
        ``num_threads`` threads (numpy's partition and SciPy's sparse products release the GIL;
        0: one per CPU this process may use); blocks are independent, so the result does not depend on the threads."""
        from concurrent.futures import ThreadPoolExecutor

        n_all = unit.shape[0]
        step = max(1, min(self.block_users, self.block_cells // max(n_all, unit.shape[1], 1)))
        filt = None if filter_items is None or not len(filter_items) else np.asarray(filter_items, dtype=np.int64)

        def one(start: int) -> tuple[np.ndarray, np.ndarray]:
            block = items[start:start + step]
            if sp.issparse(unit):
                # A dense block of query vectors times the sparse matrix (cost nnz x rows).
                qt = np.asarray(unit[block].T.toarray(), dtype=np.float32)  # C-contiguous (features x rows)
                s = np.asarray(unit @ qt, dtype=np.float32).T.copy()
            else:
                s = np.asarray(unit[block] @ unit.T, dtype=np.float32)
            s[np.arange(len(block)), block] = -np.inf
            s[s <= 0] = -np.inf  # nothing in common is not "similar"
            if filt is not None:
                s[:, filt] = -np.inf
            return topk(s, n, owned=True)

        threads = self.num_threads if self.num_threads and self.num_threads > 0 else len(os.sched_getaffinity(0))
        starts = range(0, len(items), step)
        if threads <= 1 or len(starts) <= 1:
            return _stack(map(one, starts), n)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return _stack(pool.map(one, starts), n)

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
                sp.save_npz(path / f"{k}.npz", v.tocsr(), compressed=False)  # written each night, read soon after
        return path

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        path = Path(path)
        meta = json.loads((path / "params.json").read_text())
        known = set(cls.param_names())
        unknown = sorted(set(meta["params"]) - known)
        if unknown:  # saved by a newer release (a rollback): the settings this release knows are kept
            logging.getLogger(__name__).warning("%s: %s parameters %s are unknown to this release and ignored",
                                                path, cls.name, unknown)
        model = cls(**{k: v for k, v in meta["params"].items() if k in known})
        arrays = dict(np.load(path / "model.npz", allow_pickle=False))
        for f in path.glob("*.npz"):
            if f.name != "model.npz":
                arrays[f.stem] = sp.load_npz(f).tocsr()
        model._set_arrays(arrays)
        return model
