"""Next-item models for anonymous sessions (issue 16): what a visitor is likely to want next, from the
items of the session so far (most recent last). Sessions come as ``(indptr, items)`` (features.sessions).

Two baselines, vectorised over batches of sessions with sparse matrices (memory bounded by the batch):

* ``SessionKNN`` (V-SKNN, Ludewig & Jannach 2018): the ``k`` past sessions most similar to the current
  one (cosine over item sets, the current session's items weighted linearly by position, so the
  latest counts most), each voting for its items with its similarity.
* ``ItemCooccurrence``: item-kNN on co-occurrence within sessions (cosine of the items' session
  vectors) from the session's last item: the classic "others also viewed" baseline.

Both keep their state as sparse arrays and save to npz + JSON (no pickle). The session ``rank`` of a
model is judged by leave-last-out HR@K and MRR@K (``hit_rate_mrr``).
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from models.base import unit_rows
from models.kernels import NO_ITEM, sparse_topk


def session_matrix(indptr: np.ndarray, items: np.ndarray, n_items: int, weights: np.ndarray | None = None
                   ) -> sp.csr_matrix:
    """Sessions x items (CSR); repeated items of a session keep their largest weight (1 by default)."""
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    vals = np.ones(len(items), np.float32) if weights is None else weights.astype(np.float32)
    m = sp.coo_matrix((vals, (rows, items)), shape=(len(indptr) - 1, n_items)).tocsr()
    if weights is None:
        m.data[:] = 1.0  # duplicates were summed
    else:
        m.sum_duplicates()
    return m


def position_weights(indptr: np.ndarray) -> np.ndarray:
    """Per item of each session: its position 1..L divided by L (the latest item weighs 1)."""
    lengths = np.diff(indptr)
    pos = np.arange(indptr[-1]) - np.repeat(indptr[:-1], lengths) + 1
    return (pos / np.repeat(np.maximum(lengths, 1), lengths)).astype(np.float32)


def _unit_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    """``models.base.unit_rows``, kept in float32 (session scores are float32)."""
    return unit_rows(m).astype(np.float32)


def _row_topk(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each row (ties: lower column first)."""
    ids, vals = sparse_topk(m, None, k, m.shape[1], fill=False)
    keep = ids != NO_ITEM
    rows = np.repeat(np.arange(ids.shape[0]), keep.sum(axis=1))
    return sp.csr_matrix((vals[keep], (rows, ids[keep])), shape=m.shape)


# Item pairs of one block of the co-occurrence product, at most (an estimate). At ten million events
# (bench-scale) the surfaces step peaked at 6.24 GiB with 50 million, 3.47 GiB with 10 million (and ran faster).
MAX_BLOCK_PAIRS = 10_000_000


def item_blocks(item_unit: sp.csr_matrix, unit_t: sp.csr_matrix, max_pairs: int) -> list[tuple[int, int]]:
    """Row ranges of ``item_unit`` (items x sessions) whose product with ``unit_t`` (sessions x items)
    has at most about ``max_pairs`` entries before merging: an item's row costs the summed lengths
    of its sessions (an upper bound of its co-occurring items); one item per block at least."""
    csum = np.zeros(item_unit.nnz + 1, np.int64)
    np.cumsum(np.diff(unit_t.indptr)[item_unit.indices], out=csum[1:])
    upto = csum[item_unit.indptr]  # the cost of the rows before each row (and of all rows, last)
    n = item_unit.shape[0]
    out, lo = [], 0
    while lo < n:  # a loop over blocks, not items: each block ends where its cost would pass max_pairs
        hi = max(int(np.searchsorted(upto, upto[lo] + max_pairs, side="right")) - 1, lo + 1)
        out.append((lo, min(hi, n)))
        lo = min(hi, n)
    return out


