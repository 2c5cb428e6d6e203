"""The deep models' helpers (models/deep.py) and LightGCN (models/lightgcn.py), on planted data whose
answers are known by hand. LightGCN also runs the shared contract (test_contract.py) as a
registered model. Kept cheap: tiny graphs, few epochs, one torch thread."""
import logging
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from models import REGISTRY, load_model
from models.deep import fit_loop, holdout_split, pick_device, sample_users, validation_auc
from tests.conftest import REPO

LOG = logging.getLogger("test_deep")


def communities() -> sp.csr_matrix:
    """40 users x 30 items in two disconnected communities: users 0-19 buy only items 0-14, users
    20-39 only items 15-29; user u buys the 8 items (u + k) mod 15, k < 8, of its community, so
    7 items of its own community are left for it."""
    rows, cols = [], []
    for u in range(40):
        base = 0 if u < 20 else 15
        for k in range(8):
            rows.append(u)
            cols.append(base + (u + k) % 15)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(40, 30))


def lightgcn(**params):
    # Batches of 64: several steps per epoch on 320 interactions.
    model = REGISTRY["lightgcn"](**{"factors": 16, "epochs": 30, "batch_size": 64, "validation_fraction": 0.2,
                                    **params})
    model.num_threads = 1
    return model


@pytest.mark.parametrize("max_interactions", [0, 160])
def test_lightgcn_recommends_within_the_users_community(max_interactions):
    ui = communities()
    # 0: all data, early stopping on a validation share. 160 of 320: trained (all epochs, no
    # validation: 20 users are too few to stop on) on a sample of 20 whole users; the others still
    # get embeddings through the graph.
    params = {"max_interactions": 160, "validation_fraction": 0.0} if max_interactions else {}
    model = lightgcn(**params).fit(ui)
    ids, _ = model.recommend(np.arange(40), ui, n=5, exclude=ui)
    own_community = (ids >= 15) == (np.arange(40) >= 20)[:, None]
    assert (ids >= 0).all() and own_community.all()
    assert model.fit_summary_["stopped_by"] in ("epochs", "patience")
    # 8 interactions per user: a sample of 160 holds 20 whole users.
    assert model.fit_summary_["users_trained"] == (20 if max_interactions else 40)


def test_lightgcn_is_deterministic_on_cpu_for_a_seed():
    ui = communities()
    a, b, c = lightgcn(random_state=7).fit(ui), lightgcn(random_state=7).fit(ui), lightgcn(random_state=8).fit(ui)
    assert np.array_equal(a.user_factors_, b.user_factors_) and np.array_equal(a.item_factors_, b.item_factors_)
    assert not np.array_equal(a.item_factors_, c.item_factors_)  # the seed is what fixes them


