"""pipelines.ranking.sources.factor_lists: the new-item slots from a factor model's vectors
(cold_item_model two_tower), against scores worked out by hand."""
import numpy as np
import scipy.sparse as sp

from pipelines.ranking.sources import factor_lists


def test_top_candidates_by_positive_dot_product_without_owned_items():
    users = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], np.float32)
    items = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [-1.0, 0.0], [1.0, 1.0]], np.float32)
    cand = np.array([0, 1, 3, 4])  # item 2 is not a new item
    own = sp.csr_matrix(([1.0], ([1], [4])), shape=(3, 5))  # user 1 already has item 4
    ids, vals = factor_lists(users, items, cand, 2, own, block=2)  # two blocks
    # user 0: 0.9 (0), 0.2 (1), -1 (3), 1.0 (4) -> 4, 0
    # user 1: 0.1 (0), 0.8 (1), 0 (3), owned (4) -> 1, 0
    # user 2: every score <= 0 except item 3 (1.0) -> 3, then nothing
    assert ids.tolist() == [[4, 0], [1, 0], [3, -1]]
    np.testing.assert_allclose(vals[:, 0], [1.0, 0.8, 1.0])
    np.testing.assert_allclose(vals[:2, 1], [0.9, 0.1])
    assert np.isneginf(vals[2, 1])
