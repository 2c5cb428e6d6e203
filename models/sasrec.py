"""SASRec-style sequence transformer (Kang and McAuley, 2018; PyTorch, models/deep.py): causal
self-attention over each user's events in time order, trained to predict the next purchase.

* Input (features.sequences.UserSequences, passed to ``fit`` as ``sequences``): per user the newest
  ``max_len`` events, each embedded as item + event type (view, cart, purchase, return) + time gap
  since the user's previous event (``GAP_BUCKETS`` log2 buckets of minutes) + position (counted
  back from the newest event of the window, so a window is as wide as its history), then
  ``layers`` pre-norm transformer blocks with a causal mask (a position sees itself and earlier
  events; padding is never attended to). Item embeddings are shared with the output layer.
* Training: at each position, the softmax over all items (a full softmax up to
  ``full_softmax_items`` items, above it ``negatives`` shared random items per batch) of the item
  to predict (``target``): the user's next event ("next_event", as SASRec), or an item of the
  user's next basket drawn at random each epoch ("next_basket": a basket is the user's events at
  one time, to the second: an order's lines), with ``horizon_days`` > 0 any of the user's events in
  that many days after it. Where the data has purchases, only purchase targets count. Adam. Each
  epoch a user contributes one window of ``max_len`` events: the newest, or with probability 1/2
  one ending at a random earlier event (more of a long history is seen over the epochs). On Online
  Retail "next_event" does best (docs/benchmarks.md): an order's lines follow each other in the
  file, so the next line is the closest co-purchase signal.
* The time asked about (``query_time``): each position's output plus two learnt embeddings of
  when its target happens, its month of the year and the hours since the user's last event
  (``QUERY_GAPS`` log2 buckets; 0 within an order, since an order's lines share a time). Served at
  the data's newest event (the night's cut-off: the lists are for the days after it). Without it
  the last output predicts the next line of an order; with it, the next order of a user who has
  been away, in this season: on Online Retail task new's NDCG@10 0.0623 -> 0.0920 (the month alone
  0.0800, the gap alone 0.0729), docs/benchmarks.md.
* Early stopping: a random ``validation_fraction`` (at most ``VALIDATION_USERS``) of the users
  with a purchase after their first event lose their last purchase from training (with
  "next_basket", that purchase's whole basket); the score is the mean AUC of its (first) item's
  rank from the preceding events (models.deep.fit_loop: ``epochs``, ``budget_seconds``, ``patience``). Above
  ``max_interactions`` events, training uses a random sample of whole users (the sample's size is
  logged); every user is still encoded at the end.
* Serving: each user's vector is the encoder's last output over the user's newest events (all of
  them, the validation purchase included) plus the query-time embeddings at the cut-off, the item
  vectors are the item embeddings: a factor model (models.factors: numpy, fused top-K, no torch at
  serving). A user without events has a zero vector
  (the pipeline's fallbacks serve them). Saved as npz (the encoder weights through state_to_arrays).
"""
from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from features.sequences import PURCHASE, UserSequences
from models.deep import (arrays_to_state, fit_loop, import_torch, month_of, pick_device, seed_everything,
                         state_to_arrays)
from models.factors import FactorRecommender
from models.registry import register

log = logging.getLogger(__name__)

NET = "net."  # prefix of the encoder weights among the saved arrays
GAP_BUCKETS = 16  # log2 buckets of the minutes since the previous event (0 = padding / first event)
N_KINDS = 5  # padding + the four event types
TARGETS = ("next_event", "next_basket")
QUERY_GAPS = 18  # log2 buckets of the hours from the user's last event to the time asked about
VALIDATION_USERS = 2000  # users whose last purchase is held out for early stopping, at most


