"""The two-tower model's networks and forward passes (models/two_tower.py): the weights (``build``)
and ``Batches``, the towers over numpy indices (a training batch, every item, every user)."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from features.sequences import PURCHASE
from models.deep import month_of

CHUNK = 65_536  # items or users per no-grad forward pass


def build(torch, n_items: int, n_terms: int, factors: int, n_countries: int = 0, item_bias: bool = False,
          months: bool = False):
    """The towers' weights: item ids (zero), term embeddings (when there is text), countries (zero;
    0 = unknown), with ``months`` the month of the year asked about (zero; 0 = unknown), two
    residual MLPs."""
    nn = torch.nn
    mods = {"country": nn.Embedding(n_countries + 1, factors, padding_idx=0),"item_id": nn.Embedding(n_items, factors),
            "item_mlp": nn.Sequential(nn.Linear(factors, factors), nn.ReLU(), nn.Linear(factors, factors)),
            "user_mlp": nn.Sequential(nn.Linear(factors, factors), nn.ReLU(), nn.Linear(factors, factors))}
    if n_terms:
        mods["terms"] = nn.EmbeddingBag(n_terms, factors, mode="sum")
        nn.init.normal_(mods["terms"].weight, std=1.0 / np.sqrt(factors))
    if item_bias:
        mods["item_bias"] = nn.Embedding(n_items, 1)
    if months:
        mods["month"] = nn.Embedding(13, factors, padding_idx=0)
    net = nn.ModuleDict(mods)
    if months:
        nn.init.zeros_(net["month"].weight)
    if item_bias:
        nn.init.zeros_(net["item_bias"].weight)
    nn.init.zeros_(net["item_id"].weight)
    nn.init.zeros_(net["country"].weight)
    return net


def pair_months(user_items: sp.csr_matrix, seq) -> sp.csr_matrix:
    """``user_items``' pattern with, per (user, item), the month of the year (1-12) of the user's
    newest purchase of the item in ``seq`` (features.sequences.UserSequences; its newest event of
    the item where the data has no purchases), 0 where ``seq`` does not hold it."""
    x = user_items.tocsr()
    out = sp.csr_matrix((np.zeros(x.nnz, np.int64), x.indices, x.indptr), shape=x.shape)
    if seq is None or not len(seq.items) or not x.nnz:
        return out
    owner = seq.owners()
    keep = seq.kinds == PURCHASE
    keep = keep if keep.any() else np.ones(len(keep), bool)
    key = owner[keep] * x.shape[1] + seq.items[keep]
    when = seq.times[keep]
    order = np.lexsort((when, key))  # by pair, newest last
    key, when = key[order], when[order]
    last = np.r_[key[1:] != key[:-1], True]
    key, when = key[last], when[last]
    rows = np.repeat(np.arange(x.shape[0], dtype=np.int64), np.diff(x.indptr))
    mine = rows * x.shape[1] + x.indices
    at = np.minimum(np.searchsorted(key, mine), len(key) - 1)
    found = key[at] == mine
    out.data[found] = month_of(when[at[found]])
    return out


def residual(torch, mlp, h):
    return torch.nn.functional.normalize(h + mlp(h), dim=1)


class Batches:
    """The towers' forward passes over numpy indices: a training batch, every item, every user."""

    def __init__(self, torch, net, content: sp.csr_matrix, train: sp.csr_matrix, device: str,
                 countries: np.ndarray, interests: sp.csr_matrix) -> None:
        self.torch, self.net, self.content, self.train, self.device = torch, net, content, train, device
        self.bias_trained = np.zeros(train.shape[1], bool)  # set by TwoTower._train
        self.countries, self.interests = countries, interests
        self.now = 0  # the month of the year the lists are for (with a "month" embedding)

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

    def user_tower(self, means, rows: np.ndarray, months: np.ndarray | None = None):
        """The user tower over the mean of the user's items plus the user's country, stated
        interests (their terms' embeddings, weighted by TF-IDF) and the month asked about (per row;
        None: ``self.now``, the month the lists are for)."""
        t = self.torch
        h = means + self.net["country"](t.from_numpy(self.countries[rows]).to(self.device))
        if "month" in self.net:
            months = np.full(len(rows), self.now, np.int64) if months is None else months
            h = h + self.net["month"](t.from_numpy(np.asarray(months, np.int64)).to(self.device))
        if "terms" in self.net and self.interests.nnz:
            c = self.interests[rows]
            h = h + self.net["terms"](t.from_numpy(c.indices.astype(np.int64)).to(self.device),
                                      t.from_numpy(c.indptr[:-1].astype(np.int64)).to(self.device),
                                      per_sample_weights=t.from_numpy(c.data.astype(np.float32)).to(self.device))
        return residual(t, self.net["user_mlp"], h)

    def batch(self, users: np.ndarray, targets: np.ndarray, rng: np.random.Generator, id_dropout: float,
              full: bool = False, months: np.ndarray | None = None):
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
        return self.user_tower(t.sparse.mm(mean, emb), users, months), \
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
