"""Content-based model: TF-IDF over item text (title, description, category, brand, price band).

Users are scored by the cosine between their profile (the weighted sum of the TF-IDF vectors of
the items they interacted with) and each item; similar items by TF-IDF cosine.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.base import Recommender


class ContentRecommender(Recommender):
    name = "content"

    def __init__(self, min_df: int = 1, ngram_max: int = 2, max_features: int = 50_000) -> None:
        self.min_df = min_df
        self.ngram_max = ngram_max
        self.max_features = max_features

    def fit(self, user_items: sp.csr_matrix, items=None) -> "ContentRecommender":
        from sklearn.feature_extraction.text import TfidfVectorizer

        if items is None or "text" not in items:
            raise ValueError("content model needs items['text'] (see features.text.item_text)")
        text = items["text"].fillna("").astype(str).to_numpy()
        if not any(t.strip() for t in text):
            self.item_vectors_ = sp.csr_matrix((len(text), 1), dtype=np.float32)
            return self
        vec = TfidfVectorizer(min_df=self.min_df, ngram_range=(1, self.ngram_max), max_features=self.max_features,
                              sublinear_tf=True, token_pattern=r"(?u)\b\w[\w-]+\b", dtype=np.float32)
        try:
            self.item_vectors_ = vec.fit_transform(text).tocsr()  # rows are L2-normalised
        except ValueError:  # every text is too short to hold a token: no content signal at all
            self.item_vectors_ = sp.csr_matrix((len(text), 1), dtype=np.float32)
        return self

    def score(self, users, user_items):
        profile = user_items[users] @ self.item_vectors_
        return (profile @ self.item_vectors_.T).toarray()

    def item_vectors(self):
        return self.item_vectors_

    def _arrays(self):
        return {"item_vectors_": self.item_vectors_}

    def _set_arrays(self, arrays):
        self.item_vectors_ = arrays["item_vectors_"]
