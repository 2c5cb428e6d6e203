"""Deterministic synthetic retail data for demos, tests and scale runs.

What it simulates (every draw comes from one seeded numpy Generator, so the same arguments give
byte-identical data):

* items in 8 categories with a power-law (Zipf) popularity, brands, prices, titles and
  descriptions; 20% of items are released during the period (new items);
* users with Dirichlet category affinities; 30% sign up during the period (new users);
* sessions: views -> add_to_cart -> purchase funnels inside the user's favourite categories;
* complementary items bought in the same order (each item has a complement in a paired category);
* repeat purchases of consumables (grocery, beauty) one to three weeks later;
* a small share of dirty rows (null user, unknown event type, negative price, zero quantity,
  exact duplicates) that validation must quarantine.

All work is vectorised over events; memory is a few dozen bytes per event. ``import_demo`` lands
the data as one batch (``recsys demo-data``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from pipelines import constants as C
from pipelines.artifacts import layout
from pipelines.config import Config
from pipelines.dev.demo_signals import add_signals
from pipelines.infra import storage
from pipelines.services.importers import ImportResult, land_frames

log = logging.getLogger(__name__)

CATEGORIES = np.array(["home", "kitchen", "garden", "toys", "stationery", "fashion", "beauty", "grocery"])
CONSUMABLE = {"beauty", "grocery"}
DURABLE = {"home", "garden", "toys", "fashion"}
# Complement pairs: kitchen <-> grocery, fashion <-> beauty, home <-> garden, toys <-> stationery.
COMPLEMENT_CATEGORY = {0: 2, 2: 0, 1: 7, 7: 1, 3: 4, 4: 3, 5: 6, 6: 5}
NOUNS = {
    "home": ["lamp", "cushion", "candle", "frame", "vase", "clock", "rug", "mirror"],
    "kitchen": ["mug", "teapot", "pan", "knife set", "bowl", "kettle", "grater", "jar"],
    "garden": ["planter", "hose", "gloves", "seed kit", "trowel", "bird feeder", "lantern", "bench"],
    "toys": ["puzzle", "robot", "teddy bear", "kite", "building set", "doll", "yo-yo", "train"],
    "stationery": ["notebook", "pen set", "planner", "sticker pack", "pencil case", "card", "ruler", "tape"],
    "fashion": ["scarf", "tote bag", "hat", "umbrella", "wallet", "socks", "belt", "gloves"],
    "beauty": ["soap", "hand cream", "lip balm", "shampoo", "bath salts", "face mask", "perfume", "lotion"],
    "grocery": ["tea", "coffee", "chocolate", "honey", "biscuits", "jam", "olive oil", "spice mix"],
}
ADJECTIVES = np.array(["vintage", "red", "blue", "green", "retro", "classic", "floral", "striped",
                       "wooden", "ceramic", "organic", "mini", "deluxe", "rustic", "pastel", "gold"])
COUNTRIES = np.array(["GB", "FR", "DE", "NL", "ES", "IE", "BE", "US"])
COUNTRY_P = np.array([0.55, 0.1, 0.1, 0.06, 0.06, 0.05, 0.04, 0.04])
LOCALE_OF_COUNTRY = {"GB": "en-GB", "FR": "fr-FR", "DE": "de-DE", "NL": "nl-NL", "ES": "es-ES", "IE": "en-IE",
                     "BE": "nl-BE", "US": "en-US"}
FIRST_NAMES = np.array(["Alex", "Sam", "Charlie", "Jamie", "Robin", "Morgan", "Kim", "Noor", "Lea", "Jonas"])
SHOP_URL = "https://shop.example.com"  # RFC 2606 example domain: never a real shop or mailbox


@dataclass(frozen=True)
class DemoData:
    events: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    contacts: pd.DataFrame  # user_id, email, first_name, locale (the private contact store)


@dataclass(frozen=True)
class _Catalog:
    """The simulated items: per item a category, popularity, release day, brand, price, id, title."""

    cat: np.ndarray
    pop: np.ndarray
    release: np.ndarray
    brand: np.ndarray
    price: np.ndarray
    ids: np.ndarray
    titles: np.ndarray
    cat_names: np.ndarray
    cat_items: list[np.ndarray]   # item indices per category
    cat_cum: list[np.ndarray]     # within-category cumulative popularity, for drawing items given a category
    complement: np.ndarray        # per item, the item bought with it (in the paired category)


@dataclass(frozen=True)
class _People:
    """The simulated users: category affinities, signup day, activity, country, id."""

    aff_cum: np.ndarray
    signup: np.ndarray
    activity: np.ndarray
    country: np.ndarray
    ids: np.ndarray


@dataclass(frozen=True)
class _Sessions:
    """One row per session: user, day (from the start), category, second of the day; plus the context
    every event frame of the funnel needs."""

    user: np.ndarray
    day: np.ndarray
    cat: np.ndarray
    sec: np.ndarray
    start: date
    user_ids: np.ndarray
    catalog: _Catalog


def _pick(rng: np.random.Generator, cum: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Draw one column index per row from row-wise cumulative probabilities `cum[rows]`."""
    u = rng.random(len(rows))[:, None]
    return (cum[rows] < u).sum(axis=1).clip(max=cum.shape[1] - 1)


