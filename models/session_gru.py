"""GRU4Rec-style next-item model for anonymous sessions (issue 16; Hidasi et al. 2016), PyTorch.

* Network: item embedding (``factors``) -> one GRU layer (``hidden``) -> a score per item (a linear
  output layer, its own weights and a bias). The session's state is the GRU output at its last item.
* Training: next-item prediction at every position of the training sessions (cut into windows of
  ``max_length + 1`` items: a long session is several windows), cross-entropy over all items (full
  softmax) up to ``max_softmax_items`` items; above that, over a sampled set per batch (the batch's
  targets plus ``negatives`` uniform random items). Adam, mini-batches of windows of similar length
  (less padding), dropout on the embeddings. Early stopping on HR@``validation_k`` of the newest
  ``validation_fraction`` of the sessions (they come in time order; leave-last-out, as the
  benchmark), with ``patience``; at most ``epochs`` epochs and ``budget_seconds`` of training
  (models.deep.fit_loop, which logs progress); the best epoch's weights are kept.
* Answers: ``recommend`` runs the GRU over each query session's last ``max_length`` items in blocks of
  ``block_sessions`` sessions (torch at answer time: unlike the factor models, serving this one needs
  torch), masks the session's own items and takes the top ``n`` (models.kernels.topk: ties by index).
* Saved as models.sessions does: params.json + model.npz (the state dict as arrays), no pickle.
  Deterministic on the CPU for a given ``random_state``.
"""
from __future__ import annotations

import logging

import numpy as np

from models.deep import arrays_to_state, fit_loop, import_torch, pick_device, seed_everything, state_to_arrays
from models.kernels import NO_ITEM, topk
from models.sessions import SESSION_MODELS, SessionModel, hit_rate_mrr

log = logging.getLogger(__name__)
IGNORE = -100  # torch's cross-entropy ignore_index: padded target positions


def _network(torch, n_items: int, factors: int, hidden: int, dropout: float):
    class GRUNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(n_items + 1, factors, padding_idx=n_items)  # last row: padding
            self.drop = torch.nn.Dropout(dropout)
            self.gru = torch.nn.GRU(factors, hidden, batch_first=True)
            self.out = torch.nn.Linear(hidden, n_items)

        def forward(self, x):  # (batch, length) item ids, padded on the right -> (batch, length, hidden)
            return self.gru(self.drop(self.embed(x)))[0]

    return GRUNet()


