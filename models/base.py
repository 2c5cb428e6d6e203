"""The one model contract, after implicit's RecommenderBase and scikit-learn's estimator template.

* ``__init__`` stores hyperparameters only; ``fit`` returns ``self``; fitted attributes end in ``_``.
* ``recommend(users, user_items, n, exclude=..., filter_items=...)`` and ``similar_items(items, n)``
  are vectorised over batches and return ``(ids, scores)`` arrays of shape ``(len(batch), n)``;
  a slot with no eligible item holds id ``-1`` and score ``-inf``.
* ``save(dir)`` / ``load(dir)`` use ``np.savez`` / ``scipy.sparse.save_npz`` and JSON: no pickle.

Scores are computed in user blocks, so memory is ``block x n_items`` floats whatever the user count.
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


class Recommender:
    """Base class: subclasses implement ``fit`` and ``score`` (dense scores for a block of users)."""

    name: ClassVar[str] = "base"
    block_users: int = 4096

    def get_params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items()
                if not k.endswith("_") and not k.startswith("_") and k != "block_users"}

    # -- to implement
    def fit(self, user_items: sp.csr_matrix, items=None) -> "Recommender":
        raise NotImplementedError

    def score(self, users: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        raise NotImplementedError

    def item_vectors(self):
        """Item representation used by the default similar_items (rows are items)."""
        raise NotImplementedError

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
        for start in range(0, len(users), self.block_users):
            block = users[start:start + self.block_users]
            s = np.asarray(self.score(block, user_items), dtype=np.float32)
            mask_block(s, exclude[block] if exclude is not None else None, filter_items)
            i, v = topk(s, n)
            out_ids.append(i)
            out_scores.append(v)
        if not out_ids:
            return np.empty((0, n), np.int64), np.empty((0, n), np.float32)
        return np.vstack(out_ids), np.vstack(out_scores)

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
        for start in range(0, len(items), self.block_users):
            block = items[start:start + self.block_users]
            s = unit[block] @ unit.T
            s = np.asarray(s.todense() if sp.issparse(s) else s, dtype=np.float32)
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


def load_model(path: str | Path) -> Recommender:
    from models import REGISTRY

    name = json.loads((Path(path) / "params.json").read_text())["name"]
    return REGISTRY[name].load(path)
