"""Two-stage hybrid: list merging and top-n by hand, and no leakage from the evaluation window."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.artifacts import layout, read_features
from pipelines.dev.demo_data import import_demo
from pipelines.hybrid.ranker import HybridRun, candidate_frame, top_n
from pipelines.ranking.merge import merge_many
from pipelines.run import run_step


def test_top_n_per_user_by_score_with_item_tiebreak():
    uu = np.array([0, 0, 0, 2, 2])
    ii = np.array([5, 3, 9, 1, 7])
    sc = np.array([0.2, 0.9, 0.2, 0.5, 0.6], dtype=np.float32)
    ids, vals = top_n(uu, ii, sc, n_users=3, n=2)
    assert ids.tolist() == [[3, 5], [-1, -1], [7, 1]]  # user 0: 0.9, then the 0.2 tie goes to item 5
    assert vals[0].tolist() == pytest.approx([0.9, 0.2])


def test_merge_many_keeps_order_skips_repeats_and_names_sources():
    a = (np.array([[4, 2, -1]]), np.array([[3.0, 2.0, -np.inf]]))
    b = (np.array([[2, 7, 8]]), np.array([[0.9, 0.8, 0.7]]))
    pop = (np.array([7, 1, 0]), np.array([30.0, 20.0, 10.0]))  # shared by every row
    ids, src, score = merge_many([a, b, pop], 5)
    assert ids.tolist() == [[4, 2, 7, 8, 1]]
    assert src.tolist() == [[0, 0, 1, 1, 2]]
    assert score[0].tolist() == pytest.approx([3.0, 2.0, 0.8, 0.7, 20.0])


@pytest.fixture(scope="module")
def demo_features(tmp_path_factory):
    from pipelines.config import load_config

    cfg = load_config(environ={}, home=tmp_path_factory.mktemp("hyb") / "var")
    cfg = cfg.replace(ranker_window_days=14, ranker_windows=2, ranker_candidates=20)
    import_demo(cfg, seed=9, users=300, items=80, days=60, end_date="2024-06-30")
    run_step("validate", cfg, "2024-06-30", "r")
    run_step("features", cfg, "2024-06-30", "r")
    return cfg


@pytest.mark.parametrize("generators", ["default", "two_tower"])
def test_the_evaluation_ranker_never_sees_the_evaluation_window(demo_features, generators):
    # With the two-tower generator, each cut-off's fit starts from the previous (earlier) one's:
    # the scrambled evaluation window must not reach it either.
    cfg = demo_features
    if generators == "two_tower":
        cfg = cfg.replace(hybrid_generators=("buy_again", "als", "two_tower"), two_tower_factors=8,
                          two_tower_epochs=3, two_tower_warm_epochs=2)
    f = read_features(cfg, "2024-06-30")
    daily = pq.read_table(layout(cfg).features_dir("2024-06-30") / "daily.parquet").to_pandas()
    t3 = (pd.Timestamp("2024-06-30") - pd.Timestamp("1970-01-01")).days + 1
    t2 = t3 - cfg.hybrid.ranker_window_days
    text, inactive = f.items["text"].to_numpy(), np.array([], dtype=np.int64)

    def eval_scores(d):
        run = HybridRun(cfg, d, f.full.shape, text, inactive)
        ranker = run.train(t2, new_only=False)
        c2, gens = run.at(t2)
        if generators == "two_tower":  # the oldest cut-off cold, each later one warm
            warm = [run.at(d)[1].models["two_tower"].fit_summary_["warm"] for d in sorted(run._cut)]
            assert warm == [False] + [True] * (len(warm) - 1) and len(warm) == 3
        users = np.flatnonzero(np.diff(c2.x.indptr) > 0)
        uu, ii, x = candidate_frame(cfg, c2, gens, users, False, inactive)
        return ranker, uu, ii, ranker.score(x)

    ranker, uu, ii, base = eval_scores(daily)
    assert ranker.fitted and len(base) > 0
    # Scramble everything on or after T2: the evaluation ranker's scores must not move at all.
    rng = np.random.default_rng(0)
    late = daily["day"] >= t2
    scrambled = daily.copy()
    scrambled.loc[late, "item_idx"] = rng.permutation(scrambled.loc[late, "item_idx"].to_numpy())
    scrambled.loc[late, "w"] = rng.random(late.sum()).astype(np.float32) * 10
    # The user's repeat share is a feature of task all's ranker only (task new never lists own items).
    assert "user_repeat" in ranker.model.feature_names_in_
    run = HybridRun(cfg, daily, f.full.shape, text, inactive)
    assert "user_repeat" not in run.train(t2, new_only=True).model.feature_names_in_
    _, uu2, ii2, again = eval_scores(scrambled)
    assert np.array_equal(uu, uu2) and np.array_equal(ii, ii2)
    np.testing.assert_array_equal(base, again)


def test_user_repeat_by_hand():
    # Daily rows (one per user, item and day): user 0 bought item 0 on days 1 and 3 and item 1 on
    # day 2 (one of two items bought again: 0.5); user 1 bought item 2 once and only viewed item 0
    # on two days (views do not count: 0.0); user 2 bought item 1 on days 1 and 2 (1.0); user 3
    # has no purchase (0.0). Day 4 is the cut-off: the purchase on day 4 is not seen.
    from pipelines.hybrid.ranker import cutoff

    rows = [(0, 0, 1, 1), (0, 1, 2, 1), (0, 0, 3, 1), (1, 2, 1, 1), (1, 0, 1, 0), (1, 0, 2, 0),
            (2, 1, 1, 1), (2, 1, 2, 1), (3, 2, 2, 0), (1, 2, 4, 1)]
    daily = pd.DataFrame(rows, columns=["user_idx", "item_idx", "day", "purchases"])
    daily["w"] = np.float32(1.0)
    c = cutoff(daily, 4, (4, 3), np.array(["a", "b", "c"], dtype=object))
    np.testing.assert_allclose(c.user_repeat, [0.5, 0.0, 1.0, 0.0])
