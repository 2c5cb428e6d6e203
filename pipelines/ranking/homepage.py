"""``homepage``: each user's homepage slots (docs/tables.md), built by the publish step from the
night's final personal lists, vectorised in DuckDB and SciPy (no loop over users).

* ``hero``: the top ``homepage_hero_n`` of the user's ``for_you`` list re-scored as the rules
  layer scores a list, 1 / log2(rank + 1) x the rules' boost (1 + margin_weight x margin +
  promotion_weight x promotion, times any other factor of the rules), at the final positions (a hero slot is the most prominent place of the page, so a
  promoted or high-margin item may climb a place or two; ties keep the list's order). Users
  without personal rows (no history: their ``for_you`` is only the popularity fallbacks, or
  absent) get the context defaults of their country, else the overall list (context ``all``).
* ``category``: the user's top ``homepage_categories`` categories by share of interaction weight
  (``user_category_affinity``), then one discovery category, chosen as the rules' discovery slots
  are (docs/rules.md): the category of the best-selling available item that is not one the user
  ever interacted with (none when ``discovery.share`` is 0). Users without history: the categories
  of their context-default list, by summed score.
* ``banner``: one campaign active on ``ds`` (pipelines/services/campaigns.py) running in the
  user's country (or everywhere), the one with the highest affinity of the user to its targets
  (share of the user's weight in its target categories + share in its target brands); a user
  matching none gets the campaign covering the largest share of all shoppers' weight (1 for one
  without targets), the same for everyone of a country; no eligible campaign: no banner row.
"""
from __future__ import annotations

import logging
import os
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from pipelines.artifacts import Features, layout, read_surface
from pipelines.config import Config
from pipelines.infra import storage
from pipelines.ranking.context_tables import ALL, normalise
from pipelines.ranking.reasons import Source
from pipelines.ranking.rules import item_flags, load_rules

log = logging.getLogger(__name__)

SCHEMA = pa.schema([("ds", pa.date32()), ("run_id", pa.string()), ("user_id", pa.string()),
                    ("slot_type", pa.string()), ("position", pa.int32()), ("item_id", pa.string()),
                    ("category", pa.string()), ("banner_id", pa.string()), ("score", pa.float64()),
                    ("reason", pa.string())])
FALLBACKS = (Source.POPULAR_IN_COUNTRY.label, Source.POPULARITY.label)  # for_you rows that are not personal
DISCOVERY_REASON = "something new to discover"
BLOCK = 65_536  # users per dense block of the discovery search


def homepage_path(cfg: Config, ds: str) -> Path:
    """The publish step's staged homepage rows (streamed into the warehouse like the score shards)."""
    return layout(cfg).models_dir(ds) / "homepage.parquet"


def _shares(f: Features, keys: pd.Series) -> tuple[sp.csr_matrix, np.ndarray]:
    """(users x distinct keys: share of each user's interaction weight, the keys)."""
    codes, names = pd.factorize(keys.fillna("").astype(str))
    onehot = sp.csr_matrix((np.ones(len(codes), np.float64), (np.arange(len(codes)), codes)),
                           shape=(len(codes), len(names)))
    per = (f.full.astype(np.float64) @ onehot).tocsr()
    total = np.asarray(per.sum(axis=1)).ravel()
    per = sp.diags(np.divide(1.0, total, out=np.zeros_like(total), where=total > 0)) @ per
    per.eliminate_zeros()
    return per.tocsr(), np.asarray(names, dtype=object)


def _long(f: Features, per: sp.csr_matrix, names: np.ndarray, col: str) -> pd.DataFrame:
    coo = per.tocoo()
    return pd.DataFrame({"user_id": f.users["user_id"].astype(str).to_numpy(object)[coo.row],
                         col: names[coo.col], "share": coo.data})


