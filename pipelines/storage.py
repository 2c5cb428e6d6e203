"""Files and tables under the data root: immutable landing, atomic writes, the DuckDB warehouse.

Every write goes to a temporary name in the target directory and is swapped in with one
``os.replace`` (atomic on POSIX), so a reader sees the old file or the new one, never half.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import constants as C

log = logging.getLogger(__name__)


def atomic_write_parquet(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_parquet_batches(tables, schema: pa.Schema, path: Path) -> tuple[Path, int]:
    """Write an iterable of Arrow tables (one schema) as one Parquet file, swapped in by rename when
    complete: a reader never sees a half-written file. Returns (path, rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for t in tables:
                writer.write_table(t)
                rows += t.num_rows
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path, rows


def atomic_write_text(text: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json(obj: Mapping, path: Path) -> Path:
    return atomic_write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), path)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def replace_dir(staging: Path, final: Path) -> None:
    """Swap a fully written staging directory in place of `final` (two renames, no copy)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def staging_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    path = final.with_name(f".{final.name}.staging-{uuid.uuid4().hex[:8]}")
    path.mkdir()
    return path


def file_digest(path: Path, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- landing zone
def landing_batch_exists(landing: Path, dataset: str, batch_id: str) -> bool:
    return any((landing / dataset).rglob(f"*{batch_id}*.parquet")) if (landing / dataset).exists() else False


def write_landing_events(landing: Path, events: pa.Table, batch_id: str) -> list[Path]:
    """Write events partitioned by UTC event date as new files; existing files are never touched.

    Rows without a parseable event time land in ``event_date=unknown`` so that nothing is lost;
    validation quarantines them.
    """
    import pyarrow.compute as pc

    times = events.column(C.EVENT_TIME)
    dates = pc.strftime(times, format="%Y-%m-%d")
    dates = pc.fill_null(dates, "unknown")
    events = events.append_column("_date", dates)
    written = []
    for date in sorted(pc.unique(dates).to_pylist()):
        part = events.filter(pc.equal(events.column("_date"), date)).drop_columns(["_date"])
        path = landing / "events" / f"{C.EVENT_DATE}={date}" / f"batch-{batch_id}.parquet"
        if path.exists():
            raise FileExistsError(f"landing file {path} already exists; landing files are immutable")
        written.append(atomic_write_parquet(part, path))
    return written


def write_landing_table(landing: Path, dataset: str, table: pa.Table, batch_id: str) -> Path:
    """Catalog and users batches: named ``batch-<UTC time>-<batch id>.parquet`` so that a later
    batch (a catalog update) sorts after an earlier one and wins (``in_import_order``)."""
    from datetime import datetime, timezone

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    path = landing / dataset / f"batch-{stamp}-{batch_id}.parquet"
    if path.exists():
        raise FileExistsError(f"landing file {path} already exists; landing files are immutable")
    return atomic_write_parquet(table, path)


def in_import_order(files) -> list[Path]:
    """Reference batches oldest first: time-stamped names in time order, after the batches of
    releases that did not stamp their names (which are older)."""
    import re

    stamped = re.compile(r"^batch-\d{8}T\d{12}-")
    return sorted(files, key=lambda f: (bool(stamped.match(Path(f).name)), Path(f).name))


def landing_files(landing: Path, dataset: str) -> list[Path]:
    return in_import_order((landing / dataset).glob("batch-*.parquet")) if (landing / dataset).exists() else []


# ---------------------------------------------------------------- hashing
def _sha256_sql(prefix: str, values, expr: str):
    import duckdb
    import pandas as pd

    con = duckdb.connect()
    try:
        con.register("_v", pd.DataFrame({"v": pd.Series(values, dtype="string").astype(str).to_numpy(object)}))
        return con.execute(f"SELECT {expr} AS h FROM (SELECT sha256(?::VARCHAR || v) AS d FROM _v)",
                           [prefix]).fetchnumpy()["h"]
    finally:
        con.close()


def sha256_hex(prefix: str, values) -> np.ndarray:
    """hex sha256 of ``prefix + value`` for each value (the same digests as hashlib), in DuckDB:
    vectorised, no Python loop over the values."""
    return np.asarray(_sha256_sql(prefix, values, "d"), dtype=object)


def sha256_unit(prefix: str, values) -> np.ndarray:
    """The first 60 bits of sha256(prefix + value) as a number in [0, 1), per value."""
    return np.asarray(_sha256_sql(prefix, values, "('0x' || substr(d, 1, 15))::UBIGINT"),
                      dtype=np.float64) / 16.0 ** 15


# ---------------------------------------------------------------- warehouse
# DuckDB's own memory for warehouse work (the publish step's sort of the personal lists, reports):
# above it, sorts and joins spill to a temporary directory beside the database instead of growing.
WAREHOUSE_MEMORY_LIMIT = "2GB"


def connect_warehouse(db_path: Path, read_only: bool = False):
    import duckdb

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
            final = parquet_root / name / f"ds={ds}" / "part-0.parquet"
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


def table_counts(db_path: Path, ds: str, names: Iterable[str]) -> dict[str, int]:
    con = connect_warehouse(db_path, read_only=True)
    try:
        return {n: con.execute(f'SELECT count(*) FROM "{n}" WHERE ds = ?::DATE', [ds]).fetchall()[0][0] for n in names}
    finally:
        con.close()


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