def session_windows(indptr: np.ndarray, items: np.ndarray, width: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """(windows, lengths): each session of 2+ items cut into consecutive windows of at most ``width``
    items that overlap by one (every item but the first is some window's target once), right-padded
    with ``pad``."""
    lengths = np.diff(indptr)
    per = np.where(lengths >= 2, -(-(lengths - 1) // (width - 1)), 0)
    sess = np.repeat(np.arange(len(lengths)), per)
    j = np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)
    starts = indptr[sess] + j * (width - 1)
    w_len = np.minimum(width, indptr[sess + 1] - starts)
    col = np.arange(width)[None, :]
    idx = starts[:, None] + col
    valid = col < w_len[:, None]
    win = np.where(valid, items[np.where(valid, idx, 0)] if len(items) else pad, pad)
    return win.astype(np.int64), w_len.astype(np.int64)


def _last_items(indptr: np.ndarray, items: np.ndarray, width: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Each session's last ``width`` items, right-padded with ``pad``, and their counts."""
    lengths = np.minimum(np.diff(indptr), width)
    col = np.arange(width)[None, :]
    valid = col < lengths[:, None]
    idx = (indptr[1:] - lengths)[:, None] + col
    seq = np.where(valid, items[np.where(valid, idx, 0)] if len(items) else pad, pad)
    return seq.astype(np.int64), lengths.astype(np.int64)


class SessionGRU(SessionModel):
    name = "session_gru"
    num_threads: int = 0  # torch intra-op threads (0: torch's default); not saved

    def __init__(self, factors: int = 64, hidden: int = 100, epochs: int = 30, learning_rate: float = 0.006,
                 batch_size: int = 512, max_length: int = 20, dropout: float = 0.2, budget_seconds: float = 240.0,
                 patience: int = 2, validation_fraction: float = 0.1, validation_k: int = 20,
                 max_softmax_items: int = 50_000, negatives: int = 4096, random_state: int = 42,
                 device: str = "auto") -> None:
        self.factors = factors
        self.hidden = hidden
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_length = max_length
        self.dropout = dropout
        self.budget_seconds = budget_seconds
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.validation_k = validation_k
        self.max_softmax_items = max_softmax_items
        self.negatives = negatives
        self.random_state = random_state
        self.device = device

    def params(self) -> dict:
        return {k: getattr(self, k) for k in (
            "factors", "hidden", "epochs", "learning_rate", "batch_size", "max_length", "dropout",
            "budget_seconds", "patience", "validation_fraction", "validation_k", "max_softmax_items",
            "negatives", "random_state", "device")}

    def _build(self, torch, n_items: int):
        self.n_items_ = int(n_items)
        self._torch = torch
        self._device = pick_device(self.device)
        self.net_ = _network(torch, self.n_items_, self.factors, self.hidden, self.dropout).to(self._device)
        return self.net_

    def fit(self, indptr, items, n_items):
        torch = import_torch()
        device = pick_device(self.device)
        rng = seed_everything(self.random_state, self.num_threads, device)
        net = self._build(torch, n_items)
        n_sessions = len(indptr) - 1
        n_valid = int(self.validation_fraction * n_sessions)
        cut = n_sessions - n_valid
        tr_ip = indptr[:cut + 1]
        windows, lengths = session_windows(tr_ip, items[:tr_ip[-1]], self.max_length + 1, self.n_items_)
        va_ip = indptr[cut:] - indptr[cut]
        valid = _leave_last_out(va_ip, items[indptr[cut]:])
        opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate)

        def epoch_fn(epoch: int, time_up) -> float | None:
            return self._epoch(torch, net, opt, windows, lengths, rng, time_up)

        def validate() -> float:
            ids, _ = self.recommend(valid[0], valid[1], self.validation_k)
            return hit_rate_mrr(ids, valid[2], self.validation_k)[0]

        def restore(state) -> None:
            net.load_state_dict(state)

        self.fit_summary_ = fit_loop(self.name, epoch_fn, validate if len(valid[2]) else None, int(self.epochs),
                                     float(self.budget_seconds), int(self.patience), log,
                                     snapshot=lambda: {k: v.detach().clone() for k, v in net.state_dict().items()},
                                     restore=restore)
        net.eval()
        return self

    def _epoch(self, torch, net, opt, windows: np.ndarray, lengths: np.ndarray, rng: np.random.Generator,
               time_up=lambda: False):
        """One pass over the windows in batches of similar length (shuffled); the mean loss per target."""
        if not len(windows):
            return None
        net.train()
        order = np.lexsort((rng.random(len(lengths)), lengths))
        batches = [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        total, count = 0.0, 0
        for b in rng.permutation(len(batches)):
            if count and time_up():  # the budget is spent: the epoch ends here
                break
            rows = batches[b]
            width = int(lengths[rows].max())
            w = torch.from_numpy(windows[rows, :width]).to(self._device)
            x, y = w[:, :-1], w[:, 1:].masked_fill(w[:, 1:] == self.n_items_, IGNORE)
            h = net(x)
            loss, n = self._loss(torch, net, h.reshape(-1, h.shape[-1]), y.reshape(-1), rng)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * n
            count += n
        return total / max(count, 1)

    def _loss(self, torch, net, h, y, rng: np.random.Generator):
        """Cross-entropy of the targets ``y`` (IGNORE: none) over all items, or, above
        ``max_softmax_items``, over the batch's targets plus ``negatives`` random items."""
        keep = y != IGNORE
        h, y = h[keep], y[keep]
        if self.n_items_ <= self.max_softmax_items:
            return torch.nn.functional.cross_entropy(net.out(h), y), len(y)
        neg = torch.from_numpy(rng.integers(0, self.n_items_, self.negatives)).to(self._device)
        cand = torch.unique(torch.cat([y, neg]))  # sorted
        logits = h @ net.out.weight[cand].T + net.out.bias[cand]
        return torch.nn.functional.cross_entropy(logits, torch.searchsorted(cand, y)), len(y)

    def session_scores(self, q_indptr: np.ndarray, q_items: np.ndarray) -> np.ndarray:
        """Scores of every item for each query session (sessions x items, float32; no masking)."""
        torch, net = self._torch, self.net_
        seq, lengths = _last_items(q_indptr, q_items, self.max_length, self.n_items_)
        was_training = net.training
        net.eval()
        with torch.no_grad():
            width = max(int(lengths.max()) if len(lengths) else 1, 1)
            h = net(torch.from_numpy(seq[:, :width]).to(self._device))
            last = torch.from_numpy(np.maximum(lengths - 1, 0)).to(self._device)
            state = h[torch.arange(len(lengths), device=self._device), last]
            state = state * torch.from_numpy(lengths > 0).to(self._device)[:, None]  # empty: zero state
            scores = net.out(state).cpu().numpy()
        net.train(was_training)
        return scores.astype(np.float32)

    def recommend(self, q_indptr, q_items, n, filter_mask=None):
        out_ids, out_scores = [], []
        for lo in range(0, len(q_indptr) - 1, self.block_sessions):
            hi = min(lo + self.block_sessions, len(q_indptr) - 1)
            ip = q_indptr[lo:hi + 1] - q_indptr[lo]
            its = q_items[q_indptr[lo]:q_indptr[hi]]
            scores = self.session_scores(ip, its)
            scores[np.repeat(np.arange(hi - lo), np.diff(ip)), its] = -np.inf
            if filter_mask is not None:
                scores[:, filter_mask] = -np.inf
            ids, vals = topk(scores, n)
            out_ids.append(ids)
            out_scores.append(vals)
        if not out_ids:
            return np.empty((0, n), np.int64), np.empty((0, n), np.float32)
        ids, vals = np.vstack(out_ids), np.vstack(out_scores)
        return np.where(np.isfinite(vals), ids, NO_ITEM), vals

    def _arrays(self) -> dict[str, np.ndarray]:
        return state_to_arrays(self.net_)

    def _set_arrays(self, z: dict[str, np.ndarray]) -> None:
        torch = import_torch()
        arrays_to_state(self._build(torch, self.n_items_), z)
        self.net_.eval()


def _leave_last_out(indptr: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query indptr, query items, targets) of the sessions of 2+ items: all but the last item asked
    (as features.sessions.leave_last_out; models import no features code)."""
    lengths = np.diff(indptr)
    ok = np.flatnonzero(lengths >= 2)
    last = indptr[ok + 1] - 1
    keep = np.repeat(lengths >= 2, lengths)
    keep[last] = False
    q_indptr = np.zeros(len(ok) + 1, np.int64)
    np.cumsum(lengths[ok] - 1, out=q_indptr[1:])
    return q_indptr, items[keep], items[last]


SESSION_MODELS[SessionGRU.name] = SessionGRU
