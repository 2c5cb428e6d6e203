"""Content-based model: TF-IDF over item text (title, description, category, brand, price band).

Users are scored by the cosine between their profile (the weighted sum of the TF-IDF vectors of
the items they interacted with) and each item; similar items by TF-IDF cosine. ``text_vectors``
maps free text (a new user's quiz answers or declared interests) into the same space, so a user
without history can still get a content-based list.

Review sentiment (issue 17) is a multiplicative prior on the user scores: item i's score is
multiplied by ``1 + sentiment_weight * s_i * n_i / (n_i + sentiment_shrinkage)``, with ``s_i`` its
mean review sentiment in [-1, 1] and ``n_i`` its review count (``items['sentiment']`` and
``items['review_count']``, from models.registry.items_for_fit: the train-side columns when fitted
for evaluation, the full-side ones for serving). Few reviews move an item little; an item without
reviews (or a weight of 0, or an item table without the columns) keeps its score exactly. With
``sentiment_weight < 1`` the prior stays positive, so it re-orders matches and never turns one
into a non-match. ``similar_items`` (product pages) is unchanged: similarity is not a verdict.
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

    def __init__(self, min_df: int = 1, ngram_max: int = 2, max_features: int = 50_000,
                 sentiment_weight: float = 0.2, sentiment_shrinkage: float = 3.0) -> None:
        self.min_df = min_df
        self.ngram_max = ngram_max
        self.max_features = max_features
        self.sentiment_weight = sentiment_weight
        self.sentiment_shrinkage = sentiment_shrinkage

    def fit(self, user_items: sp.csr_matrix, items=None) -> "ContentRecommender":
        from sklearn.feature_extraction.text import TfidfVectorizer

        if items is None or "text" not in items:
            raise ValueError("content model needs items['text'] (see features.text.item_text)")
        text = items["text"].fillna("").astype(str).to_numpy()
        self.item_prior_ = sentiment_prior(items, self.sentiment_weight, self.sentiment_shrinkage)
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
        scores = np.asarray(self.item_vectors_ @ profile_t).T
        prior = getattr(self, "item_prior_", None)
        return scores if prior is None else scores * prior

    def item_vectors(self):
        return self.item_vectors_

    def _arrays(self):
        out = {"item_vectors_": self.item_vectors_}
        if getattr(self, "terms_", None) is not None:
            out.update(terms_=np.asarray(self.terms_, dtype=str), idf_=self.idf_)
        if getattr(self, "item_prior_", None) is not None:
            out["item_prior_"] = self.item_prior_
        return out

    def _set_arrays(self, arrays):
        self.item_vectors_ = arrays["item_vectors_"]
        self.terms_, self.idf_ = arrays.get("terms_"), arrays.get("idf_")
        self.item_prior_ = arrays.get("item_prior_")


def sentiment_prior(items, weight: float, shrinkage: float) -> np.ndarray | None:
    """Per item, ``1 + weight * sentiment * n / (n + shrinkage)`` (float32), from the item table's
    ``sentiment`` and ``review_count``; None (no prior at all: scores unchanged) when the columns are
    missing, the weight is 0, or no item has a review."""
    if items is None or "sentiment" not in items or "review_count" not in items or not weight:
        return None
    n = np.nan_to_num(np.asarray(items["review_count"], dtype=np.float64), nan=0.0).clip(min=0)
    s = np.nan_to_num(np.asarray(items["sentiment"], dtype=np.float64), nan=0.0).clip(-1.0, 1.0)
    prior = 1.0 + float(weight) * s * n / (n + max(float(shrinkage), 0.0) + 1e-12)
    return None if np.all(prior == 1.0) else prior.astype(np.float32)