def _discovery(cfg: Config, ds: str, f: Features, per_cat: sp.csr_matrix, names: np.ndarray,
               available: np.ndarray) -> pd.DataFrame:
    """user_id, category: per user with history, the category of the best-selling available item
    that the user never interacted with (the rules' discovery pool, in order)."""
    best = read_surface(cfg, ds, "best_sellers")
    best = best[best["country"] == "ALL"].sort_values("rank")
    item_cat = pd.Series(f.items["category_key"].astype(str).to_numpy(), index=f.items["item_id"].astype(str))
    ok = pd.Series(available, index=f.items["item_id"].astype(str).to_numpy())
    best = best[best["item_id"].map(ok).fillna(False).astype(bool)]
    pool = pd.Index(names).get_indexer(pd.unique(best["item_id"].map(item_cat).dropna().to_numpy()))
    pool = pool[pool >= 0]
    out_u, out_c = [], []
    if not len(pool):
        return pd.DataFrame({"user_id": pd.Series(dtype=object), "category": pd.Series(dtype=object)})
    has = np.diff(per_cat.indptr) > 0
    for start in range(0, per_cat.shape[0], BLOCK):  # blocks of users: bounded memory, no per-user loop
        rows = np.arange(start, min(start + BLOCK, per_cat.shape[0]))
        untouched = per_cat[rows][:, pool].toarray() <= 0
        pick = has[rows] & untouched.any(axis=1)
        out_u.append(rows[pick])
        out_c.append(pool[untouched.argmax(axis=1)[pick]])
    users, cats = np.concatenate(out_u), np.concatenate(out_c)
    return pd.DataFrame({"user_id": f.users["user_id"].astype(str).to_numpy(object)[users], "category": names[cats]})


def _campaign_frames(f: Features, campaigns: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """camp (banner_id, everywhere, coverage), camp_cat, camp_brand, camp_country (long)."""
    weight = np.asarray(f.full.sum(axis=0)).ravel()
    cats = normalise(f.items["category_key"]).fillna("").to_numpy(object) if "category_key" in f.items \
        else np.full(len(f.items), "", object)
    brands = normalise(f.items["brand"]).fillna("").to_numpy(object) if "brand" in f.items \
        else np.full(len(f.items), "", object)
    rows, cat_rows, brand_rows, country_rows = [], [], [], []
    for c in campaigns.itertuples():  # campaigns: a handful; items are vectorised
        tc, tb, cn = (list(x) if x is not None else [] for x in (c.target_categories, c.target_brands, c.countries))
        general = not tc and not tb
        cover = 1.0 if general else float(weight[np.isin(cats, tc) | np.isin(brands, tb)].sum() / max(weight.sum(), 1e-12))
        rows.append((c.banner_id, not cn, cover, general))
        cat_rows += [(c.banner_id, x) for x in tc]
        brand_rows += [(c.banner_id, x) for x in tb]
        country_rows += [(c.banner_id, x) for x in cn]

    def frame(data, cols):
        types = {"everywhere": bool, "coverage": np.float64, "general": bool}
        return pd.DataFrame(data, columns=cols).astype({k: types.get(k, object) for k in cols})

    return {"camp": frame(rows, ["banner_id", "everywhere", "coverage", "general"]),
            "camp_cat": frame(cat_rows, ["banner_id", "category"]),
            "camp_brand": frame(brand_rows, ["banner_id", "brand"]),
            "camp_country": frame(country_rows, ["banner_id", "country"])}


def _register(cfg: Config, ds: str, f: Features, defaults, campaigns: pd.DataFrame, con) -> None:
    """The inputs of the SQL below as DuckDB relations."""
    rules = load_rules(cfg)
    flags = item_flags(f.items, rules)
    available = flags["available"].to_numpy(bool)
    boost = flags["boost"].to_numpy(float)  # the rules layer's own utility factor per item (item_flags)
    con.register("hitems", pd.DataFrame({"item_id": f.items["item_id"].astype(str).to_numpy(),
                                         "category": f.items["category_key"].astype(str).to_numpy(), "boost": boost}))
    country = f.users["country"].astype("string").str.strip() if "country" in f.users else pd.Series(pd.NA, index=f.users.index)
    con.register("husers", pd.DataFrame({"user_id": f.users["user_id"].astype(str).to_numpy(object),
                                         "country": normalise(country).to_numpy(object)}))
    per_cat, cat_names = _shares(f, f.items["category_key"])
    con.register("ucat", _long(f, per_cat, cat_names, "category"))
    disc = _discovery(cfg, ds, f, per_cat, cat_names, available) if rules.discovery_share > 0 else \
        pd.DataFrame({"user_id": pd.Series(dtype=object), "category": pd.Series(dtype=object)})
    con.register("disc", disc)
    frames = _campaign_frames(f, campaigns)
    for name, df in frames.items():
        con.register(name, df)
    targeted = set(frames["camp_brand"]["brand"])
    brand = normalise(f.items["brand"]) if "brand" in f.items else pd.Series(pd.NA, index=f.items.index, dtype="string")
    per_brand, brand_names = _shares(f, brand.where(brand.isin(targeted)))
    ubrand = _long(f, per_brand, brand_names, "brand")
    con.register("ubrand", ubrand[ubrand["brand"].isin(targeted)])
    con.register("defaults", defaults)


def _recs_sql(con, recs) -> str:
    """The SQL relation of the night's user_recommendations (an Arrow table, or the score shards)."""
    if isinstance(recs, pa.Table):
        con.register("recs_table", recs)
        return "recs_table"
    return "read_parquet([" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in recs) + "])"


