"""What the personal lists know about each user: purchases, the items a list must never show, the
categories the user interacted with, and content profiles (the history, or the stated interests of
a user without one)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.content import ContentRecommender
from pipelines.artifacts import Features, read_daily
from pipelines.config import Config


def purchase_matrix(cfg: Config, ds: str, shape: tuple[int, int]) -> sp.csr_matrix:
    """Users x items: distinct days with a purchase, up to ds (from the features step's daily table)."""
    d = read_daily(cfg, ds, columns=["user_idx", "item_idx", "purchases"])
    d = d[d["purchases"] > 0]
    m = sp.csr_matrix((np.ones(len(d), np.float32), (d["user_idx"], d["item_idx"])), shape=shape)
    m.sum_duplicates()
    return m


def item_categories(items: pd.DataFrame) -> np.ndarray:
    """Category code per item (the catalog's or the derived ``category_key``; one code without)."""
    if "category_key" not in items:
        return np.zeros(len(items), np.int64)
    codes, _ = pd.factorize(items["category_key"].astype(str))
    return codes


@dataclass(frozen=True)
class UserHistory:
    """Per user (rows aligned with user_idx): ``full`` (interaction weights), ``bought`` (purchase
    days), ``never`` (items a list must never show: "all" for for_you, what the user returned in
    full; "new" for new_for_you, everything the user interacted with or ever bought; both, and
    "disliked" for buy_again, the items the user rated at or below dislike_max_rating), the category
    codes the user interacted with, ``empty`` (no usable history) and ``stated`` (no history but
    stated interests, personalisation allowed)."""
    full: sp.csr_matrix
    bought: sp.csr_matrix
    never: dict[str, sp.csr_matrix]
    categories: sp.csr_matrix
    empty: np.ndarray
    stated: np.ndarray
    interests: pd.Series

    @classmethod
    def build(cls, cfg: Config, ds: str, f: Features, category: np.ndarray) -> UserHistory:
        full, users = f.full, f.users
        n_users = full.shape[0]
        bought = purchase_matrix(cfg, ds, full.shape)
        n_cats = int(category.max()) + 1 if len(category) else 1
        onehot = sp.csr_matrix((np.ones(len(category), np.float32), (np.arange(len(category)), category)),
                               shape=(len(category), n_cats))
        kept = bought.multiply(full > 0).tocsr()
        returned = (bought - kept).tocsr()
        returned.eliminate_zeros()
        touched = ((full > 0).astype(np.float32) + (bought > 0).astype(np.float32)).tocsr()
        empty = np.diff(full.indptr) == 0
        interests = users["interests"] if "interests" in users else pd.Series([None] * n_users)
        personalized = users["personalized"].to_numpy(bool) if "personalized" in users else np.ones(n_users, bool)
        stated = empty & personalized & interests.fillna("").astype(str).str.strip().ne("").to_numpy()
        # Items the user rated at or below dislike_max_rating never come back, on any list.
        disliked = f.disliked if f.disliked is not None else sp.csr_matrix(full.shape, dtype=np.float32)
        return cls(full=full, bought=bought, never={"all": (returned + disliked).tocsr(), "new": (touched + disliked).tocsr(),
                                                    "disliked": disliked.tocsr()},
                   categories=(full @ onehot).tocsr(), empty=empty, stated=stated, interests=interests)

    def profiles(self, content: ContentRecommender, vectors: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
        """Content profiles of the users ``rows``: the TF-IDF of the items a user interacted with; a
        user without history but with stated interests (quiz answers, preferred categories) gets the
        TF-IDF of that text."""
        out = (self.full[rows] @ vectors).tocsr()
        st = np.flatnonzero(self.stated[rows])
        if len(st):  # their history rows are empty: add the text vectors in their places
            place = sp.csr_matrix((np.ones(len(st), np.float32), (st, np.arange(len(st)))), shape=(len(rows), len(st)))
            out = (out + place @ content.text_vectors(self.interests.iloc[rows[st]].tolist())).tocsr()
        return out
