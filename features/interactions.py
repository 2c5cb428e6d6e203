"""Features step: validated events of the window up to ``ds`` -> sparse matrices and item tables.

Outputs under ``features/ds=<ds>/`` (``pipelines.artifacts.write_features``: written to a staging
directory and swapped in whole):

* ``users.parquet``  user_idx, user_id, country, interests, personalized (every user with a valid event in the window,
  and registered users with stated interests)
* ``items.parquet``  item_idx, item_id, catalog columns (always with ``url``, ``image_url``: nullable strings), text, active, pop_train, pop_full,
  trend_train, trend_full (time-decayed purchases), first_seen (date of the first event, or null),
  repeat_rate_train, repeat_rate_full, category_key (catalog category or a derived one:
  features.text.item_categories), review_count_train / sentiment_train and review_count_full /
  sentiment_full (review sentiment: features/sentiment.py)
* ``train.npz``      users x items weights from events before the holdout window (CSR, float32)
* ``full.npz``       users x items weights from all events up to the end of ``ds``
* ``holdout.parquet`` user_idx, item_idx: distinct purchases inside the holdout window (the truth)
* ``daily.parquet``  user_idx, item_idx, day (days since 1970-01-01, UTC), w (summed weight), purchases
* ``sessions_train.npz``, ``sessions_holdout.npz``  the window's sessions before / inside the holdout window
  (indptr, items as item_idx; pipelines.session_artifacts)
* ``sequences_train.npz``, ``sequences_full.npz``  each user's newest ``sequence_max_events`` events
  before the holdout window / up to the end of ds, in time order (features.sequences.UserSequences)
* ``disliked.npz``   users x items, 1 where the user's latest rating is at or below dislike_max_rating
  (features/feedback.py: never shown to that user again)
* ``reviews_daily.parquet``, ``hours.parquet``  review sentiment per item and day, and (with
  ranker_context_features) hour-of-day profiles, for the ranker (features/context.py)
* ``meta.json``      counts and window bounds

Weights: the sum of each event's weight (features/feedback.py: ``event_weights`` by type, a view's
dwell factor, a rating's stars); a return cancels a purchase. Negative sums are clipped to zero and
zero cells dropped. All aggregation runs in DuckDB.
"""
from __future__ import annotations

import logging
from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from features.context import ranker_signals
from features.feedback import OPTIONAL_COLUMNS, disliked_matrix, optional_columns, weight_sql
from features.sentiment import item_sentiment
from features.text import item_categories, item_text
from features.visits import window_sequences, window_sessions
from models.buy_again import smoothed_repeat_rate
from pipelines import constants as C
from pipelines.artifacts import Features, Layout, layout, write_features
from pipelines.config import Config
from pipelines.infra import storage
from pipelines.infra.consent import drop_forgotten, opted_out
from pipelines.infra.logs import laps
from pipelines.session_artifacts import write_sequences, write_sessions
from pipelines.signal_artifacts import write_ranker_signals

log = logging.getLogger(__name__)


class FeatureError(ValueError):
    pass


def _window(cfg: Config, ds: str) -> tuple[date, date, date | None]:
    end = date.fromisoformat(ds) + timedelta(days=1)  # exclusive: events up to the end of ds (UTC)
    holdout_start = end - timedelta(days=cfg.features.holdout_days)
    start = end - timedelta(days=cfg.features.history_days) if cfg.features.history_days > 0 else None
    return end, holdout_start, start


def _ts(d: date) -> str:
    """A SQL timestamp literal for midnight UTC of ``d``."""
    return f"TIMESTAMPTZ '{d.isoformat()} 00:00:00+00'"


