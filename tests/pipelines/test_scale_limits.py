"""The bounded-work choices of the scale path, checked on hand-made inputs: which new items enter
the new-item pool, which users the hybrid lists above hybrid_max_users."""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.hybrid.choice import hybrid_wins
from pipelines.hybrid.ranker import Cutoff, publish_users
from pipelines.ranking.sources import fresh_pool


def test_fresh_pool_prefers_catalog_only_then_newest_then_best_selling():
    items = pd.DataFrame({
        "first_seen": pd.to_datetime([None, "2026-11-20", "2026-11-27", "2026-11-27", None, "2026-11-25"]),
        "trend_full": [0.0, 9.0, 1.0, 5.0, 0.0, 3.0]})
    fresh = np.arange(6)
    # Catalog-only 0 and 4 first; then the newest (27th): 3 (trend 5) before 2 (trend 1); then 5.
    np.testing.assert_array_equal(fresh_pool(items, fresh, 4), [0, 2, 3, 4])
    np.testing.assert_array_equal(fresh_pool(items, fresh, 2), [0, 4])
    np.testing.assert_array_equal(fresh_pool(items, fresh, 5), [0, 2, 3, 4, 5])
    np.testing.assert_array_equal(fresh_pool(items, fresh, 6), fresh)


def test_publish_users_takes_the_most_active_above_the_limit():
    # 5 users: user 2 has no history; activity = distinct days, then number of items.
    x = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 1], [0, 0, 0], [1, 1, 0], [1, 0, 0]], np.float32))
    c = Cutoff(day=10, x=x, buy_days=x, since=x, items=pd.DataFrame(), user_last=np.zeros(5),
               user_days=np.array([1.0, 2.0, 0.0, 2.0, 3.0]))
    np.testing.assert_array_equal(publish_users(c, 0), [0, 1, 3, 4])
    np.testing.assert_array_equal(publish_users(c, 10), [0, 1, 3, 4])
    # Days: user 4 (3), then users 1 and 3 (2 days; 1 has 3 items, 3 has 2).
    np.testing.assert_array_equal(publish_users(c, 2), [1, 4])
    np.testing.assert_array_equal(publish_users(c, 3), [1, 3, 4])


def test_hybrid_wins_only_when_it_beats_every_single_list():
    assert hybrid_wins({"hybrid": 0.30, "als": 0.25, "popularity": 0.10}, 0.0)
    assert not hybrid_wins({"hybrid": 0.25, "als": 0.25}, 0.0)  # a tie serves the champion
    assert not hybrid_wins({"hybrid": 0.26, "als": 0.25}, 0.05)  # 4% better, 5% asked


def test_recommendation_ids_from_per_value_hashes_equal_the_row_hashes():
    """The score step hashes each user, item, surface and rank once and combines per row; the ids
    equal pandas' hash_pandas_object over the key rows (the definition the email export uses)."""
    from pipelines.infra.hashing import (
        combine_key_hashes,
        key_hashes,
        recommendation_id_array,
    )

    rng = np.random.default_rng(3)
    users = np.array([f"u{k}" for k in range(50)] + ["", "ü-ß", "12"], dtype=object)
    items = np.array([f"SKU-{k:05d}" for k in range(30)], dtype=object)
    surfaces = ["buy_again", "for_you", "new_for_you"]
    u, i = rng.integers(0, len(users), 500), rng.integers(0, len(items), 500)
    s, rank = rng.integers(0, 3, 500), rng.integers(1, 21, 500)
    keys = pd.DataFrame({"surface": np.asarray(surfaces, dtype=object)[s], "user_id": users[u], "rank": rank,
                         "item_id": items[i]})
    want = recommendation_id_array("2026-11-27", keys)
    got = recommendation_id_array("2026-11-27", hashes=combine_key_hashes(
        [key_hashes(surfaces)[s], key_hashes(users)[u], key_hashes(range(21))[rank], key_hashes(items)[i]]))
    assert got.equals(want)
    assert want[0].as_py().startswith("20261127-") and len(want[0].as_py()) == 25


def test_bpr_iterations_are_capped_by_samples_not_cut_on_small_data():
    from models.bpr import BPRRecommender, capped_iterations

    # Online Retail's size: 180,000 cells x 100 iterations = 18M samples, under 200M: all 100 run.
    assert capped_iterations(100, 180_000, 200_000_000, 10) == 100
    # Ten million demo events: 8.5M cells; ceil(200M / 8.5M) = ceil(23.5) = 24.
    assert capped_iterations(100, 8_500_000, 200_000_000, 10) == 24
    # Never below min_iterations, never above iterations; 0 = no cap.
    assert capped_iterations(100, 100_000_000, 200_000_000, 10) == 10
    assert capped_iterations(5, 100_000_000, 200_000_000, 10) == 5
    assert capped_iterations(100, 8_500_000, 0, 10) == 100
    # The fitted model reports what it ran: 40 cells, 20 samples at most -> ceil(20/40) = 1, min 2.
    x = sp.random(8, 10, density=0.5, format="csr", random_state=1, dtype=np.float32)
    model = BPRRecommender(factors=4, iterations=50, max_samples=20, min_iterations=2).fit(x)
    assert model.iterations_run_ == 2


def test_search_skips_a_trial_expected_to_overrun_its_budget():
    from pipelines.evaluation.search import expected_seconds

    # The candidate fitted in 41.5 s at 64 factors: 32 factors is no dearer, 128 twice as dear.
    assert expected_seconds({"factors": 64}, {"factors": 32, "regularization": 0.01}, 41.5) == 41.5
    assert expected_seconds({"factors": 64}, {"factors": 128}, 41.5) == 83.0
    assert expected_seconds({"layers": 2}, {"layers": 3}, 10.0) == 15.0
    assert expected_seconds({"neighbours": 100}, {"neighbours": 300}, 9.6) == 9.6
    assert expected_seconds({"factors": 64}, {"factors": 128}, None) == 0.0
