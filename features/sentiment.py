"""Review sentiment (issue 17): each review's text scored by VADER, averaged per item.

VADER (Hutto and Gilbert, 2014; the ``vaderSentiment`` package) is a rule-based scorer: a
sentiment lexicon plus rules for negation, intensifiers, "but", capitals and exclamation marks. Its
lexicon ships inside the package, so nothing is downloaded at run time, and it needs no training
data. Its ``compound`` score is in [-1, 1] (-1 most negative, 0 neutral, +1 most positive). It is
an English lexicon: a review in another language scores near 0 (neutral), never wrongly negative.

The sentiment is the text's alone: a review's star rating (``rating``, optional on review events)
is not mixed in. Stars are a separate, explicit signal (rating events carry their weight through
``event_weights``); blending the two would make "sentiment" mean different things for items with and
without stars.

* ``score_texts``: the compound score of each text (blank: 0.0); identical texts are scored once.
* ``review_sentiment``: the temp table ``review_sentiment`` (item_id, event_time, compound) of the
  window's review events with a non-blank text, scored once per connection.
* ``item_sentiment``: per item of the temp table ``items``, the review count and mean compound
  before the holdout start (``_train``) and over the whole window (``_full``).
* ``daily_reviews``: per item and day, the review count and summed compound (the hybrid ranker
  rebuilds the sentiment known before each of its cut-offs from it).
"""
from __future__ import annotations

import logging
from functools import lru_cache

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines import constants as C
from pipelines.infra.logs import Progress

log = logging.getLogger(__name__)

TABLE = "review_sentiment"
PROGRESS_MIN_TEXTS = 20_000  # below this the scoring takes a couple of seconds: no progress lines
DAILY_REVIEWS_SCHEMA = pa.schema([("item_idx", pa.int32()), ("day", pa.int32()), ("reviews", pa.int32()),
                                  ("sentiment_sum", pa.float64())])


@lru_cache(maxsize=1)
def _analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()  # reads its lexicon from the package (about 0.1 s)


def score_texts(texts) -> np.ndarray:
    """VADER compound score in [-1, 1] of each text (float64, one per text; None or blank: 0.0).

    VADER scores one text at a time (Python rules over its tokens, about 0.1 ms a review); the
    batching here is that each distinct text is scored once (copied reviews, "Great!", "ok" are
    common) and the scores are mapped back with one NumPy take. Logs progress every 30 s on large
    inputs."""
    s = pd.Series(texts, dtype=object).fillna("").astype(str).str.strip()
    codes, uniq = pd.factorize(s, sort=False)
    scores = np.zeros(len(uniq), np.float64)
    sia = _analyzer()
    progress = Progress(log, "review sentiment", len(uniq), "texts") if len(uniq) >= PROGRESS_MIN_TEXTS else None
    for k, text in enumerate(uniq):
        if text:
            scores[k] = sia.polarity_scores(text)["compound"]
        if progress is not None and (k + 1) % 1000 == 0:
            progress.advance(1000)
    if progress is not None:
        progress.advance(len(uniq) - progress.done)
    return scores[codes] if len(s) else np.zeros(0, np.float64)


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchall()[0][0])


def review_sentiment(con: duckdb.DuckDBPyConnection) -> None:
    """Create the temp table ``review_sentiment`` (item_id, event_time, compound) from the review
    events of ``ev`` with a non-blank ``review_text`` (every review counts, one row each); once per
    connection. Events without the column (older releases) have no reviews: an empty table."""
    if _has_table(con, TABLE):
        return
    cols = {r[0] for r in con.execute("DESCRIBE ev").fetchall()}
    if C.REVIEW_TEXT in cols:
        df = con.execute(f"""SELECT item_id, event_time, {C.REVIEW_TEXT} AS text FROM ev
                             WHERE event_type = '{C.REVIEW_EVENT}' AND trim(coalesce({C.REVIEW_TEXT}, '')) <> ''
                             ORDER BY feed_row""").df()
    else:
        df = pd.DataFrame({"item_id": pd.Series(dtype=object), "event_time": pd.Series(dtype="datetime64[us, UTC]"),
                           "text": pd.Series(dtype=object)})
    df["compound"] = score_texts(df["text"])
    if len(df):
        log.info("review sentiment: %d reviews scored, mean compound %.3f", len(df), float(df["compound"].mean()))
    con.register("_review_scores", df[["item_id", "event_time", "compound"]])
    con.execute(f"""CREATE TEMP TABLE {TABLE} AS
                    SELECT item_id::VARCHAR AS item_id, event_time::TIMESTAMPTZ AS event_time,
                           compound::DOUBLE AS compound FROM _review_scores""")
    con.unregister("_review_scores")


def item_sentiment(con: duckdb.DuckDBPyConnection, hs: str) -> pd.DataFrame:
    """Per item of the temp table ``items``, in item_idx order: item_idx, review_count_train,
    sentiment_train (reviews before the holdout start ``hs``, a SQL timestamp literal),
    review_count_full, sentiment_full (every review of the window). Sentiment is the mean compound
    score in [-1, 1]; an item without reviews has count 0 and sentiment 0.0 (neutral)."""
    review_sentiment(con)
    return con.execute(f"""
        SELECT i.item_idx,
          count(r.compound) FILTER (WHERE r.event_time < {hs})::BIGINT AS review_count_train,
          coalesce(avg(r.compound) FILTER (WHERE r.event_time < {hs}), 0)::DOUBLE AS sentiment_train,
          count(r.compound)::BIGINT AS review_count_full,
          coalesce(avg(r.compound), 0)::DOUBLE AS sentiment_full
        FROM items i LEFT JOIN {TABLE} r USING (item_id) GROUP BY i.item_idx ORDER BY i.item_idx""").df()


def daily_reviews(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """item_idx, day (days since 1970-01-01, UTC), reviews, sentiment_sum (summed compound) per item
    and day with a review (DAILY_REVIEWS_SCHEMA; no rows without reviews)."""
    review_sentiment(con)
    t = con.sql(f"""
        SELECT i.item_idx::INTEGER AS item_idx, floor(epoch(r.event_time) / 86400)::INTEGER AS day,
               count(*)::INTEGER AS reviews, sum(r.compound)::DOUBLE AS sentiment_sum
        FROM {TABLE} r JOIN items i USING (item_id) GROUP BY ALL ORDER BY 2, 1""").to_arrow_table()
    return t.cast(DAILY_REVIEWS_SCHEMA)
