"""Score step: the personal lists (for_you, new_for_you, buy_again) of one user shard through the
rules layer (pipelines/ranking/), staged as Parquet; publish makes every shard visible together."""
from __future__ import annotations

import logging

import numpy as np

from pipelines.artifacts import layout, read_features, read_selection
from pipelines.config import Config
from pipelines.infra import storage
from pipelines.infra.hashing import shard_of
from pipelines.ranking.personal import user_recommendation_tables
from pipelines.ranking.user_table import USER_RECS_SCHEMA
from pipelines.services.ab import active_assignments

log = logging.getLogger(__name__)


def score_shard(cfg: Config, ds: str, run_id: str, shard: int) -> dict:
    """The ``score`` task of one shard: the personal lists of the users of that shard, staged as
    Parquet for the publish step (which makes every shard visible in one transaction)."""
    n = cfg.scale.publish_shards
    if not 0 <= shard < n:
        raise ValueError(f"shard {shard} out of range for publish_shards={n}")
    selected = read_selection(cfg, ds)
    f = read_features(cfg, ds)
    user_ids = f.users["user_id"].to_numpy()
    users = np.flatnonzero(shard_of(user_ids, n) == shard)
    experiments = active_assignments(cfg, ds, user_ids)
    tables = user_recommendation_tables(cfg, ds, run_id, f, selected, experiments, users)
    path, rows = storage.atomic_write_parquet_batches(tables, USER_RECS_SCHEMA, layout(cfg).shard_path(ds, shard, n))
    log.info("score ds=%s shard %d/%d: %d users, %d rows", ds, shard + 1, n, len(users), rows)
    return {"ds": ds, "shard": shard, "shards": n, "users": int(len(users)), "rows": rows, "path": str(path)}


def run(cfg: Config, ds: str, run_id: str, shard: int | None = None) -> dict:
    """In-process: every shard in turn (Airflow maps one task per shard instead)."""
    if shard is not None:
        return score_shard(cfg, ds, run_id, shard)
    parts = [score_shard(cfg, ds, run_id, k) for k in range(cfg.scale.publish_shards)]
    return {"ds": ds, "shards": len(parts), "rows": sum(p["rows"] for p in parts)}
