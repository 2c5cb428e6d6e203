"""LightGCN (He et al., 2020): user and item embeddings propagated over the user-item graph, trained
with a softmax (or the paper's BPR) loss (PyTorch, models/deep.py).

* Graph: the bipartite adjacency ``[[0, R], [R', 0]]`` of the binarised user x item matrix ``R``,
  normalised ``D^-1/2 A D^-1/2`` (a sparse torch tensor). ``layers`` propagations ``E_{l+1} = A E_l``;
  a node's embedding is the mean of ``E_0 .. E_layers``; ``E_0`` is the only trained weight.
* Start (``init``): "svd", ``E_0`` from the truncated SVD of the binary matrix (users ``U S^1/2``,
  items ``V S^1/2``, entries' RMS ``init_scale``; models.deep.svd_start), a start that already ranks
  as a matrix factorisation, refined by training; or "random", N(0, 0.1) as in the paper. On
  Online Retail task new's NDCG@10: random 0.0879, svd 0.0935, with the learning rate 0.005 and
  L2 3e-3 (defaults since) 0.0962 (docs/benchmarks.md).
* Training: the softmax of the bought item over every item (the user's other items left out: on
  Online Retail task new's NDCG@10 0.0795 -> 0.0879), or BPR on (user, bought item, random item the
  user did not buy) triples (``loss``), in batches of ``batch_size``, Adam, L2 ``regularization``
  on the ``E_0`` rows of a batch. Early stopping on the validation score (``validation_metric``: AUC or DCG) of a random per-user
  validation share (``validation_fraction``; models.deep.holdout_split) with ``patience``; at most
  ``epochs`` epochs and ``budget_seconds`` of training (models.deep.fit_loop).
* Data above ``max_interactions`` interactions: trained on a sample of whole users
  (models.deep.sample_users); the final embeddings are one propagation of the trained ``E_0`` over
  every interaction (validation items included), users outside the sample starting from zero, so
  they get the mean of their items' embeddings through the graph.
* Serving: the final embeddings are numpy arrays (``user_factors_``, ``item_factors_``), scored as
  every factor model (models.factors: fused top-K in user blocks), no torch needed; saved as npz.
"""
from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from models.deep import (fit_loop, holdout_split, import_torch, others_mask, pick_device, sample_users,
                         seed_everything, svd_start, validation_auc)
from models.factors import FactorRecommender
from models.kernels import member
from models.registry import register

log = logging.getLogger(__name__)

LOSSES = ("softmax", "bpr")
INITS = ("svd", "random")

def normalized_adjacency(user_items: sp.csr_matrix) -> sp.csr_matrix:
    """``D^-1/2 A D^-1/2`` of the bipartite graph ``A = [[0, R], [R', 0]]`` (users first, then items;
    isolated nodes keep zero rows)."""
    r = user_items.tocsr().astype(np.float32)
    r.data = np.ones_like(r.data)
    a = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv = np.divide(1.0, np.sqrt(deg), out=np.zeros_like(deg), where=deg > 0).astype(np.float32)
    return (sp.diags(inv) @ a @ sp.diags(inv)).tocsr()


def _to_torch(torch, a: sp.csr_matrix, device: str):
    coo = a.tocoo()
    idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(coo.data.astype(np.float32)), a.shape,
                                   device=device, check_invariants=False).coalesce()


def _propagate(torch, adj, e0, layers: int):
    """Mean of ``E_0 .. E_layers``, ``E_{l+1} = adj @ E_l``."""
    out, e = e0, e0
    for _ in range(layers):
        e = torch.sparse.mm(adj, e)
        out = out + e
    return out / (layers + 1)


