"""The hybrid ranker's review and context features (pipelines/hybrid/signals.py) on small tables
worked out by hand, no leakage past the cut-off, and no change at all when there are no reviews."""

import numpy as np
import pandas as pd
import pytest

from pipelines.config import load_config
from pipelines.hybrid import ranker as ranker_module
from pipelines.hybrid.ranker import HybridRun, candidate_frame
from pipelines.hybrid.signals import context_profiles, cutoff_signals, item_reviews, pair_signals, weekday
from pipelines.signal_artifacts import RankerSignals

MON = (pd.Timestamp("2024-03-04") - pd.Timestamp("1970-01-01")).days  # a Monday
C = MON + 7  # the cut-off: the next Monday
H = 7


def _daily(rows):
    return pd.DataFrame(rows, columns=["user_idx", "item_idx", "day", "w", "purchases"]).astype(
        {"user_idx": np.int32, "item_idx": np.int32, "day": np.int32, "w": np.float32, "purchases": np.int32})


RECENT = [(0, 0, MON, 9.0, 1), (0, 1, MON, 1.0, 0), (0, 0, MON + 1, 8.0, 1),  # u0: Monday, Tuesday
          (1, 1, MON + 5, 16.0, 2), (1, 2, MON + 6, 1.0, 0),                   # u1: Saturday, Sunday
          (1, 0, C, 40.0, 5)]                                                   # on the cut-off: never read
HOURS = pd.DataFrame([(0, 0, MON, 9, 1, 1), (0, 1, MON, 10, 1, 0), (0, 0, MON + 1, 21, 1, 1),
                      (1, 1, MON + 5, 14, 2, 2), (1, 2, MON + 6, 15, 1, 0), (1, 0, C, 3, 5, 5)],
                     columns=["user_idx", "item_idx", "day", "hour", "events", "purchases"])


def test_weekday_of_known_dates():
    assert weekday(MON) == 0 and weekday(MON + 5) == 5 and weekday(0) == 3  # 1970-01-01 was a Thursday


