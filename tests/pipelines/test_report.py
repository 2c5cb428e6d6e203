"""The popularity-bias table of the run report, on a case worked out by hand."""
import numpy as np
import pandas as pd

from pipelines.evaluation.report import popularity_bias


def test_popularity_bias_shares_per_decile():
    # Ten items, buyers 10, 9, ..., 1: item k (0-based) is in decile k + 1.
    item_ids = np.array([f"i{k}" for k in range(10)])
    buyers = np.arange(10, 0, -1).astype(float)
    recs = pd.DataFrame({"surface": ["for_you"] * 4 + ["new_for_you"] * 2,
                         "item_id": ["i0", "i0", "i1", "i9", "i5", "i5"]})
    got = popularity_bias(recs, buyers, item_ids)
    assert got.index.tolist() == list(range(1, 11))
    np.testing.assert_allclose(got["purchases"], buyers / 55.0)
    expected_for_you = np.zeros(10); expected_for_you[[0, 1, 9]] = [0.5, 0.25, 0.25]
    expected_new = np.zeros(10); expected_new[5] = 1.0
    np.testing.assert_allclose(got["for_you"], expected_for_you)
    np.testing.assert_allclose(got["new_for_you"], expected_new)
