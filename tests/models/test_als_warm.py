"""ALS warm start (models/als.py): the select step's refit starts from the holdout fit."""
import numpy as np
import pytest
import scipy.sparse as sp

from models import load_model
from models.als import ALSRecommender
from models.bpr import BPRRecommender
from models.registry import warm_from as warm


def planted(seed=0, users=300, items=120, rank=4):
    """Implicit data from planted low-rank tastes: each user buys the items of the user's top scores."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(users, rank)) @ rng.normal(size=(rank, items))
    x = (s > np.quantile(s, 0.9, axis=1, keepdims=True)).astype(np.float32)
    return sp.csr_matrix(x)


def als_loss(x, u, v, alpha, reg):
    """Hu, Koren and Volinsky's objective, computed densely (independently of implicit):
    sum c_ui (p_ui - u.v)^2 + reg (|U|^2 + |V|^2), c = 1 + alpha x, p = x > 0."""
    d = x.toarray()
    c, p = 1 + alpha * d, (d > 0).astype(np.float64)
    return float((c * (p - u.astype(np.float64) @ v.T.astype(np.float64)) ** 2).sum()
                 + reg * ((u.astype(np.float64) ** 2).sum() + (v.astype(np.float64) ** 2).sum()))


def test_warm_refit_reaches_the_cold_fits_objective_in_a_third_of_the_iterations():
    full = planted()
    # The holdout fit lacks a tenth of each user's items (the evaluation window).
    rng = np.random.default_rng(1)
    keep = rng.random(full.nnz) > 0.1
    train = sp.csr_matrix((full.data * keep, full.indices, full.indptr), shape=full.shape)
    train.eliminate_zeros()
    params = dict(factors=8, regularization=0.05, alpha=2.0, iterations=15, warm_iterations=5, random_state=3)
    holdout = ALSRecommender(**params).fit(train)
    cold = ALSRecommender(**params).fit(full)
    refit = ALSRecommender(**params)
    assert refit.warm_start(holdout)
    refit.fit(full)
    assert refit.iterations_run_ == 5 and cold.iterations_run_ == 15
    start = als_loss(full, holdout.user_factors_, holdout.item_factors_, 2.0, 0.05)
    cold_loss = als_loss(full, cold.user_factors_, cold.item_factors_, 2.0, 0.05)
    warm_loss = als_loss(full, refit.user_factors_, refit.item_factors_, 2.0, 0.05)
    assert warm_loss < start and warm_loss <= cold_loss * 1.01


def test_warm_start_only_from_the_same_model_and_shape():
    x = planted()
    base = ALSRecommender(factors=8, iterations=4, random_state=3).fit(x)
    assert not ALSRecommender(factors=16, iterations=4, random_state=3).warm_start(base)  # other factors
    assert ALSRecommender(factors=8, regularization=1.0).warm_start(base)  # a search trial: other regularization
    assert ALSRecommender(factors=8, regularization=1.0).fit_share() == 1.0  # not told to warm start: cold
    trial = ALSRecommender(factors=8, iterations=15, warm_iterations=5)
    trial.warm_start(base)
    assert trial.fit_share() == 5 / 15
    assert not ALSRecommender(factors=8, warm_iterations=0).warm_start(base)  # switched off
    assert not ALSRecommender(factors=8).warm_start(ALSRecommender(factors=8))  # not fitted
    other = ALSRecommender(factors=8, iterations=4, random_state=3)
    assert other.warm_start(base)
    other.fit(planted(users=200))  # another shape: a cold fit, as a fresh model's
    fresh = ALSRecommender(factors=8, iterations=4, random_state=3).fit(planted(users=200))
    assert other.iterations_run_ == 4
    np.testing.assert_array_equal(other.user_factors_, fresh.user_factors_)


def test_select_warm_loads_the_holdout_fit(tmp_path):
    x = planted()
    ALSRecommender(factors=8, iterations=4, random_state=3).fit(x).save(tmp_path / "als")
    model = warm(ALSRecommender(factors=8, iterations=4, random_state=3), tmp_path / "als")
    assert model.warm_ is not None
    np.testing.assert_array_equal(model.warm_[0], load_model(tmp_path / "als").user_factors_)
    assert getattr(warm(ALSRecommender(factors=8), tmp_path / "missing"), "warm_", None) is None
    # A model type without a warm start is left as it was; another ALS setting is not warmed.
    assert not hasattr(warm(BPRRecommender(factors=8), tmp_path / "als"), "warm_")
    assert warm(ALSRecommender(factors=16, iterations=4, random_state=3), tmp_path / "als").warm_ is None


def test_a_holdout_fit_that_cannot_be_read_gives_a_cold_fit(tmp_path, caplog):
    """A step killed while saving the holdout fit leaves a truncated file: the refit starts cold
    (a warm start only saves time), with a warning, and fits as a fresh model does."""
    import logging

    x = planted()
    saved = ALSRecommender(factors=8, iterations=4, random_state=3).fit(x).save(tmp_path / "als")
    data = (saved / "model.npz").read_bytes()
    (saved / "model.npz").write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="models.registry"):
        model = warm(ALSRecommender(factors=8, iterations=4, random_state=3), saved)
    assert getattr(model, "warm_", None) is None
    assert any("no warm start" in r.getMessage() for r in caplog.records)
    model.fit(x)
    fresh = ALSRecommender(factors=8, iterations=4, random_state=3).fit(x)
    assert model.iterations_run_ == 4
    np.testing.assert_array_equal(model.user_factors_, fresh.user_factors_)


def test_truncate_is_the_best_approximation_of_lower_rank():
    """models.als.truncate against the truncated SVD of the dense score matrix (a second method)."""
    from models.als import truncate

    rng = np.random.default_rng(4)
    u, v = rng.normal(size=(200, 12)).astype(np.float32), rng.normal(size=(90, 12)).astype(np.float32)
    scores = u.astype(np.float64) @ v.T.astype(np.float64)
    a, s, bt = np.linalg.svd(scores, full_matrices=False)
    for k in (3, 8, 12):
        tu, tv = truncate(u, v, k)
        assert tu.shape == (200, k) and tv.shape == (90, k)
        np.testing.assert_allclose(tu.astype(np.float64) @ tv.T, (a[:, :k] * s[:k]) @ bt[:k], atol=1e-4)
        # The singular values are split evenly: both sides carry the same weight.
        assert np.linalg.norm(tu) == pytest.approx(np.linalg.norm(tv), rel=1e-4)


def test_a_trial_with_fewer_factors_starts_from_the_truncated_fit():
    """The search's trial with fewer factors than the candidate warm-starts (a third of a cold fit's
    iterations) and reaches the cold fit's objective."""
    x = planted(rank=4)
    base = ALSRecommender(factors=16, regularization=0.05, iterations=15, random_state=3).fit(x)
    params = dict(factors=6, regularization=0.05, iterations=15, warm_iterations=5, random_state=3)
    trial = ALSRecommender(**params)
    assert trial.warm_start(base) and trial.fit_share() == 5 / 15
    trial.fit(x)
    cold = ALSRecommender(**params).fit(x)
    assert trial.iterations_run_ == 5 and trial.user_factors_.shape[1] == 6
    warm_loss = als_loss(x, trial.user_factors_, trial.item_factors_, 2.0, 0.05)
    cold_loss = als_loss(x, cold.user_factors_, cold.item_factors_, 2.0, 0.05)
    assert warm_loss <= cold_loss * 1.01


def test_a_previous_fit_of_lower_rank_gives_a_cold_fit():
    """Truncating a fit whose scores have rank 4 to 6 factors leaves zero columns, which ALS keeps
    at zero: such a trial fits cold, as a fresh model does."""
    x = planted(rank=4)
    base = ALSRecommender(factors=8, iterations=4, random_state=3).fit(x)
    base.user_factors_[:, 4:] = 0.0  # rank 4
    trial = ALSRecommender(factors=6, iterations=4, random_state=3)
    assert trial.warm_start(base)
    trial.fit(x)
    fresh = ALSRecommender(factors=6, iterations=4, random_state=3).fit(x)
    assert trial.iterations_run_ == 4
    np.testing.assert_array_equal(trial.item_factors_, fresh.item_factors_)
