"""What the shared model contract (test_contract.py) runs on: a tiny matrix whose right answers are
known, and one case per registered model (per parameter set, for the models listed below).

After scikit-learn's ``check_estimator`` (its per-estimator check parameters live beside the checks,
its tags on the estimators) and implicit's shared recommender test: a model is checked with its
default constructor unless ``CONTRACT_PARAMS`` names it, and which known-answer checks apply
follows its tags (``Recommender.ranks_unseen_by_history``, ``item_similarity``, ``deterministic``).
A newly registered model, in models/ or in a test file, is checked with no edit here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.sequences import PURCHASE, UserSequences, build_sequences
from models.base import Recommender
from models.registry import fit_model

# Constructor arguments that suit the 8 x 8 board (small factors, enough iterations), by case id.
CONTRACT_PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "als": {"als": {"factors": 4, "regularization": 0.1, "iterations": 30, "random_state": 7}},
    "bpr": {"bpr": {"factors": 8, "iterations": 200, "learning_rate": 0.05, "random_state": 3}},
    "itemknn": {"itemknn": {"neighbours": 8}, "itemknn_bm25": {"neighbours": 8, "weighting": "bm25"}},
    "ease": {"ease": {"regularization": 1.0}},
    "sasrec": {"sasrec": {"factors": 16, "layers": 1, "heads": 1, "max_len": 8, "dropout": 0.0,
                          "learning_rate": 0.01, "epochs": 150, "patience": 0, "validation_fraction": 0.0,
                          "device": "cpu", "random_state": 5}},
}

ITEMS = pd.DataFrame({"item_idx": range(8), "text": ["red apple fruit"] * 4 + ["blue car wheel"] * 4})


def checkerboard() -> sp.csr_matrix:
    """Users 0-3 bought items 0-3 and users 4-7 items 4-7, each user missing exactly one item of
    their block: user u misses item u. Excluding what a user already has, the one right answer is
    item u; an item's most similar items are the other items of its block."""
    m = np.zeros((8, 8), dtype=np.float32)
    m[:4, :4] = 1
    m[4:, 4:] = 1
    np.fill_diagonal(m, 0)
    return sp.csr_matrix(m)


def sequences_of(ui: sp.csr_matrix) -> UserSequences:
    """Each user's items as purchases a minute apart, in a fixed random order per user (so that
    every item of a block is seen followed by the others), for a sequence model."""
    x = ui.tocsr()
    users = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    times = np.random.default_rng(0).permutation(x.nnz) * 60
    return build_sequences(users, x.indices, np.full(x.nnz, PURCHASE), times, x.shape[0])


def fit(model: Recommender, ui: sp.csr_matrix) -> Recommender:
    """``model`` fitted on ``ui`` and ITEMS (and, for a sequence model, ``sequences_of(ui)``), as
    the pipeline fits it (models.registry.fit_model)."""
    return fit_model(model, ui, ITEMS, lambda: sequences_of(ui))


@dataclass(frozen=True)
class ContractCase:
    id: str
    name: str
    cls: type[Recommender]
    params: dict[str, Any] = field(default_factory=dict)

    def make(self) -> Recommender:
        return self.cls(**self.params)

    def tagged(self, *tags: str) -> bool:
        return all(getattr(self.cls, t) for t in tags)


def contract_cases(registry: dict[str, type[Recommender]]) -> list[ContractCase]:
    """One case per model of ``registry`` and parameter set (``CONTRACT_PARAMS``, else the defaults)."""
    return [ContractCase(case_id, name, cls, params)
            for name, cls in sorted(registry.items())
            for case_id, params in CONTRACT_PARAMS.get(name, {name: {}}).items()]
