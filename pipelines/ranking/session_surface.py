"""Anonymous sessions (issue 16): the next-item model chosen on held-out sessions, and the
``session_next_items`` table built from it (surfaces step).

1. Every model of the ``session_models`` setting (models/sessions.py) is fitted on the sessions before the holdout
   window and scored leave-last-out on the sessions inside it (each session's items but the last
   as the query, its last item as the truth): HR@20 and MRR@20 (``SESSION_K``).
2. The best HR@20 wins (ties: MRR@20, then the earlier model in ``session_models``, the simpler
   baselines first); it is refitted on all sessions of the window and saved with the item ids its
   indexes stand for (pipelines.session_artifacts), for ``recsys session-recs``.
3. ``session_next_items``: for each available item that appears in a session, the one-item session
   ``[item]`` -> the top ``session_next_n`` next items, available ones only (the rules layer's
   availability: inactive, and out of stock when the rules drop it; item-anchored tables take no
   caps or boosts, docs/rules.md).
"""
from __future__ import annotations

import inspect
import logging

import numpy as np
import pandas as pd

from features.sessions import leave_last_out, take_sessions
from models.kernels import NO_ITEM
from models.sessions import SessionModel, hit_rate_mrr, session_model_class
from pipelines.config import Config
from pipelines.evaluation.metrics import sample_users

log = logging.getLogger(__name__)

SESSION_K = 20  # HR@K and MRR@K of the session models
REASON = "shoppers viewed this next"


def make_session_model(name: str, seed: int) -> SessionModel:
    """The session model ``name`` with its default hyperparameters (``random_state`` = the seed where
    the model takes one)."""
    cls = session_model_class(name)
    return cls(random_state=seed) if "random_state" in inspect.signature(cls).parameters else cls()


def evaluate_session_models(cfg: Config, train: tuple, holdout: tuple, n_items: int) -> pd.DataFrame:
    """Long table model, metric, value: hr_at_20, mrr_at_20 and sessions (the held-out sessions
    scored) per model of the ``session_models`` setting, fitted on ``train`` and queried on ``holdout``
    leave-last-out. Above ``eval_max_users`` held-out sessions, a fixed random sample of that many
    (seeded by the config's seed) is scored, as the user-level evaluation samples users: the
    standard error of HR@20, not the size of the shop, sets how many are needed."""
    q_indptr, q_items, targets = leave_last_out(*holdout)
    pick = sample_users(np.arange(len(targets)), int(cfg.evaluation.eval_max_users), cfg.seed)
    if len(pick) < len(targets):
        log.info("sessions: %d of %d held-out sessions scored (eval_max_users)", len(pick), len(targets))
        q_indptr, q_items = take_sessions(q_indptr, q_items, pick)
        targets = targets[pick]
    rows = []
    for name in cfg.surfaces.session_models:
        model = make_session_model(name, cfg.seed).fit(*train, n_items)
        ids, _ = model.recommend(q_indptr, q_items, SESSION_K)
        hr, mrr = hit_rate_mrr(ids, targets, SESSION_K)
        rows += [(name, f"hr_at_{SESSION_K}", hr), (name, f"mrr_at_{SESSION_K}", mrr),
                 (name, "sessions", float(len(targets)))]
    return pd.DataFrame(rows, columns=["model", "metric", "value"])


def choose(metrics: pd.DataFrame) -> str:
    """The best HR@K; ties: the best MRR@K, then the model that comes first in ``metrics``."""
    wide = metrics.pivot(index="model", columns="metric", values="value")
    order = {name: i for i, name in enumerate(dict.fromkeys(metrics["model"]))}
    wide = wide.assign(order=[order[m] for m in wide.index])
    wide = wide.sort_values([f"hr_at_{SESSION_K}", f"mrr_at_{SESSION_K}", "order"], ascending=[False, False, True])
    return str(wide.index[0])


def concat_sessions(a: tuple, b: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Two ``(indptr, items)`` session sets as one, ``a``'s sessions first."""
    return np.concatenate([a[0][:-1], b[0] + a[0][-1]]), np.concatenate([a[1], b[1]])


def recommend_available(model: SessionModel, q_indptr: np.ndarray, q_items: np.ndarray, n: int,
                        available: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model's top ``n`` per query session among available items only: ``(ids, scores)``, NO_ITEM /
    -inf where fewer are left. Unavailable items are left out before the top ``n`` is taken (the
    models' ``filter_mask``), so no wider list is asked for and cut."""
    return model.recommend(q_indptr, q_items, n, filter_mask=~np.asarray(available, bool))


def next_items_table(model: SessionModel, model_name: str, items: np.ndarray, sessions: tuple, available: np.ndarray,
                     n: int) -> pd.DataFrame:
    """item_id, rank, next_item_id, score, model, reason: for every available item of ``sessions``,
    the one-item session [item] -> its top ``n`` available next items."""
    seen = np.zeros(len(items), bool)
    seen[sessions[1]] = True
    anchors = np.flatnonzero(seen & available)
    ids, scores = recommend_available(model, np.arange(len(anchors) + 1), anchors, n, available)
    keep = ids != NO_ITEM
    rank = np.cumsum(keep, axis=1)[keep]
    return pd.DataFrame({
        "item_id": items[np.repeat(anchors, keep.sum(axis=1))].astype(object),
        "rank": rank.astype(np.int32),
        "next_item_id": items[ids[keep]].astype(object),
        "score": scores[keep].astype(np.float32),
        "model": model_name, "reason": REASON})


def session_surface(cfg: Config, items: np.ndarray, train: tuple, holdout: tuple, available: np.ndarray
                    ) -> tuple[pd.DataFrame, pd.DataFrame, dict, SessionModel | None]:
    """(session_next_items, the models' metrics, a summary, the chosen model refitted on all sessions)
    from the window's sessions; with no session at all, an empty table and no model."""
    n_items = len(items)
    every = concat_sessions(train, holdout)
    counts = {"sessions_train": len(train[0]) - 1, "sessions_holdout": len(holdout[0]) - 1}
    if not len(every[1]) or not n_items:
        empty = pd.DataFrame({"item_id": pd.Series(dtype=object), "rank": pd.Series(dtype=np.int32),
                              "next_item_id": pd.Series(dtype=object), "score": pd.Series(dtype=np.float32),
                              "model": pd.Series(dtype=object), "reason": pd.Series(dtype=object)})
        metrics = pd.DataFrame({"model": pd.Series(dtype=object), "metric": pd.Series(dtype=object),
                                "value": pd.Series(dtype=float)})
        return empty, metrics, {"model": None, **counts}, None
    metrics = evaluate_session_models(cfg, train, holdout, n_items)
    name = choose(metrics)
    model = make_session_model(name, cfg.seed).fit(*every, n_items)
    table = next_items_table(model, name, items, every, available, cfg.surfaces.session_next_n)
    mine = metrics[metrics["model"] == name].set_index("metric")["value"]
    summary = {"model": name, **{m: float(v) for m, v in mine.items()}, **counts}
    log.info("sessions: %s chosen (HR@%d %.4f, MRR@%d %.4f on %d held-out sessions); %d rows for %d items",
             name, SESSION_K, mine[f"hr_at_{SESSION_K}"], SESSION_K, mine[f"mrr_at_{SESSION_K}"],
             int(mine["sessions"]), len(table), table["item_id"].nunique())
    return table, metrics, summary, model
