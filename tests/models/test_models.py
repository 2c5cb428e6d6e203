"""Known answers of particular models (the checks every model passes are in test_contract.py)."""
import importlib
import pkgutil

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import models
from models import REGISTRY, load_model
from models.als import ALSRecommender
from models.base import Recommender
from models.bpr import BPRRecommender
from models.buy_again import BuyAgainRecommender
from models.content import TOKEN_PATTERN, ContentRecommender
from models.ease import EASERecommender
from models.factors import FactorRecommender
from models.popularity import PopularityRecommender, TrendingRecommender
from tests.models.contract import checkerboard


def test_registry_names_match_classes():
    # The models of the package (a test file may register more: out of REGISTRY after collection).
    assert sorted(REGISTRY) == ["als", "bpr", "buy_again", "content", "ease", "itemknn", "lightgcn", "popularity",
                              "sasrec", "trending", "two_tower"]
    assert all(cls.name == name for name, cls in REGISTRY.items())


def test_every_named_model_class_of_the_package_is_registered():
    """A model module left out of models/__init__.py, or a class without @register, fails here."""
    for info in pkgutil.iter_modules(models.__path__):
        if not info.name.startswith("pyfunc"):  # the MLflow wrapper and its entry point: no models
            importlib.import_module(f"models.{info.name}")
    named = {cls.name: cls for cls in _subclasses(Recommender)
             if cls.__module__.split(".")[0] == "models" and "name" in vars(cls)}
    assert {n: REGISTRY.get(n) for n in named} == named


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_saved_models_contain_no_pickle(tmp_path):
    model = ALSRecommender(factors=2, iterations=2).fit(checkerboard())
    path = model.save(tmp_path / "als")
    with np.load(path / "model.npz", allow_pickle=False) as z:  # raises if anything was pickled
        assert z["item_factors_"].shape == (8, 2)


def test_als_and_bpr_share_the_factor_model_base_not_each_other():
    assert issubclass(ALSRecommender, FactorRecommender) and issubclass(BPRRecommender, FactorRecommender)
    assert not issubclass(BPRRecommender, ALSRecommender)
    # Each defines only its hyperparameters and its fit (ALS also its warm start, models/als.py).
    assert {k for k, v in vars(BPRRecommender).items() if callable(v)} == {"__init__", "fit"}
    assert {k for k, v in vars(ALSRecommender).items() if callable(v)} == {"__init__", "fit", "warm_start", "fit_share"}


def test_popularity_ranks_by_given_popularity_then_weight():
    ui = sp.csr_matrix(np.array([[1, 0, 5], [1, 0, 0]], dtype=np.float32))
    model = PopularityRecommender().fit(ui, pd.DataFrame({"popularity": [1.0, 3.0, 1.0]}))
    ids, _ = model.recommend(np.array([0, 1]), ui, n=3)
    # item 1 has the highest popularity; items 0 and 2 tie on popularity, item 2 has more weight (5 vs 2).
    assert ids.tolist() == [[1, 2, 0], [1, 2, 0]]


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


def test_ease_inverse_by_cholesky_equals_the_general_inverse_across_blocks():
    from models.ease import spd_inverse

    rng = np.random.default_rng(3)
    for n, block in ((1, 4), (7, 3), (10, 10), (23, 5), (64, 1024)):
        a = rng.normal(size=(n + 2, n))
        a = a.T @ a + 0.5 * np.eye(n)
        np.testing.assert_allclose(spd_inverse(a.copy(), block=block), np.linalg.inv(a), rtol=1e-9, atol=1e-12)
    assert spd_inverse(np.zeros((0, 0))).shape == (0, 0)
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        spd_inverse(-np.eye(3))


def test_trending_ranks_by_decayed_purchases_not_by_raw_counts():
    x = sp.csr_matrix(np.ones((3, 3), dtype=np.float32))
    items = pd.DataFrame({"item_idx": range(3), "popularity": [9.0, 5.0, 1.0], "trending": [0.2, 3.0, 1.5]})
    ids, _ = TrendingRecommender().fit(x, items).recommend(np.array([0]), x, 3)
    assert ids[0].tolist() == [1, 2, 0]
    ids, _ = PopularityRecommender().fit(x, items).recommend(np.array([0]), x, 3)
    assert ids[0].tolist() == [0, 1, 2]


def test_content_text_vectors_match_scikit_learn_tfidf(tmp_path):
    from sklearn.feature_extraction.text import TfidfVectorizer

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


def test_a_model_saved_by_a_newer_release_loads_without_its_unknown_settings(tmp_path, caplog):
    """A rollback: the newer release saved a setting this one does not know; the model loads with the
    settings it knows and the same factors, and says what it ignored."""
    import json
    import logging

    from models import load_model

    model = ALSRecommender(factors=2, iterations=2).fit(checkerboard())
    path = model.save(tmp_path / "als")
    meta = json.loads((path / "params.json").read_text())
    meta["params"]["from_the_future"] = 3
    (path / "params.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="models.base"):
        loaded = load_model(path)
    np.testing.assert_array_equal(loaded.item_factors_, model.item_factors_)
    assert loaded.get_params() == model.get_params()
    assert any("from_the_future" in r.getMessage() and "ignored" in r.getMessage() for r in caplog.records)
