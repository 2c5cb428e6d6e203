"""The hybrid ranker's extra inputs from the features step (issue 17): review sentiment per item and
day, and, with ``ranker_context_features`` on, the hour of day of each interaction.

``daily.parquet`` keeps one row per (user, item, day): enough for weekday and seasonal profiles (the
weekday is the day's), not for the time of day. ``hours.parquet`` adds the hour: one row per (user,
item, day, hour) of the events with a positive weight (views, cart additions, purchases ...), at
most 24 rows per daily row, and usually about as many rows as ``daily`` (most pairs meet within an
hour). It is only written when the setting is on, so the default night pays nothing for it.

``ranker_signals(con, cfg)`` reads the temp table ``ev`` of features/interactions.py (with its
indexes: ``index_events``); pipelines/signal_artifacts.py writes and reads the result.
"""
from __future__ import annotations

import duckdb
import pyarrow as pa

from features.sentiment import daily_reviews
from pipelines.config import Config

HOURS_SCHEMA = pa.schema([("user_idx", pa.int32()), ("item_idx", pa.int32()), ("day", pa.int32()),
                          ("hour", pa.int8()), ("events", pa.int32()), ("purchases", pa.int32())])


def hour_table(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """user_idx, item_idx, day (days since 1970-01-01, UTC), hour (0-23, UTC), events (positive-weight
    events), purchases, in day order (HOURS_SCHEMA). The hour is UTC, like the day, whatever the
    connection's time zone. The day is floored (an event at 23:30 is on its own day): ``epoch // 86400``
    is a plain division on DuckDB's DOUBLE epoch, and the cast to INTEGER then rounds."""
    t = con.sql("""
        SELECT e.user_idx::INTEGER AS user_idx, e.item_idx::INTEGER AS item_idx,
               floor(epoch(e.event_time) / 86400)::INTEGER AS day,
               hour(timezone('UTC', e.event_time))::TINYINT AS hour, count(*)::INTEGER AS events,
               count(*) FILTER (WHERE e.event_type = 'purchase')::INTEGER AS purchases
        FROM ev e
        WHERE e.w > 0 GROUP BY ALL ORDER BY 3, 1, 2, 4""").to_arrow_table()
    return t.cast(HOURS_SCHEMA)


def ranker_signals(con: duckdb.DuckDBPyConnection, cfg: Config) -> dict[str, pa.Table]:
    """The tables for pipelines.signal_artifacts.write_ranker_signals: ``reviews_daily`` always (no
    rows without reviews), ``hours`` when ``cfg.hybrid.ranker_context_features`` is on."""
    out = {"reviews_daily": daily_reviews(con)}
    if cfg.hybrid.ranker_context_features:
        out["hours"] = hour_table(con)
    return out