def _catalog(rng: np.random.Generator, items: int, days: int) -> _Catalog:
    n_cat = len(CATEGORIES)
    item_cat = rng.integers(0, n_cat, items)
    pop = 1.0 / np.arange(1, items + 1) ** 1.0
    pop = pop[rng.permutation(items)]
    item_release = np.where(rng.random(items) < 0.2, rng.integers(0, days, items), 0)
    brand = rng.integers(0, 30, items)
    base_price = np.round(np.exp(rng.normal(2.0, 0.7, items)), 2)
    adj = ADJECTIVES[rng.integers(0, len(ADJECTIVES), items)]
    noun = np.array([NOUNS[CATEGORIES[c]][k] for c, k in zip(item_cat, rng.integers(0, 8, items))])
    item_ids = np.array([f"i{k:06d}" for k in range(items)])
    titles = np.char.add(np.char.add(np.char.capitalize(adj.astype(str)), " "), noun)
    cat_items = [np.flatnonzero(item_cat == c) for c in range(n_cat)]
    cat_cum = [np.cumsum(pop[ix]) / pop[ix].sum() if len(ix) else np.array([1.0]) for ix in cat_items]
    return _Catalog(cat=item_cat, pop=pop, release=item_release, brand=brand, price=base_price, ids=item_ids,
                    titles=titles, cat_names=CATEGORIES[item_cat], cat_items=cat_items, cat_cum=cat_cum,
                    complement=_complements(rng, pop, cat_items))


def _complements(rng: np.random.Generator, pop: np.ndarray, cat_items: list[np.ndarray]) -> np.ndarray:
    """Per item, a complement drawn by popularity from the paired category (any item when it is empty)."""
    items = len(pop)
    complement = np.empty(items, dtype=np.int64)
    for c in range(len(CATEGORIES)):
        ix = cat_items[c]
        target = cat_items[COMPLEMENT_CATEGORY[c]]
        if len(ix) == 0:
            continue
        if len(target) == 0:
            target = np.arange(items)
        tp = pop[target] / pop[target].sum()
        complement[ix] = rng.choice(target, size=len(ix), p=tp)
    return complement


def _people(rng: np.random.Generator, users: int, days: int, sessions_per_user_day: float) -> _People:
    affinity = rng.dirichlet(np.full(len(CATEGORIES), 0.3), users)
    signup = np.where(rng.random(users) < 0.3, rng.integers(0, days, users), 0)
    activity = np.exp(rng.normal(0.0, 0.8, users)) * sessions_per_user_day
    country = COUNTRIES[rng.choice(len(COUNTRIES), users, p=COUNTRY_P)]
    user_ids = np.array([f"u{k:07d}" for k in range(users)])
    return _People(aff_cum=np.cumsum(affinity, axis=1), signup=signup, activity=activity, country=country,
                   ids=user_ids)


def _sessions(rng: np.random.Generator, people: _People, catalog: _Catalog, days: int,
              start: date) -> tuple[_Sessions, np.ndarray]:
    """The sessions and the number of views in each."""
    signup = people.signup
    n_sess = rng.poisson(people.activity * (days - signup))
    s_user = np.repeat(np.arange(len(signup)), n_sess)
    s_day = signup[s_user] + (rng.random(len(s_user)) * (days - signup[s_user])).astype(np.int64)
    s_cat = _pick(rng, people.aff_cum, s_user)
    s_sec = rng.integers(0, 86400 - 3600, len(s_user))
    n_views = 1 + rng.poisson(2.0, len(s_user))
    return _Sessions(user=s_user, day=s_day, cat=s_cat, sec=s_sec, start=start, user_ids=people.ids,
                     catalog=catalog), n_views


