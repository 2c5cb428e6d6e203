"""Sessions and the session baselines on planted data where the answers are known by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.sessions import leave_last_out, sessionize, sessions_from_orders
from models.kernels import NO_ITEM
from models.sessions import (
    SESSION_MODELS,
    ItemCooccurrence,
    SessionKNN,
    SessionModel,
    hit_rate_mrr,
)


def test_sessions_from_ids_or_a_30_minute_gap():
    t0 = pd.Timestamp("2026-11-01 10:00", tz="UTC")
    m = pd.Timedelta(minutes=1)
    ev = pd.DataFrame({
        "user_id": ["u1", "u1", "u1", "u1", "u2", "u2", "u2", "u3", "u3"],
        "item_id": ["a", "b", "b", "c", "a", "d", "e", "x", "a"],
        "event_time": [t0, t0 + 5 * m, t0 + 6 * m, t0 + 40 * m,   # u1: gap of 34 min before c
                       t0, t0 + 10 * m, t0 + 12 * m,              # u2: ids split d | e
                       t0, t0 + 1 * m],                            # u3: x is not a known item
        "session_id": [None, None, None, None, "s1", "s1", "s2", None, None]})
    index = pd.Series({"a": 0, "b": 1, "c": 2, "d": 3, "e": 4})
    indptr, items = sessionize(ev, index, gap_minutes=30, min_length=1)
    sessions = [items[indptr[i]:indptr[i + 1]].tolist() for i in range(len(indptr) - 1)]
    # u1: [a, b] (b repeated once), then [c] after the gap; u2: [a, d] (s1), [e] (s2); u3: [a] (x dropped).
    assert sessions == [[0, 1], [2], [0, 3], [4], [0]]
    indptr2, items2 = sessionize(ev, index, gap_minutes=30, min_length=2)
    assert [items2[indptr2[i]:indptr2[i + 1]].tolist() for i in range(len(indptr2) - 1)] == [[0, 1], [0, 3]]


def test_orders_as_sessions_and_leave_last_out():
    indptr, items = sessions_from_orders(np.array([1, 1, 1, 2, 3, 3, 3, 3]), np.array([5, 5, 6, 7, 1, 2, 2, 3]))
    assert indptr.tolist() == [0, 2, 5] and items.tolist() == [5, 6, 1, 2, 3]
    q_indptr, q_items, targets = leave_last_out(indptr, items)
    assert q_indptr.tolist() == [0, 1, 3] and q_items.tolist() == [5, 1, 2] and targets.tolist() == [6, 3]


def test_hit_rate_and_mrr_by_hand():
    ids = np.array([[3, 1, 2], [0, 4, 5], [7, 8, 9]])
    targets = np.array([1, 0, 5])
    # hits at rank 2, rank 1, none (k=3: 9 is not 5) -> HR 2/3, MRR (1/2 + 1 + 0) / 3.
    assert hit_rate_mrr(ids, targets, 3) == pytest.approx((2 / 3, 1.5 / 3))
    assert hit_rate_mrr(ids, targets, 1) == pytest.approx((1 / 3, 1 / 3))


def _planted(seed=0, n_sessions=300):
    """Two shopping paths: 0 -> 1 -> 2 and 3 -> 4 -> 5, each session one path's prefix of 2 or 3
    items, with a noise item (6..9) sometimes at the start."""
    rng = np.random.default_rng(seed)
    seqs = []
    for s in range(n_sessions):
        path = [0, 1, 2] if s % 2 == 0 else [3, 4, 5]
        seq = path[: rng.integers(2, 4)]
        if rng.random() < 0.3:
            seq = [int(rng.integers(6, 10))] + seq
        seqs.append(seq)
    indptr = np.zeros(len(seqs) + 1, np.int64)
    np.cumsum([len(s) for s in seqs], out=indptr[1:])
    return indptr, np.concatenate(seqs).astype(np.int64)


@pytest.mark.parametrize("cls", [SessionKNN, ItemCooccurrence])
def test_the_planted_path_comes_next(cls, tmp_path):
    indptr, items = _planted()
    model = cls().fit(indptr, items, 10)
    q_indptr = np.array([0, 1, 3, 4])
    q_items = np.array([0, 3, 4, 9])  # [0], [3, 4], [9]
    ids, scores = model.recommend(q_indptr, q_items, 3)
    assert ids[0, 0] == 1  # after 0 comes 1
    assert ids[1, 0] == 5  # after 3, 4 comes 5 (3 and 4 are excluded: already in the session)
    assert 3 not in ids[1] and 4 not in ids[1]
    # Ranks are best first; empty slots are NO_ITEM with -inf.
    assert np.all(np.diff(scores[:, :2], axis=1) <= 0)
    assert np.all((ids != NO_ITEM) | np.isneginf(scores))
    # Round trip without pickle: the same answers.
    saved = model.save(tmp_path / cls.name)
    assert sorted(p.name for p in saved.iterdir()) == ["model.npz", "params.json"]
    again = SessionModel.load(saved)
    assert isinstance(again, SESSION_MODELS[cls.name])
    ids2, scores2 = again.recommend(q_indptr, q_items, 3)
    assert np.array_equal(ids, ids2) and np.allclose(scores, scores2)


def test_held_out_sessions_score_as_planted():
    indptr, items = _planted(seed=1)
    test_ip, test_items = _planted(seed=2, n_sessions=40)
    q_indptr, q_items, targets = leave_last_out(test_ip, test_items)
    for cls in (SessionKNN, ItemCooccurrence):
        ids, _ = cls().fit(indptr, items, 10).recommend(q_indptr, q_items, 20)
        # Every held-out next item is the planted successor of the session's last item: top 1.
        assert hit_rate_mrr(ids, targets, 1) == (1.0, 1.0), cls.name


def test_cooccurrence_fitted_in_item_blocks_equals_one_product(monkeypatch):
    """The item x item product in blocks (each cut to its top neighbours) gives the neighbours of the
    whole product, computed here in one piece; no item is its own neighbour."""
    import scipy.sparse as sp

    import models.sessions as S

    rng = np.random.default_rng(5)
    n_items, lens = 60, rng.integers(1, 6, 400)
    indptr = np.r_[0, np.cumsum(lens)]
    items = rng.integers(0, n_items, indptr[-1])
    monkeypatch.setattr(S, "MAX_BLOCK_PAIRS", 40)
    blocked = S.ItemCooccurrence(neighbours=7).fit(indptr, items, n_items).state_
    unit = S._unit_rows(S.session_matrix(indptr, items, n_items).T.tocsr())
    assert len(S.item_blocks(unit, unit.T.tocsr(), 40)) > 10
    whole = (unit @ unit.T).toarray()
    np.fill_diagonal(whole, 0.0)
    for i in range(n_items):
        row = blocked[i]
        assert row.nnz == min(7, int((whole[i] > 0).sum()))
        assert i not in row.indices
        # Its values are the 7 largest cosines of the whole row.
        np.testing.assert_allclose(np.sort(row.data)[::-1], np.sort(whole[i])[::-1][:row.nnz], rtol=1e-5)
    assert sp.isspmatrix_csr(blocked)


def test_item_blocks_cover_every_item_once_within_the_pair_bound():
    """Blocks are contiguous, cover every item, each costs at most max_pairs (or is one item), and
    each is as long as the bound allows; costs counted here item by item."""
    import scipy.sparse as sp

    from models.sessions import item_blocks

    rng = np.random.default_rng(1)
    for trial in range(60):
        n_items, n_sessions = int(rng.integers(1, 40)), int(rng.integers(1, 60))
        m = sp.random(n_sessions, n_items, density=float(rng.random()), format="csr", random_state=trial)
        unit, unit_t = m.T.tocsr(), m
        lengths = np.diff(unit_t.indptr)
        cost = np.array([lengths[unit.indices[unit.indptr[i]:unit.indptr[i + 1]]].sum() for i in range(n_items)])
        for bound in (1, 5, 30, 1000):
            blocks = item_blocks(unit, unit_t, bound)
            assert [i for lo, hi in blocks for i in range(lo, hi)] == list(range(n_items))
            for lo, hi in blocks:
                assert hi - lo == 1 or cost[lo:hi].sum() <= bound
                assert hi == n_items or cost[lo:hi + 1].sum() > bound


def test_item_cooccurrence_leaves_out_sessions_over_max_session_items():
    """A session longer than max_session_items (a crawler) adds no pair: the model equals the one
    fitted on the other sessions alone; at the default cap it counts as any session."""
    sessions = [[0, 1], [1, 2], [0, 1, 2], list(range(10))]  # the last one: 10 items
    lengths = [len(s) for s in sessions]
    indptr, items = np.concatenate([[0], np.cumsum(lengths)]), np.concatenate(sessions)
    capped = ItemCooccurrence(neighbours=5, max_session_items=3).fit(indptr, items, 10).state_
    alone = ItemCooccurrence(neighbours=5).fit(indptr[:4], items[:7], 10).state_
    assert (capped != alone).nnz == 0
    # By hand: items 0 and 1 share sessions {0, 2} of 0's {0, 2} and 1's {0, 1, 2}: cosine 2 / sqrt(2 * 3).
    assert capped[0, 1] == pytest.approx(2 / np.sqrt(6), rel=1e-6)
    assert capped[3].nnz == 0  # item 3 was only in the long session
    full = ItemCooccurrence(neighbours=5).fit(indptr, items, 10).state_
    assert full[3].nnz > 0


@pytest.mark.parametrize("cls", [SessionKNN, ItemCooccurrence])
def test_recommend_available_equals_the_full_ranking_with_unavailable_items_dropped(cls):
    """Unavailable items are left out before the top n (the models' filter_mask): the same lists as the
    model's whole ranking (n = every item) with those items removed afterwards, a second method."""
    from pipelines.ranking.session_surface import recommend_available

    indptr, items = _planted(seed=3)
    model = cls().fit(indptr, items, 10)
    q_indptr, q_items = np.arange(11), np.arange(10)  # each item as a one-item session
    available = np.ones(10, bool)
    available[[1, 5, 8]] = False
    ids, scores = recommend_available(model, q_indptr, q_items, 3, available)
    full_ids, full_scores = model.recommend(q_indptr, q_items, 10)
    for row in range(10):
        keep = (full_ids[row] != NO_ITEM) & np.isin(full_ids[row], np.flatnonzero(available))
        want = full_ids[row][keep][:3]
        assert ids[row][: len(want)].tolist() == want.tolist()
        assert (ids[row][len(want):] == NO_ITEM).all() and np.isneginf(scores[row][len(want):]).all()
        np.testing.assert_allclose(scores[row][: len(want)], full_scores[row][keep][:3])
