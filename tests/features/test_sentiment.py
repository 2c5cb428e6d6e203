"""Review sentiment (features/sentiment.py): VADER scores of known sentences, item means and the
train / full split worked out by hand, on DuckDB temp tables shaped as features/interactions.py's."""

import duckdb
import numpy as np
import pandas as pd
import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from features.context import hour_table
from features.interactions import index_events
from features.sentiment import daily_reviews, item_sentiment, score_texts

HS = "TIMESTAMPTZ '2024-03-09 00:00:00+00'"  # the holdout start

LOVE = "I love this mug, it is wonderful!"
GOOD = "It is a good mug."
PLAIN = "A mug."
HATE = "Terrible quality, it broke after a day. I hate it."


def test_known_sentences_have_the_expected_sign_and_order():
    got = score_texts([LOVE, GOOD, PLAIN, HATE, "", None, "   ", LOVE])
    assert got.dtype == np.float64 and got.shape == (8,)
    assert got[0] > got[1] > 0.0  # strong praise above mild praise
    assert got[2] == 0.0  # no sentiment word: neutral
    assert got[3] < -0.5  # strongly negative
    assert got[4] == got[5] == got[6] == 0.0  # blank or missing text: neutral
    assert got[7] == got[0]  # a repeated text scores the same (scored once)
    # The same numbers straight from VADER, one text at a time.
    sia = SentimentIntensityAnalyzer()
    for text, score in zip([LOVE, GOOD, HATE], got[[0, 1, 3]]):
        assert score == pytest.approx(sia.polarity_scores(text)["compound"])
    assert score_texts([]).shape == (0,)


def _connection(with_text: bool = True) -> duckdb.DuckDBPyConnection:
    """``ev`` and ``items`` as features/interactions.py leaves them (NULL review text off reviews)."""
    con = duckdb.connect()
    rows = [  # user, item, type, time, review_text
        ("u1", "i1", "review", "2024-03-01 10:00", LOVE),
        ("u2", "i1", "review", "2024-03-05 23:30", HATE),
        ("u3", "i1", "review", "2024-03-09 08:00", GOOD),    # inside the holdout window: full only
        ("u1", "i2", "review", "2024-03-02 10:00", "   "),   # blank text: not a review
        ("u1", "i2", "purchase", "2024-03-02 10:00", HATE),  # text on a non-review event: ignored
        ("u2", "i2", "review", "2024-03-10 12:00", HATE),    # full only
        ("u2", "i3", "view", "2024-03-03 22:00", None),
    ]
    ev = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "event_time", "review_text"])
    ev["event_time"] = pd.to_datetime(ev["event_time"]).dt.tz_localize("UTC")
    ev["w"] = np.where(ev["event_type"] == "purchase", 8.0, 1.0)
    if not with_text:
        ev = ev.drop(columns="review_text")
    con.register("_ev", ev)
    con.execute("CREATE TEMP TABLE ev AS SELECT * REPLACE (event_time::TIMESTAMPTZ AS event_time) FROM _ev")
    con.execute("CREATE TEMP TABLE items AS SELECT * FROM (VALUES (0, 'i1'), (1, 'i2'), (2, 'i3'), (3, 'i4')) "
                "t(item_idx, item_id)")
    con.execute("CREATE TEMP TABLE users AS SELECT * FROM (VALUES (0, 'u1'), (1, 'u2'), (2, 'u3')) t(user_idx, user_id)")
    index_events(con)
    return con


