"""The warehouse's schema against docs/tables.md, the latest_ views on one published ds, the items
table and v_ views, the model link, and validation_runs (newest run per ds, history, MAP rule counts)
including the conversion of an older warehouse."""
from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.artifacts import layout, read_features, read_selection
from pipelines.infra import warehouse, warehouse_ddl
from pipelines.infra import warehouse_schema as schema
from pipelines.ranking.publish_tables import EMAIL_SCHEMA
from pipelines.services.privacy import PRIVACY_REQUESTS_DDL
from tests.conftest import BASE_DS


def _objects(con) -> dict[str, str]:
    return dict(con.execute("SELECT table_name, table_type FROM information_schema.tables "
                            "WHERE table_schema = 'main'").fetchall())


def _columns(con, name: str) -> dict[str, tuple[str, str | None]]:
    return {c: (t, k) for c, t, k in con.execute(
        "SELECT column_name, data_type, comment FROM duckdb_columns() WHERE table_name = ? "
        "ORDER BY column_index", [name]).fetchall()}


def test_docs_tables_md_matches_the_real_schema_and_its_comments(baseline):
    """Column by column, both directions: every table and view of a published warehouse is in the
    doc with its types, each column's comment is the doc's description, and every documented
    table or view exists (privacy_requests, written by `recsys forget` only, from its DDL)."""
    doc = schema.parse_doc(schema.DOC.read_text(encoding="utf-8"))
    con = warehouse.connect_readonly(baseline)
    try:
        objects = _objects(con)
        real = {name: _columns(con, name) for name in objects}
    finally:
        con.close()
    scratch = duckdb.connect()
    scratch.execute(PRIVACY_REQUESTS_DDL)
    warehouse_ddl.apply_comments(scratch)
    real["privacy_requests"] = _columns(scratch, "privacy_requests")
    objects["privacy_requests"] = "BASE TABLE"
    for name, kind in objects.items():
        if kind == "VIEW" and name.startswith("latest_"):
            base = name[len("latest_"):]
            expected = doc[base]  # a latest_ view has its table's columns
        else:
            assert name in doc, f"{name} is not documented in docs/tables.md"
            expected = doc[name]
        got = real[name]
        assert {c: t for c, (t, _) in got.items()} == {c: t for c, (t, _) in expected.items()}, name
        assert {c: k for c, (_, k) in got.items()} == {c: d for c, (_, d) in expected.items()}, name
    assert set(doc) == {n for n in objects if not n.startswith("latest_")}
    # Every table with a ds gets its latest_ view, but the logs.
    assert {n for n in objects if n.startswith("latest_")} == {
        f"latest_{t}" for t, k in objects.items() if k == "BASE TABLE"
        and t not in ("quarantined_events", "validation_runs_history", "published_runs", "privacy_requests")}
    # Types the issue named, now as documented.
    assert real["ab_assignments"]["ds"][0] == "DATE" and real["user_category_affinity"]["rank"][0] == "INTEGER"
    assert real["validation_runs"]["rule_counts"][0] == "MAP(VARCHAR, BIGINT)"


def test_items_views_and_model_link(baseline):
    """items holds the night's catalog, v_ views add titles, and model_runs and published_runs carry
    the select step's MLflow run and model version."""
    f = read_features(baseline, BASE_DS)
    sel = read_selection(baseline, BASE_DS)
    con = warehouse.connect_readonly(baseline)
    try:
        items = con.execute("SELECT item_id, title, category, price, active FROM latest_items ORDER BY item_id").fetchall()
        titled = con.execute("SELECT r.item_id, v.title FROM latest_user_recommendations r JOIN "
                             "v_user_recommendations v USING (recommendation_id)").fetchall()
        email = con.execute("SELECT user_id, position, item_id, title FROM v_post_purchase_email").fetchall()
        email_lists = dict(con.execute("SELECT user_id, recommended_items FROM latest_post_purchase_email").fetchall())
        links = con.execute("SELECT DISTINCT mlflow_run_id, model_version FROM model_runs").fetchall()
        runs = con.execute("SELECT table_name, run_id, rows, mlflow_run_id, model_version, champion, champion_version "
                           "FROM published_runs WHERE ds = ?::DATE", [BASE_DS]).fetchall()
        counts = {t: con.execute(f'SELECT count(*) FROM "{t}" WHERE ds = ?::DATE', [BASE_DS]).fetchall()[0][0]
                  for t, *_ in runs}
    finally:
        con.close()
    cat = f.items.set_index("item_id")
    assert items == [(i, cat.at[i, "title"], cat.at[i, "category"], cat.at[i, "price"], bool(cat.at[i, "active"]))
                     for i in sorted(cat.index)]
    assert titled and all(t == cat.at[i, "title"] for i, t in titled)
    assert sorted((u, p, i) for u, p, i, _ in email) == sorted(
        (u, k + 1, i) for u, lst in email_lists.items() for k, i in enumerate(lst))
    assert all(t == cat.at[i, "title"] for _, _, i, t in email)
    assert links == [(sel["mlflow_run_id"], str(sel["model_version"]))]
    assert {t for t, *_ in runs} == set(schema.NIGHTLY_TABLES)
    assert all(r[1:] == ("baseline", counts[r[0]], sel["mlflow_run_id"], str(sel["model_version"]), sel["champion"],
                         str(sel["champion_version"])) for r in runs)