def load_catalog(con: duckdb.DuckDBPyConnection, paths: Layout) -> pd.DataFrame:
    """Latest value per item and column over all validated catalog batches (file names sort in
    import order). A batch may carry only some columns (``recsys import-catalog`` with item_id and
    in_stock, say): columns it lacks, or leaves empty, keep their earlier values."""
    root = paths.validated_dataset("items")
    files = storage.in_import_order(root.glob("batch-*.parquet")) if root.exists() else []
    if not files:
        return pd.DataFrame(columns=["item_id"])
    con.execute("CREATE OR REPLACE TEMP TABLE _cat AS SELECT * FROM read_parquet(?, union_by_name=true, filename=true)",
                [[str(f) for f in files]])
    con.register("_order", pd.DataFrame({"filename": [str(f) for f in files], "_ord": range(len(files))}))
    cols = [r[0] for r in con.execute("DESCRIBE _cat").fetchall() if r[0] not in ("item_id", "filename")]
    # The later batch wins (validation keeps one row per item within a batch).
    picks = ", ".join(f'arg_max("{c}", _ord) FILTER (WHERE "{c}" IS NOT NULL) AS "{c}"' for c in cols)
    return con.execute(f"""SELECT item_id{', ' + picks if picks else ''} FROM _cat JOIN _order USING (filename)
                           GROUP BY item_id ORDER BY item_id""").df()


USER_ATTRIBUTES = ("country", "interests")


def user_attributes(paths: Layout) -> pd.DataFrame:
    """Latest value per user of each attribute in USER_ATTRIBUTES over the validated users batches
    (a later batch overrides an earlier one where it has the column and a value). Indexed by user_id."""
    root = paths.validated_dataset("users")
    files = storage.in_import_order(root.glob("batch-*.parquet")) if root.exists() else []
    out = pd.DataFrame(columns=list(USER_ATTRIBUTES), dtype="string")
    for f_ in files:
        df = pd.read_parquet(f_)
        cols = [c for c in USER_ATTRIBUTES if c in df]
        if "user_id" not in df or not cols:
            continue
        df = df.dropna(subset=["user_id"]).drop_duplicates("user_id", keep="last")
        df = df.set_index(df["user_id"].astype("string"))[cols].astype("string")
        out = df.combine_first(out) if len(out) else df.reindex(columns=list(USER_ATTRIBUTES))
    return out.reindex(columns=list(USER_ATTRIBUTES))


# ------------------------------------------------------------------ events, users and items of the window
def _load_events(con: duckdb.DuckDBPyConnection, cfg: Config, ds: str, end: date, start: date | None) -> int:
    """The temp table ``ev`` (user_id, item_id, event_type, event_time, w): the validated events of
    the window [start, end), each with its weight. Returns how many there are."""
    events_root = layout(cfg).validated_dataset("events")
    files = sorted(events_root.glob(f"{C.EVENT_DATE}=*/part.parquet"))
    # Nothing validated: no data, or the validate step has not run; unless every landed event is
    # after ds (a ds before the first event: an empty night below).
    landed = [p.name.split("=", 1)[1] for p in layout(cfg).landing_events.glob(f"{C.EVENT_DATE}=*")]
    if not files and (not landed or min(landed) < end.isoformat()):
        raise FeatureError(f"no validated events up to ds={ds} under {events_root}; "
                           "run the validate step (or import data) first")
    files = [f for f in files if f.parent.name.split("=", 1)[1] < end.isoformat()]
    lo = f"AND event_time >= {_ts(start)}" if start else ""
    if files:
        con.execute(f"""
            CREATE TEMP TABLE ev AS
            SELECT user_id, item_id, event_type, event_time, {weight_sql(cfg)} AS w, {", ".join(optional_columns(con, files))}
            FROM read_parquet(?, union_by_name=true)
            WHERE event_time < {_ts(end)} {lo}""", [[str(f) for f in files]])
    else:
        con.execute(f"""CREATE TEMP TABLE ev (user_id VARCHAR, item_id VARCHAR, event_type VARCHAR,
                                             event_time TIMESTAMPTZ, w DOUBLE,
                                             {", ".join(f"{c} {t}" for c, t in OPTIONAL_COLUMNS.items())})""")
    n_events = con.execute("SELECT count(*) FROM ev").fetchall()[0][0]
    if n_events == 0 and start is not None and any(f.parent.name.split("=", 1)[1] < start.isoformat() for f in files):
        # Events exist, only older than history_days: an empty night would blank every list.
        raise FeatureError(f"no valid events in the {cfg.features.history_days} days up to ds={ds}, but older ones "
                           "exist: check the feed, or widen history_days")
    if n_events == 0:
        # A ds before the first event: the night goes on with empty matrices; the models have
        # nothing to learn and the lists are empty.
        log.warning("features ds=%s: no validated events in the window ending %s under %s: empty features",
                    ds, end, events_root)
    return n_events