def test_hour_and_weekday_match_by_hand():
    p = context_profiles(_daily(RECENT), HOURS, C, (2, 3), H)
    r = 1 / np.sqrt(2)
    # Weekdays: u0 active Mon, Tue; u1 Sat, Sun. i0 bought Mon, Tue; i1 bought (twice) Sat; i2 never.
    np.testing.assert_allclose(p["user_wday"][0], [r, r, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(p["item_wday"][1], [0, 0, 0, 0, 0, 1, 0])
    # 4-hour bins: u0 at 9 and 10 h on Monday (one slot, bin 2) and 21 h Tuesday (bin 5); u1 bin 3 twice.
    np.testing.assert_allclose(p["user_hour"][0], [0, 0, r, 0, 0, r])
    np.testing.assert_allclose(p["user_hour"][1], [0, 0, 0, 1, 0, 0])
    np.testing.assert_allclose(p["item_hour"][0], [0, 0, r, 0, 0, r])
    got = pair_signals(cutoff_signals(_daily(RECENT), RankerSignals(None, HOURS), C, (2, 3), H, True),
                       np.array([0, 0, 1, 1, 0]), np.array([0, 1, 1, 2, 2]))
    np.testing.assert_allclose(got["hour_match"], [1.0, 0.0, 1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(got["weekday_match"], [1.0, 0.0, r, 0.0, 0.0], atol=1e-12)
    # The history does not reach a year back: no season.
    np.testing.assert_array_equal(got["season_share"], 0.0)
    np.testing.assert_array_equal(got["season_lift"], 0.0)


def test_last_years_season_by_hand():
    start = C - 364
    old = [(1, 0, start + 1, 8.0, 3),    # inside the same weeks a year ago (start .. start + 7)
           (1, 1, start + 10, 8.0, 1),   # later that year: counts in the year only
           (0, 2, start - 5, 8.0, 4)]    # before the year: counts nowhere, but the history reaches back
    p = context_profiles(_daily(old + RECENT), None, C, (2, 3), H)
    np.testing.assert_allclose(p["season_share"], [1.0, 0.0, 0.0])
    # Purchases in the year before the cut-off: i0 3 + 2 (this Monday and Tuesday), i1 1 + 2, i2 0.
    np.testing.assert_allclose(p["season_lift"], [4 / (5 * 7 / 364 + 1), 1 / (3 * 7 / 364 + 1), 1.0])
    # Without the row from before last year's window the history starts inside it: no season.
    assert context_profiles(_daily(old[:2] + RECENT), None, C, (2, 3), H)["season_share"].sum() == 0.0


def test_reviews_on_or_after_the_cut_off_are_not_seen():
    reviews = pd.DataFrame({"item_idx": [0, 0, 2, 1], "day": [C - 3, C - 1, C - 2, C],
                            "reviews": [1, 2, 1, 4], "sentiment_sum": [0.5, -1.1, 0.2, -3.6]})
    count, sentiment = item_reviews(reviews, C, 3)
    np.testing.assert_allclose(count, [3, 0, 1])  # item 1's reviews are on the cut-off day
    np.testing.assert_allclose(sentiment, [(0.5 - 1.1) / 3, 0.0, 0.2])
    count, _ = item_reviews(reviews, C + 1, 3)
    np.testing.assert_allclose(count, [3, 4, 1])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    cfg = load_config(environ={}, home=tmp_path_factory.mktemp("sig") / "var").replace(
        hybrid_generators=("buy_again", "itemknn"), ranker_window_days=7, ranker_windows=2, ranker_candidates=10)
    rng = np.random.default_rng(3)
    n_users, n_items, days, n = 80, 30, 40, 2500
    taste = rng.integers(0, 3, n_users)  # three groups of users, each prefers a third of the items
    u = rng.integers(0, n_users, n)
    i = (taste[u] * 10 + rng.integers(0, 12, n)) % n_items
    d = MON - days + rng.integers(0, days, n)
    bought = rng.random(n) < 0.4
    daily = _daily(list(zip(u, i, d, np.where(bought, 8.0, 1.0), bought.astype(int))))
    daily = daily.groupby(["user_idx", "item_idx", "day"], as_index=False).sum().sort_values("day")
    return cfg, daily.reset_index(drop=True), (n_users, n_items)


def _eval_scores(cfg, daily, shape, signals):
    text, inactive = np.array(["x"] * shape[1]), np.array([], np.int64)
    run = HybridRun(cfg, daily, shape, text, inactive, signals)
    ranker = run.train(MON, new_only=False)
    c, gens = run.at(MON)
    uu, ii, x = candidate_frame(cfg, c, gens, np.flatnonzero(np.diff(c.x.indptr) > 0), False, inactive)
    return ranker, x, ranker.score(x)


def test_absent_reviews_leave_the_ranker_output_identical(synthetic, monkeypatch):
    cfg, daily, shape = synthetic
    no_reviews = RankerSignals(pd.DataFrame({"item_idx": [], "day": [], "reviews": [], "sentiment_sum": []}))
    ranker, x, with_cols = _eval_scores(cfg, daily, shape, no_reviews)
    assert ranker.fitted and len(x) > 100
    assert list(x.columns[-2:]) == ["review_count", "sentiment"] and not x[["review_count", "sentiment"]].any().any()
    _, _, old_features = _eval_scores(cfg, daily, shape, None)  # features from before issue 17
    np.testing.assert_array_equal(with_cols, old_features)
    # The same ranker without the two columns at all (the code before issue 17): the same scores.
    monkeypatch.setattr(ranker_module, "pair_signals", lambda s, uu, ii: {})
    _, x_before, before = _eval_scores(cfg, daily, shape, no_reviews)
    assert "sentiment" not in x_before
    np.testing.assert_array_equal(with_cols, before)


def test_planted_reviews_reach_the_ranker_up_to_the_cut_off_only(synthetic):
    cfg, daily, shape = synthetic
    reviews = pd.DataFrame({"item_idx": [4, 4, 7], "day": [MON - 20, MON - 1, MON], "reviews": [2, 1, 3],
                            "sentiment_sum": [-1.2, -0.9, 2.1]})
    _, x, _ = _eval_scores(cfg, daily, shape, RankerSignals(reviews))
    run = HybridRun(cfg, daily, shape, np.array(["x"] * shape[1]), np.array([], np.int64), RankerSignals(reviews))
    c, _ = run.at(MON)
    np.testing.assert_allclose(c.signals.review_count[[4, 7]], [3, 0])  # item 7's reviews are on the cut-off day
    np.testing.assert_allclose(c.signals.sentiment[[4, 7]], [-0.7, 0.0])
    # In the evaluation candidates' features: item 4's -0.7 and everyone else's 0, nothing of item 7.
    np.testing.assert_allclose(np.sort(x["sentiment"].unique()), [-0.7, 0.0], rtol=1e-6)
    np.testing.assert_allclose(np.sort(x["review_count"].unique()), [0.0, 3.0])


def test_reading_the_signals_of_older_features(tmp_path):
    from pipelines.artifacts import ArtifactMissing, layout
    from pipelines.signal_artifacts import read_ranker_signals

    cfg = load_config(environ={}, home=tmp_path / "var")
    layout(cfg).features_dir("2024-03-10").mkdir(parents=True)
    assert read_ranker_signals(cfg, "2024-03-10") == RankerSignals(None, None)  # no reviews: zero columns
    with pytest.raises(ArtifactMissing, match="run the features step again with the setting on"):
        read_ranker_signals(cfg.replace(ranker_context_features=True), "2024-03-10")
