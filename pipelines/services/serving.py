"""Answers from the published tables, for the command line and the web team's services.

Each function opens the DuckDB warehouse read-only and runs one small query over the ``latest_*``
views (or one ``ds``), so an answer takes milliseconds, not a model load. Only DuckDB and pandas
are imported here, to keep the command line quick to start.
"""
from __future__ import annotations

import logging

import pandas as pd

from pipelines.artifacts import latest_items, layout
from pipelines.config import Config
from pipelines.infra import warehouse

log = logging.getLogger(__name__)


class ServingError(ValueError):
    pass


def _connect(cfg: Config):
    if not layout(cfg).duckdb_path.exists():
        raise ServingError(f"no warehouse at {layout(cfg).duckdb_path}: run the pipeline first (recsys run --ds ...)")
    return warehouse.connect_readonly(cfg)


def _require(con, table: str) -> None:
    names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if table not in names:
        raise ServingError(f"table {table} is not in {con.execute('PRAGMA database_list').fetchall()[0][2]}; "
                           "run the pipeline (recsys run) with this release first")


def cart_recs(cfg: Config, cart: list[str], n: int = 10) -> pd.DataFrame:
    """The best additions to a cart: for each candidate c paired with cart items a1..ak in
    ``cart_cross_sell``, score = 1 - prod(1 - confidence(ai -> c)) (the chance that at least one
    cart item leads to c, taking the pairs as independent); items already in the cart are left out;
    overall best sellers fill the list when the pairs give fewer than n."""
    if not cart:
        raise ServingError("cart-recs: give at least one item id")
    con = _connect(cfg)
    try:
        _require(con, "latest_cart_cross_sell")
        con.register("cart", pd.DataFrame({"item_id": [str(c) for c in cart]}))
        df = con.execute("""
            WITH c AS (SELECT x.add_item_id AS item_id, 1 - exp(sum(ln(greatest(1 - x.confidence, 1e-9)))) AS score,
                              arg_max(x.item_id, x.confidence) AS because
                       FROM latest_cart_cross_sell x JOIN cart USING (item_id)
                       WHERE x.add_item_id NOT IN (SELECT item_id FROM cart) GROUP BY x.add_item_id),
                 b AS (SELECT item_id, 0.0 AS score, NULL AS because FROM latest_best_sellers
                       WHERE country = 'ALL' AND item_id NOT IN (SELECT item_id FROM cart)
                         AND item_id NOT IN (SELECT item_id FROM c) ORDER BY rank LIMIT ?)
            SELECT item_id, score, CASE WHEN because IS NULL THEN 'best seller'
                                        ELSE 'often added with ' || because END AS reason
            FROM (SELECT *, 0 AS tier FROM c UNION ALL SELECT *, 1 FROM b)
            ORDER BY tier, score DESC, item_id LIMIT ?""", [n, n]).df()
    finally:
        con.close()
    df.insert(0, "rank", range(1, len(df) + 1))
    return df


