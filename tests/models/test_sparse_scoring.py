"""The sparse scoring path (models.kernels.sparse_topk, Recommender.score_pairs) against a dense full sort.

The reference is computed independently: each user's dense score row (``score``), masked by hand,
then ordered with a stable full sort by (-score, item index) - no argpartition, no sparse tricks.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models import REGISTRY
from models.kernels import sparse_topk


def data(seed=0, users=60, items=90):
    rng = np.random.default_rng(seed)
    x = sp.random(users, items, density=0.06, random_state=seed, format="csr", dtype=np.float32)
    x.data = (1 + 4 * rng.random(x.nnz)).astype(np.float32)
    keep = np.ones(users, np.float32)
    keep[3] = 0  # a user without history
    x = (sp.diags(keep) @ x).tocsr()
    x.eliminate_zeros()
    words = ["red", "blue", "mug", "lamp", "cotton", "steel", "gift", "set"]
    text = [" ".join(rng.choice(words, 3)) + f" sku{i % 7}" for i in range(items)]
    pop = rng.random(items) * 10
    table = pd.DataFrame({"item_idx": np.arange(items), "text": text, "popularity": pop,
                          "trending": rng.random(items), "repeat_rate": rng.random(items)})
    return x, table


def reference(model, users, x, n, exclude=None, filter_items=None):
    dense = np.asarray(model.score(users, x), dtype=np.float64)
    if filter_items is not None:
        dense[:, filter_items] = -np.inf
    if exclude is not None:
        e = exclude[users].tocoo()
        dense[e.row, e.col] = -np.inf
    ids = np.full((len(users), n), -1)
    for r, row in enumerate(dense):
        order = np.lexsort((np.arange(len(row)), -row))
        order = order[np.isfinite(row[order])][:n]
        ids[r, :len(order)] = order
    return ids, dense


@pytest.mark.parametrize("name", ["popularity", "trending", "buy_again", "itemknn"])
@pytest.mark.parametrize("masks", [False, True])
def test_sparse_recommend_equals_dense_full_sort(name, masks):
    x, table = data()
    model = REGISTRY[name]().fit(x, table)
    assert model.sparse
    model.block_users = 7  # several blocks, one of them partial
    users = np.arange(x.shape[0])
    exclude = x if masks else None
    filt = np.array([0, 5, 17, 42]) if masks else None
    ids, scores = model.recommend(users, x, 12, exclude=exclude, filter_items=filt)
    want, dense = reference(model, users, x, 12, exclude, filt)
    np.testing.assert_array_equal(ids, want)
    got = np.where(ids >= 0, dense[np.arange(len(users))[:, None], np.maximum(ids, 0)], -np.inf)
    np.testing.assert_allclose(scores, got, rtol=1e-5)
    if masks:
        assert not np.isin(ids, filt).any()
        own = np.asarray(x[np.repeat(users, 12), np.maximum(ids, 0).ravel()]).ravel() > 0
        assert not (own & (ids.ravel() >= 0)).any()


def test_sparse_topk_by_hand():
    # Two rows over 5 items: stored entries plus the shared vector b = [0.5, 0.4, 0.3, 0.2, 0.1].
    s = sp.csr_matrix(np.array([[0, 0, 0, 0, 2.0], [0, 0, 0, 0, 0]], np.float32))
    b = np.array([0.5, 0.4, 0.3, 0.2, 0.1], np.float32)
    ex = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 1, 1, 0, 0]], np.float32))
    ids, vals = sparse_topk(s, b, 3, 5, exclude=ex, filter_mask=np.array([0, 0, 0, 1, 0], bool))
    # Row 0: item 4 (2.1), item 1 (0.4), item 2 (0.3); item 0 excluded, 3 filtered.
    # Row 1: item 0 (0.5), item 4 (0.1), then nothing (1, 2 excluded, 3 filtered).
    np.testing.assert_array_equal(ids, [[4, 1, 2], [0, 4, -1]])
    np.testing.assert_allclose(vals, [[2.1, 0.4, 0.3], [0.5, 0.1, -np.inf]], rtol=1e-6)


@pytest.mark.parametrize("name", ["buy_again", "itemknn", "content", "als", "popularity"])
def test_score_pairs_equals_dense_scores(name):
    x, table = data(seed=3)
    model = REGISTRY[name]().fit(x, table) if name != "als" else REGISTRY[name](factors=8, iterations=3).fit(x, table)
    model.block_users = 5
    rng = np.random.default_rng(1)
    u = rng.integers(0, x.shape[0], 400)
    i = rng.integers(0, x.shape[1], 400)
    dense = np.asarray(model.score(np.arange(x.shape[0]), x), dtype=np.float32)
    np.testing.assert_allclose(model.score_pairs(u, i, x), dense[u, i], rtol=1e-5, atol=1e-6)


def check_similar(ids, scores, matrix, n, filtered, anchors=None):
    """Each anchor's list against its row of ``matrix`` sorted in full (self, filtered and
    non-positive entries left out); row k of ``matrix`` is anchor ``anchors[k]`` (default k)."""
    for a in range(matrix.shape[0]):
        row = matrix[a].copy()
        row[[a if anchors is None else anchors[a], *filtered]] = -np.inf
        row[row <= 1e-9] = -np.inf
        order = np.lexsort((np.arange(len(row)), -row))
        order = order[np.isfinite(row[order])][:n]
        got = ids[a][ids[a] >= 0]
        # Equal scores may swap within a tie; the scores must match in order.
        assert len(got) == len(order)
        np.testing.assert_allclose(scores[a][:len(got)], row[order], rtol=1e-5)


@pytest.mark.parametrize("dense", [False, True])
def test_content_similar_items_equal_dense_cosines(dense):
    # Sparse cosines (the sparse top-K path) and dense blocks of a sparse matrix (forced by pricing
    # the sparse sort out), against a dense cosine matrix sorted in full.
    model, v = content_model(5, 11, dense)
    ids, scores = model.similar_items(np.arange(v.shape[0]), 6, filter_items=np.array([2, 3]))
    check_similar(ids, scores, v @ v.T, 6, [2, 3])


def content_model(seed: int, block: int, dense: bool):
    """A content model on ``data(seed)`` with blocks of ``block`` rows (the dense-block path when
    ``dense``: the sparse sort priced out) and its unit item vectors, dense, in float64."""
    x, table = data(seed=seed, users=300, items=400)
    model = REGISTRY["content"]().fit(x, table)
    model.block_users = block
    if dense:
        model.sparse_sort_cost = 1e9
    v = model.item_vectors().toarray().astype(np.float64)
    return model, v / np.where(np.linalg.norm(v, axis=1) > 0, np.linalg.norm(v, axis=1), 1)[:, None]


def test_itemknn_similar_items_are_its_neighbours_scaled_by_the_strongest():
    x, table = data(seed=5, users=300, items=400)
    model = REGISTRY["itemknn"](neighbours=5).fit(x, table)
    ids, scores = model.similar_items(np.arange(x.shape[1]), 4, filter_items=np.array([2, 3]))
    sim = model.similarity_.toarray().astype(np.float64)
    sim[sim < 0] = 0
    peak = sim.max(axis=1, keepdims=True)
    check_similar(ids, scores, sim / np.where(peak > 0, peak, 1), 4, [2, 3])


@pytest.mark.parametrize("name", ["als", "als-slack-1", "itemknn", "buy_again", "popularity"])
def test_recommend_with_own_equals_two_recommend_calls(name):
    x, table = data(seed=7)
    model = REGISTRY[name]().fit(x, table) if not name.startswith("als") \
        else REGISTRY["als"](factors=8, iterations=3).fit(x, table)
    model.block_users = 9
    if name == "als-slack-1":  # most rows own more than 1 of their top 11: the filtered second call
        model.own_slack = 1
    # Users with history (an empty ALS row scores every item alike: ties in any order).
    users = np.flatnonzero(np.diff(x.indptr) > 0)
    filt = np.array([1, 2, 30])
    (a_ids, _), (n_ids, _) = model.recommend_with_own(users, x, 10, x, filter_items=filt)
    want_all, _ = reference(model, users, x, 10, None, filt)
    want_new, _ = reference(model, users, x, 10, x, filt)
    np.testing.assert_array_equal(n_ids, want_new)
    np.testing.assert_array_equal(a_ids, want_all)
    # Own items do reach the list over all items (a user with history and a high own score).
    assert (np.asarray(x[np.repeat(users, 10), np.maximum(a_ids, 0).ravel()]).ravel() > 0).any()


@pytest.mark.parametrize("dense", [False, True])
def test_similar_items_within_groups_equal_masked_dense_cosines(dense):
    # ``within``: each anchor's neighbours from its own group only. Reference: the full dense cosine
    # matrix with every pair of different groups set to -inf, sorted in full; the anchors are a
    # shuffled subset (the output follows their order) and one group has fewer items than n.
    model, v = content_model(7, 13, dense)
    rng = np.random.default_rng(1)
    groups = np.array(["g%d" % g for g in rng.integers(0, 5, 400)], dtype=object)
    groups[[10, 20, 30]] = "tiny"
    anchors = rng.permutation(400)[:250]
    ids, scores = model.similar_items(anchors, 6, filter_items=np.array([2, 3]), within=groups)
    cos = np.where(groups[:, None] == groups[None, :], v @ v.T, -np.inf)[anchors]
    check_similar(ids, scores, cos, 6, [2, 3], anchors=anchors)
    assert all(set(groups[ids[k][ids[k] >= 0]]) <= {groups[a]} for k, a in enumerate(anchors))
    tiny = np.flatnonzero(np.isin(anchors, [10, 20, 30]))
    assert (ids[tiny, 2:] == -1).all()  # two other items in its group at most
