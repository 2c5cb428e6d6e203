"""The serving copy for the web team: the latest published tables in PostgreSQL.

When ``RECSYS_SERVING_URL`` (config ``serving_url``) is set, the publish step copies the ``ds`` it
just committed to DuckDB into PostgreSQL, one table at a time, each in one transaction:

1. ``CREATE TABLE <t>__incoming`` and ``COPY`` the rows in;
2. ``DROP TABLE <t>``, ``ALTER TABLE <t>__incoming RENAME TO <t>``, create the lookup indexes;
3. upsert ``recsys_serving_meta`` (table, ds, run_id, rows, published_at); ``COMMIT``.

A reader sees the old table or the new one, never a half-loaded one (PostgreSQL DDL is
transactional; the swap holds its lock only for the rename). The copy holds the latest ``ds`` of
each table; history stays in DuckDB and Parquet.
"""
from __future__ import annotations

import io
import logging
import time

import pyarrow as pa
import pyarrow.csv as pacsv

log = logging.getLogger(__name__)

# Lookup keys the web team reads by: one index per entry.
INDEXES: dict[str, list[tuple[str, ...]]] = {
    "user_recommendations": [("user_id", "surface", "rank")],
    "similar_items": [("item_id", "rank")],
    "frequently_bought_together": [("item_id", "rank")],
    "complete_the_look": [("item_id", "rank")],
    "cart_cross_sell": [("item_id", "rank")],
    "session_next_items": [("item_id", "rank")],
    "post_purchase_email": [("user_id",)],
    "trending": [("country", "rank")],
    "best_sellers": [("country", "rank")],
    "user_category_affinity": [("user_id", "rank")],
    "context_defaults": [("context", "value", "rank")],
    "homepage": [("user_id", "slot_type", "position")],
    "model_runs": [("model", "metric")],
    "items": [("item_id",)],
}


def _pg_type(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "bigint"
    if pa.types.is_float32(t):
        return "real"  # float32 stays float32: the copy equals DuckDB's FLOAT columns exactly
    if pa.types.is_floating(t):
        return "double precision"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _pg_type(t.value_type) + "[]"
    return "text"


def _array_literal(values) -> str | None:
    """A PostgreSQL array literal ('{"a","b"}') for a list cell."""
    if values is None:
        return None
    out = []
    for v in values:
        if v is None:
            out.append("NULL")
        elif isinstance(v, str):
            out.append('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            out.append(repr(float(v)) if isinstance(v, float) else str(v))
    return "{" + ",".join(out) + "}"


def _csv_bytes(table: pa.Table) -> bytes:
    """The table as CSV for COPY: list columns become array literals, NULL as an unquoted empty field."""
    cols = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            cols[name] = pa.array([_array_literal(v) for v in col.to_pylist()], pa.string())
        else:
            cols[name] = col
    buf = io.BytesIO()
    pacsv.write_csv(pa.table(cols), buf, write_options=pacsv.WriteOptions(include_header=False,
                                                                          quoting_style="needed"))
    return buf.getvalue()


def publish_postgres(url: str, ds: str, run_id: str, tables: dict[str, pa.Table]) -> dict[str, int]:
    """Swap in every table, one transaction each. Returns rows per table."""
    import psycopg
    from psycopg import sql

    counts = {}
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=False) as conn:
        with conn.transaction():
            conn.execute("""CREATE TABLE IF NOT EXISTS recsys_serving_meta (table_name text PRIMARY KEY, ds date,
                            run_id text, rows bigint, published_at timestamptz)""")
        for name, table in tables.items():
            incoming = f"{name}__incoming"
            columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(_pg_type(f.type)))
                                          for f in table.schema)
            with conn.transaction():
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(incoming)))
                conn.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(incoming), columns))
                with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(sql.Identifier(incoming))) as cp:
                    cp.write(_csv_bytes(table))
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
                conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(incoming), sql.Identifier(name)))
                for cols in INDEXES.get(name, []):
                    if all(c in table.column_names for c in cols):
                        conn.execute(sql.SQL("CREATE INDEX {} ON {} ({})").format(
                            sql.Identifier(f"{name}_{'_'.join(cols)}_idx"), sql.Identifier(name),
                            sql.SQL(", ").join(sql.Identifier(c) for c in cols)))
                conn.execute("""INSERT INTO recsys_serving_meta VALUES (%s, %s, %s, %s, now())
                                ON CONFLICT (table_name) DO UPDATE SET ds = EXCLUDED.ds, run_id = EXCLUDED.run_id,
                                rows = EXCLUDED.rows, published_at = EXCLUDED.published_at""",
                             [name, ds, run_id, table.num_rows])
            counts[name] = table.num_rows
    log.info("serving copy: %d tables, %d rows to PostgreSQL in %.1fs", len(counts), sum(counts.values()),
             time.perf_counter() - t0)
    return counts


def forget_postgres(url: str, user_id: str) -> int:
    """Delete a user's rows from every serving table with a user_id column (recsys forget)."""
    import psycopg
    from psycopg import sql

    removed = 0
    with psycopg.connect(url) as conn, conn.transaction():
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE column_name = 'user_id' "
            "AND table_schema = current_schema()").fetchall()]
        for t in tables:
            removed += conn.execute(sql.SQL("DELETE FROM {} WHERE user_id = %s").format(sql.Identifier(t)),
                                    [user_id]).rowcount
    return removed
