"""The content model's review-sentiment prior (models/content.py), against scores worked out by hand."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models.content import ContentRecommender
from models.registry import items_for_fit, load_model

TEXT = ["red mug kitchen", "blue mug kitchen", "green tea grocery", "black tea grocery", "red jam grocery"]
USER_ITEMS = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 0, 1, 0, 0]], dtype=np.float32))


def _items(**cols) -> pd.DataFrame:
    return pd.DataFrame({"item_idx": range(len(TEXT)), "text": TEXT, **cols})


def _scores(model: ContentRecommender) -> np.ndarray:
    return model.score(np.array([0, 1]), USER_ITEMS)


def test_no_reviews_leave_the_scores_exactly_unchanged():
    plain = _scores(ContentRecommender().fit(USER_ITEMS, _items()))
    zeros = ContentRecommender().fit(USER_ITEMS, _items(review_count=[0] * 5, sentiment=[0.0] * 5))
    assert zeros.item_prior_ is None  # neutral: no prior at all
    np.testing.assert_array_equal(_scores(zeros), plain)
    # A weight of 0 ignores even real reviews.
    off = ContentRecommender(sentiment_weight=0.0).fit(USER_ITEMS, _items(review_count=[9] * 5, sentiment=[-1.0] * 5))
    np.testing.assert_array_equal(_scores(off), plain)


def test_the_prior_by_hand_and_its_save_load_round_trip(tmp_path):
    plain = _scores(ContentRecommender().fit(USER_ITEMS, _items()))
    n = np.array([0, 3, 1, 6, 2], float)
    s = np.array([0.0, -0.9, 0.5, 0.8, 0.0])
    model = ContentRecommender(sentiment_weight=0.4, sentiment_shrinkage=3.0).fit(USER_ITEMS, _items(
        review_count=n, sentiment=s))
    # 1 + 0.4 x s x n / (n + 3): item 1 -> 1 - 0.4 x 0.9 x 0.5 = 0.82; item 2 -> 1 + 0.4 x 0.5 x 0.25 = 1.05;
    # item 3 -> 1 + 0.4 x 0.8 x 6/9 = 1.21333; items 0 and 4 (no reviews, or a neutral mean) -> 1.
    want_prior = np.array([1.0, 0.82, 1.05, 1 + 0.4 * 0.8 * 6 / 9, 1.0])
    np.testing.assert_allclose(model.item_prior_, want_prior, rtol=1e-6)
    np.testing.assert_allclose(_scores(model), plain * want_prior, rtol=1e-6)
    # User 0 (red mug): the blue mug shares "mug kitchen"; its match is cut by 18%, not removed.
    assert _scores(model)[0, 1] == pytest.approx(plain[0, 1] * 0.82, rel=1e-6)
    model.save(tmp_path / "content")
    again = load_model(tmp_path / "content")
    np.testing.assert_array_equal(_scores(again), _scores(model))


def test_items_for_fit_passes_the_train_or_full_side_of_the_reviews():
    items = _items(pop_train=[1] * 5, pop_full=[2] * 5, review_count_train=[0, 1, 0, 0, 0],
                   sentiment_train=[0, -0.5, 0, 0, 0], review_count_full=[0, 2, 0, 0, 1],
                   sentiment_full=[0, -0.25, 0, 0, 0.9])
    train, full = items_for_fit(items, "pop_train"), items_for_fit(items, "pop_full")
    assert train["review_count"].tolist() == [0, 1, 0, 0, 0] and train["sentiment"].tolist()[1] == -0.5
    assert full["review_count"].tolist() == [0, 2, 0, 0, 1] and full["sentiment"].tolist()[4] == 0.9
    assert "sentiment" not in items_for_fit(_items(pop_train=[1] * 5), "pop_train")  # features before issue 17