class SessionModel:
    """``fit(indptr, items, n_items)``, ``recommend(q_indptr, q_items, n, filter_mask=None)`` ->
    ``(ids, scores)`` of shape ``(sessions, n)`` (``NO_ITEM`` / -inf where nothing is left), items already
    in the session and items where ``filter_mask`` (one flag per item) is True excluded; ``save`` / ``load``."""

    name: ClassVar[str] = "session"
    block_sessions: int = 1024

    def fit(self, indptr: np.ndarray, items: np.ndarray, n_items: int) -> SessionModel:
        raise NotImplementedError

    def _scores(self, q: sp.csr_matrix, last: np.ndarray) -> sp.csr_matrix:
        raise NotImplementedError

    def recommend(self, q_indptr: np.ndarray, q_items: np.ndarray, n: int, filter_mask: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        n_items = self.n_items_
        q_all = session_matrix(q_indptr, q_items, n_items, position_weights(q_indptr))
        lengths = np.diff(q_indptr)
        last = np.where(lengths > 0, q_items[np.maximum(q_indptr[1:] - 1, 0)] if len(q_items) else -1, -1)
        out_ids, out_scores = [], []
        for lo in range(0, q_all.shape[0], self.block_sessions):
            hi = min(lo + self.block_sessions, q_all.shape[0])
            q = q_all[lo:hi]
            ids, vals = sparse_topk(self._scores(q, last[lo:hi]).tocsr(), None, n, n_items, exclude=q,
                                    filter_mask=filter_mask, fill=False)
            out_ids.append(ids)
            out_scores.append(vals)
        if not out_ids:
            return np.empty((0, n), np.int64), np.empty((0, n), np.float32)
        return np.vstack(out_ids), np.vstack(out_scores)

    # -- persistence: params.json + model.npz (sparse parts as CSR arrays), no pickle
    def params(self) -> dict:
        return {}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "params.json").write_text(json.dumps({"name": self.name, "params": self.params(),
                                                       "n_items": int(self.n_items_)}))
        np.savez(path / "model.npz", **self._arrays())
        return path

    def _arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as named arrays for model.npz (here: ``state_`` as CSR parts)."""
        m = self.state_
        return {"data": m.data, "indices": m.indices, "indptr": m.indptr, "shape": np.array(m.shape)}

    def _set_arrays(self, z: dict[str, np.ndarray]) -> None:
        self.state_ = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))

    @classmethod
    def load(cls, path: str | Path) -> SessionModel:
        path = Path(path)
        meta = json.loads((path / "params.json").read_text())
        model = session_model_class(meta["name"])(**meta["params"])
        model.n_items_ = meta["n_items"]
        with np.load(path / "model.npz", allow_pickle=False) as z:
            model._set_arrays({k: z[k] for k in z.files})
        return model


class SessionKNN(SessionModel):
    name = "session_knn"

    def __init__(self, k: int = 100, max_sessions: int = 200_000):
        self.k = k
        self.max_sessions = max_sessions

    def params(self) -> dict:
        return {"k": self.k, "max_sessions": self.max_sessions}

    def fit(self, indptr, items, n_items):
        # The newest ``max_sessions`` sessions (they come in time order): older habits age out, and the
        # neighbour search stays bounded on a large shop.
        start = max(len(indptr) - 1 - self.max_sessions, 0)
        ip = indptr[start:] - indptr[start]
        self.state_ = session_matrix(ip, items[indptr[start]:], n_items)
        self._unit = _unit_rows(self.state_)
        self.n_items_ = n_items
        return self

    def _scores(self, q, last):
        unit = getattr(self, "_unit", None)
        if unit is None:
            unit = self._unit = _unit_rows(self.state_)
        sim = _row_topk((_unit_rows(q) @ unit.T).tocsr(), self.k)
        return sim @ self.state_


class ItemCooccurrence(SessionModel):
    """``max_session_items``: sessions with more items are left out of the co-occurrence (a crawler, a
    shared device, a data glitch: not one shopper's visit). A session of L items adds L^2 pairs, so a
    few such sessions outweighed everything else: at thirty million demo events, sessions of more than
    2,000 items (39 of 1.2 million, the longest 130,000) made 99.5% of the pairs and the fit took 241 s.
    Online Retail's longest invoice has 1,114 lines."""
    name = "item_cooccurrence"

    def __init__(self, neighbours: int = 200, max_session_items: int = 2000):
        self.neighbours = neighbours
        self.max_session_items = max_session_items

    def params(self) -> dict:
        return {"neighbours": self.neighbours, "max_session_items": self.max_session_items}

    def fit(self, indptr, items, n_items):
        lengths = np.diff(indptr)
        short = lengths <= self.max_session_items if self.max_session_items else np.ones(len(lengths), bool)
        if not short.all():
            items = items[np.repeat(short, lengths)]
            indptr = np.concatenate([[0], np.cumsum(lengths[short])])
        s = session_matrix(indptr, items, n_items)
        item_unit = _unit_rows(s.T.tocsr())
        # The item x item cosines in blocks of items, each cut to its top ``neighbours`` at once: the
        # whole product can hold billions of pairs on a large shop (one block's is bounded).
        unit_t = item_unit.T.tocsr()
        parts = []
        for lo, hi in item_blocks(item_unit, unit_t, MAX_BLOCK_PAIRS):
            sim = (item_unit[lo:hi] @ unit_t).tocsr()
            sim.setdiag(0, k=lo)  # an item is not its own neighbour
            sim.eliminate_zeros()
            parts.append(_row_topk(sim, self.neighbours))
        self.state_ = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, n_items), dtype=np.float32)
        self.n_items_ = n_items
        return self

    def _scores(self, q, last):
        rows = np.flatnonzero(last >= 0)
        pick = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, last[rows])), shape=(len(last), self.n_items_))
        return pick @ self.state_


# Models in modules of their own (models.session_gru: torch) add themselves on import; ``load`` imports
# ``models.<name>`` for a name it does not know yet.
SESSION_MODELS: dict[str, type[SessionModel]] = {m.name: m for m in (SessionKNN, ItemCooccurrence)}


def session_model_class(name: str) -> type[SessionModel]:
    """The session model class ``name``; a model in a module of its own (``models/<name>.py``, e.g. the
    PyTorch ``session_gru``) registers when imported, so it is imported on first use."""
    if name not in SESSION_MODELS:
        try:
            importlib.import_module(f"models.{name}")
        except ModuleNotFoundError:
            pass
    if name not in SESSION_MODELS:
        raise ValueError(f"unknown session model {name!r}; known: {sorted(SESSION_MODELS)} and session_gru")
    return SESSION_MODELS[name]


def hit_rate_mrr(ids: np.ndarray, targets: np.ndarray, k: int) -> tuple[float, float]:
    """Leave-last-out HR@k (share of sessions whose held-out next item is in the top k) and MRR@k
    (mean of 1 / its rank, 0 when outside the top k)."""
    if not len(targets):
        return 0.0, 0.0
    top = ids[:, :k] == targets[:, None]
    hit = top.any(axis=1)
    rank = np.argmax(top, axis=1) + 1
    return float(hit.mean()), float(np.where(hit, 1.0 / rank, 0.0).mean())