def _hero_and_categories(con, recs_sql: str, hero_n: int, cat_n: int) -> None:
    """The temp tables ``hero`` and ``cats`` (user_id, position, item_id, category, score, reason)."""
    fallbacks = ", ".join(f"'{m}'" for m in FALLBACKS)
    con.execute(f"""CREATE TEMP TABLE fy AS SELECT user_id, rank, item_id, model, reason FROM {recs_sql}
                    WHERE surface = 'for_you'""")
    con.execute(f"CREATE TEMP TABLE personal AS SELECT DISTINCT user_id FROM fy WHERE model NOT IN ({fallbacks})")
    # Visitors without personal rows: their country's context defaults, else the overall list.
    con.execute(f"""CREATE TEMP TABLE dkey AS
        SELECT u.user_id, CASE WHEN c.value IS NULL THEN '{ALL}' ELSE 'country' END AS context,
               coalesce(c.value, '{ALL}') AS value
        FROM husers u LEFT JOIN (SELECT DISTINCT value FROM defaults WHERE context = 'country') c ON c.value = u.country
        """)
    con.execute(f"""CREATE TEMP TABLE hero AS
        SELECT user_id, row_number() OVER (PARTITION BY user_id ORDER BY score DESC, rank) AS position,
               item_id, category, score, reason
        FROM (SELECT fy.user_id, fy.rank, fy.item_id, i.category, i.boost / log2(fy.rank + 1) AS score, fy.reason
              FROM fy JOIN personal USING (user_id) JOIN hitems i USING (item_id)
              UNION ALL
              SELECT k.user_id, d.rank, d.item_id, i.category, d.score, d.reason
              FROM dkey k JOIN defaults d USING (context, value) JOIN hitems i USING (item_id)
              WHERE k.user_id NOT IN (SELECT user_id FROM personal))
        QUALIFY position <= {hero_n}""")
    con.execute(f"""CREATE TEMP TABLE cats AS
        WITH top AS (SELECT user_id, row_number() OVER (PARTITION BY user_id ORDER BY share DESC, category) AS position,
                            category, share AS score, 'you often shop ' || category AS reason
                     FROM ucat QUALIFY position <= {cat_n}),
             nd AS (SELECT user_id, count(*) AS n FROM top GROUP BY user_id),
             dflt AS (SELECT k.user_id, i.category, sum(d.score) AS score, arg_min(d.reason, d.rank) AS reason
                      FROM dkey k JOIN defaults d USING (context, value) JOIN hitems i USING (item_id)
                      WHERE k.user_id NOT IN (SELECT user_id FROM ucat) GROUP BY ALL)
        SELECT * FROM top
        UNION ALL
        SELECT disc.user_id, coalesce(nd.n, 0) + 1, disc.category, 0.0, '{DISCOVERY_REASON}'
        FROM disc LEFT JOIN nd USING (user_id)
        UNION ALL
        SELECT user_id, row_number() OVER (PARTITION BY user_id ORDER BY score DESC, category), category, score, reason
        FROM dflt QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY score DESC, category) <= {cat_n}""")


