"""The PostgreSQL serving copy against a real server: row for row equal to DuckDB's latest tables,
indexed on the lookup keys, swapped per table, left alone by a backfill, and reached by forget."""

import duckdb
import numpy as np
import pandas as pd
import psycopg
import pytest

from pipelines.artifacts import layout
from pipelines.dev.demo_data import import_demo
from pipelines.infra.postgres import INDEXES
from pipelines.run import run_all, run_step

DS = "2024-06-30"


@pytest.fixture(scope="module")
def served(tmp_path_factory, postgres_url):
    from pipelines.config import load_config

    cfg = load_config(environ={}, home=tmp_path_factory.mktemp("pg") / "var")
    cfg = cfg.replace(serving_url=postgres_url, search_budget_seconds=0)
    import_demo(cfg, seed=3, users=250, items=80, days=40, end_date=DS)
    run_all(cfg, "2024-06-29", "day-1")
    result = run_all(cfg, DS, "day-2")
    return cfg, result


def frame(rows, cols) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=cols)


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for c in df.columns:
        if df[c].map(lambda v: isinstance(v, (list, np.ndarray))).any():
            df[c] = df[c].map(lambda v: tuple(np.round(np.asarray(v, dtype=float), 6)) if len(v) and not
                              isinstance(list(v)[0], str) else tuple(v))
        elif c in ("ds", "first_seen"):  # DATE columns: datetime64 from DuckDB, date from PostgreSQL
            df[c] = pd.to_datetime(df[c]).dt.date
    keys = [c for c in df.columns if not pd.api.types.is_float_dtype(df[c])]
    return df.sort_values(keys).reset_index(drop=True)


def test_serving_copy_matches_duckdb_row_for_row(served):
    cfg, result = served
    assert result["publish"]["serving_copy"] == "published"
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    try:
        with psycopg.connect(cfg.serving.serving_url) as pg:
            for table in result["publish"]["rows"]:
                duck = con.execute(f"SELECT * FROM {table} WHERE ds = ?::DATE", [DS]).df()
                cur = pg.execute(f'SELECT * FROM "{table}"')
                copy = frame(cur.fetchall(), [d.name for d in cur.description])
                assert list(copy.columns) == list(duck.columns), table
                # ab_assignments is empty: no experiment runs in this test (it is copied all the same).
                assert len(copy) == len(duck) and (len(duck) > 0 or table == "ab_assignments"), table
                if len(duck):
                    pd.testing.assert_frame_equal(normalise(copy), normalise(duck), check_dtype=False,
                                                  check_exact=False, rtol=1e-6, obj=table)
            meta = dict(pg.execute("SELECT table_name, ds::text FROM recsys_serving_meta").fetchall())
            indexes = {r[0] for r in pg.execute("SELECT indexname FROM pg_indexes").fetchall()}
    finally:
        con.close()
    assert set(meta) == set(result["publish"]["rows"]) and set(meta.values()) == {DS}
    for table, keys in INDEXES.items():
        for cols in keys:
            assert f"{table}_{'_'.join(cols)}_idx" in indexes
    # The lookup the web team runs uses the index.
    with psycopg.connect(cfg.serving.serving_url) as pg:
        pg.execute("SET enable_seqscan = off")
        plan = " ".join(r[0] for r in pg.execute(
            "EXPLAIN SELECT item_id FROM user_recommendations WHERE user_id = 'u0000001' AND surface = 'for_you' "
            "ORDER BY rank").fetchall())
    assert "user_recommendations_user_id_surface_rank_idx" in plan


def test_a_backfill_of_an_older_day_leaves_the_serving_copy_on_the_newest(served):
    cfg, _ = served
    with psycopg.connect(cfg.serving.serving_url) as pg:
        before = pg.execute("SELECT count(*), min(run_id) FROM user_recommendations").fetchall()[0]
    out = run_step("publish", cfg, "2024-06-29", "day-1-again")
    assert out["serving_copy"] == f"kept {DS}"
    with psycopg.connect(cfg.serving.serving_url) as pg:
        assert pg.execute("SELECT count(*), min(run_id) FROM user_recommendations").fetchall()[0] == before
        assert before[1] == "day-2"


def test_forget_reaches_the_serving_copy(served):
    from pipelines.services.privacy import forget

    cfg, _ = served
    with psycopg.connect(cfg.serving.serving_url) as pg:
        user = pg.execute("SELECT user_id FROM user_recommendations ORDER BY user_id LIMIT 1").fetchall()[0][0]
        expected = sum(pg.execute(f'SELECT count(*) FROM "{t}" WHERE user_id = %s', [user]).fetchall()[0][0]
                       for t in ("user_recommendations", "user_category_affinity", "post_purchase_email", "homepage"))
    audit = forget(cfg, user)
    assert audit["serving_rows_removed"] == expected > 0
    with psycopg.connect(cfg.serving.serving_url) as pg:
        for (t,) in pg.execute("SELECT table_name FROM information_schema.columns WHERE column_name = 'user_id' "
                               "AND table_schema = 'public'").fetchall():
            assert pg.execute(f'SELECT count(*) FROM "{t}" WHERE user_id = %s', [user]).fetchall()[0][0] == 0
