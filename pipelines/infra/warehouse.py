"""The DuckDB warehouse: one writing connection at a time, every table of a ds published in one
transaction (write-audit-publish), and the validation run log.

A reader sees the old version of a ds or the new one, never half of one: the Parquet copies are
staged beside their final place and renamed in after the DuckDB transaction commits.
"""
from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Mapping

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.artifacts import table_file

log = logging.getLogger(__name__)

# DuckDB's own memory for warehouse work (the publish step's sort of the personal lists, reports):
# above it, sorts and joins spill to a temporary directory beside the database instead of growing.
WAREHOUSE_MEMORY_LIMIT = "2GB"


def connect_warehouse(db_path: Path, read_only: bool = False):

    db_path.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(db_path), read_only=read_only, config={"memory_limit": WAREHOUSE_MEMORY_LIMIT})


def publish_tables(db_path: Path, parquet_root: Path, ds: str, tables: Mapping[str, object],
                   order_by: Mapping[str, str] | None = None) -> dict[str, int]:
    """Publish several tables for one ds: all of them become visible together, or none.

    A table is an Arrow table, or a list of Parquet files (the score step's shards: streamed by
    DuckDB, never loaded whole). ``order_by``: per table, the row order to write in (SQL).
    DuckDB: one transaction deletes the rows of `ds` and inserts the new ones in every table, so a
    rerun replaces that ds only. Parquet: ``<root>/<table>/ds=<ds>/part-0.parquet`` swapped in by
    rename after the DuckDB commit.
    """
    order_by = order_by or {}

    def prepared(t):
        # A column that is all null on this ds (no experiment running, say) still gets a real type.
        return t.cast(pa.schema([pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in t.schema]))

    tables = {name: prepared(t) if isinstance(t, pa.Table) else [str(p) for p in t] for name, t in tables.items()}
    con = connect_warehouse(db_path)

    def incoming(name: str, t) -> str:
        """The SQL relation of an incoming table (registered Arrow, or read_parquet of the files)."""
        if isinstance(t, pa.Table):
            con.register("_incoming", t)
            src = "_incoming"
        else:
            src = "read_parquet([" + ", ".join("'" + p.replace("'", "''") + "'" for p in t) + "])"
        return f"(SELECT * FROM {src}" + (f" ORDER BY {order_by[name]})" if name in order_by else ")")

    staged: dict[str, Path] = {}
    counts: dict[str, int] = {}
    try:
        for name, table in tables.items():
            final = table_file(parquet_root, name, ds)
            tmp = final.with_name(f".part-0.parquet.staged-{uuid.uuid4().hex[:8]}")
            final.parent.mkdir(parents=True, exist_ok=True)
            staged[name] = tmp
            if isinstance(table, pa.Table) and name not in order_by:
                pq.write_table(table, tmp, compression="zstd")
            else:
                rel = incoming(name, table)
                con.execute(f"COPY {rel} TO '{str(tmp).replace(chr(39), chr(39) * 2)}' (FORMAT parquet, COMPRESSION zstd)")
                if isinstance(table, pa.Table):
                    con.unregister("_incoming")
        con.execute("BEGIN TRANSACTION")
        for name, table in tables.items():
            rel = incoming(name, table)
            con.execute(f'CREATE TABLE IF NOT EXISTS "{name}" AS SELECT * FROM {rel} LIMIT 0')
            # A column added by a newer release: added to the table (older ds rows read NULL).
            have = {r[0] for r in con.execute(f'DESCRIBE "{name}"').fetchall()}
            for col, typ, *_ in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall():
                if col not in have:
                    con.execute(f'ALTER TABLE "{name}" ADD COLUMN "{col}" {typ}')
            con.execute(f'DELETE FROM "{name}" WHERE ds = ?::DATE', [ds])
            counts[name] = con.execute(f'INSERT INTO "{name}" BY NAME SELECT * FROM {rel}').fetchall()[0][0]
            if isinstance(table, pa.Table):
                con.unregister("_incoming")
            con.execute(
                f'CREATE OR REPLACE VIEW "latest_{name}" AS SELECT * FROM "{name}" '
                f'WHERE ds = (SELECT max(ds) FROM "{name}")'
            )
        con.execute("COMMIT")
    except Exception:
        try:
            con.execute("ROLLBACK")
        except Exception:  # the failure came before the transaction began
            pass
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        raise
    finally:
        con.close()
    for name, tmp in staged.items():
        os.replace(tmp, tmp.with_name("part-0.parquet"))
    return counts


VALIDATION_RUNS_DDL = """CREATE TABLE IF NOT EXISTS validation_runs (
    ds DATE, run_id VARCHAR, dataset VARCHAR, rows_in BIGINT, rows_valid BIGINT, rows_quarantined BIGINT,
    success BOOLEAN, partitions INTEGER, rule_counts VARCHAR, warnings VARCHAR, message VARCHAR, data_docs VARCHAR)"""


def record_validation(db_path: Path, ds: str, run_id: str, rows: list[dict], quarantined: pa.Table,
                      event_dates: list[str]) -> None:
    """Record a validation run (failed ones too) and its quarantined rows, in one transaction.

    ``validation_runs``: one row per (ds, run_id, dataset); a retry of the same run replaces its rows.
    ``quarantined_events``: the quarantined rows of the partitions validated by this run; a partition
    validated again replaces its rows. Values travel as parameters and Arrow data, never as SQL text.
    """
    con = connect_warehouse(db_path)
    try:
        con.execute("BEGIN TRANSACTION")
        con.execute(VALIDATION_RUNS_DDL)
        con.execute("DELETE FROM validation_runs WHERE ds = ?::DATE AND run_id = ?", [ds, run_id])
        cols = ["ds", "run_id", "dataset", "rows_in", "rows_valid", "rows_quarantined", "success", "partitions",
                "rule_counts", "warnings", "message", "data_docs"]
        con.executemany(f"INSERT INTO validation_runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                        [[r[c] for c in cols] for r in rows])
        con.register("_quarantined", quarantined)
        con.execute("CREATE TABLE IF NOT EXISTS quarantined_events AS SELECT * FROM _quarantined LIMIT 0")
        if event_dates:
            con.execute("DELETE FROM quarantined_events WHERE event_date IN (SELECT unnest(?::VARCHAR[]))", [event_dates])
        con.execute("INSERT INTO quarantined_events BY NAME SELECT * FROM _quarantined")
        con.unregister("_quarantined")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        con.close()