def _views(rng: np.random.Generator, s: _Sessions, n_views: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(session, item, seconds after the session start) of each view of an item released by then."""
    cat = s.catalog
    v_sess = np.repeat(np.arange(len(s.user)), n_views)
    v_cat = s.cat[v_sess]
    v_item = np.empty(len(v_sess), dtype=np.int64)
    u = rng.random(len(v_sess))
    for c in range(len(CATEGORIES)):
        m = v_cat == c
        if m.any() and len(cat.cat_items[c]):
            v_item[m] = cat.cat_items[c][np.searchsorted(cat.cat_cum[c], u[m]).clip(max=len(cat.cat_items[c]) - 1)]
        elif m.any():
            v_item[m] = rng.integers(0, len(cat.pop), m.sum())
    released = cat.release[v_item] <= s.day[v_sess]
    v_sess, v_item = v_sess[released], v_item[released]
    v_offset = rng.integers(0, 1800, len(v_sess))
    return v_sess, v_item, v_offset


def _events(s: _Sessions, sess, item, etype, offset, qty=None, order=False) -> pd.DataFrame:
    day = s.day[sess]
    ts = (np.datetime64(s.start, "s") + day.astype("timedelta64[D]") + (s.sec[sess] + offset).astype("timedelta64[s]"))
    return pd.DataFrame({
        C.USER_ID: s.user_ids[s.user[sess]],
        C.ITEM_ID: s.catalog.ids[item],
        C.EVENT_TYPE: etype,
        C.EVENT_TIME: ts,
        C.QUANTITY: qty if qty is not None else np.ones(len(sess), dtype=np.int64),
        C.PRICE: s.catalog.price[item],
        C.ORDER_ID: np.char.add("o", sess.astype(str)) if order else None,
        C.SESSION_ID: np.char.add("s", sess.astype(str)),
    })


def _funnel(rng: np.random.Generator, s: _Sessions, n_views: np.ndarray, days: int) -> pd.DataFrame:
    """Views, add-to-carts, purchases, complements bought in the same order, and repeat purchases of
    consumables 7-21 days later (within the period)."""
    cat = s.catalog
    v_sess, v_item, v_offset = _views(rng, s, n_views)
    cart = rng.random(len(v_sess)) < 0.30
    buy = cart & (rng.random(len(v_sess)) < 0.55)
    frames = [_events(s, v_sess, v_item, C.VIEW, v_offset),
              _events(s, v_sess[cart], v_item[cart], C.ADD_TO_CART, v_offset[cart] + 60)]
    b_sess, b_item = v_sess[buy], v_item[buy]
    b_qty = 1 + rng.poisson(0.4, len(b_sess))
    frames.append(_events(s, b_sess, b_item, C.PURCHASE, np.full(len(b_sess), 2400), b_qty, order=True))
    comp = rng.random(len(b_sess)) < 0.35
    c_item = cat.complement[b_item[comp]]
    ok = cat.release[c_item] <= s.day[b_sess[comp]]
    frames.append(_events(s, b_sess[comp][ok], c_item[ok], C.PURCHASE, np.full(ok.sum(), 2400), order=True))
    consumable = np.isin(cat.cat_names[b_item], list(CONSUMABLE)) & (rng.random(len(b_sess)) < 0.5)
    r_sess, r_item = b_sess[consumable], b_item[consumable]
    r_days = rng.integers(7, 22, len(r_sess))
    keep = s.day[r_sess] + r_days < days
    r_sess, r_item, r_days = r_sess[keep], r_item[keep], r_days[keep]
    rep = _events(s, r_sess, r_item, C.PURCHASE, r_days * 86400 + 2400, order=False)
    rep[C.ORDER_ID] = np.char.add(np.char.add("r", r_sess.astype(str)), np.char.add("-", r_item.astype(str)))
    rep[C.SESSION_ID] = np.char.add("rs", np.arange(len(r_sess)).astype(str))
    frames.append(rep)
    events = pd.concat(frames, ignore_index=True)
    events[C.EVENT_TIME] = pd.to_datetime(events[C.EVENT_TIME]).dt.tz_localize("UTC")
    return events


def _with_dirty_rows(rng: np.random.Generator, events: pd.DataFrame, dirty_share: float) -> pd.DataFrame:
    """A share of copies of real events made dirty (null user, unknown type, negative price, zero
    quantity, or left as an exact duplicate), appended; all sorted by time, session, item."""
    n_dirty = int(len(events) * dirty_share)
    if n_dirty:
        rows = rng.choice(len(events), n_dirty, replace=False)
        kind = rng.integers(0, 5, n_dirty)
        dirty = events.iloc[rows].copy()
        dirty.loc[dirty.index[kind == 0], C.USER_ID] = None
        dirty.loc[dirty.index[kind == 1], C.EVENT_TYPE] = "clicked"
        dirty.loc[dirty.index[kind == 2], C.PRICE] = -dirty.loc[dirty.index[kind == 2], C.PRICE]
        dirty.loc[dirty.index[kind == 3], C.QUANTITY] = 0
        # kind 4: exact duplicate of a real event, left as is.
        events = pd.concat([events, dirty], ignore_index=True)
    return events.sort_values([C.EVENT_TIME, C.SESSION_ID, C.ITEM_ID], kind="stable").reset_index(drop=True)


def _items_frame(rng: np.random.Generator, cat: _Catalog, start: date) -> pd.DataFrame:
    items = len(cat.ids)
    return pd.DataFrame({
        "item_id": cat.ids,
        "title": cat.titles,
        "description": [f"{t} by brand{b:02d}, a {c} favourite." for t, b, c in zip(cat.titles, cat.brand, cat.cat_names)],
        "category": cat.cat_names,
        "brand": [f"brand{b:02d}" for b in cat.brand],
        "price": cat.price,
        "in_stock": rng.random(items) > 0.05,
        "active": True,
        # Merchandising columns the rules layer reads (docs/rules.md): margin share, promotions, and
        # repeatability where the retailer knows it (consumables yes, durables no, the rest learned).
        "margin": np.round(rng.uniform(0.1, 0.6, items), 2),
        "promotion": rng.random(items) < 0.05,
        "repeatable": pd.array([True if c in CONSUMABLE else (False if c in DURABLE else None) for c in cat.cat_names],
                               dtype="boolean"),
        "release_date": [start + timedelta(days=int(d)) for d in cat.release],
        # Links for the email export, derived from the id (no random draw, so every other column keeps its draws).
        "url": [f"{SHOP_URL}/products/{i}" for i in cat.ids],
        "image_url": [f"{SHOP_URL}/images/{i}.jpg" for i in cat.ids],
    })


def _users_frame(rng: np.random.Generator, people: _People, start: date) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": people.ids,
        "country": people.country,
        "signup_date": [start + timedelta(days=int(d)) for d in people.signup],
        "consent_personalization": True,
        "consent_email": rng.random(len(people.ids)) > 0.1,
    })


def _contacts_frame(people: _People) -> pd.DataFrame:
    """Contact fields derived from the user index (no random draw): every fifth user (guest checkouts) has no email
    address (the export counts them as skipped_no_address); addresses are at example.com."""
    k = np.arange(len(people.ids))
    return pd.DataFrame({
        "user_id": people.ids,
        "email": pd.array([None if j % 5 == 0 else f"shopper{j}@example.com" for j in k], dtype="string"),
        "first_name": FIRST_NAMES[k % len(FIRST_NAMES)],
        "locale": [LOCALE_OF_COUNTRY[c] for c in people.country],
    })


def generate(seed: int = 42, users: int = 2000, items: int = 400, days: int = 60,
             end_date: date | str = "2026-11-27", dirty_share: float = 0.005,
             sessions_per_user_day: float = 0.08, signals: bool = False) -> DemoData:
    """Events, catalog and users; every draw from one Generator in a fixed order (items, users,
    sessions, views, funnel, dirty rows, then the catalog's and users' remaining columns). With
    ``signals``, the wider retail signals of pipelines/dev/demo_signals.py (context, dwell, wishlists,
    ratings, reviews) from their own Generator: the other events stay the same."""
    rng = np.random.default_rng(seed)
    end = pd.Timestamp(end_date).date()
    start = end - timedelta(days=days - 1)
    catalog = _catalog(rng, items, days)
    people = _people(rng, users, days, sessions_per_user_day)
    sessions, n_views = _sessions(rng, people, catalog, days, start)
    events = _with_dirty_rows(rng, _funnel(rng, sessions, n_views, days), dirty_share)
    items_df = _items_frame(rng, catalog, start)
    users_df = _users_frame(rng, people, start)
    if signals:
        events = add_signals(seed, events, CATEGORIES[sessions.cat], catalog.cat_names, catalog.ids, people.ids,
                             pd.Timestamp(end + timedelta(days=1), tz="UTC"))
    log.info("demo data: %d events, %d items, %d users, %s..%s", len(events), items, users, start, end)
    return DemoData(events=events, items=items_df, users=users_df, contacts=_contacts_frame(people))


def import_demo(cfg: Config, seed: int, users: int, items: int, days: int, end_date: str,
                signals: bool = False) -> ImportResult:
    """Generate the demo data and land it as one batch (``recsys demo-data``, with ``signals`` unless
    ``--no-signals``); a no-op when the batch of these arguments was landed before."""
    batch_id = f"demo-s{seed}-u{users}-i{items}-d{days}-{end_date}" + ("-signals" if signals else "")
    if storage.landing_batch_exists(layout(cfg).landing, "events", batch_id):
        return ImportResult(batch_id, 0, 0, 0, 0, skipped=True)
    data = generate(seed=seed, users=users, items=items, days=days, end_date=end_date, signals=signals)
    return land_frames(cfg, batch_id, data.events, data.items, data.users, data.contacts)
