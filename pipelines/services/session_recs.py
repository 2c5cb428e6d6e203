"""``recsys session-recs``: the next items for an anonymous visitor's session so far (most recent
last), from the session model the surfaces step chose and saved for a published ds
(docs/tables.md, session_next_items). Items already in the session are left out; only items
available on that ds (the published ``items`` table through the rules layer: active, and in stock
when the rules drop out-of-stock items) are answered.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from models.sessions import SessionModel
from pipelines.artifacts import layout
from pipelines.config import Config
from pipelines.infra import warehouse
from pipelines.ranking.rules import item_flags, load_rules
from pipelines.ranking.session_surface import REASON, recommend_available
from pipelines.services.serving import ServingError
from pipelines.session_artifacts import session_model_files


def _night(cfg: Config, ds: str | None) -> tuple[str, pd.DataFrame]:
    """(the ds answered: the given one, else the newest published; the items table of that ds)."""
    if not layout(cfg).duckdb_path.exists():
        raise ServingError(f"no warehouse at {layout(cfg).duckdb_path}: run the pipeline first (recsys run --ds ...)")
    con = warehouse.connect_readonly(cfg)
    try:
        ds = ds or warehouse.latest_published_ds(con)
        if ds is None:
            raise ServingError("no published night in the warehouse: run the pipeline first (recsys run --ds ...)")
        if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'items'").fetchall()[0][0]:
            raise ServingError("no items table in the warehouse: run the pipeline (recsys run) with this release first")
        items = con.execute("SELECT item_id, active, in_stock FROM items WHERE ds = ?::DATE", [str(ds)]).df()
    finally:
        con.close()
    if items.empty:
        raise ServingError(f"no items published for ds={ds}: pick a published ds (recsys sql \"SELECT DISTINCT ds "
                           "FROM published_runs\")")
    return str(ds), items


def session_recs(cfg: Config, session: list[str], n: int = 10, ds: str | None = None
                 ) -> tuple[pd.DataFrame, list[str]]:
    """(rank, item_id, score, reason for the top ``n`` next items; the given ids the model does not
    know, in the order given). Fails when none of the session's items is known."""
    if not session:
        raise ServingError("session-recs: give at least one item id")
    ds, published = _night(cfg, ds)
    model_dir, ids_file = session_model_files(cfg, ds)
    item_ids = pd.read_parquet(ids_file)["item_id"].to_numpy(dtype=object)
    index = pd.Series(np.arange(len(item_ids)), index=item_ids)
    given = [str(i) for i in session]
    unknown = list(dict.fromkeys(i for i in given if i not in index.index))
    known = index.reindex([i for i in given if i in index.index]).to_numpy(np.int64)
    if not len(known):
        raise ServingError(f"unknown items (not in the session model of ds={ds}): {', '.join(unknown)}")
    # Availability on ds: the published catalog through the rules layer (an item missing there: unavailable).
    flags = item_flags(published.set_index("item_id").reindex(item_ids).assign(
        active=lambda d: d["active"].astype("boolean").fillna(False)), load_rules(cfg))
    model = SessionModel.load(model_dir)
    ids, scores = recommend_available(model, np.array([0, len(known)]), known, n, flags["available"].to_numpy())
    keep = ids[0] >= 0
    out = pd.DataFrame({"rank": np.arange(1, keep.sum() + 1), "item_id": item_ids[ids[0][keep]],
                        "score": scores[0][keep].astype(float), "reason": REASON})
    return out, unknown