def _index_users(con: duckdb.DuckDBPyConnection, cfg: Config) -> tuple[pd.DataFrame, list[str]]:
    """The temp table ``users`` (user_idx, user_id); drops the events of forgotten users and of users
    who opted out of personalisation from ``ev``. Returns the user attributes and the opted-out ids."""
    # Users: everyone with an event in the window, plus registered users (users file) with stated
    # interests but no events yet: a new sign-up who answered the quiz gets content-based lists.
    attrs = user_attributes(layout(cfg))
    registered = attrs.index[attrs["interests"].fillna("").str.strip().ne("")].astype(str).to_numpy()
    # Forgotten users (recsys forget) never come back, even if an old feed is landed again.
    if (layout(cfg).forgotten_path).exists():
        ids = con.execute("SELECT DISTINCT user_id FROM ev").df()
        con.register("gone", ids[~ids["user_id"].isin(drop_forgotten(cfg, ids)["user_id"])])
        con.execute("DELETE FROM ev WHERE user_id IN (SELECT user_id FROM gone)")
        registered = drop_forgotten(cfg, pd.DataFrame({"user_id": registered}))["user_id"].to_numpy()
    con.register("registered", pd.DataFrame({"user_id": pd.Series(registered, dtype=object)}))
    con.execute("""CREATE TEMP TABLE users AS
        SELECT (row_number() OVER (ORDER BY user_id)) - 1 AS user_idx, user_id
        FROM (SELECT DISTINCT user_id FROM ev UNION SELECT user_id FROM registered)""")
    # Users who opted out of personalisation keep their place (they get non-personalised lists) but
    # none of their events reaches a model, a pair table or a popularity count (docs/privacy.md).
    no_personal = sorted(opted_out(cfg, "consent_personalization"))
    con.register("optout", pd.DataFrame({"user_id": pd.Series(no_personal, dtype=object)}))
    con.execute("DELETE FROM ev WHERE user_id IN (SELECT user_id FROM optout)")
    return attrs, no_personal


def _index_items(con: duckdb.DuckDBPyConnection, cfg: Config) -> None:
    """The view ``catalog`` (latest catalog values) and the temp table ``items`` (item_idx, item_id):
    every item with an event in the window or in the catalog; then ``index_events``."""
    con.register("catalog", load_catalog(con, layout(cfg)))
    con.execute("""CREATE TEMP TABLE items AS
        SELECT (row_number() OVER (ORDER BY item_id)) - 1 AS item_idx, item_id
        FROM (SELECT item_id FROM ev UNION SELECT item_id FROM catalog)""")
    index_events(con)


def index_events(con: duckdb.DuckDBPyConnection) -> None:
    """``ev`` gains user_idx, item_idx (from ``users``, ``items``) and feed_row (its rows' order as
    landed), once: the later queries group and sort integers instead of joining id strings each time
    (there were 7 such joins)."""
    con.execute("""CREATE OR REPLACE TEMP TABLE ev AS
        SELECT e.*, e.rowid AS feed_row, u.user_idx, i.item_idx
        FROM ev e JOIN users u USING (user_id) JOIN items i USING (item_id)""")