def test_latest_views_share_one_published_ds_on_an_older_warehouse(home):
    """An older warehouse (no published_runs, text ds, BIGINT rank, no model columns) publishes a
    second ds where one table is empty and one absent: every latest_ view shows that ds and no row
    of the day before, the types are fixed, and published_runs holds both days."""
    db, root = layout(home).duckdb_path, layout(home).parquet_root
    day2 = (date.fromisoformat(BASE_DS) + timedelta(days=1)).isoformat()
    # Turn the baseline into what an older release left (a writer's connection, no nightly running).
    con = duckdb.connect(str(db))
    con.execute("DROP VIEW IF EXISTS latest_published_runs")
    for v, in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall():
        con.execute(f'DROP VIEW "{v}"')
    con.execute("DROP TABLE published_runs")
    con.execute("ALTER TABLE ab_assignments ALTER ds TYPE VARCHAR")
    con.execute("ALTER TABLE user_category_affinity ALTER rank TYPE BIGINT")
    con.execute("ALTER TABLE model_runs DROP COLUMN mlflow_run_id")
    con.execute("ALTER TABLE model_runs DROP COLUMN model_version")
    recs = con.sql(f"SELECT * REPLACE (DATE '{day2}' AS ds, 'second' AS run_id) FROM user_recommendations"
                   ).to_arrow_table()
    con.close()
    tables = {"user_recommendations": recs, "post_purchase_email": EMAIL_SCHEMA.empty_table()}
    run = {"run_id": "second", "mlflow_run_id": "m2", "model_version": "7", "champion": "als", "champion_version": "6"}
    counts = warehouse.publish_tables(db, root, day2, tables, run=run)
    assert counts == {"user_recommendations": recs.num_rows, "post_purchase_email": 0}

    con = warehouse.connect_readonly(db)
    try:
        published = con.execute("SELECT ds, table_name, rows, mlflow_run_id FROM published_runs ORDER BY ALL").fetchall()
        newest = con.execute("SELECT max(ds) FROM published_runs").fetchall()[0][0]
        views = [v for v, k in _objects(con).items() if v.startswith("latest_") and v[7:] in schema.NIGHTLY_TABLES]
        shown = {v: con.execute(f'SELECT DISTINCT ds FROM "{v}"').fetchall() for v in views}
        types = {t: _columns(con, t)[c][0] for t, c in (("ab_assignments", "ds"), ("user_category_affinity", "rank"))}
        model_cols = set(_columns(con, "model_runs"))
    finally:
        con.close()
    assert newest == date.fromisoformat(day2)
    assert set(views) == {f"latest_{t}" for t in schema.NIGHTLY_TABLES}
    # user_recommendations shows day2; every other table has no row of day2: empty, never the day before.
    assert shown == {v: ([(newest,)] if v == "latest_user_recommendations" else []) for v in views}
    # The older dates got rows (no model link) when published_runs was created.
    base = date.fromisoformat(BASE_DS)
    assert [r for r in published if r[0] == base] == sorted(
        (base, t, n, None) for t, n in json.loads(_baseline_counts(home)).items() if n)
    assert [r for r in published if r[0] != base] == [
        (newest, "post_purchase_email", 0, "m2"), (newest, "user_recommendations", recs.num_rows, "m2")]
    assert types == {"ab_assignments": "DATE", "user_category_affinity": "INTEGER"}
    assert {"mlflow_run_id", "model_version"} <= model_cols
    assert pq.read_table(root / "published_runs" / f"ds={day2}" / "part-0.parquet").num_rows == 2


def _baseline_counts(cfg) -> str:
    """Rows per nightly table on BASE_DS, counted from the Parquet copies (a second method)."""
    root = layout(cfg).parquet_root
    return json.dumps({t: pq.read_metadata(root / t / f"ds={BASE_DS}" / "part-0.parquet").num_rows
                       for t in schema.NIGHTLY_TABLES})


def _row(ds: str, run_id: str, dataset: str, rows_in: int, rule_counts) -> dict:
    return dict(ds=ds, run_id=run_id, dataset=dataset, rows_in=rows_in, rows_valid=rows_in, rows_quarantined=0,
                success=True, partitions=1, rule_counts=rule_counts, warnings="", message="", data_docs=None)


