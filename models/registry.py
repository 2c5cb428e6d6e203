"""The model registry: every recommender by name, built from its config section.

A model class registers itself with ``@register`` (its ``name`` is the key). ``make_model`` builds
it from ``cfg.models``: the constructor parameter ``p`` of the model named ``m`` is the setting
``m_p`` (``als_factors``, ``bpr_learning_rate`` ...), ``random_state`` is the config's ``seed``, and a
parameter without a setting keeps its default. So every hyperparameter is settable from the YAML
file or a ``RECSYS_<M>_<P>`` variable, and a new model needs no line here.

This module imports no pipeline code: ``cfg`` is any object with ``models``, ``seed`` and ``scale``
attributes (pipelines.config.Config).
"""
from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from models.base import Recommender

log = logging.getLogger(__name__)

REGISTRY: dict[str, type[Recommender]] = {}
# The PyTorch models: opt-in candidates with a time budget per fit (docs/configuration.md).
DEEP_MODELS = ("lightgcn", "two_tower", "sasrec")
M = TypeVar("M", bound=type[Recommender])


def register(cls: M) -> M:
    """Class decorator: make the model known by its ``name`` (to the config, ``load_model`` and the
    shared contract test)."""
    if not getattr(cls, "name", None) or cls.name == Recommender.name:
        raise ValueError(f"{cls.__name__} needs a class attribute 'name' to be registered")
    REGISTRY[cls.name] = cls
    return cls


def model_params(name: str, cfg: Any) -> dict[str, Any]:
    """The constructor arguments of model ``name`` from the config (see the module docstring)."""
    out = {}
    for p in REGISTRY[name].param_names():
        if p == "random_state":
            out[p] = cfg.seed
        elif hasattr(cfg.models, f"{name}_{p}"):
            out[p] = getattr(cfg.models, f"{name}_{p}")
    return out


def make_model(name: str, cfg: Any, overrides: dict | None = None) -> Recommender:
    """A candidate with its hyperparameters from the config (``overrides``: the search's winner)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r} in config 'candidates'; known: {sorted(REGISTRY)}")
    return configure(REGISTRY[name](**{**model_params(name, cfg), **(overrides or {})}), cfg)


def fit_model(model: Recommender, user_items, items=None, sequences=None, users=None) -> Recommender:
    """``model.fit`` with the inputs the model takes: ``sequences`` (features.sequences.UserSequences
    over the rows of ``user_items``, or a function returning them, called only when needed) goes to
    the models whose ``uses_sequences`` is true (models/sasrec.py), ``users`` (the users table:
    country, interests) to those whose ``uses_users`` is (models/two_tower.py); the others get the
    matrix and the item table alone."""
    extra = {}
    if model.uses_sequences:
        extra["sequences"] = sequences() if callable(sequences) else sequences
    if model.uses_users and users is not None:
        extra["users"] = users
    return model.fit(user_items, items, **extra)


def configure(model: Recommender, cfg: Any) -> Recommender:
    """The serving settings (never saved) from ``cfg.scale``: score blocks and threads."""
    model.block_users = cfg.scale.score_block_users
    model.block_cells = cfg.scale.score_block_cells
    model.num_threads = threads_of(cfg)
    return model


def threads_of(cfg: Any) -> int:
    """The threads a model's own parallel loops may use: ``cfg.scale.threads``, or the CPUs this
    process may use when it is 0 (or not set)."""
    threads = int(getattr(cfg.scale, "threads", 0) or 0)
    return threads if threads > 0 else len(os.sched_getaffinity(0))


def load_model(path: str | Path, cfg: Any = None) -> Recommender:
    """A saved model (``Recommender.save``), whichever registered class wrote it; with ``cfg``, its
    serving settings (``configure``) too."""
    name = json.loads((Path(path) / "params.json").read_text())["name"]
    if name not in REGISTRY:
        raise ValueError(f"{path}: model {name!r} is not registered; known: {sorted(REGISTRY)}")
    model = REGISTRY[name].load(path)
    return configure(model, cfg) if cfg is not None else model


def warm_source(model: Recommender, saved: str | Path) -> Recommender | None:
    """The model saved at ``saved`` when ``model`` can start a fit from it (``warm_start``: ALS,
    models/als.py), else None. A warm start only saves time: a saved model that cannot be read
    (a step killed while saving it) gives None, with a warning, and the fit starts cold."""
    if not hasattr(model, "warm_start") or not (Path(saved) / "params.json").exists():
        return None
    try:
        return load_model(saved)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        log.warning("%s: no warm start from %s (%s: %s): a cold fit", model.name, saved, type(e).__name__, e)
        return None


def warm_from(model: Recommender, saved: str | Path) -> Recommender:
    """``model``, told to start its next fit from the model saved at ``saved`` (the select step: tonight's
    holdout fit of the serving model) where it can (``warm_source``); else as it is."""
    if not getattr(model, "warm_refit", True):  # e.g. the two-tower model (models/two_tower.py)
        return model
    source = warm_source(model, saved)
    if source is not None and model.warm_start(source):
        log.info("%s: the fit starts from the one saved at %s", model.name, saved)
    return model


def fit_share(model: Recommender) -> float:
    """The share of a cold fit's time the model's next fit is expected to take (``fit_share``:
    below 1 after a warm start), 1 for the others."""
    return float(model.fit_share()) if hasattr(model, "fit_share") else 1.0


def active_candidates(cfg: Any, n_items: int) -> tuple[str, ...]:
    """The configured candidates that fit this catalog (EASE is dense in items)."""
    skip = {"ease"} if n_items > cfg.models.ease_max_items else set()
    if skip & set(cfg.models.candidates):
        log.info("EASE skipped: %d items > ease_max_items %d", n_items, cfg.models.ease_max_items)
    return tuple(c for c in cfg.models.candidates if c not in skip)


def items_for_fit(items, popularity_column: str):
    """The item columns a model's fit reads (text, popularity, trending, repeat rate, review count and
    sentiment) from the features' item table, for the train split (``pop_train``) or all data
    (``pop_full``)."""
    out = items[["item_idx", "text"]].copy()
    out["popularity"] = items[popularity_column].to_numpy(dtype=np.float64)
    part = "train" if popularity_column.endswith("train") else "full"
    if f"trend_{part}" in items:
        out["trending"] = items[f"trend_{part}"].to_numpy(dtype=np.float64)
    if f"repeat_rate_{part}" in items:
        out["repeat_rate"] = items[f"repeat_rate_{part}"].to_numpy(dtype=np.float64)
    if f"sentiment_{part}" in items and f"review_count_{part}" in items:  # review sentiment (models/content.py)
        out["sentiment"] = items[f"sentiment_{part}"].to_numpy(dtype=np.float64)
        out["review_count"] = items[f"review_count_{part}"].to_numpy(dtype=np.float64)
    return out
