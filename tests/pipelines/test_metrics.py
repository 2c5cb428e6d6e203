"""Ranking metrics against values worked out by hand."""
import math

import numpy as np
import pytest
import scipy.sparse as sp

from pipelines.evaluation.metrics import ranking_metrics


def truth_matrix(rows: list[list[int]], n_items: int = 10) -> sp.csr_matrix:
    r = np.repeat(np.arange(len(rows)), [len(x) for x in rows])
    c = np.array([i for x in rows for i in x], dtype=np.int64)
    return sp.csr_matrix((np.ones(len(c)), (r, c)), shape=(len(rows), n_items))


def test_hand_computed_example():
    recs = np.array([[1, 2, 3], [4, 5, 6]])
    truth = truth_matrix([[2, 7], [9]])
    m = ranking_metrics(recs, truth, k=3, n_catalog=10)
    # user 0: one hit at rank 2 of 2 relevant; user 1: no hit.
    assert m["precision_at_3"] == pytest.approx((1 / 3 + 0) / 2)
    assert m["recall_at_3"] == pytest.approx((1 / 2 + 0) / 2)
    dcg = 1 / math.log2(3)
    idcg = 1 + 1 / math.log2(3)  # ideal over min(|truth|, k) = 2 positions
    assert m["ndcg_at_3"] == pytest.approx((dcg / idcg) / 2)
    assert m["map_at_3"] == pytest.approx(((1 / 2) / 2) / 2)  # precision@2 * rel, over min(2, 3)
    assert m["hit_rate_at_3"] == pytest.approx(0.5)
    assert m["coverage_at_3"] == pytest.approx(6 / 10)
    assert m["users"] == 2


def test_perfect_list_scores_one_and_empty_slots_are_misses():
    recs = np.array([[3, 1, -1]])
    m = ranking_metrics(recs, truth_matrix([[1, 3]]), k=3, n_catalog=4)
    assert m["ndcg_at_3"] == pytest.approx(1.0)
    assert m["recall_at_3"] == pytest.approx(1.0)
    assert m["precision_at_3"] == pytest.approx(2 / 3)
    assert m["coverage_at_3"] == pytest.approx(2 / 4)


def test_users_without_truth_are_not_averaged():
    recs = np.array([[0, 1], [2, 3]])
    m = ranking_metrics(recs, truth_matrix([[0], []], n_items=4), k=2, n_catalog=4)
    assert m["users"] == 1 and m["hit_rate_at_2"] == 1.0 and m["ndcg_at_2"] == pytest.approx(1.0)


def test_novelty_by_hand():
    from pipelines.evaluation.metrics import novelty

    share = np.array([0.5, 0.25, 0.125])
    assert novelty(np.array([[0, 1], [2, -1]]), share) == pytest.approx((1 + 2 + 3) / 3)


def test_intra_list_diversity_by_hand():
    from pipelines.evaluation.metrics import intra_list_diversity

    vectors = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    # list [0, 1]: cos 0 -> diversity 1; list [0, 2]: cos 1/sqrt(2) -> 1 - 0.7071;
    # list [0, 1, 2]: pairs 0, 0.7071, 0.7071 -> 1 - 0.4714; a one-item list has no pairs.
    d = intra_list_diversity(np.array([[0, 1, -1], [0, 2, -1], [0, 1, 2], [1, -1, -1]]), vectors)
    assert d == pytest.approx((1 + (1 - 2 ** -0.5) + (1 - 2 * 2 ** -0.5 / 3)) / 3)


def test_segment_recall_by_hand():
    from pipelines.evaluation.metrics import segment_recall

    recs = np.array([[1, 2, 3], [4, 5, 6]])
    truth = truth_matrix([[1, 7, 8], [9]])
    head = np.zeros(10, bool)
    head[[1, 7, 9]] = True
    # head truth: user 0 {1, 7} (1 hit of 2), user 1 {9} (0 of 1) -> (0.5 + 0) / 2
    assert segment_recall(recs, truth, 3, head) == pytest.approx(0.25)
    # tail truth: user 0 {8} (0 of 1); user 1 has none and is left out
    assert segment_recall(recs, truth, 3, ~head) == pytest.approx(0.0)


def test_sample_users_is_a_fixed_uniform_subset():
    from pipelines.evaluation.metrics import sample_users

    users = np.arange(0, 50_000, 5)
    a, b = sample_users(users, 1_000, 7), sample_users(users, 1_000, 7)
    np.testing.assert_array_equal(a, b)  # the same seed, the same sample
    assert len(a) == 1_000 and len(np.unique(a)) == 1_000 and np.isin(a, users).all()
    assert (np.diff(a) > 0).all()
    assert not np.array_equal(a, sample_users(users, 1_000, 8))
    # Uniform: each tenth of the population holds about a tenth of the sample (binomial sd ~9.5).
    per_tenth = np.bincount(np.searchsorted(users, a) * 10 // len(users), minlength=10)
    assert np.abs(per_tenth - 100).max() < 40
    np.testing.assert_array_equal(sample_users(users[:10], 1_000, 7), users[:10])  # no more than there are
