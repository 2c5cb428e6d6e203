"""Shared helpers of the deep models (PyTorch): lazy import, device, seeding, the training loop with
a time budget and early stopping, the validation split, the sample for data too large for the
budget, and the state dict as numpy arrays (saved as npz by ``Recommender.save``: no pickle).

* torch is imported lazily (``import_torch``), so importing ``models`` (the scheduler's DAG parse,
  the command line) never loads it, and serving a fitted deep model needs no torch at all: a model
  keeps its final embeddings as numpy arrays.
* CPU by default, CUDA when ``torch.cuda.is_available()`` (``pick_device``); never required.
* Deterministic on CPU for a given seed (``seed_everything``).
* The validation split is random per user (``holdout_split``), not by time: the model contract
  (``fit(user_items)``) gets a user x item matrix without dates; the time-based evaluation of the
  candidates happens outside the model, in the nightly search and the promotion gate.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from models.kernels import mask_block

STOPPED_BY = ("epochs", "budget", "patience")


def import_torch():
    """The torch module, imported on first use; a clear error when it is not installed."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is pinned in requirements.txt
        raise ImportError("the deep models (models/deep.py) need PyTorch: pip install the torch version "
                          "pinned in requirements.txt (a CPU build is enough)") from e
    return torch


def pick_device(prefer: str = "auto") -> str:
    """"cuda" when ``prefer`` is "auto" or "cuda" and a CUDA device is available, else "cpu" (a
    "cuda" request without a device falls back to the CPU with a warning: CUDA is never required)."""
    if prefer not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {prefer!r}")
    if prefer == "cpu":
        return "cpu"
    available = import_torch().cuda.is_available()
    if prefer == "cuda" and not available:
        logging.getLogger(__name__).warning("device 'cuda' asked for but none is available: training on the CPU")
    return "cuda" if available else "cpu"


def seed_everything(seed: int, num_threads: int = 0, device: str = "cpu") -> np.random.Generator:
    """Seeds torch (CPU and CUDA) and returns a numpy Generator from ``seed`` (the global numpy state
    is left alone). On the CPU, deterministic algorithms (``warn_only``: an op without a
    deterministic version warns rather than fails); ``num_threads`` > 0 sets torch's intra-op threads
    (the model's ``num_threads``, from ``cfg.scale.threads``)."""
    torch = import_torch()
    torch.manual_seed(int(seed))
    if device == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    if num_threads and num_threads > 0:
        torch.set_num_threads(int(num_threads))
    return np.random.default_rng(int(seed))