def test_item_means_by_hand_and_no_holdout_review_in_the_train_columns():
    love, good, hate = score_texts([LOVE, GOOD, HATE])
    got = item_sentiment(_connection(), HS)
    assert got["item_idx"].tolist() == [0, 1, 2, 3]
    # i1: two reviews before the holdout start, one inside it; i2: its only real review is inside it.
    assert got["review_count_train"].tolist() == [2, 0, 0, 0]
    assert got["review_count_full"].tolist() == [3, 1, 0, 0]
    np.testing.assert_allclose(got["sentiment_train"], [(love + hate) / 2, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(got["sentiment_full"], [(love + hate + good) / 3, hate, 0.0, 0.0])


def test_events_without_review_text_give_neutral_items():
    got = item_sentiment(_connection(with_text=False), HS)
    assert got["review_count_full"].tolist() == [0, 0, 0, 0]
    assert got["sentiment_full"].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert daily_reviews(_connection(with_text=False)).num_rows == 0


def test_daily_reviews_by_hand():
    love, good, hate = score_texts([LOVE, GOOD, HATE])
    day = lambda s: (pd.Timestamp(s) - pd.Timestamp("1970-01-01")).days
    got = daily_reviews(_connection()).to_pandas()
    want = pd.DataFrame({"item_idx": [0, 0, 0, 1], "day": [day("2024-03-01"), day("2024-03-05"), day("2024-03-09"),
                                                            day("2024-03-10")],
                         "reviews": [1, 1, 1, 1], "sentiment_sum": [love, hate, good, hate]})
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_hour_table_is_utc_whatever_the_session_time_zone():
    con = _connection()
    con.execute("SET TimeZone = 'America/New_York'")
    got = hour_table(con).to_pandas()
    # 7 events, all with a positive weight; u2's 23:30 UTC review stays at hour 23 of 2024-03-05.
    assert got["events"].sum() == 7 and got["purchases"].sum() == 1
    row = got[(got["user_idx"] == 1) & (got["item_idx"] == 0)].iloc[0]
    assert row["hour"] == 23 and row["day"] == (pd.Timestamp("2024-03-05") - pd.Timestamp("1970-01-01")).days


def test_the_features_step_writes_the_sentiment_columns_and_the_ranker_tables(cfg):
    """End to end through validation and build_features: items.parquet's four columns, the daily
    review table, and hours.parquet only with ranker_context_features on."""
    from features.interactions import build_features
    from pipelines.artifacts import layout, read_features
    from pipelines.services.importers import land_frames
    from pipelines.validation.gate import validate
    from tests.conftest import events_frame

    cfg = cfg.replace(holdout_days=2, max_quarantine_share=1.0, ranker_context_features=True)
    events = events_frame([
        ("u1", "i1", "purchase", "2024-03-02 10:00", 1, 2.0, "o1"),
        ("u1", "i1", "review", "2024-03-03 21:00", 1, 2.0, None),
        ("u2", "i1", "review", "2024-03-09 09:00", 1, 2.0, None),  # in the holdout window
        ("u2", "i2", "view", "2024-03-04 13:15", 1, 3.0, None),
    ])
    events["review_text"] = [None, LOVE, HATE, None]
    items = pd.DataFrame({"item_id": ["i1", "i2"], "title": ["Red mug", "Tea"], "category": ["k", "g"],
                          "price": [2.0, 3.0]})
    land_frames(cfg, "t1", events, items, None)
    validate(cfg, "2024-03-10", "r1")
    build_features(cfg, "2024-03-10", "r1")
    f = read_features(cfg, "2024-03-10")
    love, hate = score_texts([LOVE, HATE])
    assert f.items["review_count_train"].tolist() == [1, 0] and f.items["review_count_full"].tolist() == [2, 0]
    np.testing.assert_allclose(f.items["sentiment_train"], [love, 0.0])
    np.testing.assert_allclose(f.items["sentiment_full"], [(love + hate) / 2, 0.0])
    d = layout(cfg).features_dir("2024-03-10")
    assert pd.read_parquet(d / "reviews_daily.parquet")["reviews"].tolist() == [1, 1]
    hours = pd.read_parquet(d / "hours.parquet")
    # Every event here has a positive weight (a review weighs 1 without stars): one row each, UTC hours.
    assert sorted(hours["hour"].tolist()) == [9, 10, 13, 21] and hours["purchases"].sum() == 1
    build_features(cfg.replace(ranker_context_features=False), "2024-03-10", "r2")
    assert not (d / "hours.parquet").exists()  # the default night writes no hour table