def gap_buckets(times: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Per event, 1 + min(floor(log2(1 + minutes since the user's previous event)), GAP_BUCKETS - 2);
    a user's first event gets 1."""
    gaps = np.zeros(len(times), np.float64)
    if len(times) > 1:
        gaps[1:] = np.maximum(np.diff(times.astype(np.float64)), 0) / 60.0
    gaps[indptr[:-1][np.diff(indptr) > 0]] = 0.0
    return (1 + np.minimum(np.floor(np.log2(1.0 + gaps)), GAP_BUCKETS - 2)).astype(np.int64)


def _windows(seq: UserSequences, users: np.ndarray, ends: np.ndarray, length: int, gaps: np.ndarray):
    """Left-padded (len(users), width) arrays of items + 1, kinds + 1, gap buckets and event
    indexes (-1) of the events ``[max(start, end - length), end)`` of each user (0 = padding);
    ``width`` is the longest of these windows (at most ``length``): positions count from the end
    (_encode), so dropping columns of padding changes no output and short histories cost less."""
    starts = np.maximum(seq.indptr[users], ends - length)
    n = ends - starts
    length = int(min(length, max(int(n.max(initial=0)), 1)))  # no column of padding only
    pos = np.arange(length)[None, :] - (length - n)[:, None]  # offset into the window; < 0 is padding
    valid = pos >= 0
    src = np.where(valid, starts[:, None] + pos, -1)
    at = np.maximum(src, 0)
    items = np.where(valid, seq.items[at].astype(np.int64) + 1, 0)
    kinds = np.where(valid, seq.kinds[at].astype(np.int64) + 1, 0)
    gap = np.where(valid, gaps[at], 0)
    return items, kinds, gap, src


def baskets(seq: UserSequences, target: str = "next_basket", horizon_s: float = 0.0
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event: the first index of its basket, and (first index, length) of the events it is
    trained to predict (TARGETS): the user's next event ("next_event"), or the user's next basket
    ("next_basket"), and then with ``horizon_s`` > 0 every later event up to that many seconds
    after it. A basket is a user's events at one time (to the second: an order's lines); length 0
    after the user's last event."""
    n = len(seq.items)
    owner = seq.owners()
    new = np.ones(n, bool)
    new[1:] = (owner[1:] != owner[:-1]) | (seq.times[1:] != seq.times[:-1])
    bid = np.cumsum(new) - 1
    bstart = np.flatnonzero(new)
    bend = np.r_[bstart[1:], n]
    nxt = np.minimum(bid + 1, max(len(bstart) - 1, 0))
    ok = (bid + 1 < len(bstart)) & (owner[bstart[nxt]] == owner) if n else np.zeros(0, bool)
    if not n:
        return (np.zeros(0, np.int64),) * 3
    first, end = np.where(ok, bstart[nxt], 0), np.where(ok, bend[nxt], 0)
    if target == "next_event":
        ok = np.r_[owner[1:] == owner[:-1], False]
        first, end = np.where(ok, np.arange(n) + 1, 0), np.where(ok, np.arange(n) + 2, 0)
    if horizon_s > 0:
        t = seq.times - seq.times.min()
        key = owner * (int(t.max()) + int(horizon_s) + 2) + t
        reach = np.searchsorted(key, key + int(horizon_s), side="right")
        end = np.where(ok, np.maximum(end, reach), 0)
    return bstart[bid], first, end - first


def query_codes(when: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The time asked about, as embedding codes: (its month of the year, 1-12; 1 + min(floor(log2(1 +
    hours since the user's last event)), QUERY_GAPS - 2))."""
    month = month_of(when)
    hours = np.maximum(np.asarray(when, np.float64) - np.asarray(last, np.float64), 0) / 3600.0
    return month, (1 + np.minimum(np.floor(np.log2(1.0 + hours)), QUERY_GAPS - 2)).astype(np.int64)


def _build(torch, n_items: int, factors: int, layers: int, heads: int, max_len: int, dropout: float,
           query_time: bool = False):
    nn = torch.nn
    block = nn.TransformerEncoderLayer(factors, heads, dim_feedforward=2 * factors, dropout=dropout,
                                       batch_first=True, norm_first=True)
    net = nn.ModuleDict({"item": nn.Embedding(n_items + 1, factors, padding_idx=0),
                         "kind": nn.Embedding(N_KINDS, factors, padding_idx=0),
                         "gap": nn.Embedding(GAP_BUCKETS, factors, padding_idx=0),
                         "pos": nn.Embedding(max_len, factors),
                         "encoder": nn.TransformerEncoder(block, layers, enable_nested_tensor=False),
                         "norm": nn.LayerNorm(factors),
                         "drop": nn.Dropout(dropout)})
    if query_time:  # the time asked about: zero at the start, learnt
        net["q_month"] = nn.Embedding(13, factors, padding_idx=0)
        net["q_gap"] = nn.Embedding(QUERY_GAPS, factors, padding_idx=0)
        nn.init.zeros_(net["q_month"].weight)
        nn.init.zeros_(net["q_gap"].weight)
    nn.init.normal_(net["item"].weight, std=1.0 / np.sqrt(factors))
    with torch.no_grad():
        net["item"].weight[0].zero_()
    return net


def _encode(torch, net, items, kinds, gaps, heads: int):
    """Outputs (batch, length, factors) of left-padded windows."""
    b, length = items.shape
    pos = torch.arange(length - 1, -1, -1, device=items.device)  # events before the window's last one
    h = net["item"](items) * np.sqrt(net["item"].embedding_dim)
    h = h + net["kind"](kinds) + net["gap"](gaps) + net["pos"](pos)
    pad = items == 0
    h = net["drop"](h) * (~pad).unsqueeze(-1)
    # Causal mask where padding keys are hidden too; each position always sees itself (no empty row).
    future = torch.triu(torch.ones(length, length, dtype=torch.bool, device=items.device), diagonal=1)
    hide = future.unsqueeze(0) | pad.unsqueeze(1)
    hide = hide & ~torch.eye(length, dtype=torch.bool, device=items.device).unsqueeze(0)
    mask = torch.zeros(hide.shape, dtype=h.dtype, device=items.device).masked_fill(hide, float("-inf"))
    mask = mask.repeat_interleave(heads, dim=0)
    return net["norm"](net["encoder"](h, mask=mask))


@register
class SASRec(FactorRecommender):
    name = "sasrec"
    uses_sequences = True
    # The shared contract's toy (8 users, 3 items each, no order) holds no sequence to learn: the
    # model ranks unseen items from the history's order, tested on planted orders in
    # tests/models/test_sasrec.py, and its item vectors are output embeddings, not a similarity.
    ranks_unseen_by_history = False
    item_similarity = False

    def __init__(self, factors: int = 128, layers: int = 2, heads: int = 2, max_len: int = 50,
                 dropout: float = 0.2, learning_rate: float = 0.005, epochs: int = 40, batch_size: int = 128,
                 budget_seconds: float = 600.0, patience: int = 3, validation_fraction: float = 0.1,
                 max_interactions: int = 2_000_000, full_softmax_items: int = 20_000, negatives: int = 2048,
                 target: str = "next_event", horizon_days: float = 0.0, query_time: bool = True,
                 device: str = "auto", random_state: int = 42) -> None:
        self.query_time = query_time
        self.factors = factors
        self.layers = layers
        self.heads = heads
        self.max_len = max_len
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.budget_seconds = budget_seconds
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.max_interactions = max_interactions
        self.full_softmax_items = full_softmax_items
        self.negatives = negatives
        self.target = target
        self.horizon_days = horizon_days
        self.device = device
        self.random_state = random_state

    def fit(self, user_items: sp.csr_matrix, items=None, sequences: UserSequences | None = None) -> SASRec:
        if self.target not in TARGETS:
            raise ValueError(f"sasrec: target must be one of {TARGETS}, not {self.target!r}")
        if sequences is None:
            raise ValueError("sasrec needs each user's events in time order: fit(user_items, items, sequences=...) "
                             "(features.sequences.UserSequences; the pipeline passes the features step's)")
        n_users, n_items = user_items.shape
        if sequences.n_users != n_users:
            raise ValueError(f"sasrec: sequences cover {sequences.n_users} users, the matrix has {n_users} rows")
        torch = import_torch()
        device = pick_device(self.device)
        rng = seed_everything(self.random_state, self.num_threads, device)
        net = _build(torch, n_items, int(self.factors), int(self.layers), int(self.heads), int(self.max_len),
                     float(self.dropout), bool(self.query_time)).to(device)
        gaps = gap_buckets(sequences.times, sequences.indptr)
        self.fit_summary_ = self._train(torch, net, sequences, gaps, n_items, rng, device)
        self.net_ = net.cpu().eval()
        self._set_final(torch, sequences, gaps, n_users)
        return self

    def _split(self, seq: UserSequences, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(training users, their training ends, validation users' held-out event positions)."""
        lengths = seq.lengths()
        users = np.flatnonzero(lengths >= 2)
        if self.max_interactions > 0 and lengths.sum() > self.max_interactions:
            order = rng.permutation(users)
            users = np.sort(order[np.cumsum(lengths[order]) <= self.max_interactions])
            log.info("sasrec: %d events > max_interactions %d: trained on %d users (a random sample of whole users)",
                     lengths.sum(), self.max_interactions, len(users))
        ends = seq.indptr[users + 1].copy()
        # The last purchase (after the first event) of a random share of users is held out for validation.
        is_buy = seq.kinds == PURCHASE
        last_buy = np.full(seq.n_users, -1, np.int64)
        pos = np.flatnonzero(is_buy)
        owner = seq.owners()[pos]
        last_buy[owner] = pos  # ascending: the last write is the newest purchase
        if self.target == "next_basket":  # the first line of that purchase's basket
            has = last_buy >= 0
            last_buy[has] = baskets(seq)[0][last_buy[has]]
        drawn = rng.random(len(users)) < self.validation_fraction
        cand = np.flatnonzero((last_buy[users] > seq.indptr[users]) & drawn)
        if len(cand) > VALIDATION_USERS:  # the score's cost stays bounded; the others train on all
            cand = np.sort(rng.choice(cand, VALIDATION_USERS, replace=False))
        held = last_buy[users[cand]]
        ends[cand] = held  # the validation users train on what came before their held-out purchase
        return users, ends, held

    def _train(self, torch, net, seq: UserSequences, gaps: np.ndarray, n_items: int, rng, device) -> dict:
        users, ends, held = self._split(seq, rng)
        ok = ends - seq.indptr[users] >= 2
        users, ends = users[ok], ends[ok]
        held_users = np.searchsorted(seq.indptr, held, side="right") - 1
        buys_only = bool((seq.kinds == PURCHASE).any())
        _, nb_start, nb_len = baskets(seq, self.target, float(self.horizon_days) * 86_400)
        opt = torch.optim.Adam(net.parameters(), lr=float(self.learning_rate))
        length, batch, heads = int(self.max_len), max(1, int(self.batch_size)), int(self.heads)
        full = n_items <= int(self.full_softmax_items)

        def tensor(a):
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        def epoch_fn(epoch: int, time_up) -> float | None:
            if not len(users):
                return None
            net.train()
            # The newest window, or (probability 1/2) one ending at a random earlier event (>= 2 events).
            starts = seq.indptr[users]
            early = rng.random(len(users)) < 0.5
            rand_end = starts + 2 + (rng.random(len(users)) * np.maximum(ends - starts - 1, 1)).astype(np.int64)
            e = np.where(early, np.minimum(rand_end, ends), ends)
            order = rng.permutation(len(users))
            total, count = 0.0, 0
            for s in range(0, len(order), batch):
                if count and time_up():  # the budget is spent: the epoch ends here
                    break
                sel = order[s:s + batch]
                it, kd, gp, src = _windows(seq, users[sel], e[sel], length, gaps)
                # Each position's target: a random item of the user's next basket, before the user's
                # training end (a validation user's held-out purchase is never a target).
                at = np.maximum(src, 0)
                tgt_idx = nb_start[at] + (rng.random(src.shape) * nb_len[at]).astype(np.int64)
                use = (src >= 0) & (nb_len[at] > 0) & (tgt_idx < ends[sel][:, None])
                if buys_only:
                    use &= seq.kinds[tgt_idx] == PURCHASE
                if not use.any():
                    continue
                h = _encode(torch, net, tensor(it), tensor(kd), tensor(gp), heads)[tensor(use)]
                h = self._with_query(torch, net, h, seq.times[tgt_idx[use]], seq.times[src[use]], device)
                tgt = tensor(seq.items[tgt_idx[use]].astype(np.int64))
                w = net["item"].weight[1:]
                if full:
                    loss = torch.nn.functional.cross_entropy(h @ w.T, tgt)
                else:
                    neg = tensor(rng.integers(0, n_items, int(self.negatives)))
                    logits = torch.cat([(h * w[tgt]).sum(-1, keepdim=True), h @ w[neg].T], dim=1)
                    logits[:, 1:] = logits[:, 1:].masked_fill(neg.unsqueeze(0) == tgt.unsqueeze(1), float("-inf"))
                    loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(tgt), dtype=torch.long,
                                                                                  device=device))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(tgt)
                count += len(tgt)
            return total / max(count, 1)

        def validate() -> float:
            vecs = self._user_vectors(torch, net, seq, gaps, held_users, held, device, when=seq.times[held])
            w = net["item"].weight[1:].detach().cpu().numpy()
            target = seq.items[held].astype(np.int64)
            below = np.empty(len(held))
            step = max(1, 4_194_304 // max(n_items, 1))  # score blocks of at most 4M floats
            for b in range(0, len(held), step):
                scores = vecs[b:b + step] @ w.T
                mine = scores[np.arange(len(scores)), target[b:b + step]]
                below[b:b + step] = (scores < mine[:, None]).sum(axis=1)
            return float(np.mean(below / max(n_items - 1, 1)))

        def snapshot():
            return {k: v.detach().clone() for k, v in net.state_dict().items()}

        return {**fit_loop(self.name, epoch_fn, validate if len(held) else None, int(self.epochs),
                           float(self.budget_seconds), int(self.patience), log, snapshot=snapshot,
                           restore=net.load_state_dict), "users_trained": int(len(users))}

    def _with_query(self, torch, net, h, when: np.ndarray, last: np.ndarray, device: str):
        """``h`` plus the embeddings of the time asked about (``query_time``: its month, and the
        time since the user's last event ``last``), else ``h``."""
        if "q_month" not in net:
            return h
        month, gap = query_codes(when, last)
        return h + net["q_month"](torch.from_numpy(month).to(device)) + net["q_gap"](torch.from_numpy(gap).to(device))

    def _user_vectors(self, torch, net, seq: UserSequences, gaps: np.ndarray, users: np.ndarray, ends: np.ndarray,
                      device: str, when: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """The encoder's last output over the events before ``ends`` of each of ``users``, asked at
        times ``when`` (``query_time``), no grad."""
        out = np.zeros((len(users), int(self.factors)), np.float32)
        # Users in order of their window's length: each chunk is as wide as its longest window.
        order = np.argsort(np.minimum(ends - seq.indptr[users], int(self.max_len)), kind="stable")
        net.eval()
        with torch.no_grad():
            for s in range(0, len(users), chunk):
                sel = order[s:s + chunk]
                it, kd, gp, _ = _windows(seq, users[sel], ends[sel], int(self.max_len), gaps)
                t = [torch.from_numpy(a).to(device) for a in (it, kd, gp)]
                h = _encode(torch, net, *t, int(self.heads))[:, -1]
                last = seq.times[np.maximum(ends[sel] - 1, 0)]
                out[sel] = self._with_query(torch, net, h, when[sel], last, device).cpu().numpy()
        return out

    def _set_final(self, torch, seq: UserSequences, gaps: np.ndarray, n_users: int) -> None:
        users = np.flatnonzero(seq.lengths() > 0)
        # Asked at the newest event of the data (the night's cut-off): the lists are for the days after it.
        now = np.full(len(users), seq.times.max(initial=0), np.int64)
        vecs = self._user_vectors(torch, self.net_, seq, gaps, users, seq.indptr[users + 1], "cpu", when=now)
        self.user_factors_ = np.zeros((n_users, int(self.factors)), np.float32)
        self.user_factors_[users] = vecs
        self.item_factors_ = np.ascontiguousarray(self.net_["item"].weight[1:].detach().numpy(), dtype=np.float32)

    def _arrays(self):
        net = state_to_arrays(self.net_, NET) if getattr(self, "net_", None) is not None else self.net_arrays_
        return {**super()._arrays(), **net}

    def _set_arrays(self, arrays):
        """The factors for serving; the encoder's weights are kept as arrays (serving needs no torch)."""
        super()._set_arrays(arrays)
        self.net_ = None
        self.net_arrays_ = {k: v for k, v in arrays.items() if k.startswith(NET)}

    def encoder(self):
        """The trained encoder (torch), rebuilt from the saved weights after ``load``."""
        if getattr(self, "net_", None) is None:
            torch = import_torch()
            self.net_ = _build(torch, self.item_factors_.shape[0], int(self.factors), int(self.layers),
                               int(self.heads), int(self.max_len), float(self.dropout), bool(self.query_time))
            arrays_to_state(self.net_, self.net_arrays_, NET)
            self.net_.eval()
        return self.net_