# ------------------------------------------------------------------ per-item signals
def _popularity_and_trend(con: duckdb.DuckDBPyConnection, cfg: Config, end: date, hs: str) -> pd.DataFrame:
    """item_idx, pop_train, pop_full, trend_train, trend_full, in item_idx order."""
    pop_days = cfg.features.popularity_days
    # Popularity: distinct buyers per item in the trailing window before each cut-off.
    pop = con.execute(f"""
        SELECT i.item_idx,
          count(DISTINCT e.user_idx) FILTER (WHERE e.event_type = 'purchase' AND e.event_time < {hs}
              AND e.event_time >= {hs} - INTERVAL {pop_days} DAY) AS pop_train,
          count(DISTINCT e.user_idx) FILTER (WHERE e.event_type = 'purchase'
              AND e.event_time >= {_ts(end)} - INTERVAL {pop_days} DAY) AS pop_full,
          count(DISTINCT e.user_idx) FILTER (WHERE e.event_type = 'purchase' AND e.event_time < {hs}) AS all_train,
          count(DISTINCT e.user_idx) FILTER (WHERE e.event_type = 'purchase') AS all_full
        FROM items i LEFT JOIN ev e USING (item_idx) GROUP BY i.item_idx ORDER BY i.item_idx""").df()
    for part in ("train", "full"):
        # No purchase in the trailing window (a quiet period, a ds long after the last event): the
        # popularity lists fall back to distinct buyers over all history before the cut-off, rather
        # than an order of zeros.
        if len(pop) and not pop[f"pop_{part}"].any() and pop[f"all_{part}"].any():
            log.warning("features: no purchase in the %d days before the %s cut-off: popularity counts "
                        "buyers over all history", pop_days, part)
            pop[f"pop_{part}"] = pop[f"all_{part}"]
    pop = pop.drop(columns=["all_train", "all_full"])
    # Trending: purchases weighted by exp(-ln 2 * age / half-life), age in days before each cut-off.
    hl = float(cfg.features.trending_half_life_days)
    trend = con.execute(f"""
        SELECT i.item_idx,
          coalesce(sum(exp(-ln(2) * (epoch({hs}) - epoch(e.event_time)) / 86400.0 / {hl}))
              FILTER (WHERE e.event_type = 'purchase' AND e.event_time < {hs}), 0) AS trend_train,
          coalesce(sum(exp(-ln(2) * (epoch({_ts(end)}) - epoch(e.event_time))
              / 86400.0 / {hl})) FILTER (WHERE e.event_type = 'purchase'), 0) AS trend_full
        FROM items i LEFT JOIN ev e USING (item_idx) GROUP BY i.item_idx ORDER BY i.item_idx""").df()
    return pop.assign(trend_train=trend["trend_train"].to_numpy(), trend_full=trend["trend_full"].to_numpy())


