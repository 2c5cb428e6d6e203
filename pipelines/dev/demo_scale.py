"""Demo data at scale: a million users, a hundred thousand items, ten million events in a month,
generated day by day into the landing zone (``recsys demo-data --scale``).

Unlike ``pipelines/dev/demo_data.py`` (small, rich funnels, for tests), this generator never holds more
than one day of events in memory: users with power-law activity, items with power-law popularity
inside 20 categories, each user favouring one or two categories (so collaborative models have
structure to find), views, add-to-carts and purchases with order ids, written as one Parquet
partition per day. Deterministic for a given seed.
"""
from __future__ import annotations

import logging
import time
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines import constants as C
from pipelines.artifacts import layout
from pipelines.config import Config
from pipelines.dev.demo_data import ADJECTIVES, COUNTRIES, COUNTRY_P
from pipelines.infra import storage
from pipelines.infra.events import events_to_arrow

log = logging.getLogger(__name__)

N_CATEGORIES = 20


def _cum(weights: np.ndarray) -> np.ndarray:
    c = np.cumsum(weights, dtype=np.float64)
    return c / c[-1]


def generate_scale(cfg: Config, users: int = 1_000_000, items: int = 100_000, events: int = 10_000_000,
                   days: int = 30, end_date: str = "2026-11-27", seed: int = 7) -> dict:
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    end = date.fromisoformat(end_date)
    start = end - timedelta(days=days - 1)
    batch = f"scale-s{seed}-u{users}-i{items}-e{events}-d{days}-{end_date}"
    if storage.landing_batch_exists(layout(cfg).landing, "events", batch):
        return {"batch": batch, "skipped": True}
    # Items: a category each, power-law popularity within the category and overall.
    item_cat = rng.integers(0, N_CATEGORIES, items)
    pop = 1.0 / np.arange(1, items + 1) ** 0.9
    pop = pop[rng.permutation(items)]
    order = np.argsort(item_cat, kind="stable")
    cat_start = np.searchsorted(item_cat[order], np.arange(N_CATEGORIES))
    cat_end = np.append(cat_start[1:], items)
    cat_cum = [_cum(pop[order[a:b]]) for a, b in zip(cat_start, cat_end)]
    all_cum = _cum(pop)
    price = np.round(np.exp(rng.normal(2.3, 0.7, items)), 2)
    ids = np.char.add("p", np.char.zfill(np.arange(items).astype(str), 6))
    catalog = pd.DataFrame({
        "item_id": ids, "title": [f"{a} item {k}" for a, k in zip(ADJECTIVES[rng.integers(0, len(ADJECTIVES), items)],
                                                                     range(items))],
        "category": np.char.add("cat", item_cat.astype(str)), "price": price,
        "in_stock": rng.random(items) > 0.02, "active": True,
    })
    storage.write_landing_table(layout(cfg).landing, "items", pa.Table.from_pandas(catalog, preserve_index=False), batch)
    # Users: power-law activity, one or two favourite categories, a country.
    activity = _cum(rng.pareto(1.5, users) + 0.05)
    fav1 = rng.integers(0, N_CATEGORIES, users)
    fav2 = rng.integers(0, N_CATEGORIES, users)
    uids = np.char.add("u", np.char.zfill(np.arange(users).astype(str), 7))
    people = pd.DataFrame({"user_id": uids, "country": COUNTRIES[rng.choice(len(COUNTRIES), users, p=COUNTRY_P)]})
    storage.write_landing_table(layout(cfg).landing, "users", pa.Table.from_pandas(people, preserve_index=False), batch)
    del people, catalog
    per_day = events // days
    written = 0
    for d in range(days):
        day = start + timedelta(days=d)
        n = per_day + (events - per_day * days if d == days - 1 else 0)
        u = np.searchsorted(activity, rng.random(n))
        favourite = np.where(rng.random(n) < 0.6, fav1[u], fav2[u])
        in_cat = rng.random(n) < 0.85
        it = np.empty(n, dtype=np.int64)
        it[~in_cat] = np.searchsorted(all_cum, rng.random(int((~in_cat).sum())))
        for c in range(N_CATEGORIES):
            sel = np.flatnonzero(in_cat & (favourite == c))
            if len(sel) and cat_end[c] > cat_start[c]:
                k = np.searchsorted(cat_cum[c], rng.random(len(sel)))
                it[sel] = order[cat_start[c] + np.minimum(k, cat_end[c] - cat_start[c] - 1)]
        kind = rng.choice(3, n, p=[0.70, 0.15, 0.15])
        etype = np.array([C.VIEW, C.ADD_TO_CART, C.PURCHASE])[kind]
        secs = rng.integers(0, 86400, n)
        when = pd.Timestamp(day, tz="UTC") + pd.to_timedelta(secs, unit="s")
        order_id = np.where(kind == 2, np.char.add(f"o{d:02d}-", uids[u]), None)
        frame = pd.DataFrame({C.USER_ID: uids[u], C.ITEM_ID: ids[it], C.EVENT_TYPE: etype, C.EVENT_TIME: when,
                              C.QUANTITY: np.where(kind == 2, rng.integers(1, 4, n), 1), C.PRICE: price[it],
                              C.ORDER_ID: order_id, C.SESSION_ID: None})
        storage.write_landing_events(layout(cfg).landing, events_to_arrow(frame), batch)
        written += n
        log.info("demo-data --scale: day %d/%d (%s): %d events", d + 1, days, day, n)
    out = {"batch": batch, "events": written, "users": users, "items": items, "days": days,
           "seconds": round(time.perf_counter() - t0, 1)}
    log.info("demo-data --scale: %s", out)
    return out