@register
class LightGCN(FactorRecommender):
    name = "lightgcn"

    def __init__(self, factors: int = 64, layers: int = 3, learning_rate: float = 0.005,
                 regularization: float = 3e-3, epochs: int = 50, batch_size: int = 4096,
                 budget_seconds: float = 600.0, patience: int = 5, validation_fraction: float = 0.1,
                 max_interactions: int = 2_000_000, loss: str = "softmax", full_softmax_items: int = 20_000,
                 negatives: int = 2048, validation_metric: str = "auc", init: str = "svd", init_scale: float = 0.1,
                 device: str = "auto", random_state: int = 42) -> None:
        self.init = init
        self.init_scale = init_scale
        self.validation_metric = validation_metric
        self.factors = factors
        self.layers = layers
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.epochs = epochs
        self.batch_size = batch_size
        self.budget_seconds = budget_seconds
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.max_interactions = max_interactions
        self.loss = loss
        self.full_softmax_items = full_softmax_items
        self.negatives = negatives
        self.device = device
        self.random_state = random_state

    def fit(self, user_items: sp.csr_matrix, items=None) -> LightGCN:
        if self.loss not in LOSSES:
            raise ValueError(f"lightgcn: loss must be one of {LOSSES}, not {self.loss!r}")
        if self.init not in INITS:
            raise ValueError(f"lightgcn: init must be one of {INITS}, not {self.init!r}")
        torch = import_torch()
        device = pick_device(self.device)
        rng = seed_everything(self.random_state, self.num_threads, device)
        x = user_items.tocsr().astype(np.float32)
        x.data = np.ones_like(x.data)
        n_users, n_items = x.shape
        sample, kept = sample_users(x, self.max_interactions, self.random_state)
        if len(kept) < n_users:
            log.info("lightgcn: %d interactions > max_interactions %d: trained on %d of %d users (a random "
                     "sample of whole users)", x.nnz, self.max_interactions, len(kept), n_users)
        train, valid = holdout_split(sample, self.validation_fraction, self.random_state)
        e0 = torch.nn.Parameter(torch.from_numpy(self._start(train)).to(device))
        self.fit_summary_ = {**self._train(torch, e0, train, valid, rng, device), "users_trained": len(kept)}
        with torch.no_grad():
            start = e0.detach().clone()
            trained = np.zeros(n_users, bool)
            trained[kept] = True
            start[:n_users][torch.from_numpy(~trained).to(device)] = 0.0
            final = _propagate(torch, _to_torch(torch, normalized_adjacency(x), device), start, self.layers)
            final = final.cpu().numpy()
        self.user_factors_ = np.ascontiguousarray(final[:n_users], dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(final[n_users:], dtype=np.float32)
        return self

    def _start(self, train: sp.csr_matrix) -> np.ndarray:
        """``E_0``: N(0, 0.1) ("random", the paper's), or ("svd") the truncated SVD of the binary
        training matrix ``R ~ U S V'``, users ``U S^1/2`` and items ``V S^1/2``, scaled so that the
        entries' root mean square is ``init_scale`` (the ranking is the same at any scale)."""
        if self.init == "random":
            rng = np.random.default_rng(int(self.random_state))
            return (rng.standard_normal((sum(train.shape), int(self.factors))) * 0.1).astype(np.float32)
        return np.vstack(svd_start(train, int(self.factors), float(self.init_scale), int(self.random_state)))

    def _loss(self, torch, emb, u, i, j, n_users: int, n_items: int, rng: np.random.Generator,
              train: sp.csr_matrix):
        """BPR: -log sigmoid(score(u, i) - score(u, j)). Softmax: cross-entropy of the bought item over
        every item (up to ``full_softmax_items`` items; the user's other training items left out of
        the denominator: they are not negatives), else over it and ``negatives`` random items shared
        by the batch; it converges in far fewer epochs than BPR."""
        if self.loss == "bpr":
            return torch.nn.functional.softplus(-(emb[u] * (emb[i] - emb[j])).sum(dim=1)).mean()
        items = emb[n_users:]
        if n_items <= self.full_softmax_items:
            mask = others_mask(train, u.cpu().numpy(), (i - n_users).cpu().numpy())
            logits = (emb[u] @ items.T).masked_fill(torch.from_numpy(mask).to(emb.device), float("-inf"))
            return torch.nn.functional.cross_entropy(logits, i - n_users)
        neg = torch.from_numpy(rng.integers(0, n_items, int(self.negatives))).to(emb.device)
        logits = torch.cat([(emb[u] * emb[i]).sum(-1, keepdim=True), emb[u] @ items[neg].T], dim=1)
        logits[:, 1:] = logits[:, 1:].masked_fill(neg.unsqueeze(0) == (i - n_users).unsqueeze(1), float("-inf"))
        return torch.nn.functional.cross_entropy(logits, torch.zeros(len(u), dtype=torch.long, device=emb.device))

    def _train(self, torch, e0, train: sp.csr_matrix, valid: sp.csr_matrix, rng: np.random.Generator,
               device: str) -> dict:
        """BPR epochs over ``train`` under models.deep.fit_loop; ``e0`` ends at its best epoch."""
        n_users, n_items = train.shape
        adj = _to_torch(torch, normalized_adjacency(train), device)
        pos_u = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(train.indptr))
        pos_i = train.indices.astype(np.int64)
        pos_keys = np.sort(pos_u * n_items + pos_i)
        opt = torch.optim.Adam([e0], lr=self.learning_rate)
        batch = max(1, int(self.batch_size))

        def epoch_fn(epoch: int, time_up) -> float | None:
            if not len(pos_u):
                return None
            order = rng.permutation(len(pos_u))
            neg = _negatives(rng, pos_u[order], pos_keys, n_items)
            total, count = 0.0, 0
            for s in range(0, len(order), batch):
                if count and time_up():
                    break
                u = torch.from_numpy(pos_u[order[s:s + batch]]).to(device)
                i = torch.from_numpy(pos_i[order[s:s + batch]] + n_users).to(device)
                j = torch.from_numpy(neg[s:s + batch] + n_users).to(device)
                emb = _propagate(torch, adj, e0, self.layers)
                reg = (e0[u].pow(2).sum() + e0[i].pow(2).sum() + e0[j].pow(2).sum()) / (2 * len(u))
                loss = self._loss(torch, emb, u, i, j, n_users, n_items, rng, train) + self.regularization * reg
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(u)
                count += len(u)
            return total / max(count, 1)

        def validate() -> float:
            with torch.no_grad():
                emb = _propagate(torch, adj, e0, self.layers).cpu().numpy()
            return validation_auc(emb[:n_users], emb[n_users:], train, valid, metric=self.validation_metric)

        def restore(state) -> None:
            with torch.no_grad():
                e0.copy_(state)

        return fit_loop(self.name, epoch_fn, validate if valid.nnz else None, int(self.epochs),
                        float(self.budget_seconds), int(self.patience), log,
                        snapshot=lambda: e0.detach().clone(), restore=restore)


def _negatives(rng: np.random.Generator, users: np.ndarray, pos_keys: np.ndarray, n_items: int,
               tries: int = 5) -> np.ndarray:
    """A random item per user of ``users``, redrawn (up to ``tries`` times) where the user bought it."""
    neg = rng.integers(0, n_items, len(users))
    bad = np.flatnonzero(member(users * n_items + neg, pos_keys))
    for _ in range(tries):
        if not len(bad):
            break
        neg[bad] = rng.integers(0, n_items, len(bad))
        bad = bad[member(users[bad] * n_items + neg[bad], pos_keys)]
    return neg