def _first_seen_and_repeat(con: duckdb.DuckDBPyConnection, hs: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(item_idx, first_seen) and (item_idx, buyers_/repeat_ train and full), in item_idx order."""
    # First day each item was seen (any event): brand-new items reach lists through content similarity.
    first_seen = con.execute("""
        SELECT i.item_idx, min(CAST(e.event_time AS DATE)) AS first_seen
        FROM items i LEFT JOIN ev e USING (item_idx) GROUP BY i.item_idx ORDER BY i.item_idx""").df()
    # Repeatability: the share of an item's buyers who bought it on two or more days.
    repeat = con.execute(f"""
        WITH days AS (
          SELECT user_idx, item_idx,
                 count(DISTINCT CAST(event_time AS DATE)) FILTER (WHERE event_time < {hs}) AS d_train,
                 count(DISTINCT CAST(event_time AS DATE)) AS d_full
          FROM ev WHERE event_type = 'purchase' GROUP BY ALL)
        SELECT i.item_idx,
          coalesce(count(*) FILTER (WHERE d.d_train >= 1), 0) AS buyers_train,
          coalesce(count(*) FILTER (WHERE d.d_train >= 2), 0) AS repeat_train,
          coalesce(count(*) FILTER (WHERE d.d_full >= 1), 0) AS buyers_full,
          coalesce(count(*) FILTER (WHERE d.d_full >= 2), 0) AS repeat_full
        FROM items i LEFT JOIN days d USING (item_idx) GROUP BY i.item_idx ORDER BY i.item_idx""").df()
    return first_seen, repeat


# ------------------------------------------------------------------ interactions
def _interactions(con: duckdb.DuckDBPyConnection, hs: str) -> tuple[dict, pd.DataFrame, pa.Table]:
    """The weight cells (user_idx, item_idx, w_train, w_full as numpy arrays), the holdout truth
    (distinct purchases from the holdout start) and the daily table."""
    cells = con.execute(f"""
        SELECT e.user_idx, e.item_idx,
               sum(e.w) FILTER (WHERE e.event_time < {hs}) AS w_train, sum(e.w) AS w_full
        FROM ev e
        GROUP BY ALL""").fetchnumpy()
    truth = con.execute(f"""
        SELECT DISTINCT e.user_idx, e.item_idx FROM ev e
        WHERE e.event_type = 'purchase' AND e.event_time >= {hs} ORDER BY 1, 2""").df()
    # Compact daily interactions for the two-stage ranker, which needs matrices at several cut-offs.
    daily = con.sql("""
        SELECT e.user_idx::INTEGER AS user_idx, e.item_idx::INTEGER AS item_idx,
               floor(epoch(e.event_time) / 86400)::INTEGER AS day, sum(e.w)::FLOAT AS w,
               count(*) FILTER (WHERE e.event_type = 'purchase')::INTEGER AS purchases
        FROM ev e GROUP BY ALL ORDER BY 3, 1, 2""").to_arrow_table()
    return cells, truth, daily


def _matrix(cells: dict, values, shape: tuple[int, int]) -> sp.csr_matrix:
    """users x items CSR (float32) of the cells' ``values``: negative sums clipped to zero, zero cells dropped."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0).clip(min=0)
    keep = v > 0
    m = sp.csr_matrix((v[keep].astype(np.float32), (cells["user_idx"][keep], cells["item_idx"][keep])), shape=shape)
    m.sum_duplicates()
    return m


# ------------------------------------------------------------------ the user and item tables
def _user_table(con: duckdb.DuckDBPyConnection, attrs: pd.DataFrame, no_personal: list[str]) -> pd.DataFrame:
    users = con.execute("SELECT * FROM users ORDER BY user_idx").df()
    attrs = attrs.reindex(users["user_id"].astype("string"))
    for col in USER_ATTRIBUTES:
        users[col] = attrs[col].to_numpy()
    users["personalized"] = ~users["user_id"].isin(set(no_personal)).to_numpy()
    return users


def _item_table(con: duckdb.DuckDBPyConnection, cfg: Config, end: date, hs: str) -> pd.DataFrame:
    pop_trend = _popularity_and_trend(con, cfg, end, hs)
    first_seen, repeat = _first_seen_and_repeat(con, hs)
    items = con.execute("""SELECT i.item_idx, i.item_id, c.* EXCLUDE (item_id)
                           FROM items i LEFT JOIN catalog c USING (item_id) ORDER BY i.item_idx""").df()
    if "active" not in items:
        items["active"] = True
    for col in ("url", "image_url"):  # links for the email export and the items table; null when not given
        items[col] = items[col].astype("string") if col in items else pd.Series(pd.NA, index=items.index, dtype="string")
    items["active"] = items["active"].astype("boolean").fillna(True).astype(bool)
    items["text"] = item_text(items)
    items["category_key"] = item_categories(items, cfg.seed)
    items["pop_train"] = pop_trend["pop_train"].to_numpy()
    items["pop_full"] = pop_trend["pop_full"].to_numpy()
    items["trend_train"] = pop_trend["trend_train"].to_numpy(dtype=np.float64)
    items["trend_full"] = pop_trend["trend_full"].to_numpy(dtype=np.float64)
    items["first_seen"] = pd.to_datetime(first_seen["first_seen"]).dt.date
    for part in ("train", "full"):
        items[f"repeat_rate_{part}"] = smoothed_repeat_rate(repeat[f"repeat_{part}"], repeat[f"buyers_{part}"])
    items = items.assign(**item_sentiment(con, hs).drop(columns="item_idx").set_axis(items.index))  # reviews
    return items


def _meta(ds: str, run_id: str, window: tuple[date, date, date | None], n_events: int, users: pd.DataFrame,
          items: pd.DataFrame, train: sp.csr_matrix, full: sp.csr_matrix, truth: pd.DataFrame) -> dict:
    end, holdout_start, start = window
    return {"ds": ds, "run_id": run_id, "window_end": end.isoformat(), "holdout_start": holdout_start.isoformat(),
            "window_start": start.isoformat() if start else None, "events": int(n_events), "users": len(users),
            "items": len(items), "active_items": int(items["active"].sum()), "train_nnz": int(train.nnz),
            "full_nnz": int(full.nnz), "holdout_pairs": len(truth),
            "holdout_users": int(truth["user_idx"].nunique()) if len(truth) else 0,
            "personalization_opt_outs": int((~users["personalized"]).sum())}


# ------------------------------------------------------------------ the step
def build_features(cfg: Config, ds: str, run_id: str) -> dict:
    """Build and write the features of ``ds`` (artifacts.Features); returns their path and meta."""
    end, holdout_start, start = window = _window(cfg, ds)
    hs = _ts(holdout_start)
    # DuckDB spills beyond duckdb_memory_limit (thirty million events: 9.5 GiB in RAM without it).
    lap = laps(log, f"features ds={ds}")
    with storage.scratch_duckdb(cfg.scale.duckdb_memory_limit, layout(cfg).features_dir(ds).parent) as con:
        n_events = _load_events(con, cfg, ds, end, start)
        lap("events loaded")
        attrs, no_personal = _index_users(con, cfg)
        _index_items(con, cfg)
        items = _item_table(con, cfg, end, hs)
        cells, truth, daily = _interactions(con, hs)
        users = _user_table(con, attrs, no_personal)
        lap("interactions")
        sessions = window_sessions(con, cfg, hs)
        lap("sessions")
        sequences = window_sequences(con, cfg, hs, len(users))
        lap("sequences")
        disliked = disliked_matrix(con, cfg, (len(users), len(items)))
        signals = ranker_signals(con, cfg)  # review sentiment per day, hours (features/context.py)

    shape = (len(users), len(items))
    train, full = _matrix(cells, cells["w_train"], shape), _matrix(cells, cells["w_full"], shape)
    meta = _meta(ds, run_id, window, n_events, users, items, train, full, truth)
    meta["disliked_pairs"] = int(disliked.nnz)
    meta.update({f"sessions_{part}": len(indptr) - 1 for part, (indptr, _) in sessions.items()})
    final = write_features(cfg, ds, Features(users=users, items=items, train=train, full=full, holdout=truth, meta=meta,
                                             disliked=disliked), daily)
    write_sessions(cfg, ds, sessions)
    write_sequences(cfg, ds, sequences)
    write_ranker_signals(cfg, ds, signals)
    lap("feedback, signals, written")
    log.info("features ds=%s: %d events -> %d users x %d items, train nnz %d, full nnz %d, holdout %d pairs",
             ds, n_events, len(users), len(items), train.nnz, full.nnz, len(truth))
    return {"path": str(final), **meta}
