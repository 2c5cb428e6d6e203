"""Train step: fit every candidate model on the data before the holdout window.

The fitted candidates are evaluated by the evaluate step; the select step refits the winner on
all data up to ``ds``. Models are saved under ``models/ds=<ds>/holdout/<name>/`` without pickle.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from features.interactions import load_features
from models import REGISTRY, Recommender
from pipelines import storage
from pipelines.config import Config

log = logging.getLogger(__name__)


def make_model(name: str, cfg: Config, overrides: dict | None = None) -> Recommender:
    """A candidate with its hyperparameters from the config (``overrides`` from the search win)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r} in config 'candidates'; known: {sorted(REGISTRY)}")
    params = {
        "als": dict(factors=cfg.als_factors, regularization=cfg.als_regularization, alpha=cfg.als_alpha,
                    iterations=cfg.als_iterations, random_state=cfg.seed),
        "itemknn": dict(neighbours=cfg.itemknn_neighbours, weighting=cfg.itemknn_weighting),
        "bpr": dict(factors=cfg.bpr_factors, iterations=cfg.bpr_iterations, random_state=cfg.seed),
        "ease": dict(regularization=cfg.ease_regularization),
    }.get(name, {})
    model = REGISTRY[name](**{**params, **(overrides or {})})
    model.block_users = cfg.score_block_users
    model.block_cells = cfg.score_block_cells
    return model


# The small nightly hyperparameter search: alternatives tried around the configured defaults, in
# this order, while the time budget lasts (config search_budget_seconds). Generic ranges, not tuned
# to any one data set.
SEARCH_SPACE: dict[str, list[dict]] = {
    "itemknn": [{"neighbours": 20}, {"neighbours": 50}, {"neighbours": 300}],
    "ease": [{"regularization": 50.0}, {"regularization": 500.0}, {"regularization": 2000.0}],
    "als": [{"factors": 32, "regularization": 0.01}, {"factors": 128, "regularization": 0.1},
            {"factors": 64, "regularization": 1.0}],
}


def active_candidates(cfg: Config, n_items: int) -> tuple[str, ...]:
    """The configured candidates that fit this catalog (EASE is dense in items)."""
    skip = {"ease"} if n_items > cfg.ease_max_items else set()
    if skip & set(cfg.candidates):
        log.info("EASE skipped: %d items > ease_max_items %d", n_items, cfg.ease_max_items)
    return tuple(c for c in cfg.candidates if c not in skip)


def items_for_fit(items, popularity_column: str):
    out = items[["item_idx", "text"]].copy()
    out["popularity"] = items[popularity_column].to_numpy(dtype=np.float64)
    part = "train" if popularity_column.endswith("train") else "full"
    if f"trend_{part}" in items:
        out["trending"] = items[f"trend_{part}"].to_numpy(dtype=np.float64)
    if f"repeat_rate_{part}" in items:
        out["repeat_rate"] = items[f"repeat_rate_{part}"].to_numpy(dtype=np.float64)
    return out


def train(cfg: Config, ds: str, run_id: str) -> dict:
    f = load_features(cfg, ds)
    items = items_for_fit(f["items"], "pop_train")
    out = {}
    for name in active_candidates(cfg, f["train"].shape[1]):
        t0 = time.perf_counter()
        model = make_model(name, cfg).fit(f["train"], items)
        path = model.save(cfg.models_dir(ds) / "holdout" / name)
        out[name] = {"path": str(path), "fit_seconds": round(time.perf_counter() - t0, 3)}
        log.info("train ds=%s: %s fitted in %.2fs", ds, name, out[name]["fit_seconds"])
    storage.write_json(out, cfg.models_dir(ds) / "holdout" / "trained.json")
    return out
