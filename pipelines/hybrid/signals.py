"""The hybrid ranker's review and context features at one cut-off (issue 17).

Everything here is computed from what is known strictly before the cut-off day, like the rest of
``Cutoff``: the training windows, the evaluation cut-off and the publishing cut-off each see only
their past, so no review or purchase of a label window leaks into its features.

Always (constant 0 columns without reviews: a gradient-boosted tree cannot split on them, so a
catalog without reviews ranks exactly as before):

* ``review_count``: the item's reviews before the cut-off;
* ``sentiment``: their mean VADER compound score in [-1, 1] (features/sentiment.py), 0 without.

With ``ranker_context_features`` on (off by default, docs/configuration.md):

* ``hour_match``: cosine between the user's part-of-day profile (distinct days with an interaction
  in each of ``HOUR_BINS`` 4-hour bins, UTC) and the item's (its purchases per bin); 0 when either
  has none;
* ``weekday_match``: the same over the 7 weekdays (the user's distinct active days per weekday, the
  item's purchases per weekday);
* ``season_share``: the item's share of all purchases in the same weeks one year before (the
  ``horizon`` days from ``cut-off - SEASON_LAG_DAYS``, 52 weeks so the weekdays line up);
* ``season_lift``: (its purchases in those weeks + 1) / (its purchases in the year before the
  cut-off x horizon / 364 + 1): above 1 when the item sold more in these weeks than on average.

The two season columns are 0 at cut-offs where the history does not reach a year back.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.signal_artifacts import RankerSignals

HOUR_BINS = 6  # 4-hour parts of the day (0-4, 4-8, ... 20-24 h UTC)
SEASON_LAG_DAYS = 364  # 52 weeks: the same weekdays one year before
REVIEW_COLUMNS = ("review_count", "sentiment")
CONTEXT_COLUMNS = ("hour_match", "weekday_match", "season_share", "season_lift")


@dataclass
class CutoffSignals:
    """Per item: review_count, sentiment; ``context`` (None when off): unit-normalised profiles
    user_hour (users x HOUR_BINS), item_hour, user_wday (users x 7), item_wday, and per item
    season_share, season_lift."""
    review_count: np.ndarray
    sentiment: np.ndarray
    context: dict[str, np.ndarray] | None = None


def weekday(day) -> np.ndarray:
    """Monday = 0 .. Sunday = 6 of days since 1970-01-01 (a Thursday)."""
    return (np.asarray(day, dtype=np.int64) + 3) % 7


def item_reviews(reviews: pd.DataFrame | None, day: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(review count, mean sentiment) per item from the reviews of days before ``day``."""
    if reviews is None or not len(reviews):
        return np.zeros(n_items), np.zeros(n_items)
    r = reviews[reviews["day"] < day]
    idx = r["item_idx"].to_numpy(np.int64)
    count = np.bincount(idx, weights=r["reviews"].to_numpy(float), minlength=n_items)
    total = np.bincount(idx, weights=r["sentiment_sum"].to_numpy(float), minlength=n_items)
    return count, np.divide(total, count, out=np.zeros(n_items), where=count > 0)


def _unit(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A dense (shape) profile of summed weights at (rows, cols), each row scaled to unit L2 norm."""
    flat = np.asarray(rows, np.int64) * shape[1] + np.asarray(cols, np.int64)
    out = np.bincount(flat, weights=weights, minlength=shape[0] * shape[1]).astype(np.float64).reshape(shape)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norm, out=np.zeros_like(out), where=norm > 0)


def context_profiles(daily: pd.DataFrame, hours: pd.DataFrame | None, day: int, shape: tuple[int, int],
                     horizon: int) -> dict[str, np.ndarray]:
    """The context arrays of CutoffSignals at cut-off ``day`` (days before it only); ``horizon``:
    the label window's length in days (ranker_window_days)."""
    n_users, n_items = shape
    d = daily[daily["day"] < day]
    active = d.drop_duplicates(["user_idx", "day"])
    bought = d[d["purchases"] > 0]
    out = {"user_wday": _unit(active["user_idx"].to_numpy(np.int64), weekday(active["day"]),
                              np.ones(len(active)), (n_users, 7)),
           "item_wday": _unit(bought["item_idx"].to_numpy(np.int64), weekday(bought["day"]),
                              bought["purchases"].to_numpy(float), (n_items, 7))}
    h = hours[hours["day"] < day] if hours is not None else daily.iloc[:0].assign(hour=0)
    hb = h["hour"].to_numpy(np.int64) * HOUR_BINS // 24
    slots = pd.DataFrame({"u": h["user_idx"].to_numpy(np.int64), "day": h["day"].to_numpy(np.int64), "b": hb})
    slots = slots.drop_duplicates()
    out["user_hour"] = _unit(slots["u"].to_numpy(), slots["b"].to_numpy(), np.ones(len(slots)), (n_users, HOUR_BINS))
    hp = h["purchases"].to_numpy(float) if "purchases" in h else np.zeros(len(h))
    out["item_hour"] = _unit(h["item_idx"].to_numpy(np.int64), hb, hp, (n_items, HOUR_BINS))
    start = day - SEASON_LAG_DAYS
    share, lift = np.zeros(n_items), np.zeros(n_items)
    if len(daily) and int(daily["day"].min()) <= start:
        def bought_in(lo: int, hi: int) -> np.ndarray:
            b = bought[(bought["day"] >= lo) & (bought["day"] < hi)]
            return np.bincount(b["item_idx"], weights=b["purchases"].to_numpy(float), minlength=n_items)

        win, year = bought_in(start, start + horizon), bought_in(start, day)
        share = win / win.sum() if win.sum() > 0 else share
        lift = (win + 1.0) / (year * horizon / SEASON_LAG_DAYS + 1.0)
    out["season_share"], out["season_lift"] = share, lift
    return out


def cutoff_signals(daily: pd.DataFrame, signals: RankerSignals | None, day: int, shape: tuple[int, int],
                   horizon: int, context: bool) -> CutoffSignals:
    """The review columns always; the context profiles when ``context`` (ranker_context_features)."""
    count, sentiment = item_reviews(signals.reviews if signals else None, day, shape[1])
    ctx = context_profiles(daily, signals.hours if signals else None, day, shape, horizon) if context else None
    return CutoffSignals(count, sentiment, ctx)


def pair_signals(s: CutoffSignals, uu: np.ndarray, ii: np.ndarray) -> dict[str, np.ndarray]:
    """The ranker columns (REVIEW_COLUMNS, then CONTEXT_COLUMNS when on) for the pairs (uu[j], ii[j])."""
    out = {"review_count": s.review_count[ii], "sentiment": s.sentiment[ii]}
    if s.context is not None:
        c = s.context
        out["hour_match"] = np.einsum("ij,ij->i", c["user_hour"][uu], c["item_hour"][ii])
        out["weekday_match"] = np.einsum("ij,ij->i", c["user_wday"][uu], c["item_wday"][ii])
        out["season_share"], out["season_lift"] = c["season_share"][ii], c["season_lift"][ii]
    return out
