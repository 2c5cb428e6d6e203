"""Explicit feedback and engagement in the features step (issue 17, docs/data-contract.md): the
optional event columns, each event's weight (event type, dwell time, stars) and the items a user
disliked (never shown to that user again)."""
from __future__ import annotations

import duckdb
import numpy as np
import scipy.sparse as sp

from pipelines import constants as C
from pipelines.config import Config

# Optional event columns (docs/data-contract.md), NULL where the validated files lack them (older releases).
OPTIONAL_COLUMNS = {C.SESSION_ID: "VARCHAR", C.RATING: "DOUBLE", C.REVIEW_TEXT: "VARCHAR", C.DWELL_SECONDS: "DOUBLE",
                    C.DEVICE: "VARCHAR", C.CHANNEL: "VARCHAR", C.LANDING_PAGE: "VARCHAR"}


def optional_columns(con: duckdb.DuckDBPyConnection, files: list) -> list[str]:
    """The select list of OPTIONAL_COLUMNS: the column, or a typed NULL where no file has it."""
    cols = {r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?, union_by_name=true)",
                                      [[str(f) for f in files]]).fetchall()}
    return [c if c in cols else f"NULL::{t} AS {c}" for c, t in OPTIONAL_COLUMNS.items()]


def weight_sql(cfg: Config) -> str:
    """The SQL weight of one event (columns event_type, rating, dwell_seconds): ``event_weights`` of its
    type; a view's times its dwell factor (dwell_seconds / dwell_reference_seconds clipped to
    [dwell_min_factor, dwell_max_factor], 1 without a dwell time); plus, for a rating or a review with
    stars, ``rating_weight x (rating - rating_neutral)`` (a low rating counts against)."""
    f = cfg.features
    base = "CASE event_type " + " ".join(f"WHEN '{k}' THEN {float(v)}" for k, v in f.event_weights.items()) + " ELSE 0 END"
    dwell = (f"CASE WHEN event_type = '{C.VIEW}' AND dwell_seconds IS NOT NULL THEN least(greatest(dwell_seconds / "
             f"{float(f.dwell_reference_seconds)}, {float(f.dwell_min_factor)}), {float(f.dwell_max_factor)}) ELSE 1 END")
    stars = (f"CASE WHEN event_type IN ('{C.RATING_EVENT}', '{C.REVIEW_EVENT}') AND rating IS NOT NULL "
             f"THEN {float(f.rating_weight)} * (rating - {float(f.rating_neutral)}) ELSE 0 END")
    return f"(({base}) * ({dwell}) + ({stars}))"


def disliked_matrix(con: duckdb.DuckDBPyConnection, cfg: Config, shape: tuple[int, int]) -> sp.csr_matrix:
    """Users x items, 1 where the user's latest rating of the item (rating events, reviews with stars;
    the last one in time) is at or below ``dislike_max_rating``: never shown to that user again. A
    later, higher rating lifts it. Empty when ``dislike_max_rating`` is 0."""
    limit = float(cfg.features.dislike_max_rating)
    cells = con.execute(f"""
        SELECT r.user_idx, r.item_idx FROM (
            SELECT user_idx, item_idx, arg_max(rating, event_time) AS last_rating FROM ev
            WHERE event_type IN ('{C.RATING_EVENT}', '{C.REVIEW_EVENT}') AND rating IS NOT NULL GROUP BY ALL) r
        WHERE {limit} > 0 AND r.last_rating <= {limit}""").fetchnumpy()
    n = len(cells["user_idx"])
    return sp.csr_matrix((np.ones(n, np.float32), (cells["user_idx"], cells["item_idx"])), shape=shape)
