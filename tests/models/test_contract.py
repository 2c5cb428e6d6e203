"""The shared model contract, on a checkerboard whose right answers are known (after implicit's test).

Users 0-3 bought items 0-3 and users 4-7 items 4-7, each user missing exactly one item of their
block: user u misses item u. Excluding what a user already has, the one right answer is item u;
an item's most similar items are the other items of its block.
"""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models import REGISTRY, load_model
from models.als import ALSRecommender
from models.base import NO_ITEM, topk
from models.content import ContentRecommender
from models.itemknn import ItemKNNRecommender
from models.popularity import PopularityRecommender
from models.bpr import BPRRecommender
from models.buy_again import BuyAgainRecommender
from models.ease import EASERecommender


def checkerboard() -> sp.csr_matrix:
    m = np.zeros((8, 8), dtype=np.float32)
    m[:4, :4] = 1
    m[4:, 4:] = 1
    np.fill_diagonal(m, 0)
    return sp.csr_matrix(m)


ITEMS = pd.DataFrame({"item_idx": range(8), "text": ["red apple fruit"] * 4 + ["blue car wheel"] * 4})
PERSONALISED = [
    lambda: ALSRecommender(factors=4, regularization=0.1, iterations=30, random_state=7),
    lambda: ItemKNNRecommender(neighbours=8),
    lambda: ItemKNNRecommender(neighbours=8, weighting="bm25"),
    lambda: EASERecommender(regularization=1.0),
    lambda: ContentRecommender(),
]
IDS = ["als", "itemknn", "itemknn_bm25", "ease", "content"]


@pytest.mark.parametrize("make", PERSONALISED, ids=IDS)
def test_recommends_the_missing_item_of_the_block(make):
    ui = checkerboard()
    model = make()
    assert model.fit(ui, ITEMS) is model
    users = np.arange(8)
    ids, scores = model.recommend(users, ui, n=1, exclude=ui)
    assert ids[:, 0].tolist() == users.tolist()
    assert ids.shape == scores.shape == (8, 1)


@pytest.mark.parametrize("make", PERSONALISED, ids=IDS)
def test_similar_items_stay_in_the_block(make):
    model = make().fit(checkerboard(), ITEMS)
    ids, _ = model.similar_items(np.array([0, 5]), n=3)
    assert set(ids[0]) == {1, 2, 3}
    assert set(ids[1]) == {4, 6, 7}


@pytest.mark.parametrize("make", PERSONALISED + [PopularityRecommender, BuyAgainRecommender,
                                                 lambda: BPRRecommender(factors=4, iterations=20)],
                         ids=IDS + ["pop", "buy_again", "bpr"])
def test_filter_items_exclude_and_save_load_roundtrip(make, tmp_path):
    ui = checkerboard()
    model = make().fit(ui, ITEMS)
    ids, scores = model.recommend(np.arange(8), ui, n=8, filter_items=np.array([0, 4]))
    assert not np.isin(ids, [0, 4]).any()
    assert (ids[:, -2:] == NO_ITEM).all() and np.isneginf(scores[:, -2:]).all()  # only 6 eligible items
    excl, _ = model.recommend(np.arange(8), ui, n=8, exclude=ui)
    # 8 items minus the 3 each user has: 5 left, then empty slots.
    assert ((excl >= 0).sum(axis=1) == 5).all()
    assert not ui.multiply(sp.csr_matrix((np.ones(40), (np.repeat(np.arange(8), 5),
                                                        excl[excl >= 0])), shape=(8, 8))).nnz
    loaded = load_model(model.save(tmp_path / model.name))
    assert type(loaded) is type(model)
    again, again_scores = loaded.recommend(np.arange(8), ui, n=8, filter_items=np.array([0, 4]))
    np.testing.assert_array_equal(again, ids)
    np.testing.assert_allclose(again_scores, scores)


def test_saved_models_contain_no_pickle(tmp_path):
    model = ALSRecommender(factors=2, iterations=2).fit(checkerboard())
    path = model.save(tmp_path / "als")
    with np.load(path / "model.npz", allow_pickle=False) as z:  # raises if anything was pickled
        assert z["item_factors_"].shape == (8, 2)


def test_popularity_ranks_by_given_popularity_then_weight():
    ui = sp.csr_matrix(np.array([[1, 0, 5], [1, 0, 0]], dtype=np.float32))
    model = PopularityRecommender().fit(ui, pd.DataFrame({"popularity": [1.0, 3.0, 1.0]}))
    ids, _ = model.recommend(np.array([0, 1]), ui, n=3)
    # item 1 has the highest popularity; items 0 and 2 tie on popularity, item 2 has more weight (5 vs 2).
    assert ids.tolist() == [[1, 2, 0], [1, 2, 0]]


def test_bpr_learns_the_blocks():
    ui = checkerboard()
    model = BPRRecommender(factors=8, iterations=200, learning_rate=0.05, random_state=3).fit(ui)
    ids, _ = model.recommend(np.arange(8), ui, n=1, exclude=ui)
    assert (ids[:, 0] == np.arange(8)).mean() >= 0.75  # stochastic: most users, not necessarily all