def _banners(con) -> None:
    """The temp table ``banner`` (user_id, banner_id, category, score, reason): module docstring."""
    con.execute("""CREATE TEMP TABLE banner AS
        WITH m AS (SELECT u.user_id, t.banner_id, u.share, u.category, NULL::VARCHAR AS brand
                   FROM ucat u JOIN camp_cat t ON lower(trim(u.category)) = t.category
                   UNION ALL
                   SELECT b.user_id, t.banner_id, b.share, NULL, b.brand FROM ubrand b JOIN camp_brand t USING (brand)),
             ok AS (SELECT DISTINCT h.user_id, c.banner_id, true AS here FROM husers h
                    JOIN camp_country c ON c.country = h.country),
             s AS (SELECT m.user_id, m.banner_id, sum(m.share) AS score,
                          arg_max(m.category, m.share) FILTER (WHERE m.category IS NOT NULL) AS category,
                          arg_max(m.brand, m.share) FILTER (WHERE m.brand IS NOT NULL) AS brand
                   FROM m JOIN camp c USING (banner_id) LEFT JOIN ok USING (user_id, banner_id)
                   WHERE c.everywhere OR ok.here
                   GROUP BY ALL HAVING sum(m.share) > 0),
             best AS (SELECT user_id, banner_id, category, score,
                             'matches your interest in ' || coalesce(category, brand) AS reason
                      FROM s QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY score DESC, banner_id) = 1),
             fb AS (SELECT co.country, c.banner_id, c.coverage
                    FROM (SELECT DISTINCT country FROM husers) co CROSS JOIN camp c
                    LEFT JOIN camp_country x ON x.banner_id = c.banner_id AND x.country = co.country
                    WHERE (c.everywhere OR x.country IS NOT NULL) AND c.coverage > 0
                    QUALIFY row_number() OVER (PARTITION BY co.country ORDER BY c.coverage DESC, c.banner_id) = 1)
        SELECT * FROM best
        UNION ALL
        SELECT h.user_id, fb.banner_id, NULL, fb.coverage, 'for everyone'
        FROM husers h JOIN fb ON fb.country IS NOT DISTINCT FROM h.country
        WHERE h.user_id NOT IN (SELECT user_id FROM best)""")


def homepage(cfg: Config, ds: str, run_id: str, f: Features, recs, defaults, campaigns: pd.DataFrame) -> list[str]:
    """The homepage rows of ds as one Parquet file (``homepage_path``; returned as a list of files,
    as the publish step streams them). ``recs``: the night's user_recommendations (an Arrow table or
    the score shards' files); ``defaults``: the published context_defaults of ds; ``campaigns``:
    those active on ds."""
    out = homepage_path(cfg, ds)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    # DuckDB spills beyond duckdb_memory_limit, as in the features and surfaces steps.
    try:
        with storage.scratch_duckdb(cfg.scale.duckdb_memory_limit, out.parent) as con:
            _register(cfg, ds, f, defaults, campaigns, con)
            _hero_and_categories(con, _recs_sql(con, recs), max(cfg.surfaces.homepage_hero_n, 1),
                                 max(cfg.surfaces.homepage_categories, 0))
            _banners(con)
            day = date.fromisoformat(ds).isoformat()
            con.execute(f"""COPY (
                SELECT DATE '{day}' AS ds, ? AS run_id, user_id, slot_type, position::INTEGER AS position, item_id,
                       category, banner_id, score::DOUBLE AS score, reason
                FROM (SELECT user_id, 'hero' AS slot_type, position, item_id, category, NULL::VARCHAR AS banner_id,
                             score, reason FROM hero
                      UNION ALL SELECT user_id, 'category', position, NULL, category, NULL, score, reason FROM cats
                      UNION ALL SELECT user_id, 'banner', 1, NULL, category, banner_id, score, reason FROM banner)
                ORDER BY user_id, slot_type, position) TO '{str(tmp).replace("'", "''")}' (FORMAT parquet, COMPRESSION zstd)""",
                        [run_id])
            os.replace(tmp, out)
            n = con.execute(f"SELECT count(*) FROM read_parquet('{str(out).replace(chr(39), chr(39) * 2)}')").fetchall()[0][0]
    finally:
        tmp.unlink(missing_ok=True)
    log.info("publish ds=%s: homepage: %d rows, %d active campaigns", ds, n, len(campaigns))
    return [str(out)]
