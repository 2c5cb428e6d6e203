"""Publish step: every table of docs/tables.md for ``ds`` becomes visible in DuckDB in one
transaction (the score step's shards, similar items, model_runs, the surface tables, A/B
assignments, the homepage slots); then the PostgreSQL serving copy, the run report and the MLflow run's counts."""
from __future__ import annotations

import logging

import duckdb
import pyarrow as pa

from pipelines import constants as C
from pipelines.artifacts import layout, read_features, read_selection
from pipelines.config import Config
from pipelines.evaluation.report import build_report
from pipelines.infra import tracking, warehouse
from pipelines.infra.postgres import publish_postgres
from pipelines.ranking.homepage import homepage
from pipelines.ranking.personal import user_recommendations
from pipelines.ranking.publish_tables import (
    items_table,
    model_runs,
    similar_items,
    surface_tables,
)
from pipelines.ranking.rules import item_flags, load_rules
from pipelines.ranking.user_table import USER_RECS_ORDER
from pipelines.services.ab import active_assignments, assignments_table
from pipelines.services.campaigns import active_campaigns

log = logging.getLogger(__name__)


def staged_user_recommendations(cfg: Config, ds: str, run_id: str) -> list | None:
    """The score step's shard files of this run (publish streams them into the warehouse); None when
    any is missing or belongs to another run (publish then computes the lists itself)."""
    n = cfg.scale.publish_shards
    paths = [layout(cfg).shard_path(ds, k, n) for k in range(n)]
    if not all(p.exists() for p in paths):
        return None
    files = "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"
    other = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet({files}) WHERE run_id <> ?", [run_id]).fetchall()[0][0]
    if other:
        log.warning("publish ds=%s: staged shards belong to another run; computing the lists here", ds)
        return None
    return paths


def publish_serving_copy(cfg: Config, ds: str, run_id: str, tables: dict[str, pa.Table]) -> str:
    """The PostgreSQL copy (pipelines/infra/postgres.py) when ``serving_url`` is set, for the newest ds
    only: a rerun or backfill of an older date leaves the copy on the newest one."""
    if not cfg.serving.serving_url:
        return "off"
    con = warehouse.connect_readonly(cfg)
    try:
        # The newest published ds that is not in the future: the date the latest_ views serve.
        newest = warehouse.latest_published_ds(con)
    finally:
        con.close()
    if newest != ds:
        log.info("publish ds=%s: serving copy left on the newest ds %s", ds, newest)
        return f"kept {newest}"
    publish_postgres(cfg.serving.serving_url, ds, run_id, tables)
    return "published"


def run(cfg: Config, ds: str, run_id: str) -> dict:
    selected = read_selection(cfg, ds)
    f = read_features(cfg, ds)
    available = item_flags(f.items, load_rules(cfg))["available"].to_numpy()
    experiments = active_assignments(cfg, ds, f.users["user_id"].to_numpy())
    recs = staged_user_recommendations(cfg, ds, run_id)
    if recs is None:
        log.info("publish ds=%s: no complete set of score shards for this run; computing the lists in one go", ds)
        recs = user_recommendations(cfg, ds, run_id, f, selected, experiments)
    tables = {
        C.T_USER_RECS: recs,
        C.T_SIMILAR: similar_items(cfg, ds, run_id, f, available),
        C.T_MODEL_RUNS: model_runs(cfg, ds, run_id, selected),
        **surface_tables(cfg, ds, run_id, f, available),
        "ab_assignments": assignments_table(ds, run_id, experiments),
        "items": items_table(ds, run_id, f.items),
    }
    # The homepage needs the final lists and tonight's context defaults (pipelines/ranking/homepage.py).
    tables["homepage"] = homepage(cfg, ds, run_id, f, recs, tables["context_defaults"], active_campaigns(cfg, ds))
    # published_runs: one row per table, the link from every row set of ds to the night's model.
    run = {"run_id": run_id, **{k: selected.get(k) for k in ("mlflow_run_id", "model_version", "champion",
                                                              "champion_version")}}
    counts = warehouse.publish_tables(layout(cfg).duckdb_path, layout(cfg).parquet_root, ds, tables,
                                      order_by={C.T_USER_RECS: USER_RECS_ORDER}, run=run)
    log.info("publish ds=%s: %s -> %s", ds, counts, layout(cfg).duckdb_path)
    con = warehouse.connect_readonly(cfg)
    try:
        # The report needs slot counts per surface, model and item, not the rows themselves.
        slots = con.execute(f'SELECT surface, model, item_id, count(*) AS n FROM "{C.T_USER_RECS}" '
                            "WHERE ds = ?::DATE GROUP BY ALL", [ds]).df()
        if cfg.serving.serving_url:
            # The PostgreSQL copy loads the table it copies (docs/deploy.md: memory at scale).
            tables[C.T_USER_RECS] = con.execute(f'SELECT * FROM "{C.T_USER_RECS}" WHERE ds = ?::DATE '
                                                f"ORDER BY {USER_RECS_ORDER}", [ds]).to_arrow_table()
            tables["homepage"] = con.execute("SELECT * FROM homepage WHERE ds = ?::DATE ORDER BY user_id, slot_type, "
                                             "position", [ds]).to_arrow_table()
    finally:
        con.close()
    serving = publish_serving_copy(cfg, ds, run_id, tables)
    report = build_report(cfg, ds, run_id, f, slots)
    try:
        mlflow = tracking.setup(cfg)
        with mlflow.start_run(run_id=selected["mlflow_run_id"]) as run:
            mlflow.log_metrics({f"published.{k}": v for k, v in counts.items()}, step=tracking.ds_step(ds))
            mlflow.log_artifact(str(report), "report")
            mlflow.set_tag("report", f"{run.info.artifact_uri}/report/{report.name}")
            mlflow.set_tag("published", "true")
    except Exception as exc:  # the tables are already published; a tracking hiccup must not undo that
        log.warning("publish ds=%s: could not log counts to MLflow: %s", ds, exc)
    return {"ds": ds, "run_id": run_id, "rows": counts, "duckdb": str(layout(cfg).duckdb_path), "report": str(report),
            "serving_copy": serving}
