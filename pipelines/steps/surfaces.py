"""Surfaces step: the non-personal and pair tables of docs/tables.md (frequently bought together,
complete the look, cart cross-sell, others bought next, post-purchase email, trending, best
sellers, category affinity), staged for the publish step."""
from __future__ import annotations

import logging
import time

from pipelines.artifacts import read_features, write_surfaces
from pipelines.config import Config
from pipelines.ranking.surface_tables import (
    category_affinity,
    others_bought_next,
    pair_tables,
    popularity_tables,
    post_purchase_email,
    purchases,
)

log = logging.getLogger(__name__)


def run(cfg: Config, ds: str, run_id: str) -> dict:
    t0 = time.perf_counter()
    f = read_features(cfg, ds)
    con = purchases(cfg, ds, f)
    cats = f.items[["item_id", "category_key"]].rename(columns={"category_key": "category"})
    tables = pair_tables(cfg, con, cats)
    tables["others_bought_next"] = others_bought_next(cfg, con)
    tables.update(popularity_tables(cfg, con, ds))
    tables["post_purchase_email"] = post_purchase_email(
        cfg, con, ds, tables["frequently_bought_together"], tables["others_bought_next"], tables["best_sellers"])
    con.close()
    tables["user_category_affinity"] = category_affinity(cfg, f)
    write_surfaces(cfg, ds, tables)
    counts = {k: len(v) for k, v in tables.items()}
    log.info("surfaces ds=%s: %s in %.1fs", ds, counts, time.perf_counter() - t0)
    return {"ds": ds, "rows": counts}
