"""The top-K kernels (models.kernels) and the fused factor top-K (models.scoring) by hand and
against brute force."""
import numpy as np
import pytest
import scipy.sparse as sp

from models.kernels import NO_ITEM, mask_block, member, row_rank, sort_rows, topk
from models.scoring import block_topk


def test_topk_orders_best_first_with_index_tiebreak_and_pads():
    s = np.array([[0.1, 0.9, 0.5, 0.9], [-np.inf, 0.2, -np.inf, -np.inf]], dtype=np.float32)
    ids, vals = topk(s, 3)
    assert ids.tolist() == [[1, 3, 2], [1, -1, -1]]
    assert vals[0].tolist() == pytest.approx([0.9, 0.9, 0.5])
    ids, _ = topk(s, 6)  # more than the catalog: padded with -1
    assert ids.shape == (2, 6) and ids[0].tolist() == [1, 3, 2, 0, -1, -1]


def test_mask_block_sets_excluded_and_filtered_items_to_minus_inf():
    s = np.zeros((2, 4), np.float32)
    rows = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 0, 1]], np.float32))
    mask_block(s, rows, np.array([0]))
    assert np.isneginf(s).tolist() == [[True, True, False, False], [True, False, False, True]]
    ids, _ = topk(s, 4)
    assert ids.tolist() == [[2, 3, NO_ITEM, NO_ITEM], [1, 2, NO_ITEM, NO_ITEM]]


def test_member_and_sort_rows():
    assert member(np.array([3, 4, 9, -1]), np.array([1, 3, 9])).tolist() == [True, False, True, False]
    assert member(np.array([1]), np.array([], np.int64)).tolist() == [False]
    r, items = np.array([1, 0, 1, 0, 1]), np.array([2, 1, 0, 3, 1])
    vals = np.array([0.5, -1.0, 0.5, 2.0, -0.0], np.float32)
    rr, ii, vv = sort_rows(r, items, vals, rows=2, n_items=4)
    # by (row, -value, item); -0.0 ties with 0.0
    assert rr.tolist() == [0, 0, 1, 1, 1] and ii.tolist() == [3, 1, 0, 2, 1]
    assert vv.tolist() == [2.0, -1.0, 0.5, 0.5, 0.0]


def test_block_topk_equals_brute_force_with_rule_masks():
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
    users, items = np.ones((2, 3), np.float32), np.arange(15, dtype=np.float32).reshape(5, 3)
    exclude = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32))
    ids, scores = block_topk(users, items, np.arange(2), 6, exclude=exclude, filter_items=np.array([4]))
    assert ids.tolist() == [[3, 2, 1, -1, -1, -1], [3, 2, 1, 0, -1, -1]]
    assert np.isneginf(scores[0, 3:]).all() and scores[1, 0] == pytest.approx(9 + 10 + 11)


@pytest.mark.parametrize("case", ["skewed", "zero_users", "negative", "few_items"])
def test_pruned_block_topk_equals_brute_force(case, monkeypatch):
    """The norm-bounded top-K (most items never scored) gives the brute-force lists: items with
    skewed norms (the bound prunes), users with zero vectors and all-negative scores (it cannot),
    a catalog smaller than the head; with excluded items per user (more than the slack in some
    rows, so the filtered second pass runs) and filtered items for everyone."""
    import models.scoring as ms

    monkeypatch.setattr(ms, "PRUNE_HEAD", 64)  # several doubling chunks on a small catalog
    rng = np.random.default_rng({"skewed": 0, "zero_users": 1, "negative": 2, "few_items": 3}[case])
    n_items = 40 if case == "few_items" else 3000
    users = rng.normal(size=(400, 8)).astype(np.float32)
    items = (rng.normal(size=(n_items, 8)) * rng.lognormal(0, 1.0, size=(n_items, 1))).astype(np.float32)
    if case == "zero_users":
        users[:30] = 0
    if case == "negative":
        users, items = -np.abs(users), np.abs(items)
    exclude = sp.random(400, n_items, density=0.02, format="csr", random_state=4, dtype=np.float32)
    exclude[5, :200] = 1.0  # one heavy user: 200 own items
    filt = rng.choice(n_items, n_items // 20, replace=False)
    pick = rng.permutation(400)[:350]
    ids, scores = block_topk(users, items, pick, 25, exclude=exclude.tocsr(), filter_items=filt, block=97, prune=True)
    s = users[pick] @ items.T
    s[:, filt] = -np.inf
    ex = exclude.tocsr()[pick].tocoo()
    s[ex.row, ex.col] = -np.inf
    k = min(25, n_items)
    expected = -np.sort(-s, axis=1)[:, :k]
    np.testing.assert_allclose(scores[:, :k], expected, rtol=1e-5, atol=1e-6)
    got = np.take_along_axis(s, np.maximum(ids[:, :k], 0), axis=1)
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(ids[:, :k] >= 0, finite)  # -1 exactly where nothing is eligible
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-5, atol=1e-6)  # each id has its score
    if case != "zero_users":  # no ties: the very same items, in order (ties: by item id, not checked here)
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(ids[:, :k][finite], order[finite])
    plain = block_topk(users, items, pick, 25, exclude=exclude.tocsr(), filter_items=filt, block=97, prune=False)
    np.testing.assert_allclose(plain[1], scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows, n_items", [(3, 7), (5000, 2 ** 20), (70000, 2 ** 17)])
def test_sort_rows_equals_lexsort_when_rows_and_items_need_more_than_32_bits(rows, n_items):
    """Rows x items of up to 37 bits: grouped by row ranges, then packed sorts (the last two cases);
    the order is numpy's lexsort of (row, -value, item), computed independently."""
    rng = np.random.default_rng(rows)
    n = 40_000
    r, items = rng.integers(0, rows, n), rng.integers(0, n_items, n)
    vals = rng.choice(np.array([-np.inf, -1.5, 0.0, -0.0, 0.25, 3.0], np.float32), n)  # many ties
    rr, ii, vv = sort_rows(r, items, vals, rows, n_items)
    order = np.lexsort((items, -(vals + np.float32(0.0)), r))
    assert rr.tolist() == r[order].tolist() and ii.tolist() == items[order].tolist()
    np.testing.assert_array_equal(vv, vals[order] + np.float32(0.0))
    np.testing.assert_array_equal(row_rank(rr, rows), np.arange(n) - np.searchsorted(rr, rr, side="left"))
    empty = sort_rows(r[:0], items[:0], vals[:0], rows, n_items)
    assert [len(a) for a in empty] == [0, 0, 0]
