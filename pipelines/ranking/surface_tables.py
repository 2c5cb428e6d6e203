"""Surfaces step: the item-anchored and non-personal tables, computed in DuckDB from the validated
purchases of the window up to ``ds``.

* ``frequently_bought_together``: item pairs bought in the same basket (order; else session; else
  the same user and day) with support, confidence and lift;
* ``complete_the_look``: the same pairs where the other item is from another category;
* ``cart_cross_sell``: per item, the additions a cart holding it most often gets (the pair table
  behind ``recsys cart-recs``);
* ``others_bought_next``: what customers bought within ``next_purchase_days`` after buying an item
  (behind ``post_purchase_email``);
* ``trending`` and ``best_sellers``: per country and overall (``country = 'ALL'``);
* ``user_category_affinity``: each user's share of interactions per category.

Only available items (active and in stock) appear; users who opted out of personalisation or were
forgotten are not in the inputs (features step). Results are staged under ``surfaces/ds=<ds>/`` and
published with the other tables by the publish step, in one transaction.
"""
from __future__ import annotations

import logging
from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines import constants as C
from pipelines.artifacts import Features, layout
from pipelines.config import Config
from pipelines.infra.consent import opted_out
from pipelines.ranking.rules import item_flags, load_rules

log = logging.getLogger(__name__)

ALL = "ALL"  # the country value of the overall lists


