"""``context_defaults``: what the web shows a visitor without history, per context of the visit
(docs/tables.md): one list per channel (the referral source), landing page, device and country,
and the overall list (context ``all``), computed in DuckDB from the validated events of the
``context_days`` up to ``ds``.

Per (context, value) and item, ``w`` = the events' weights (config ``event_weights``: a purchase
counts more than a view, a return cancels a purchase), summed per user and item, negative sums
clipped to 0, then summed over users. A value with little traffic would give a noisy list, so each
list is shrunk towards overall popularity (a Dirichlet prior of ``context_prior`` pseudo-weight):

    score(item | value) = (w_value(item) + m x p(item)) / (W_value + m),   p(item) = w_all(item) / W_all

a smoothed share of the value's weight (0..1): a value with W_value much larger than m keeps its
own list, one with a few events gets nearly the overall list. Then the rules layer, as for every
list shown to a visitor: available items only (active; in stock when the rules drop out-of-stock
items), at most ``max_category_share`` of a list from one category (items over the cap only fill a
list that is still short), top ``context_n``. Values are lower-cased and trimmed (empty: none);
countries come from the users file (the visitor's country, matched the same way).
"""
from __future__ import annotations

import logging
from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd

from pipelines import constants as C
from pipelines.artifacts import Features, layout
from pipelines.config import Config
from pipelines.infra import storage
from pipelines.ranking.rules import item_flags, load_rules

log = logging.getLogger(__name__)

# context name in the table -> the event column it comes from (country: the users file).
EVENT_CONTEXTS = {"channel": C.CHANNEL, "landing_page": C.LANDING_PAGE, "device": C.DEVICE}
COUNTRY, ALL = "country", "all"
CONTEXTS = (*EVENT_CONTEXTS, COUNTRY)
# Most-visited values kept per context: a landing page given as a free-text URL must not make
# thousands of lists of one visit each.
MAX_VALUES = 1000
COLUMNS = ["context", "value", "rank", "item_id", "score", "reason"]


def normalise(values: pd.Series) -> pd.Series:
    """Context values as matched everywhere: trimmed, lower-case, empty as missing."""
    v = values.astype("string").str.strip().str.lower()
    return v.where(v.ne("").fillna(False), None)


def reason_sql(context: str, value_sql: str) -> str:
    """The SQL text of a row's reason, e.g. "popular with visitors from social"."""
    return {"channel": f"'popular with visitors from ' || {value_sql}",
            "landing_page": f"'popular with visitors landing on ' || {value_sql}",
            "device": f"'popular on ' || {value_sql}",
            COUNTRY: f"'popular in ' || {value_sql}"}.get(context, "'popular with shoppers'")


def _events(cfg: Config, ds: str, f: Features, con: duckdb.DuckDBPyConnection) -> None:
    """The temp table ``ce`` (context, value, user_id, item_id, w): each event of the window once
    per context it carries, plus once under (all, all); older files without the context columns read
    them as NULL."""
    end = date.fromisoformat(ds) + timedelta(days=1)
    start = end - timedelta(days=max(int(cfg.surfaces.context_days), 1))
    files = sorted(layout(cfg).validated_dataset("events").glob(f"{C.EVENT_DATE}=*/part.parquet"))
    files = [str(x) for x in files if start.isoformat() <= x.parent.name.split("=", 1)[1] < end.isoformat()]
    users = f.users[f.users["personalized"]] if "personalized" in f.users else f.users  # consent, as best sellers
    country = users["country"].astype("string").str.strip() if "country" in users else pd.Series(pd.NA, index=users.index)
    con.register("cusers", pd.DataFrame({"user_id": users["user_id"].astype(str).to_numpy(),
                                         "country": normalise(country).to_numpy(object),
                                         "country_name": country.to_numpy(object)}))
    if not files:
        con.execute("CREATE TEMP TABLE ce (context VARCHAR, value VARCHAR, name VARCHAR, user_id VARCHAR, "
                    "item_id VARCHAR, w DOUBLE)")
        return
    have = {r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?, union_by_name=true)", [files]).fetchall()}
    w = cfg.features.event_weights
    weight = "CASE e.event_type " + " ".join(f"WHEN '{k}' THEN {float(v)}" for k, v in w.items()) + " ELSE 0 END"
    cols = ", ".join(f"nullif(lower(trim(e.{col})), '') AS {name}" if col in have else f"NULL::VARCHAR AS {name}"
                     for name, col in EVENT_CONTEXTS.items())
    con.execute(f"""
        CREATE TEMP TABLE ev AS
        SELECT e.user_id, e.item_id, {weight} AS w, u.country, u.country_name, {cols}
        FROM read_parquet(?, union_by_name=true) e JOIN cusers u USING (user_id)
        WHERE e.event_time >= TIMESTAMPTZ '{start} 00:00:00+00' AND e.event_time < TIMESTAMPTZ '{end} 00:00:00+00'
        """, [files])
    parts = [f"SELECT '{name}' AS context, {name} AS value, {name} AS name, user_id, item_id, w FROM ev "
             f"WHERE {name} IS NOT NULL" for name in EVENT_CONTEXTS]
    parts.append(f"SELECT '{COUNTRY}', country, country_name, user_id, item_id, w FROM ev WHERE country IS NOT NULL")
    parts.append(f"SELECT '{ALL}', '{ALL}', '{ALL}', user_id, item_id, w FROM ev")
    con.execute("CREATE TEMP VIEW ce AS " + " UNION ALL ".join(parts))  # streamed into the aggregation, not stored