def test_lightgcn_save_load_same_recommendations_and_no_pickle(tmp_path):
    ui = communities()
    model = lightgcn(epochs=5).fit(ui)
    path = model.save(tmp_path / "lightgcn")
    assert {f.suffix for f in path.iterdir()} <= {".npz", ".json"}
    with np.load(path / "model.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    loaded = load_model(path)
    users = np.arange(40)
    for got, want in zip(loaded.recommend(users, ui, 5, exclude=ui), model.recommend(users, ui, 5, exclude=ui)):
        assert np.array_equal(got, want)
    assert loaded.get_params() == model.get_params()


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_fit_loop_stops_by_budget():
    clock = FakeClock()

    def epoch(e, time_up):  # each epoch takes 1 s
        clock.now += 1.0

    # After epoch 3, 3 s are used and the next epoch would end at 4 s > 3.5 s: 3 epochs.
    out = fit_loop("m", epoch, lambda: clock.now, 100, 3.5, 0, LOG, clock=clock)
    assert (out["epochs"], out["stopped_by"], out["best_epoch"], out["seconds"]) == (3, "budget", 3, 3.0)


def test_an_epoch_longer_than_the_budget_stops_between_batches():
    """Ten batches of 1 s an epoch, budget 3.5 s: the first epoch ends after its 4th batch (3 s
    used before it, 4 s after), is validated, and training stops by budget."""
    clock = FakeClock()
    batches = []

    def epoch(e, time_up):
        for b in range(10):
            if b and time_up():
                break
            clock.now += 1.0
            batches.append((e, b))

    out = fit_loop("m", epoch, lambda: 0.5, 100, 3.5, 0, LOG, clock=clock)
    assert batches == [(1, 0), (1, 1), (1, 2), (1, 3)]
    assert (out["epochs"], out["stopped_by"], out["best_epoch"], out["best_score"], out["seconds"]) == \
        (1, "budget", 1, 0.5, 4.0)
    # Without a budget every batch runs.
    batches.clear()
    out = fit_loop("m", epoch, None, 2, None, 0, LOG, clock=clock)
    assert len(batches) == 20 and out["stopped_by"] == "epochs"


def test_fit_loop_stops_by_patience_and_restores_the_best_epoch():
    scores = iter([0.1, 0.3, 0.2, 0.25, 0.29, 0.5])
    state = {"epoch": 0}
    restored = []
    out = fit_loop("m", lambda e, _: state.update(epoch=e), lambda: next(scores), 100, None, 3, LOG,
                   snapshot=lambda: state["epoch"], restore=restored.append, clock=FakeClock())
    # Best 0.3 at epoch 2; epochs 3, 4, 5 are no better: stop after epoch 5, back to epoch 2.
    assert (out["epochs"], out["best_epoch"], out["best_score"], out["stopped_by"]) == (5, 2, 0.3, "patience")
    assert restored == [2]
    no_validation = fit_loop("m", lambda e, _: None, None, 4, 0, 3, LOG, clock=FakeClock())
    assert (no_validation["epochs"], no_validation["stopped_by"], no_validation["best_score"]) == (4, "epochs", None)


def test_holdout_split_holds_out_a_random_share_per_user():
    # User u has 4 * u items (0, 4, 8, 12); a quarter of each user's items is held out: 0, 1, 2, 3.
    x = sp.csr_matrix(np.arange(16)[None, :] < 4 * np.arange(4)[:, None], dtype=np.float32)
    train, valid = holdout_split(x, 0.25, seed=3)
    assert np.diff(valid.indptr).tolist() == [0, 1, 2, 3]
    assert (train + valid != x).nnz == 0 and train.multiply(valid).nnz == 0
    # A user with 3 items keeps them all at 0.25; the draw depends on the seed.
    other = holdout_split(x, 0.25, seed=4)[1]
    assert np.diff(other.indptr).tolist() == [0, 1, 2, 3] and (other != valid).nnz


def test_sample_users_keeps_whole_users_within_the_limit():
    x = sp.random(50, 20, density=0.3, format="csr", random_state=0)
    whole, everyone = sample_users(x, x.nnz, seed=0)  # within the limit: all of it
    assert (whole != x).nnz == 0 and everyone.tolist() == list(range(50))
    s, kept = sample_users(x, 100, seed=0)
    assert s.shape == x.shape and 0 < s.nnz <= 100
    assert (s[kept] != x[kept]).nnz == 0  # kept users whole
    others = np.setdiff1d(np.arange(50), kept)
    assert s[others].nnz == 0


def test_validation_auc_by_hand():
    # Scores of the one user for items 0-3: 4, 3, 2, 1. Item 1 is in train, item 2 held out: of the
    # other items not in train (0 and 3), one scores below item 2: 0.5.
    u, v = np.array([[1.0]]), np.array([[4.0], [3.0], [2.0], [1.0]])
    train = sp.csr_matrix(([1.0], ([0], [1])), shape=(1, 4))
    valid = sp.csr_matrix(([1.0], ([0], [2])), shape=(1, 4))
    assert validation_auc(u, v, train, valid) == 0.5
    valid_best = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 4))
    assert validation_auc(u, v, train, valid_best) == 1.0
    # DCG: item 2 has one eligible item (0) above it: 1 / log2(3); item 0 none: 1 / log2(2) = 1.
    assert validation_auc(u, v, train, valid, metric="dcg") == pytest.approx(1 / np.log2(3))
    assert validation_auc(u, v, train, valid_best, metric="dcg") == 1.0
    two = sp.csr_matrix(([1.0, 1.0], ([0, 0], [2, 3])), shape=(1, 4))  # items 2 and 3: 1 and 2 above
    assert validation_auc(u, v, train, two, metric="dcg") == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / 2)
    with pytest.raises(ValueError, match="dcg"):
        validation_auc(u, v, train, valid, metric="ndcg")


