"""Content-based model: TF-IDF over item text (title, description, category, brand, price band).

Users are scored by the cosine between their profile (the weighted sum of the TF-IDF vectors of
the items they interacted with) and each item; similar items by TF-IDF cosine. ``text_vectors``
maps free text (a new user's quiz answers or declared interests) into the same space, so a user
without history can still get a content-based list.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.base import Recommender
from models.registry import register

TOKEN_PATTERN = r"(?u)\b\w[\w-]+\b"


@register
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
                              sublinear_tf=True, token_pattern=TOKEN_PATTERN, dtype=np.float32)
        try:
            self.item_vectors_ = vec.fit_transform(text).tocsr()  # rows are L2-normalised
        except ValueError:  # every text is too short to hold a token: no content signal at all
            self.item_vectors_ = sp.csr_matrix((len(text), 1), dtype=np.float32)
            return self
        self.terms_ = vec.get_feature_names_out().astype(str)
        self.idf_ = vec.idf_.astype(np.float32)
        return self

    def text_vectors(self, texts) -> sp.csr_matrix:
        """TF-IDF vectors of free texts in the fitted vocabulary (rows L2-normalised; unknown words
        are ignored, so an empty or unrelated text gives a zero row)."""
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.preprocessing import normalize

        texts = ["" if t is None else str(t) for t in texts]
        terms = getattr(self, "terms_", None)
        if terms is None or not len(terms):
            return sp.csr_matrix((len(texts), self.item_vectors_.shape[1]), dtype=np.float32)
        counts = CountVectorizer(vocabulary={t: i for i, t in enumerate(terms)}, ngram_range=(1, self.ngram_max),
                                 token_pattern=TOKEN_PATTERN, dtype=np.float32).transform(texts).tocsr()
        counts.data = 1.0 + np.log(counts.data)  # sublinear tf, as in fit
        return normalize(counts @ sp.diags(self.idf_), norm="l2").astype(np.float32).tocsr()

    def score(self, users, user_items):
        # Profiles share common terms with most items, so the scores are dense: a dense profile block
        # times the sparse item vectors (cost nnz(vectors) x rows) beats a sparse x sparse product.
        profile_t = np.asarray((user_items[users] @ self.item_vectors_).T.toarray(), dtype=np.float32)
        return np.asarray(self.item_vectors_ @ profile_t).T

    def item_vectors(self):
        return self.item_vectors_

    def _arrays(self):
        out = {"item_vectors_": self.item_vectors_}
        if getattr(self, "terms_", None) is not None:
            out.update(terms_=np.asarray(self.terms_, dtype=str), idf_=self.idf_)
        return out

    def _set_arrays(self, arrays):
        self.item_vectors_ = arrays["item_vectors_"]
        self.terms_, self.idf_ = arrays.get("terms_"), arrays.get("idf_")
