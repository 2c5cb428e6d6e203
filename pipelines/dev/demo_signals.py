"""The wider retail signals of the demo data (issue 17), with planted effects the tests check:

* **context** of every event, per session: ``channel`` (fashion and beauty sessions come mostly from
  social, grocery ones from email, garden and kitchen ones from search, the rest from a base mix;
  repeat purchases from email reminders), ``landing_page`` (the session's category, the home page or
  the search page) and ``device`` (a fifth of the users always shop in the app; the others on mobile
  or desktop);
* **dwell times** on views: about 20 s, three times longer when the item went to the cart;
* **wishlists**: 4% of the views that did not go to the cart; a quarter of them bought 3 to 14 days
  later (within the period);
* **ratings and reviews**: a quarter of the purchases are rated 2 to 10 days later; 8% of the items
  are bad (1 to 3 stars, the others 3 to 5), and their buyers rate them more often (60%); 40% of the
  ratings come as a review (70% for bad items) with a text written from templates by star level (the
  rest as a rating event);
* a few **bad values** in the new columns (ratings of 0 and 9, an empty review, negative and absurd
  dwell times) that the gate must quarantine.

Every draw comes from its own Generator (seeded from the demo seed), so the demo's other events are
the same with or without these signals.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines import constants as C

CHANNELS = np.array(["direct", "search", "social", "email", "paid"])
BASE_MIX = np.array([0.35, 0.30, 0.15, 0.12, 0.08])
# The planted channel of each category's sessions: (channel, share); the rest from BASE_MIX.
PLANTED_CHANNEL = {"fashion": ("social", 0.6), "beauty": ("social", 0.6), "grocery": ("email", 0.5),
                   "garden": ("search", 0.5), "kitchen": ("search", 0.5)}
POSITIVE = ["Love it, great quality and lovely colour.", "Excellent, works perfectly. Highly recommend!",
            "Beautiful and well made, very happy with it.", "Great value, arrived quickly, would buy again."]
NEUTRAL = ["It is okay, does the job.", "Average product, nothing special.", "Fine for the price."]
NEGATIVE = ["Terrible quality, broke after a day. Very disappointed.", "Awful, cheap and flimsy. Do not buy.",
            "Horrible smell and it leaked everywhere, waste of money.", "Poor, broken on arrival and useless."]
BAD_ITEM_SHARE = 0.08


def add_signals(seed: int, events: pd.DataFrame, session_category: np.ndarray, item_category: np.ndarray,
                item_ids: np.ndarray, user_ids: np.ndarray, end: pd.Timestamp) -> pd.DataFrame:
    """``events`` (the demo's, sorted) with context and dwell columns, plus wishlist, rating and review
    events and a few bad values; sorted again by time, session, item. ``session_category``: the
    category name of each funnel session (session ids ``s<k>``); ``item_category``: per item."""
    rng = np.random.default_rng([seed, 17])
    ev = events.copy()
    # (session, item) of each row, and whether that item went to the cart in that session.
    key = ev[C.SESSION_ID].astype(str) + "|" + ev[C.ITEM_ID].astype(str)
    carted = key.isin(set(key[(ev[C.EVENT_TYPE] == C.ADD_TO_CART).to_numpy()])).to_numpy()
    _context(rng, ev, session_category, user_ids, carted)
    item_idx = pd.Index(item_ids).get_indexer(ev[C.ITEM_ID])
    bad_items = rng.random(len(item_ids)) < BAD_ITEM_SHARE
    frames = [ev, _wishlists(rng, ev, carted, end), _ratings(rng, ev, item_idx, bad_items, end)]
    out = pd.concat(frames, ignore_index=True)
    out = _bad_values(rng, out)
    return out.sort_values([C.EVENT_TIME, C.SESSION_ID, C.ITEM_ID], kind="stable").reset_index(drop=True)


def _context(rng: np.random.Generator, ev: pd.DataFrame, session_category: np.ndarray, user_ids: np.ndarray,
             carted: np.ndarray) -> None:
    """Channel, landing page and device per session (in place), and dwell times on views."""
    sid = ev[C.SESSION_ID].astype("string").fillna("")
    funnel = sid.str.match(r"^s\d+$").to_numpy(bool)
    sess = np.where(funnel, pd.to_numeric(sid.str.slice(1).where(funnel), errors="coerce").fillna(0), 0).astype(np.int64)
    # One draw per session (not per event), so a session's events share their context.
    n_sess = len(session_category)
    u_ch, u_land = rng.random(n_sess), rng.random(n_sess)
    base = CHANNELS[np.searchsorted(np.cumsum(BASE_MIX), rng.random(n_sess)).clip(max=len(CHANNELS) - 1)]
    channel_s = base.astype(object)
    for category, (channel, share) in PLANTED_CHANNEL.items():
        m = (session_category == category) & (u_ch < share)
        channel_s[m] = channel
    landing_s = np.where(u_land < 0.6, session_category, np.where(u_land < 0.9, "home", "search")).astype(object)
    app_user = rng.random(len(user_ids)) < 0.2
    mobile_s = rng.random(n_sess) < 0.6
    user_pos = pd.Index(user_ids).get_indexer(ev[C.USER_ID].astype("string").fillna(""))
    app = np.where(user_pos >= 0, app_user[np.maximum(user_pos, 0)], False)
    ev[C.CHANNEL] = np.where(funnel, channel_s[sess % max(n_sess, 1)], "email")
    ev[C.LANDING_PAGE] = np.where(funnel, landing_s[sess % max(n_sess, 1)], "home")
    ev[C.DEVICE] = np.where(app, "app", np.where(mobile_s[sess % max(n_sess, 1)] | ~funnel, "mobile", "desktop"))
    view = (ev[C.EVENT_TYPE] == C.VIEW).to_numpy()
    dwell = np.round(np.exp(rng.normal(3.0, 0.6, len(ev))) * np.where(carted, 3.0, 1.0), 1).clip(max=1800.0)
    ev[C.DWELL_SECONDS] = np.where(view & (rng.random(len(ev)) > 0.01), dwell, np.nan)


def _new_events(src: pd.DataFrame, etype: str, shift_s: np.ndarray, end: pd.Timestamp) -> pd.DataFrame:
    """Copies of ``src``'s rows as ``etype`` events ``shift_s`` seconds later, those still before the end."""
    out = src.copy()
    out[C.EVENT_TYPE] = etype
    out[C.EVENT_TIME] = out[C.EVENT_TIME] + pd.to_timedelta(shift_s, unit="s")
    out[C.QUANTITY] = 1
    out[C.ORDER_ID] = None
    out[C.DWELL_SECONDS] = np.nan
    return out[out[C.EVENT_TIME] < end]


def _wishlists(rng: np.random.Generator, ev: pd.DataFrame, carted: np.ndarray, end: pd.Timestamp) -> pd.DataFrame:
    mask = (ev[C.EVENT_TYPE] == C.VIEW).to_numpy() & ev[C.USER_ID].notna().to_numpy()
    views, not_carted = ev[mask], ~carted[mask]
    pick = views[not_carted & (rng.random(len(views)) < 0.04)]
    wish = _new_events(pick, C.ADD_TO_WISHLIST, np.full(len(pick), 30), end)
    later = pick[rng.random(len(pick)) < 0.25]
    bought = _new_events(later, C.PURCHASE, rng.integers(3, 15, len(later)) * 86400, end)
    bought[C.ORDER_ID] = "w" + pd.Series(np.arange(len(bought)), index=bought.index).astype(str)
    return pd.concat([wish, bought], ignore_index=True)


def _ratings(rng: np.random.Generator, ev: pd.DataFrame, item_idx: np.ndarray, bad_items: np.ndarray,
             end: pd.Timestamp) -> pd.DataFrame:
    buy = (ev[C.EVENT_TYPE] == C.PURCHASE).to_numpy() & ev[C.USER_ID].notna().to_numpy() & (item_idx >= 0)
    # Unhappy buyers speak up: bad items are rated and reviewed more often.
    bad_row = bad_items[np.maximum(item_idx, 0)]
    rated = np.flatnonzero(buy & (rng.random(len(ev)) < np.where(bad_row, 0.6, 0.25)))
    bad = bad_items[item_idx[rated]]
    stars = np.where(bad, rng.choice([1, 2, 3], len(rated), p=[0.5, 0.35, 0.15]),
                     rng.choice([3, 4, 5], len(rated), p=[0.15, 0.4, 0.45])).astype(float)
    review = rng.random(len(rated)) < np.where(bad, 0.7, 0.4)
    out = _new_events(ev.iloc[rated].assign(**{C.RATING: stars}), C.RATING_EVENT,
                      rng.integers(2, 11, len(rated)) * 86400, end)
    # The rows kept (before the end) by their labels in ``ev`` (unique: the demo's frame is reindexed).
    is_review = pd.Series(review, index=ev.index[rated]).reindex(out.index).to_numpy(bool)
    s = out[C.RATING].to_numpy()
    k = rng.integers(0, 1 << 30, len(out))
    text = np.where(s <= 2, np.asarray(NEGATIVE, object)[k % len(NEGATIVE)],
                    np.where(s >= 4, np.asarray(POSITIVE, object)[k % len(POSITIVE)],
                             np.asarray(NEUTRAL, object)[k % len(NEUTRAL)]))
    out[C.EVENT_TYPE] = np.where(is_review, C.REVIEW_EVENT, C.RATING_EVENT)
    out[C.REVIEW_TEXT] = np.where(is_review, text, None)
    return out


def _bad_values(rng: np.random.Generator, ev: pd.DataFrame) -> pd.DataFrame:
    """A few copies of rating, review and view events with values the gate quarantines."""
    parts = []
    for etype, col, values in ((C.RATING_EVENT, C.RATING, [0.0, 9.0]), (C.REVIEW_EVENT, C.REVIEW_TEXT, ["  "]),
                               (C.VIEW, C.DWELL_SECONDS, [-3.0, 1e6])):
        rows = ev[(ev[C.EVENT_TYPE] == etype).to_numpy()]
        if not len(rows):
            continue
        n = max(1, len(rows) // 1000)
        pick = rows.iloc[rng.choice(len(rows), min(n, len(rows)), replace=False)].copy()
        pick[col] = np.asarray(values, dtype=object)[rng.integers(0, len(values), len(pick))]
        if col != C.REVIEW_TEXT:
            pick[col] = pick[col].astype(float)
        pick[C.EVENT_TIME] = pick[C.EVENT_TIME] + pd.Timedelta(seconds=1)  # not an exact duplicate
        parts.append(pick)
    return pd.concat([ev, *parts], ignore_index=True) if parts else ev