def test_pick_device(monkeypatch):
    import torch

    assert pick_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == pick_device("cuda") == "cpu"  # CUDA is never required
    with pytest.raises(ValueError):
        pick_device("tpu")


def test_importing_the_models_does_not_import_torch():
    code = "import sys, models; assert 'lightgcn' in models.REGISTRY; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_state_dict_round_trip_through_npz_without_pickle(tmp_path):
    import torch

    from models.deep import arrays_to_state, state_to_arrays

    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    np.savez(tmp_path / "w.npz", **state_to_arrays(a, prefix="net."))
    with np.load(tmp_path / "w.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["net.bias", "net.weight"]
        arrays_to_state(b, dict(z), prefix="net.")
    x = torch.ones(1, 3)
    assert torch.equal(a(x), b(x)) and torch.equal(b.weight, a.weight)


def test_the_softmax_leaves_out_the_users_other_items_by_hand():
    """The full softmaxes of LightGCN and the two-tower model leave each pair's user's other training
    items out of the denominator (they are not negatives; models.deep.others_mask, shared by both);
    the target stays in. (SASRec keeps them: on Online Retail leaving them out gave task new 0.0599
    against 0.0623, task all 0.2050 against 0.1900.)"""
    from models.deep import others_mask

    # user 0 bought items 1, 3, 4; user 1 bought item 2.
    train = sp.csr_matrix((np.ones(4, np.float32), ([0, 0, 0, 1], [1, 3, 4, 2])), shape=(2, 6))
    mask = others_mask(train, np.array([0, 0, 1]), np.array([3, 1, 2]))
    np.testing.assert_array_equal(mask, [[0, 1, 0, 0, 1, 0],   # target 3: items 1 and 4 left out
                                         [0, 0, 0, 1, 1, 0],   # target 1: items 3 and 4
                                         [0, 0, 0, 0, 0, 0]])  # user 1 has no other item


def test_validation_metric_setting_reaches_the_models():
    from models.registry import make_model
    from pipelines.config import load_config

    cfg = load_config(environ={"RECSYS_TWO_TOWER_VALIDATION_METRIC": "dcg", "RECSYS_LIGHTGCN_VALIDATION_METRIC": "dcg"})
    assert make_model("two_tower", cfg).validation_metric == "dcg"
    assert make_model("lightgcn", cfg).validation_metric == "dcg"
    assert make_model("two_tower", load_config(environ={})).validation_metric == "auc"


def test_svd_start_reproduces_a_matrix_of_that_rank_up_to_its_scale():
    """Three blocks of users x items, all bought: a binary matrix of rank 3 (weights are binarised).
    With 3 factors the start's products are the matrix times one positive constant; its entries'
    root mean square is the scale asked for; factors past the rank stay zero."""
    from models.deep import svd_start

    r = np.zeros((30, 15))
    r[:10, :5], r[10:25, 5:12], r[25:, 12:] = 1, 1, 1
    weighted = sp.csr_matrix(r * np.arange(1, 16)[None, :])  # weights 1 to 15: the start counts each item once
    users, items = svd_start(weighted, 3, 0.1, seed=3)
    got = users @ items.T
    c = got[0, 0]
    assert c > 0
    np.testing.assert_allclose(got, c * r, atol=1e-4 * c)
    assert np.sqrt((np.sum(users ** 2) + np.sum(items ** 2)) / (45 * 3)) == pytest.approx(0.1, rel=1e-5)
    users, items = svd_start(weighted, 20, 0.1, seed=3)  # more factors than the 14 a 30 x 15 matrix allows
    assert users.shape == (30, 20) and not users[:, 14:].any() and not items[:, 14:].any()


@pytest.mark.parametrize("init", ["svd", "random"])
def test_lightgcn_trains_from_either_start_within_the_community(init):
    ui = communities()
    model = lightgcn(init=init).fit(ui)
    ids, _ = model.recommend(np.arange(40), ui, n=5, exclude=ui)
    assert ((ids >= 15) == (np.arange(40) >= 20)[:, None]).all()
    assert model.fit_summary_["epochs"] >= 1