def fit_loop(model_name: str, epoch_fn: Callable[[int, Callable[[], bool]], float | None],
             validate_fn: Callable[[], float] | None,
             max_epochs: int, budget_s: float | None, patience: int, log: logging.Logger,
             snapshot: Callable[[], Any] | None = None, restore: Callable[[Any], None] | None = None,
             every_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Runs ``epoch_fn(epoch, time_up)`` (epochs from 1; returns the training loss or None), then
    ``validate_fn()`` (higher is better; None: no validation), until the first of:

    * ``max_epochs`` epochs ("epochs");
    * the time budget ("budget"): no epoch is started that would, at the mean epoch time so far,
      end past ``budget_s`` seconds from the start (None or <= 0: no budget); and an epoch stops
      between two batches once ``time_up()`` (the budget is spent): on data whose one epoch takes
      longer than the budget, training ends with that partial epoch, validated as any other;
    * ``patience`` epochs in a row without a better validation score ("patience"; 0: never).

    With ``snapshot`` / ``restore``, the state of the best validation epoch is kept and restored at
    the end. Logs progress at INFO at most every ``every_s`` seconds, and once at the end.
    Returns {"epochs", "best_epoch", "best_score", "stopped_by", "seconds"}."""
    start = last_log = clock()
    best_score, best_epoch, best_state, since_best = -np.inf, 0, None, 0
    epoch, stopped_by = 0, "epochs"
    budgeted = bool(budget_s and budget_s > 0)

    def time_up() -> bool:
        return budgeted and clock() - start > budget_s

    while epoch < max_epochs:
        elapsed = clock() - start
        if budgeted and epoch and elapsed + elapsed / epoch > budget_s:
            stopped_by = "budget"
            break
        epoch += 1
        loss = epoch_fn(epoch, time_up)
        score = float(validate_fn()) if validate_fn is not None else None
        if score is None or score > best_score:
            best_score = score if score is not None else best_score
            best_epoch, since_best = epoch, 0
            if snapshot is not None and score is not None:
                best_state = snapshot()
        else:
            since_best += 1
        now = clock()
        if now - last_log >= every_s:
            last_log = now
            log.info("%s: epoch %d/%d, loss %s, validation %s (best %.4f at epoch %d), %.0f s of %s",
                     model_name, epoch, max_epochs, _fmt(loss), _fmt(score), best_score, best_epoch,
                     now - start, f"{budget_s:.0f} s" if budget_s and budget_s > 0 else "no budget")
        if patience and patience > 0 and since_best >= patience:
            stopped_by = "patience"
            break
        if time_up():
            stopped_by = "budget"
            break
    if best_state is not None and restore is not None and best_epoch != epoch:
        restore(best_state)
    out = {"epochs": epoch, "best_epoch": best_epoch,
           "best_score": None if not np.isfinite(best_score) else float(best_score),
           "stopped_by": stopped_by, "seconds": float(clock() - start)}
    log.info("%s: trained %d epochs (stopped by %s), best validation %s at epoch %d, %.1f s", model_name,
             out["epochs"], stopped_by, _fmt(out["best_score"]), best_epoch, out["seconds"])
    return out


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def state_to_arrays(module, prefix: str = "") -> dict[str, np.ndarray]:
    """A torch module's state dict as numpy arrays (keys ``prefix + name``), for ``np.savez``."""
    return {prefix + k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def arrays_to_state(module, arrays: dict[str, np.ndarray], prefix: str = "") -> None:
    """Loads ``state_to_arrays``'s arrays back into ``module`` (strict: every key must be there)."""
    torch = import_torch()
    names = module.state_dict().keys()
    module.load_state_dict({k: torch.from_numpy(np.asarray(arrays[prefix + k])) for k in names}, strict=True)


def others_mask(train: sp.csr_matrix, users: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """users x items booleans, True at each (user, target) pair's user's other items of ``train``: left
    out of a full softmax's denominator (they are not negatives); the target itself stays in."""
    hist = train[np.asarray(users)].tocsr()
    rows = np.repeat(np.arange(len(users)), np.diff(hist.indptr))
    keep = hist.indices != np.asarray(targets)[rows]
    mask = np.zeros((len(users), train.shape[1]), bool)
    mask[rows[keep], hist.indices[keep]] = True
    return mask


def month_of(seconds: np.ndarray) -> np.ndarray:
    """The month of the year (1-12, UTC) of epoch seconds (any shape): the deep models' "month asked
    about" (models/sasrec.py, models/towers.py)."""
    return np.asarray(seconds, np.int64).astype("datetime64[s]").astype("datetime64[M]").astype(np.int64) % 12 + 1


def svd_start(user_items: sp.csr_matrix, factors: int, scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Starting embeddings (users, items) from the truncated SVD of the binarised matrix ``R ~ U S
    V'`` (randomised, seeded): ``U S^1/2`` and ``V S^1/2``, scaled so that their entries' root mean
    square is ``scale`` (dot products rank as the SVD's reconstruction at any scale); columns past the
    matrix's rank are zero. A start that already ranks like a tuned matrix factorisation, which
    training then refines (spectral initialisation)."""
    from sklearn.utils.extmath import randomized_svd
    r = user_items.tocsr().astype(np.float32)  # float32: the random projections are users x ~factors
    r.data = np.ones_like(r.data)
    n_users, n_items = r.shape
    users, items = np.zeros((n_users, factors), np.float32), np.zeros((n_items, factors), np.float32)
    k = min(int(factors), min(r.shape) - 1)
    if k > 0 and r.nnz:
        u, s, vt = randomized_svd(r, k, n_iter=5, random_state=int(seed))
        users[:, :k], items[:, :k] = u * np.sqrt(s), vt.T * np.sqrt(s)
    rms = float(np.sqrt((np.sum(users.astype(np.float64) ** 2) + np.sum(items.astype(np.float64) ** 2))
                        / max((n_users + n_items) * factors, 1)))
    f = np.float32(float(scale) / rms if rms > 0 else 0.0)
    return users * f, items * f


def holdout_split(user_items: sp.csr_matrix, fraction: float, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(train, validation), both of ``user_items``' shape: per user, ``floor(fraction * n_u)`` of the
    user's ``n_u`` items, drawn at random, go to validation (so users with fewer than ``1 / fraction``
    items keep all theirs; every user keeps at least one item in train).

    Random, not by time: the model contract gets a matrix without dates (see the module docstring)."""
    x = user_items.tocsr()
    if not x.has_canonical_format:
        x = x.copy()
        x.sum_duplicates()
    n_u = np.diff(x.indptr)
    rows = np.repeat(np.arange(x.shape[0]), n_u)
    key = np.random.default_rng(seed).random(x.nnz)
    order = np.lexsort((key, rows))
    rank = np.empty(x.nnz, np.int64)
    rank[order] = np.arange(x.nnz) - x.indptr[rows[order]]
    n_hold = np.minimum(np.floor(fraction * n_u).astype(np.int64), np.maximum(n_u - 1, 0))
    hold = rank < n_hold[rows]

    def part(keep: np.ndarray) -> sp.csr_matrix:
        indptr = np.r_[0, np.cumsum(np.bincount(rows[keep], minlength=x.shape[0]))]
        return sp.csr_matrix((x.data[keep], x.indices[keep], indptr), shape=x.shape)

    return part(~hold), part(hold)


def sample_users(user_items: sp.csr_matrix, max_interactions: int, seed: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """(sample, kept users): when ``user_items`` has more than ``max_interactions`` stored entries,
    whole users drawn at random (in a random order, each kept while the total stays within
    ``max_interactions``); the others' rows are emptied. The shape stays the same, so user and item
    indices keep their meaning. Under the limit (or ``max_interactions`` <= 0): the matrix as it is."""
    x = user_items.tocsr()
    if max_interactions <= 0 or x.nnz <= max_interactions:
        return x, np.arange(x.shape[0])
    n_u = np.diff(x.indptr)
    order = np.random.default_rng(seed).permutation(x.shape[0])
    kept = np.sort(order[np.cumsum(n_u[order]) <= max_interactions])
    mask = np.zeros(x.shape[0], bool)
    mask[kept] = True
    return sp.diags(mask.astype(x.dtype)) @ x, kept


def validation_auc(user_vectors: np.ndarray, item_vectors: np.ndarray, train: sp.csr_matrix,
                   valid: sp.csr_matrix, max_users: int = 2000, block_cells: int = 4_194_304,
                   metric: str = "auc") -> float:
    """The early-stopping score of the deep models: the mean, over the validation entries of (at most
    ``max_users``, the first) users with any, of the share of the user's other items not in ``train``
    that score below the held-out item (dot product; the AUC of the ranking), or with ``metric``
    "dcg" of ``1 / log2(2 + a)``, ``a`` the number of those items that score above it (the
    discounted gain of its position: top-heavy like NDCG@10, but over the whole ranking). Unlike
    recall@k neither saturates on small catalogs, so patience measures real progress."""
    if metric not in ("auc", "dcg"):
        raise ValueError(f"validation metric {metric!r}: 'auc' or 'dcg'")
    users = np.flatnonzero(np.diff(valid.indptr))[:max_users]
    if not len(users):
        return 0.0
    n_items = item_vectors.shape[0]
    step = max(1, block_cells // max(n_items, 1))
    total, count = 0.0, 0
    for s in range(0, len(users), step):
        b = users[s:s + step]
        scores = np.asarray(user_vectors[b] @ item_vectors.T, dtype=np.float32)
        mask_block(scores, train[b], None)
        rank = np.empty(scores.shape, np.int64)
        np.put_along_axis(rank, np.argsort(scores, axis=1, kind="stable"), np.arange(n_items)[None, :], axis=1)
        v = valid[b].tocsr()
        r = np.repeat(np.arange(len(b)), np.diff(v.indptr))
        masked = np.diff(train[b].indptr)[r]  # -inf entries sort first
        others = n_items - masked - 1
        below = rank[r, v.indices] - masked
        if metric == "dcg":
            total += float((1.0 / np.log2(others - below + 2.0)).sum())
        else:
            total += float(np.where(others > 0, below / np.maximum(others, 1), 1.0).sum())
        count += len(r)
    return total / count

