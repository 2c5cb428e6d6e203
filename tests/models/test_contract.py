"""The shared model contract, run for every registered model (tests/models/conftest.py), on a
checkerboard whose right answers are known (after implicit's shared recommender test and
scikit-learn's ``check_estimator``).

Users 0-3 bought items 0-3 and users 4-7 items 4-7, each user missing exactly one item of their
block: user u misses item u. Excluding what a user already has, the one right answer is item u;
an item's most similar items are the other items of its block. A model added to the registry, in
models/ or in a test file, gets every check here without an edit (tests/models/contract.py).
"""
import json

import numpy as np
import pytest
import scipy.sparse as sp

from models import load_model
from models.kernels import NO_ITEM
from tests.models.contract import checkerboard, fit

USERS = np.arange(8)


def test_init_stores_hyperparameters_only(contract_case, contract_model):
    names = contract_case.cls.param_names()
    # Each constructor parameter stored under its own name, and nothing else.
    assert sorted(vars(contract_model)) == sorted(names)
    params = contract_model.get_params()
    assert tuple(params) == names
    assert {k: params[k] for k in contract_case.params} == contract_case.params
    assert type(contract_model)(**params).get_params() == params  # an unfitted copy
    json.dumps(params)  # params.json holds them


def test_fit_returns_self_and_fitted_attributes_end_in_underscore(contract_model):
    params = contract_model.get_params()
    before = set(vars(contract_model))
    assert fit(contract_model, checkerboard()) is contract_model
    learnt = set(vars(contract_model)) - before
    assert learnt and all(k.endswith("_") and not k.startswith("_") for k in learnt)
    assert contract_model.get_params() == params


@pytest.mark.model_tags("ranks_unseen_by_history")
def test_recommends_the_missing_item_of_the_block(contract_model):
    ui = checkerboard()
    model = contract_model
    assert fit(model, ui) is model
    ids, scores = model.recommend(USERS, ui, n=1, exclude=ui)
    assert ids.shape == scores.shape == (8, 1)
    if model.deterministic:
        assert ids[:, 0].tolist() == USERS.tolist()
    else:  # stochastic: most users, not necessarily all
        assert (ids[:, 0] == USERS).mean() >= 0.75


@pytest.mark.model_tags("item_similarity")
def test_similar_items_stay_in_the_block(contract_model):
    model = fit(contract_model, checkerboard())
    ids, scores = model.similar_items(np.array([0, 5]), n=3)
    assert ids.shape == scores.shape == (2, 3)
    if model.deterministic:
        assert set(ids[0]) == {1, 2, 3}
        assert set(ids[1]) == {4, 6, 7}
    else:
        assert (np.isin(ids[0], [1, 2, 3]).sum() + np.isin(ids[1], [4, 6, 7]).sum()) / 6 >= 0.75


def test_filter_items_exclude_and_save_load_roundtrip(contract_model, tmp_path):
    ui = checkerboard()
    model = fit(contract_model, ui)
    ids, scores = model.recommend(USERS, ui, n=8, filter_items=np.array([0, 4]))
    assert not np.isin(ids, [0, 4]).any()
    assert (ids[:, -2:] == NO_ITEM).all() and np.isneginf(scores[:, -2:]).all()  # only 6 eligible items
    excl, _ = model.recommend(USERS, ui, n=8, exclude=ui)
    # 8 items minus the 3 each user has: 5 left, then empty slots.
    assert ((excl >= 0).sum(axis=1) == 5).all()
    assert not ui.multiply(sp.csr_matrix((np.ones(40), (np.repeat(np.arange(8), 5),
                                                        excl[excl >= 0])), shape=(8, 8))).nnz
    loaded = load_model(model.save(tmp_path / model.name))
    assert type(loaded) is type(model)
    again, again_scores = loaded.recommend(USERS, ui, n=8, filter_items=np.array([0, 4]))
    np.testing.assert_array_equal(again, ids)
    np.testing.assert_allclose(again_scores, scores)


def test_saves_params_json_and_npz_files_without_pickle(contract_model, tmp_path):
    model = fit(contract_model, checkerboard())
    model.block_users, model.block_cells = 3, 100  # serving settings (make_model): not saved
    path = model.save(tmp_path / "model")
    meta = json.loads((path / "params.json").read_text())
    assert meta == {"name": model.name, "params": model.get_params()}
    with np.load(path / "model.npz", allow_pickle=False) as z:  # raises if anything was pickled
        saved = set(z.files)
    saved |= {f.stem for f in path.glob("*.npz") if f.name != "model.npz"}
    assert saved == set(model._arrays())
    assert load_model(path).get_params() == model.get_params()


def test_scores_agree_across_the_scoring_methods(contract_model):
    """score, score_pairs, sparse_scores, recommend and recommend_with_own: one set of scores."""
    ui = checkerboard()
    model = fit(contract_model, ui)
    model.block_users = 3  # several blocks, one of them partial
    dense = np.asarray(model.score(USERS, ui), dtype=np.float32)
    assert dense.shape == (8, 8)
    u, i = np.divmod(np.arange(64), 8)
    np.testing.assert_allclose(model.score_pairs(u, i, ui), dense[u, i], rtol=1e-5, atol=1e-6)
    if model.sparse:
        s, b = model.sparse_scores(USERS, ui)
        total = (np.zeros((8, 8)) if s is None else s.toarray()) + (0 if b is None else b)
        np.testing.assert_allclose(total, dense, rtol=1e-5, atol=1e-6)
    ids, scores = model.recommend(USERS, ui, n=8)
    assert (ids >= 0).all()  # every item listed
    np.testing.assert_allclose(scores, np.take_along_axis(dense, ids, axis=1), rtol=1e-5, atol=1e-6)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    filt = np.array([2])
    (a_ids, a_scores), (n_ids, n_scores) = model.recommend_with_own(USERS, ui, 3, ui, filter_items=filt)
    _, all_scores = model.recommend(USERS, ui, 3, filter_items=filt)
    _, new_scores = model.recommend(USERS, ui, 3, exclude=ui, filter_items=filt)
    np.testing.assert_allclose(a_scores, all_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(n_scores, new_scores, rtol=1e-5, atol=1e-6)
    assert not np.isin(a_ids, filt).any() and not np.isin(n_ids, filt).any()
    owned = np.asarray(ui[np.repeat(USERS, 3), np.maximum(n_ids, 0).ravel()]).ravel() > 0
    assert not (owned & (n_ids.ravel() >= 0)).any()


def test_an_empty_batch_gives_empty_arrays(contract_model):
    ui = checkerboard()
    model = fit(contract_model, ui)
    ids, scores = model.recommend(np.array([], dtype=np.int64), ui, n=3)
    assert ids.shape == scores.shape == (0, 3)
    assert model.score_pairs(np.array([], dtype=np.int64), np.array([], dtype=np.int64), ui).shape == (0,)