def test_buy_again_ranks_own_items_by_count_and_repeatability():
    # user 0 bought item 0 three times and item 1 once; item 1 is re-bought by others (repeatable).
    ui = sp.csr_matrix(np.array([[3, 1, 0, 0], [0, 2, 0, 0], [0, 2, 1, 0], [0, 0, 0, 1]], dtype=np.float32))
    model = BuyAgainRecommender(smoothing=0.0).fit(ui)
    # repeat rate = buyers with a count above 1 / buyers: item 0 1/1, item 1 2/3, item 2 0/1, item 3 0/1.
    assert model.repeat_rate_.tolist() == pytest.approx([1.0, 2 / 3, 0.0, 0.0])
    ids, scores = model.recommend(np.array([0, 3]), ui, n=4)
    # user 0: item 0 log1p(3)*(0.1+1) = 1.525 vs item 1 log1p(1)*(0.1+2/3) = 0.531 -> item 0 first.
    assert ids[0].tolist()[:2] == [0, 1]
    assert scores[0, 0] == pytest.approx(1 + np.log1p(3) * 1.1 + model.popularity_[0] * 1e-3, rel=1e-5)
    # Given repeat rates from the features step, they are used as they are.
    given = BuyAgainRecommender().fit(ui, pd.DataFrame({"repeat_rate": [0.0, 1.0, 0.0, 0.0]}))
    assert given.recommend(np.array([0]), ui, n=1)[0][0, 0] == 1  # 0.693*1.1 = 0.762 > 1.386*0.1
    assert ids[1, 0] == 3 and scores[1, 0] > 1  # a user's own item always beats the rest


def test_ease_matches_the_closed_form():
    ui = checkerboard()
    lam = 2.0
    x = ui.toarray().astype(np.float64)
    p = np.linalg.inv(x.T @ x + lam * np.eye(8))
    b = np.eye(8) - p / np.diag(p)
    model = EASERecommender(regularization=lam).fit(ui)
    np.testing.assert_allclose(model.weights_, b, atol=1e-5)


def test_registry_names_match_classes():
    assert sorted(REGISTRY) == ["als", "bpr", "buy_again", "content", "ease", "itemknn", "popularity", "trending"]
    assert all(cls.name == name for name, cls in REGISTRY.items())


def test_topk_orders_best_first_with_index_tiebreak_and_pads():
    s = np.array([[0.1, 0.9, 0.5, 0.9], [-np.inf, 0.2, -np.inf, -np.inf]], dtype=np.float32)
    ids, vals = topk(s, 3)
    assert ids.tolist() == [[1, 3, 2], [1, -1, -1]]
    assert vals[0].tolist() == pytest.approx([0.9, 0.9, 0.5])
    ids, _ = topk(s, 6)  # more than the catalog: padded with -1
    assert ids.shape == (2, 6) and ids[0].tolist() == [1, 3, 2, 0, -1, -1]


def test_trending_ranks_by_decayed_purchases_not_by_raw_counts():
    from models.popularity import TrendingRecommender

    x = sp.csr_matrix(np.ones((3, 3), dtype=np.float32))
    items = pd.DataFrame({"item_idx": range(3), "popularity": [9.0, 5.0, 1.0], "trending": [0.2, 3.0, 1.5]})
    ids, _ = TrendingRecommender().fit(x, items).recommend(np.array([0]), x, 3)
    assert ids[0].tolist() == [1, 2, 0]
    ids, _ = PopularityRecommender().fit(x, items).recommend(np.array([0]), x, 3)
    assert ids[0].tolist() == [0, 1, 2]


def test_content_text_vectors_match_scikit_learn_tfidf(tmp_path):
    from sklearn.feature_extraction.text import TfidfVectorizer

    from models import load_model
    from models.content import TOKEN_PATTERN

    text = ["red wool scarf", "blue cotton shirt", "red ceramic mug", "garden lantern solar"]
    model = ContentRecommender().fit(sp.csr_matrix((1, 4)), pd.DataFrame({"text": text}))
    ref = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=TOKEN_PATTERN).fit(text)
    queries = ["Red red scarf", "solar garden lantern please", "nothing known", ""]
    expected = ref.transform(queries).toarray()
    loaded = load_model(model.save(tmp_path / "content"))
    np.testing.assert_allclose(loaded.text_vectors(queries).toarray(), expected, rtol=1e-5, atol=1e-6)
    # The first query is closest to the scarf, the second to the lantern.
    sims = (loaded.text_vectors(queries) @ loaded.item_vectors().T).toarray()
    assert sims[0].argmax() == 0 and sims[1].argmax() == 3 and not sims[2].any()


def test_block_topk_equals_brute_force_with_rule_masks():
    from models.scoring import block_topk

    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(300, 8)).astype(np.float32)
    exclude = sp.random(50, 300, density=0.05, format="csr", random_state=1)
    filt = np.array([3, 7, 11])
    ids, scores = block_topk(users, items, np.arange(50), 10, exclude=exclude, filter_items=filt, block=16)
    s = users @ items.T
    s[:, filt] = -np.inf
    s[exclude.nonzero()] = -np.inf
    expected = np.argsort(-s, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(s, expected, axis=1), rtol=1e-5)


def test_block_topk_pads_with_minus_one_when_few_items_are_eligible():
    from models.scoring import block_topk

    users, items = np.ones((2, 3), np.float32), np.arange(15, dtype=np.float32).reshape(5, 3)
    exclude = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32))
    ids, scores = block_topk(users, items, np.arange(2), 6, exclude=exclude, filter_items=np.array([4]))
    assert ids.tolist() == [[3, 2, 1, -1, -1, -1], [3, 2, 1, 0, -1, -1]]
    assert np.isneginf(scores[0, 3:]).all() and scores[1, 0] == pytest.approx(9 + 10 + 11)

