"""The two-tower model's networks and forward passes (models/two_tower.py): the weights (``build``)
and ``Batches``, the towers over numpy indices (a training batch, every item, every user)."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

CHUNK = 65_536  # items or users per no-grad forward pass


def build(torch, n_items: int, n_terms: int, factors: int, n_countries: int = 0, item_bias: bool = False):
    """The towers' weights: item ids (zero), term embeddings (when there is text), countries (zero;
    0 = unknown), two residual MLPs."""
    nn = torch.nn
    mods = {"country": nn.Embedding(n_countries + 1, factors, padding_idx=0),"item_id": nn.Embedding(n_items, factors),
            "item_mlp": nn.Sequential(nn.Linear(factors, factors), nn.ReLU(), nn.Linear(factors, factors)),
            "user_mlp": nn.Sequential(nn.Linear(factors, factors), nn.ReLU(), nn.Linear(factors, factors))}
    if n_terms:
        mods["terms"] = nn.EmbeddingBag(n_terms, factors, mode="sum")
        nn.init.normal_(mods["terms"].weight, std=1.0 / np.sqrt(factors))
    if item_bias:
        mods["item_bias"] = nn.Embedding(n_items, 1)
    net = nn.ModuleDict(mods)
    if item_bias:
        nn.init.zeros_(net["item_bias"].weight)
    nn.init.zeros_(net["item_id"].weight)
    nn.init.zeros_(net["country"].weight)
    return net


def residual(torch, mlp, h):
    return torch.nn.functional.normalize(h + mlp(h), dim=1)


class Batches:
    """The towers' forward passes over numpy indices: a training batch, every item, every user."""

    def __init__(self, torch, net, content: sp.csr_matrix, train: sp.csr_matrix, device: str,
                 countries: np.ndarray, interests: sp.csr_matrix) -> None:
        self.torch, self.net, self.content, self.train, self.device = torch, net, content, train, device
        self.bias_trained = np.zeros(train.shape[1], bool)  # set by TwoTower._train
        self.countries, self.interests = countries, interests

    def items(self, idx: np.ndarray, keep_id: np.ndarray):
        """Item-tower embeddings of items ``idx``; ``keep_id``: 1 where the id embedding counts."""
        t = self.torch
        h = self.net["item_id"](t.from_numpy(idx).to(self.device))
        h = h * t.from_numpy(keep_id.astype(np.float32)).to(self.device)[:, None]
        if "terms" in self.net:
            c = self.content[idx]
            h = h + self.net["terms"](t.from_numpy(c.indices.astype(np.int64)).to(self.device),
                                      t.from_numpy(c.indptr[:-1].astype(np.int64)).to(self.device),
                                      per_sample_weights=t.from_numpy(c.data.astype(np.float32)).to(self.device))
        return residual(t, self.net["item_mlp"], h)

    def user_tower(self, means, rows: np.ndarray):
        """The user tower over the mean of the user's items plus the user's country and stated
        interests (their terms' embeddings, weighted by TF-IDF)."""
        t = self.torch
        h = means + self.net["country"](t.from_numpy(self.countries[rows]).to(self.device))
        if "terms" in self.net and self.interests.nnz:
            c = self.interests[rows]
            h = h + self.net["terms"](t.from_numpy(c.indices.astype(np.int64)).to(self.device),
                                      t.from_numpy(c.indptr[:-1].astype(np.int64)).to(self.device),
                                      per_sample_weights=t.from_numpy(c.data.astype(np.float32)).to(self.device))
        return residual(t, self.net["user_mlp"], h)

    def batch(self, users: np.ndarray, targets: np.ndarray, rng: np.random.Generator, id_dropout: float,
              full: bool = False):
        """(user embeddings, item embeddings) of a batch of pairs: each user over the user's training
        items but the target, each item's id dropped with probability ``id_dropout``; the items are
        the targets, or with ``full`` every item (one item-tower pass of the catalog)."""
        t = self.torch
        hist = self.train[users].tocsr()
        rows = np.repeat(np.arange(len(users)), np.diff(hist.indptr))
        w = np.where(hist.indices == targets[rows], 0.0, hist.data).astype(np.float32)
        if full:
            uniq = np.arange(self.content.shape[0], dtype=np.int64)
            inv = hist.indices.astype(np.int64)
        else:
            uniq, inv = np.unique(np.concatenate([hist.indices.astype(np.int64), targets]), return_inverse=True)
        emb = self.items(uniq, rng.random(len(uniq)) >= id_dropout)
        norm = np.bincount(rows, weights=w, minlength=len(users))
        w = w / np.maximum(norm[rows], 1e-12)
        mean = t.sparse_coo_tensor(t.from_numpy(np.vstack([rows, inv[:len(rows)]]).astype(np.int64)),
                                   t.from_numpy(w.astype(np.float32)), (len(users), len(uniq)),
                                   device=self.device, check_invariants=False).coalesce()
        return self.user_tower(t.sparse.mm(mean, emb), users), \
            emb if full else emb[t.from_numpy(inv[len(rows):]).to(self.device)]

    def all_items(self, seen: np.ndarray) -> np.ndarray:
        """Every item's embedding (no dropout; ids of the ``seen`` items only), float32."""
        n = self.content.shape[0]
        out = [self.items(np.arange(s, min(s + CHUNK, n), dtype=np.int64), seen[s:s + CHUNK]).cpu().numpy()
               for s in range(0, n, CHUNK)]
        return np.ascontiguousarray(np.vstack(out) if out else np.zeros((0, 1)), dtype=np.float32)

    def users(self, user_items: sp.csr_matrix, item_vecs: np.ndarray) -> np.ndarray:
        """Every user's embedding: the user tower over the weighted mean of the user's item vectors."""
        x = user_items.tocsr()
        norm = np.asarray(x.sum(axis=1)).ravel()
        means = sp.diags(np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)) @ x @ item_vecs
        means = np.asarray(means, dtype=np.float32)
        out = [self.user_tower(self.torch.from_numpy(means[s:s + CHUNK]).to(self.device),
                               np.arange(s, min(s + CHUNK, len(means)))).cpu().numpy()
               for s in range(0, len(means), CHUNK)]
        return np.ascontiguousarray(np.vstack(out) if out else np.zeros((0, item_vecs.shape[1])), dtype=np.float32)