def purchases(cfg: Config, ds: str, f: Features, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """``con`` holding ``p``: one row per purchase line of the window, for the users of the features
    step (consent and deletions already applied), with the basket key and the day."""
    end = date.fromisoformat(ds) + timedelta(days=1)
    files = sorted(layout(cfg).validated_dataset("events").glob(f"{C.EVENT_DATE}=*/part.parquet"))
    files = [x for x in files if x.parent.name.split("=", 1)[1] < end.isoformat()]
    if cfg.features.history_days > 0:
        start = (end - timedelta(days=cfg.features.history_days)).isoformat()
        files = [x for x in files if x.parent.name.split("=", 1)[1] >= start]
    users = f.users
    if "personalized" in users:
        users = users[users["personalized"]]
    con.register("fusers", users[["user_id"]].assign(country=users["country"].fillna("")))

    # The rules layer's own availability (inactive; out of stock when the rules drop it).
    ok = item_flags(f.items, load_rules(cfg))["available"].to_numpy()
    con.register("fitems", f.items[["item_id"]].assign(ok=ok))
    if not files:  # a ds before the first event: no purchases, empty tables
        con.execute("""CREATE TEMP TABLE _no_events (user_id VARCHAR, item_id VARCHAR, event_type VARCHAR,
                       event_time TIMESTAMPTZ, quantity DOUBLE, price DOUBLE, order_id VARCHAR, session_id VARCHAR)""")
    # Basket: the order; else the session; else the user's day (documented in docs/tables.md).
    con.execute(f"""
        CREATE TEMP TABLE pr AS
        SELECT e.user_id, e.item_id, e.event_type, u.country, CAST(e.event_time AS DATE) AS day,
               coalesce(e.quantity, 1) AS quantity, coalesce(e.price, 0) AS price,
               coalesce('o:' || e.order_id, 's:' || e.session_id,
                        'd:' || e.user_id || ':' || CAST(CAST(e.event_time AS DATE) AS VARCHAR)) AS basket
        FROM {"read_parquet(?, union_by_name=true)" if files else "_no_events"} e
        JOIN fusers u USING (user_id)
        JOIN fitems i USING (item_id)
        WHERE e.event_type IN ('purchase', 'return') AND i.ok
          AND e.event_time < TIMESTAMPTZ '{end.isoformat()} 00:00:00+00'""", [[str(x) for x in files]] if files else [])
    # A purchase the customer returned in full does not count (as in the features' weights).
    con.execute("""
        CREATE TEMP TABLE p AS
        WITH net AS (SELECT user_id, item_id,
                            sum(quantity) FILTER (WHERE event_type = 'purchase') AS bought,
                            coalesce(sum(quantity) FILTER (WHERE event_type = 'return'), 0) AS returned
                     FROM pr GROUP BY ALL)
        SELECT pr.* EXCLUDE (event_type) FROM pr JOIN net USING (user_id, item_id)
        WHERE pr.event_type = 'purchase' AND net.returned < net.bought""")
    return con


def pair_tables(cfg: Config, con, categories: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Frequently bought together, complete the look and cart cross-sell from basket co-occurrence.

    Baskets with more than ``fbt_max_basket_items`` distinct items (wholesale orders) are left out
    of both the pair counts and the basket counts, so support, confidence and lift use one universe.
    support = n_ab / N; confidence(a -> b) = n_ab / n_a; lift = n_ab * N / (n_a * n_b).
    """
    con.execute(f"""
        CREATE TEMP TABLE b AS
        WITH d AS (SELECT DISTINCT basket, item_id FROM p),
             s AS (SELECT basket, count(*) AS n FROM d GROUP BY basket)
        SELECT d.* FROM d JOIN s USING (basket) WHERE s.n <= {int(cfg.surfaces.fbt_max_basket_items)}""")
    n_baskets = con.execute("SELECT count(DISTINCT basket) FROM b").fetchall()[0][0]
    con.register("cats", categories)
    pairs = con.execute(f"""
        WITH n AS (SELECT item_id, count(*) AS n FROM b GROUP BY item_id),
             pr AS (SELECT x.item_id AS item_id, y.item_id AS other_item_id, count(*) AS pair_count
                    FROM b x JOIN b y ON x.basket = y.basket AND x.item_id <> y.item_id
                    GROUP BY ALL HAVING count(*) >= {int(cfg.surfaces.fbt_min_pair_count)})
        SELECT pr.item_id, pr.other_item_id, pr.pair_count, na.n AS item_baskets, nb.n AS other_baskets,
               pr.pair_count / {max(n_baskets, 1)}::DOUBLE AS support,
               pr.pair_count / na.n::DOUBLE AS confidence,
               pr.pair_count * {max(n_baskets, 1)}::DOUBLE / (na.n * nb.n) AS lift,
               ca.category AS category, cb.category AS other_category
        FROM pr JOIN n na ON na.item_id = pr.item_id JOIN n nb ON nb.item_id = pr.other_item_id
        LEFT JOIN cats ca ON ca.item_id = pr.item_id LEFT JOIN cats cb ON cb.item_id = pr.other_item_id
        WHERE pr.pair_count * {max(n_baskets, 1)}::DOUBLE / (na.n * nb.n) > {float(cfg.surfaces.fbt_min_lift)}""").df()

    def top(df: pd.DataFrame, n: int) -> pd.DataFrame:
        df = df.sort_values(["item_id", "confidence", "lift", "other_item_id"], ascending=[True, False, False, True])
        df = df.assign(rank=df.groupby("item_id").cumcount() + 1)
        return df[df["rank"] <= n].reset_index(drop=True)

    fbt = top(pairs, cfg.surfaces.fbt_n)
    ctl = top(pairs[pairs["category"].fillna("") != pairs["other_category"].fillna("")], cfg.surfaces.fbt_n)
    cart = top(pairs, cfg.surfaces.cart_pairs_n)
    cols = ["item_id", "rank", "other_item_id", "pair_count", "support", "confidence", "lift"]
    log.info("surfaces: %d baskets, %d pairs with lift > %s and >= %d baskets", n_baskets, len(pairs),
             cfg.surfaces.fbt_min_lift, cfg.surfaces.fbt_min_pair_count)
    return {
        "frequently_bought_together": fbt[cols].assign(reason="bought together with " + fbt["item_id"]),
        "complete_the_look": ctl[cols + ["category", "other_category"]].assign(
            reason="completes the look of " + ctl["item_id"]),
        "cart_cross_sell": cart[cols].rename(columns={"other_item_id": "add_item_id"}).assign(
            reason="often added with " + cart["item_id"]),
    }


def others_bought_next(cfg: Config, con) -> pd.DataFrame:
    """a -> b: distinct customers who bought b within ``next_purchase_days`` after a first purchase
    of a (on a later day), over the customers who bought a. Top ``email_candidates`` per item.

    Customers who bought more than ``next_purchase_max_items`` distinct items in the window (wholesale
    accounts, resellers, shared accounts) are left out of both counts, as bought-together leaves out
    baskets over ``fbt_max_basket_items``: a customer's pairs grow with the square of their items,
    so a few such accounts made most of the pairs (thirty million demo events: 27 accounts of 1.3
    million buyers made 71% of 253 million pairs, one of them 76 million) and the step's time grew
    faster than the data."""
    cap = int(cfg.surfaces.next_purchase_max_items)
    return con.execute(f"""
        WITH f0 AS (SELECT user_id, item_id, min(day) AS first_day FROM p GROUP BY ALL),
             f AS (SELECT * FROM f0 QUALIFY {cap} <= 0 OR count(*) OVER (PARTITION BY user_id) <= {cap}),
             d AS (SELECT DISTINCT user_id, item_id, day FROM p SEMI JOIN f USING (user_id)),
             n AS (SELECT item_id, count(*) AS buyers FROM f GROUP BY item_id),
             nx AS (SELECT f.item_id, d.item_id AS next_item_id, count(DISTINCT f.user_id) AS customers
                    FROM f JOIN d ON f.user_id = d.user_id AND d.day > f.first_day
                         AND d.day <= f.first_day + INTERVAL {int(cfg.surfaces.next_purchase_days)} DAY
                         AND d.item_id <> f.item_id
                    GROUP BY ALL HAVING count(DISTINCT f.user_id) >= {int(cfg.surfaces.fbt_min_pair_count)})
        SELECT nx.item_id, nx.next_item_id, nx.customers, n.buyers,
               nx.customers / n.buyers::DOUBLE AS confidence
        FROM nx JOIN n USING (item_id)
        QUALIFY row_number() OVER (PARTITION BY nx.item_id ORDER BY confidence DESC, nx.next_item_id)
                <= {int(cfg.surfaces.email_candidates)}
        ORDER BY 1, 5 DESC, 2""").df()


def popularity_tables(cfg: Config, con, ds: str) -> dict[str, pd.DataFrame]:
    """Best sellers (distinct buyers over ``popularity_days``) and trending (this week's buyers
    against the weekly average of the ``trending_weeks`` weeks before), per country and ALL."""
    end = date.fromisoformat(ds) + timedelta(days=1)
    week = end - timedelta(days=7)
    before = week - timedelta(days=7 * cfg.surfaces.trending_weeks)
    pop_start = end - timedelta(days=cfg.features.popularity_days)
    n = cfg.surfaces.fallback_n
    recent = con.execute(f"SELECT count(*) FROM p WHERE day >= DATE '{pop_start}'").fetchall()[0][0]
    # No purchase in the window (a quiet period, a ds long after the last event): best sellers over
    # all history up to ds, the same fallback as the popularity model's (features step).
    since = f"day >= DATE '{pop_start}'" if recent else "TRUE"
    if not recent:
        log.warning("surfaces ds=%s: no purchase in the last %d days: best sellers over all history", ds,
                    cfg.features.popularity_days)
    best = con.execute(f"""
        WITH x AS (SELECT * FROM p WHERE {since}),
             g AS (SELECT country, item_id, count(DISTINCT user_id) AS buyers, sum(quantity) AS units,
                          sum(quantity * price) AS revenue FROM x WHERE country <> '' GROUP BY ALL
                   UNION ALL
                   SELECT '{ALL}', item_id, count(DISTINCT user_id), sum(quantity), sum(quantity * price)
                   FROM x GROUP BY ALL)
        SELECT country, row_number() OVER (PARTITION BY country ORDER BY buyers DESC, units DESC, item_id) AS rank,
               item_id, buyers, units, revenue
        FROM g QUALIFY rank <= {n} ORDER BY country, rank""").df()
    trending = con.execute(f"""
        WITH x AS (SELECT *, day >= DATE '{week}' AS this_week FROM p WHERE day >= DATE '{before}'),
             g AS (SELECT country, item_id, count(DISTINCT user_id) FILTER (WHERE this_week) AS buyers_this_week,
                          count(DISTINCT user_id) FILTER (WHERE NOT this_week) AS buyers_before
                   FROM x WHERE country <> '' GROUP BY ALL
                   UNION ALL
                   SELECT '{ALL}', item_id, count(DISTINCT user_id) FILTER (WHERE this_week),
                          count(DISTINCT user_id) FILTER (WHERE NOT this_week) FROM x GROUP BY ALL),
             s AS (SELECT *, buyers_before / {cfg.surfaces.trending_weeks}::DOUBLE AS weekly_before,
                          (buyers_this_week + 1) / (buyers_before / {cfg.surfaces.trending_weeks}::DOUBLE + 1) AS trend_score
                   FROM g WHERE buyers_this_week >= {int(cfg.surfaces.trending_min_buyers)})
        SELECT country, row_number() OVER (PARTITION BY country ORDER BY trend_score DESC, buyers_this_week DESC,
               item_id) AS rank, item_id, buyers_this_week, weekly_before AS buyers_per_week_before, trend_score
        FROM s QUALIFY rank <= {n} ORDER BY country, rank""").df()
    if trending.empty:
        log.info("surfaces ds=%s: trending is empty: no item has %d buyers in the week up to ds", ds,
                 int(cfg.surfaces.trending_min_buyers))
    return {"best_sellers": best, "trending": trending}


def post_purchase_email(cfg: Config, con, ds: str, pairs: pd.DataFrame, next_items: pd.DataFrame,
                        best: pd.DataFrame) -> pd.DataFrame:
    """One row per customer who bought on ``ds`` (and did not opt out of email): the items bought
    that day and up to ``email_n`` ranked items others bought next, never one the customer already
    bought. Sources in order: others bought next (sum of confidences over the day's items), bought
    together, best sellers of the customer's country, overall best sellers."""

    con.register("obn", next_items)
    con.register("fbt", pairs)
    con.register("best", best)
    con.register("no_email", pd.DataFrame({"user_id": pd.Series(sorted(opted_out(cfg, "consent_email")), dtype=object)}))
    df = con.execute(f"""
        WITH buyers AS (SELECT DISTINCT user_id, country, item_id FROM p WHERE day = DATE '{ds}'
                        AND user_id NOT IN (SELECT user_id FROM no_email)),
             owned AS (SELECT DISTINCT user_id, item_id FROM p WHERE user_id IN (SELECT user_id FROM buyers)),
             c AS (
               SELECT b.user_id, o.next_item_id AS item_id, 1 AS src, sum(o.confidence) AS score,
                      'others bought this after ' || arg_max(b.item_id, o.confidence) AS reason
               FROM buyers b JOIN obn o ON o.item_id = b.item_id GROUP BY ALL
               UNION ALL
               SELECT b.user_id, f.other_item_id, 2, sum(f.confidence),
                      'bought together with ' || arg_max(b.item_id, f.confidence)
               FROM buyers b JOIN fbt f ON f.item_id = b.item_id GROUP BY ALL
               UNION ALL
               SELECT u.user_id, s.item_id, CASE WHEN s.country = '{ALL}' THEN 4 ELSE 3 END, s.buyers,
                      CASE WHEN s.country = '{ALL}' THEN 'best seller' ELSE 'popular in ' || s.country END
               FROM (SELECT DISTINCT user_id, country FROM buyers) u
               JOIN best s ON (s.country = u.country OR s.country = '{ALL}') AND s.rank <= {int(cfg.surfaces.email_n) * 3}),
             ranked AS (
               SELECT * FROM c ANTI JOIN owned USING (user_id, item_id)
               QUALIFY row_number() OVER (PARTITION BY user_id, item_id ORDER BY src, score DESC) = 1),
             top AS (
               SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY src, score DESC, item_id) AS rank
               FROM ranked QUALIFY rank <= {int(cfg.surfaces.email_n)})
        SELECT t.user_id,
               (SELECT list(DISTINCT b.item_id ORDER BY b.item_id) FROM buyers b WHERE b.user_id = t.user_id)
                   AS purchased_items,
               list(t.item_id ORDER BY t.rank) AS recommended_items,
               list(t.reason ORDER BY t.rank) AS reasons,
               list(t.score::DOUBLE ORDER BY t.rank) AS scores
        FROM top t GROUP BY t.user_id ORDER BY t.user_id""").df()
    return df


def category_affinity(cfg: Config, f: Features) -> pd.DataFrame:
    """Per user, the share of their interaction weight per category, top ``affinity_n``."""
    full, items = f.full, f.items
    codes, names = pd.factorize(items["category_key"].astype(str))
    onehot = sp.csr_matrix((np.ones(len(codes), np.float32), (np.arange(len(codes)), codes)),
                           shape=(len(codes), len(names)))
    per_cat = (full @ onehot).tocsr()
    total = np.asarray(per_cat.sum(axis=1)).ravel()
    coo = per_cat.tocoo()
    df = pd.DataFrame({"user_idx": coo.row, "category": np.asarray(names)[coo.col], "weight": coo.data})
    df = df[df["weight"] > 0]
    df["affinity"] = df["weight"] / total[df["user_idx"].to_numpy()]
    df = df.sort_values(["user_idx", "affinity", "category"], ascending=[True, False, True])
    df["rank"] = df.groupby("user_idx").cumcount() + 1
    df = df[df["rank"] <= cfg.surfaces.affinity_n]
    df.insert(0, "user_id", f.users["user_id"].to_numpy()[df["user_idx"].to_numpy()])
    return df[["user_id", "rank", "category", "affinity", "weight"]].reset_index(drop=True)