def context_defaults(cfg: Config, ds: str, f: Features) -> pd.DataFrame:
    """context, value, rank, item_id, score, reason: the top ``context_n`` items per (context,
    value) of the window up to ``ds``, smoothed towards overall popularity, through the rules layer
    (module docstring). Empty when the window has no event."""
    n = max(int(cfg.surfaces.context_n), 1)
    m = max(float(cfg.surfaces.context_prior), 0.0)
    rules = load_rules(cfg)
    flags = item_flags(f.items, rules)
    cap = max(1, int(np.floor(rules.max_category_share * n)))
    # Bounded like the surfaces step's other DuckDB work (config duckdb_memory_limit; spills beyond).
    with storage.scratch_duckdb(cfg.scale.duckdb_memory_limit, layout(cfg).surfaces_dir(ds).parent) as con:
        category = f.items["category_key"] if "category_key" in f.items else pd.Series("", index=f.items.index)
        con.register("citems", pd.DataFrame({"item_id": f.items["item_id"].astype(str).to_numpy(),
                                             "ok": flags["available"].to_numpy(bool),
                                             "category": category.astype(str).to_numpy()}))
        _events(cfg, ds, f, con)
        reason = " ".join(f"WHEN '{c}' THEN {reason_sql(c, 'g.name')}" for c in (*CONTEXTS, ALL))
        df = con.execute(f"""
            WITH ui AS (SELECT context, value, any_value(name) AS name, user_id, item_id,
                               greatest(sum(w), 0) AS w FROM ce GROUP BY context, value, user_id, item_id),
                 vi AS (SELECT context, value, item_id, sum(w) AS w, arg_max(name, w) AS name FROM ui
                        GROUP BY ALL HAVING sum(w) > 0),
                 vt AS (SELECT context, value, sum(w) AS total, arg_max(name, w) AS name FROM vi GROUP BY context, value
                        QUALIFY context = '{ALL}' OR
                                row_number() OVER (PARTITION BY context ORDER BY sum(w) DESC, value) <= {MAX_VALUES}),
                 prior AS (SELECT item_id, w / sum(w) OVER () AS p FROM vi WHERE context = '{ALL}'),
                 pool AS (SELECT prior.* FROM prior JOIN citems USING (item_id) WHERE ok
                          ORDER BY p DESC, item_id LIMIT {3 * n}),
                 cand AS (SELECT context, value, item_id FROM vi
                          UNION SELECT vt.context, vt.value, pool.item_id FROM vt CROSS JOIN pool),
                 g AS (SELECT c.context, c.value, c.item_id, vt.name, i.category,
                              CASE WHEN c.context = '{ALL}' THEN coalesce(prior.p, 0)
                                   ELSE (coalesce(vi.w, 0) + {m} * coalesce(prior.p, 0)) / (vt.total + {m}) END AS score
                       FROM cand c JOIN vt USING (context, value) JOIN citems i USING (item_id)
                       LEFT JOIN vi USING (context, value, item_id) LEFT JOIN prior USING (item_id)
                       WHERE i.ok),
                 capped AS (SELECT *, row_number() OVER (PARTITION BY context, value, category
                                                         ORDER BY score DESC, item_id) > {cap} AS over FROM g)
            SELECT context, value,
                   row_number() OVER (PARTITION BY context, value ORDER BY over, score DESC, item_id) AS rank,
                   item_id, score, CASE context {reason} END AS reason
            FROM capped g WHERE score > 0
            QUALIFY rank <= {n} ORDER BY context, value, rank""").df()
    if df.empty:
        log.info("surfaces ds=%s: context_defaults is empty: no event in the %d days up to ds", ds,
                 cfg.surfaces.context_days)
    df["rank"] = df["rank"].astype(np.int32)
    return df[COLUMNS].reset_index(drop=True)