def rerank(cfg: Config, user_id: str, items: list[str]) -> pd.DataFrame:
    """Order search results for a user by an estimate of how likely they are to buy each item.

    score = position utility of the item in the user's published ``for_you`` list (1 / log2(rank + 1),
    0 when absent) + 0.5 x the user's affinity to the item's category (``user_category_affinity``)
    + 0.1 x the item's standing among overall best sellers (1 for the top seller, 0 when not listed).
    A ranking score from the published tables, not a calibrated probability; ties keep the search
    engine's order. Unknown users get the best-seller order.
    """
    if not items:
        raise ServingError("rerank: give at least one item id")
    con = _connect(cfg)
    try:
        for t in ("latest_user_recommendations", "latest_user_category_affinity", "latest_best_sellers"):
            _require(con, t)
        con.register("q", pd.DataFrame({"item_id": [str(i) for i in items], "search_pos": range(1, len(items) + 1)}))
        con.register("cats", _item_categories(cfg))
        df = con.execute("""
            WITH fy AS (SELECT item_id, min(rank) AS rank FROM latest_user_recommendations
                        WHERE user_id = ? AND surface = 'for_you' GROUP BY item_id),
                 aff AS (SELECT category, affinity FROM latest_user_category_affinity WHERE user_id = ?),
                 bs AS (SELECT item_id, rank FROM latest_best_sellers WHERE country = 'ALL'),
                 nbs AS (SELECT greatest(count(*), 1) AS n FROM bs)
            SELECT q.item_id, q.search_pos,
                   coalesce(1 / log2(fy.rank + 1), 0) AS list_utility,
                   coalesce(aff.affinity, 0) AS category_affinity,
                   coalesce(1 - (bs.rank - 1) / nbs.n::DOUBLE, 0) AS best_seller,
                   coalesce(1 / log2(fy.rank + 1), 0) + 0.5 * coalesce(aff.affinity, 0)
                     + 0.1 * coalesce(1 - (bs.rank - 1) / nbs.n::DOUBLE, 0) AS score
            FROM q CROSS JOIN nbs LEFT JOIN fy USING (item_id) LEFT JOIN cats USING (item_id)
            LEFT JOIN aff USING (category) LEFT JOIN bs USING (item_id)
            ORDER BY score DESC, q.search_pos""", [user_id, user_id]).df()
    finally:
        con.close()
    df.insert(0, "rank", range(1, len(df) + 1))
    return df


def unknown_items(cfg: Config, items: list[str]) -> list[str]:
    """The given item ids (in the order given, each once) that are not in the latest published catalog:
    the items of the newest ``similar_items`` (every available item is an anchor there),
    ``cart_cross_sell`` (both sides of a pair) and ``best_sellers``. For the command line's note."""
    con = _connect(cfg)
    try:
        for t in ("latest_similar_items", "latest_cart_cross_sell", "latest_best_sellers"):
            _require(con, t)
        con.register("given", pd.DataFrame({"item_id": [str(i) for i in items]}))
        known = {r[0] for r in con.execute("""
            SELECT item_id FROM given WHERE item_id IN (
                SELECT item_id FROM latest_similar_items UNION ALL SELECT similar_item_id FROM latest_similar_items
                UNION ALL SELECT item_id FROM latest_cart_cross_sell UNION ALL SELECT add_item_id FROM latest_cart_cross_sell
                UNION ALL SELECT item_id FROM latest_best_sellers)""").fetchall()}
    finally:
        con.close()
    return list(dict.fromkeys(str(i) for i in items if str(i) not in known))


def user_standing(cfg: Config, user_id: str) -> tuple[str | None, bool, bool]:
    """(the latest published ds of ``user_recommendations``, whether the user has a list on it,
    whether the user has category affinities on the latest ds): what ``rerank`` can use for them."""
    con = _connect(cfg)
    try:
        for t in ("latest_user_recommendations", "latest_user_category_affinity"):
            _require(con, t)
        ds, has_list = con.execute("SELECT (SELECT CAST(max(ds) AS VARCHAR) FROM latest_user_recommendations), "
                                   "EXISTS (SELECT 1 FROM latest_user_recommendations WHERE user_id = ?)",
                                   [str(user_id)]).fetchall()[0]
        has_affinity = con.execute("SELECT EXISTS (SELECT 1 FROM latest_user_category_affinity WHERE user_id = ?)",
                                   [str(user_id)]).fetchall()[0][0]
    finally:
        con.close()
    return ds, bool(has_list), bool(has_affinity)


def _item_categories(cfg: Config) -> pd.DataFrame:
    """item_id -> category, from the newest features (the grouping the affinity table uses)."""
    df = latest_items(cfg, ["item_id", "category_key"])
    if df is None:
        return pd.DataFrame({"item_id": pd.Series(dtype=str), "category": pd.Series(dtype=str)})
    return df.rename(columns={"category_key": "category"})
