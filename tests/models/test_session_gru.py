"""The GRU session model (models.session_gru) on planted paths whose next items are known by hand."""
from __future__ import annotations

import numpy as np
import pytest

from models.deep import import_torch
from models.kernels import NO_ITEM
from models.session_gru import SessionGRU, session_windows
from models.sessions import SESSION_MODELS, SessionModel, hit_rate_mrr

PATHS = ([0, 1, 2, 3], [4, 5, 6, 7])  # the next item after a path item is always the path's next one


def planted(seed: int, n_sessions: int):
    """Sessions: a piece of 2 to 4 items of one path from a random start, a noise item (8..11) in
    front 30% of the time."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_sessions):
        path = PATHS[rng.integers(2)]
        start = int(rng.integers(0, 3))
        seq = path[start:start + int(rng.integers(2, 5))]
        if rng.random() < 0.3:
            seq = [int(rng.integers(8, 12))] + seq
        seqs.append(seq)
    indptr = np.zeros(len(seqs) + 1, np.int64)
    np.cumsum([len(s) for s in seqs], out=indptr[1:])
    return indptr, np.concatenate(seqs).astype(np.int64)


def small(**kw) -> SessionGRU:
    m = SessionGRU(**{"factors": 16, "hidden": 32, "epochs": 15, "learning_rate": 0.02, "batch_size": 32,
                      "max_length": 3, "dropout": 0.0, "budget_seconds": 0, "patience": 0, "device": "cpu",
                      "random_state": 7, **kw})
    m.num_threads = 1
    return m


@pytest.fixture(scope="module")
def fitted():
    import_torch().set_num_threads(1)
    indptr, items = planted(0, 400)
    return small().fit(indptr, items, 12), (indptr, items)


def _held_out():
    indptr, items = planted(1, 60)
    lengths = np.diff(indptr)
    q_indptr = np.r_[0, np.cumsum(lengths - 1)]
    keep = np.ones(len(items), bool)
    keep[indptr[1:] - 1] = False
    return q_indptr, items[keep], items[indptr[1:] - 1]


def test_windows_cover_every_target_once():
    # Sessions [0 1 2 3 4], [5 6], [7]: windows of 3 items overlapping by one; [7] has no target.
    win, lengths = session_windows(np.array([0, 5, 7, 8]), np.arange(8), 3, pad=99)
    assert win.tolist() == [[0, 1, 2], [2, 3, 4], [5, 6, 99]] and lengths.tolist() == [3, 3, 2]


def test_the_planted_next_item_is_top_1_on_held_out_sessions(fitted):
    model, _ = fitted
    q_indptr, q_items, targets = _held_out()
    ids, scores = model.recommend(q_indptr, q_items, 5)
    hr1, _ = hit_rate_mrr(ids, targets, 1)
    assert hr1 >= 0.9
    # The session's own items never come back; best first.
    for s in range(len(targets)):
        assert not set(ids[s]) & set(q_items[q_indptr[s]:q_indptr[s + 1]].tolist())
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_beyond_the_catalog_slots_are_empty(fitted):
    model, _ = fitted
    ids, scores = model.recommend(np.array([0, 2]), np.array([0, 1]), 12)
    assert ids[0, 0] == 2  # after 0, 1 comes 2
    assert (ids[0, 10:] == NO_ITEM).all() and np.isneginf(scores[0, 10:]).all()


def test_same_seed_same_scores_and_a_pickle_free_round_trip(fitted, tmp_path):
    model, (indptr, items) = fitted
    q_indptr, q_items, _ = _held_out()
    again = small().fit(indptr, items, 12)
    assert np.array_equal(model.session_scores(q_indptr, q_items), again.session_scores(q_indptr, q_items))
    saved = model.save(tmp_path / "gru")
    assert sorted(p.name for p in saved.iterdir()) == ["model.npz", "params.json"]
    with np.load(saved / "model.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    loaded = SessionModel.load(saved)
    assert isinstance(loaded, SESSION_MODELS["session_gru"]) and loaded.params() == model.params()
    ids, scores = model.recommend(q_indptr, q_items, 5)
    ids2, scores2 = loaded.recommend(q_indptr, q_items, 5)
    assert np.array_equal(ids, ids2) and np.array_equal(scores, scores2)


def test_sampled_softmax_learns_the_paths_too():
    indptr, items = planted(0, 400)
    model = small(max_softmax_items=4, negatives=3).fit(indptr, items, 12)
    q_indptr, q_items, targets = _held_out()
    assert hit_rate_mrr(model.recommend(q_indptr, q_items, 5)[0], targets, 1)[0] >= 0.9