def test_validation_runs_keep_the_newest_run_and_an_older_warehouse_converts(tmp_path):
    """An older release's validation_runs (every run, rule_counts JSON text, one rerun on 11-29 with
    68,159 then 0 rows in) becomes history + newest run per ds, in DuckDB and in the Parquet copies,
    and survives rebuild-warehouse."""
    db = tmp_path / "warehouse" / "recsys.duckdb"
    db.parent.mkdir()
    con = duckdb.connect(str(db))
    con.execute("""CREATE TABLE validation_runs (ds DATE, run_id VARCHAR, dataset VARCHAR, rows_in BIGINT,
        rows_valid BIGINT, rows_quarantined BIGINT, success BOOLEAN, partitions INTEGER, rule_counts VARCHAR,
        warnings VARCHAR, message VARCHAR, data_docs VARCHAR)""")
    old = [("2026-11-28", "a", "events", 50, '{"duplicate_event": 3}'),
           ("2026-11-29", "b", "events", 68159, '{"null_user_id": 5, "duplicate_event": 2}'),
           ("2026-11-29", "c", "events", 0, "{}")]
    for ds, run_id, dataset, n, rc in old:
        con.execute("INSERT INTO validation_runs VALUES (?, ?, ?, ?, ?, 0, true, 1, ?, '', '', NULL)",
                    [ds, run_id, dataset, n, n, rc])
    for ds in ("2026-11-28", "2026-11-29"):  # the older release's Parquet copies (JSON text)
        part = warehouse.log_root(db) / "validation_runs" / f"ds={ds}"
        part.mkdir(parents=True)
        con.execute(f"COPY (SELECT * FROM validation_runs WHERE ds = '{ds}') TO '{part / 'part-0.parquet'}' "
                    "(FORMAT parquet)")
    con.close()
    empty = pa.table({"ds": pa.array([], pa.date32()), "run_id": pa.array([], pa.string()),
                      "event_date": pa.array([], pa.string())})
    warehouse.record_validation(db, "2026-11-30", "d", [_row("2026-11-30", "d", "events", 10, {"null_item_id": 4}),
                                                         _row("2026-11-30", "d", "items", 3, {})], empty, [])
    warehouse.record_validation(db, "2026-11-30", "e", [_row("2026-11-30", "e", "events", 11, '{"x": 1}'),
                                                         _row("2026-11-30", "e", "items", 3, {})], empty, [])

    def state(path: Path):
        c = duckdb.connect(str(path), read_only=True)
        try:
            return (c.execute("SELECT ds::VARCHAR, run_id, dataset, rows_in, rule_counts FROM validation_runs "
                              "ORDER BY ALL").fetchall(),
                    c.execute("SELECT ds::VARCHAR, run_id, dataset FROM validation_runs_history ORDER BY ALL").fetchall(),
                    c.execute("SELECT DISTINCT run_id FROM latest_validation_runs").fetchall(),
                    c.execute("SELECT rule_counts['null_user_id'] FROM validation_runs WHERE run_id = 'b'").fetchall())
        finally:
            c.close()

    expected = ([("2026-11-28", "a", "events", 50, {"duplicate_event": 3}),
                 ("2026-11-29", "c", "events", 0, {}),
                 ("2026-11-30", "e", "events", 11, {"x": 1}), ("2026-11-30", "e", "items", 3, {})],
                [("2026-11-28", "a", "events"), ("2026-11-29", "b", "events"), ("2026-11-29", "c", "events"),
                 ("2026-11-30", "d", "events"), ("2026-11-30", "d", "items"), ("2026-11-30", "e", "events"),
                 ("2026-11-30", "e", "items")],
                [("e",)], [])
    assert state(db) == expected
    logs = warehouse.log_root(db)
    copy = pq.read_table(logs / "validation_runs" / "ds=2026-11-29" / "part-0.parquet")
    assert copy.column("run_id").to_pylist() == ["c"] and pa.types.is_map(copy.schema.field("rule_counts").type)
    hist = pq.read_table(logs / "validation_runs_history" / "ds=2026-11-29" / "part-0.parquet")
    assert sorted(hist.column("run_id").to_pylist()) == ["b", "c"]
    out = warehouse.rebuild(db, db.parent / "parquet")
    assert out["tables"]["validation_runs"] == 4 and out["tables"]["validation_runs_history"] == 7
    assert state(db) == expected


def test_rebuild_splits_an_older_release_s_json_copies(tmp_path):
    """A rebuild from an older release's copies only (JSON text, every run) splits them the same way."""
    db = tmp_path / "warehouse" / "recsys.duckdb"
    part = warehouse.log_root(db) / "validation_runs" / "ds=2026-11-29"
    part.mkdir(parents=True)
    pq.write_table(pa.table({"ds": pa.array([date(2026, 11, 29)] * 2), "run_id": ["b", "c"],
                             "dataset": ["events", "events"], "rows_in": [68159, 0],
                             "rule_counts": ['{"null_user_id": 5}', "{}"]}), part / "part-0.parquet")
    warehouse.rebuild(db, db.parent / "parquet")
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT run_id, rows_in, rule_counts FROM validation_runs").fetchall() == [("c", 0, {})]
        assert con.execute("SELECT run_id, rule_counts['null_user_id'] FROM validation_runs_history ORDER BY 1"
                           ).fetchall() == [("b", 5), ("c", None)]
    finally:
        con.close()
