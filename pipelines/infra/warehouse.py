"""The DuckDB warehouse and its Parquet copies: one writer at a time, every change one transaction
across both stores, readers never blocked (docs/tables.md, "Reading while the pipeline writes").

Every writer goes through ``transaction(db_path, parquet_root, name)``: it takes the write lock,
finishes or discards what a killed writer left (``recover``), copies ``recsys.duckdb`` to a staged
name and works on the copy, stages each Parquet copy beside its final place, and commits all of it
through one journal (pipelines/infra/journal.py). The new DuckDB file is renamed over the old one,
so a reader's open connection keeps reading the old file (complete, as it was) and never stands in
the writer's way; a connection opened after the commit reads the new file.

Readers open the file with ``connect_readonly``; a file that is not a DuckDB database any more
raises WarehouseDamaged, whose way out is ``recsys rebuild-warehouse`` (``rebuild``).
"""
from __future__ import annotations

import logging
import os
import shutil
from contextlib import contextmanager
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Mapping

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.artifacts import layout, table_file
from pipelines.config import Config
from pipelines.infra import journal
from pipelines.infra import warehouse_ddl as ddl
from pipelines.infra.faults import fault_point
from pipelines.infra.journal import WarehouseBusy
from pipelines.infra.warehouse_ddl import latest_published_ds

log = logging.getLogger(__name__)

__all__ = ["WarehouseBusy", "WarehouseDamaged", "connect_readonly", "transaction", "recover", "publish_tables",
           "record_validation", "rebuild", "LOG_TABLES", "latest_published_ds"]

# DuckDB's own memory for warehouse work (the publish step's sort of the personal lists, reports):
# above it, sorts and joins spill to a temporary directory beside the database instead of growing.
WAREHOUSE_MEMORY_LIMIT = "2GB"
# Log tables: their Parquet copies (per ds like every other table) are under parquet-logs/.
LOG_TABLES = ("validation_runs", "validation_runs_history", "quarantined_events", "privacy_requests")


class WarehouseDamaged(RuntimeError):
    """The DuckDB file cannot be read; the message names it and the way out."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"warehouse file {path} is damaged ({reason}); rebuild it from the Parquet copies "
                         "with: recsys rebuild-warehouse")


def _damage(path: Path, exc: Exception) -> Exception:
    """The exception to raise for a DuckDB error opening or reading ``path``."""
    text = " ".join(str(exc).split())
    if "conflicting lock" in text.lower() or "could not set lock" in text.lower():
        return WarehouseBusy(f"{path} is open for writing in another process (a read-write DuckDB connection); "
                             "close it: readers must open the warehouse read-only (docs/tables.md)")
    return WarehouseDamaged(path, text[:300])


def _paths(where: Config | Path) -> tuple[Path, Path]:
    if isinstance(where, Config):
        return layout(where).duckdb_path, layout(where).parquet_root
    return Path(where), Path(where).parent / "parquet"


def connect_readonly(where: Config | Path):
    """A read-only connection to the warehouse (a Config, or the DuckDB file's path). It reads the
    newest committed file and keeps reading that one, however many publishes happen meanwhile;
    it never blocks a writer. Raises FileNotFoundError (no warehouse yet), WarehouseDamaged."""
    db_path, _ = _paths(where)
    if journal.needs_recovery(db_path):  # a killed writer's leftovers: repaired when no writer runs
        fd = journal.try_lock(db_path)
        if fd is not None:
            try:
                journal.recover(db_path)
            finally:
                os.close(fd)
    if not db_path.exists():
        raise FileNotFoundError(f"no warehouse at {db_path}: run the pipeline first (recsys run --ds ...)")
    try:
        con = duckdb.connect(str(db_path), read_only=True, config={"memory_limit": WAREHOUSE_MEMORY_LIMIT})
        con.execute("SELECT count(*) FROM duckdb_tables()").fetchall()
    except duckdb.Error as exc:
        raise _damage(db_path, exc) from None
    return con


def connect_warehouse(db_path: Path, read_only: bool = True):
    """Kept for callers of older releases: read-only only (writers use ``transaction``)."""
    if not read_only:
        raise ValueError("connect_warehouse: writers go through warehouse.transaction (one writer, crash-safe)")
    return connect_readonly(db_path)


class WarehouseTx:
    """One transaction: ``connection()`` (the staged DuckDB copy), ``stage(final)`` (a path to write
    a file's new content to), ``delete(final)``; committed together when the ``with`` block ends."""

    def __init__(self, db_path: Path, parquet_root: Path, name: str):
        self.db_path, self.parquet_root, self.name = db_path, parquet_root, name
        self.journal = journal.Journal(db_path, name)
        self._con = None
        self._db_staged: Path | None = None

    def stage(self, final: Path) -> Path:
        return self.journal.stage(Path(final))

    def delete(self, final: Path) -> None:
        self.journal.delete(Path(final))

    @property
    def staged_db_path(self) -> Path | None:
        return self._db_staged

    @property
    def staged_db_name(self) -> str | None:
        return self._db_staged.name if self._db_staged is not None else None

    @property
    def staged_finals(self) -> set[Path]:
        return self.journal.finals

    def connection(self, fresh: bool = False):
        """The writing connection, on a staged copy of the DuckDB file (``fresh``: an empty one)."""
        if self._con is not None:
            return self._con
        staged = self.journal.stage(self.db_path)
        wal = Path(str(self.db_path) + ".wal")
        self.journal.note(Path(str(staged) + ".wal"))
        self.journal.note(Path(str(staged) + ".tmp"))  # DuckDB's spill folder
        if self.db_path.exists() and not fresh:
            shutil.copyfile(self.db_path, staged)
            if wal.exists():
                shutil.copyfile(wal, str(staged) + ".wal")
        if wal.exists():
            self.journal.delete(wal)  # replayed into the copy; must never meet the new file
        try:
            con = duckdb.connect(str(staged), config={"memory_limit": WAREHOUSE_MEMORY_LIMIT})
            con.execute("SELECT count(*) FROM duckdb_tables()").fetchall()
        except duckdb.Error as exc:
            raise WarehouseDamaged(self.db_path, " ".join(str(exc).replace(str(staged), "copy").split())[:300]) from None
        self._con, self._db_staged = con, staged
        return con

    def compact(self) -> None:
        """Rewrite the staged database into a fresh file (COPY FROM DATABASE) so no deleted bytes stay."""
        con = self.connection()
        fresh = self.journal.stage(self.db_path, tag="c")
        self.journal.note(Path(str(fresh) + ".wal"))
        name = con.execute("SELECT current_database()").fetchall()[0][0].replace('"', '""')
        con.execute(f"ATTACH '{str(fresh).replace(chr(39), chr(39) * 2)}' AS _fresh")
        con.execute(f'COPY FROM DATABASE "{name}" TO _fresh')
        con.execute("DETACH _fresh")
        con.close()
        self.journal.unstage(self._db_staged)
        self._con, self._db_staged = None, fresh

    def commit(self) -> None:
        if self._con is not None:
            self._con.execute("CHECKPOINT")
            self._con.close()
            self._con = None
        if self._db_staged is not None and Path(str(self._db_staged) + ".wal").exists():
            raise RuntimeError(f"transaction {self.name}: the staged database kept a write-ahead log")
        fault_point(f"{self.name}.duckdb_staged")
        self.journal.commit(last=self.db_path)

    def abort(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            except duckdb.Error:
                pass
            self._con = None
        self.journal.abort()


def recover(db_path: Path, parquet_root: Path | None = None, timeout_s: float = journal.LOCK_TIMEOUT_S) -> dict:
    """Take the write lock and finish (journal present) or discard (no journal) what a killed writer
    left under the warehouse and the Parquet root. Every transaction runs it first."""
    with journal.write_lock(db_path, "recover", timeout_s):
        return _recover_locked(db_path, parquet_root)


def _recover_locked(db_path: Path, parquet_root: Path | None) -> dict:
    roots = (parquet_root,) if parquet_root is not None and parquet_root.parent != db_path.parent else ()
    out = journal.recover(db_path, roots)
    if out["rolled_forward"] or out["discarded"]:
        log.warning("warehouse %s: recovered from an interrupted writer: %s", db_path, out)
    return out


@contextmanager
def transaction(db_path: Path, parquet_root: Path, name: str, what: str = "",
                timeout_s: float = journal.LOCK_TIMEOUT_S):
    """``with transaction(db, root, "publish") as tx:`` -- everything done through ``tx`` becomes
    visible together when the block ends, or not at all (an exception or a crash at any instant)."""
    db_path, parquet_root = Path(db_path), Path(parquet_root)
    with journal.write_lock(db_path, what or name, timeout_s):
        _recover_locked(db_path, parquet_root)
        tx = WarehouseTx(db_path, parquet_root, name)
        try:
            yield tx
            tx.commit()
        except BaseException as exc:
            tx.abort()
            reason = _damaged_copy(tx, exc)
            if reason:
                raise WarehouseDamaged(db_path, reason) from exc
            raise


def _damaged_copy(tx: WarehouseTx, exc: BaseException) -> str | None:
    """The reason, when ``exc`` is DuckDB failing to read the (copy of the) warehouse file itself."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, duckdb.Error) or "No space left" in text:
        return None
    staged = tx.staged_db_name
    if (staged and staged in text) or "not a valid DuckDB database" in text or "checksum" in text.lower():
        return text.replace(f'"{tx.staged_db_path}"', "copy").replace(str(tx.staged_db_path), "copy")[:300]
    return None


def _sql_path(p: Path) -> str:
    return "'" + str(p).replace("'", "''") + "'"


def log_root(db_path: Path) -> Path:
    """The Parquet copies of the log tables (LOG_TABLES): beside the published tables' copies, not
    among them, so a failed run leaves ``parquet/`` exactly as it was."""
    return Path(db_path).parent / "parquet-logs"


def copy_partition(tx: WarehouseTx, table: str, ds: str, column: str = "ds") -> None:
    """Stage the Parquet copy of one ds of a table from the transaction's DuckDB copy."""
    day = date.fromisoformat(str(ds)).isoformat()
    tmp = tx.stage(table_file(log_root(tx.db_path) if table in LOG_TABLES else tx.parquet_root, table, day))
    tx.connection().execute(f"COPY (SELECT * FROM \"{table}\" WHERE {column} = DATE '{day}') TO {_sql_path(tmp)} "
                            "(FORMAT parquet, COMPRESSION zstd)")


def _prepared(t):
    # A column that is all null on this ds (no experiment running, say) still gets a real type: ds a
    # date, anything else text.
    return t.cast(pa.schema([pa.field(f.name, pa.date32() if f.name == "ds" else pa.string())
                             if pa.types.is_null(f.type) else f for f in t.schema]))


def publish_tables(db_path: Path, parquet_root: Path, ds: str, tables: Mapping[str, object],
                   order_by: Mapping[str, str] | None = None, run: Mapping[str, object] | None = None
                   ) -> dict[str, int]:
    """Publish several tables for one ds: all of them become visible together, or none, in DuckDB
    and in the Parquet copies (one transaction, crash-safe).

    A table is an Arrow table, or Parquet files (score shards: streamed, never loaded whole).
    ``order_by``: per table, the row order (SQL; sorted once, into the Parquet copy
    ``<root>/<table>/ds=<ds>/part-0.parquet``, which DuckDB's rows of `ds` replace from).

    ``run`` (the nightly's publish: run_id, mlflow_run_id, model_version, champion, champion_version):
    one ``published_runs`` row per table for ds, in the same transaction; the nightly's latest_
    views all show the newest ds of published_runs. Without it (the A/B report's ab_results), the
    table's latest_ view shows its own newest ds.
    """
    order_by = order_by or {}
    tables = {name: _prepared(t) if isinstance(t, pa.Table) else [str(p) for p in t] for name, t in tables.items()}
    counts: dict[str, int] = {}
    with transaction(db_path, parquet_root, "publish", what=f"publish ds={ds}") as tx:
        con = tx.connection()

        def incoming(name: str, t) -> str:
            """The SQL relation of an incoming table (registered Arrow, or read_parquet of the files)."""
            if isinstance(t, pa.Table):
                con.register("_incoming", t)
                src = "_incoming"
            else:
                src = "read_parquet([" + ", ".join(_sql_path(p) for p in t) + "])"
            return f"(SELECT * FROM {src}" + (f" ORDER BY {order_by[name]})" if name in order_by else ")")

        sorted_copy = {}
        for name, table in tables.items():
            tmp = tx.stage(table_file(parquet_root, name, ds))
            if isinstance(table, pa.Table) and name not in order_by:
                pq.write_table(table, tmp, compression="zstd")
            else:
                con.execute(f"COPY {incoming(name, table)} TO {_sql_path(tmp)} (FORMAT parquet, COMPRESSION zstd)")
                con.execute("DROP VIEW IF EXISTS _incoming")
                if name in order_by:
                    sorted_copy[name] = f"(SELECT * FROM read_parquet({_sql_path(tmp)}))"
        fault_point("publish.parquet_staged")
        con.execute("BEGIN TRANSACTION")
        for name, table in tables.items():
            empty = isinstance(table, pa.Table) and table.num_rows == 0
            if not empty and _has_no_rows(con, name):
                # Created by an empty night (its column types guessed from no rows, e.g. a list column
                # typed as text): take the types of the first night with rows instead.
                con.execute(f'DROP TABLE "{name}"')
            rel = sorted_copy.get(name) or incoming(name, table)
            con.execute(f'CREATE TABLE IF NOT EXISTS "{name}" AS SELECT * FROM {rel} LIMIT 0')
            if empty:  # no rows: nothing to insert, and no column types worth adding to the table
                con.execute(f'DELETE FROM "{name}" WHERE ds = ?::DATE', [ds])
                con.execute("DROP VIEW IF EXISTS _incoming")  # registered Arrow (none for a sorted copy)
                counts[name] = 0
                continue
            # A column added by a newer release: added to the table (older ds rows read NULL).
            have = {r[0] for r in con.execute(f'DESCRIBE "{name}"').fetchall()}
            for col, typ, *_ in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall():
                if col not in have:
                    con.execute(f'ALTER TABLE "{name}" ADD COLUMN "{col}" {typ}')
            con.execute(f'DELETE FROM "{name}" WHERE ds = ?::DATE', [ds])
            counts[name] = con.execute(f'INSERT INTO "{name}" BY NAME SELECT * FROM {rel}').fetchall()[0][0]
            con.execute("DROP VIEW IF EXISTS _incoming")
        if run is not None:
            ddl.record_published(con, ds, counts, run, lambda day: copy_partition(tx, ddl.PUBLISHED_RUNS, day))
        # Older warehouses brought up to date (the validation tables by the next validation: their
        # Parquet copies are rewritten with them), the views, the comments.
        ddl.finish(con, validation=False)
        con.execute("COMMIT")
    return counts


def _has_no_rows(con, name: str) -> bool:
    """Whether table ``name`` exists and holds no row at all (created by nights without rows)."""
    if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchall()[0][0]:
        return False
    return not con.execute(f'SELECT count(*) FROM "{name}"').fetchall()[0][0]


def record_validation(db_path: Path, ds: str, run_id: str, rows: list[dict], quarantined: pa.Table,
                      event_dates: list[str]) -> None:
    """Record a validation run (failed ones too) and its quarantined rows, in one transaction with
    their Parquet copies (the ds partitions of the tables it changed).

    ``validation_runs_history``: every run, one row per (ds, run_id, dataset), append-only (a retry
    of the same run replaces its own rows). ``validation_runs``: the newest run of each ds (its rows
    replace the ds's rows: one row per (ds, dataset), one per withdrawn batch). ``rule_counts`` is a
    MAP(VARCHAR, BIGINT). ``quarantined_events``: the quarantined rows of the partitions validated by
    this run; a partition validated again replaces its rows. Values travel as parameters and Arrow
    data, never as SQL text.
    """
    with transaction(db_path, db_path.parent / "parquet", "validation", what=f"validation ds={ds}") as tx:
        con = tx.connection()
        migrated = [m for m in ddl.migrate(con) if m.startswith("validation")]
        ddl.insert_validation(con, ds, run_id, rows)
        con.register("_quarantined", quarantined)
        con.execute("CREATE TABLE IF NOT EXISTS quarantined_events AS SELECT * FROM _quarantined LIMIT 0")
        days = {date.fromisoformat(ds)}
        if event_dates:
            # The ds partitions whose rows a revalidated event date replaces get new copies too.
            days |= {r[0] for r in con.execute("SELECT DISTINCT ds FROM quarantined_events WHERE event_date IN "
                                               "(SELECT unnest(?::VARCHAR[]))", [event_dates]).fetchall()}
            con.execute("DELETE FROM quarantined_events WHERE event_date IN (SELECT unnest(?::VARCHAR[]))", [event_dates])
        con.execute("INSERT INTO quarantined_events BY NAME SELECT * FROM _quarantined")
        con.unregister("_quarantined")
        ddl.finish(con)
        # Every ds of the validation tables when an older release's were just converted, else this ds.
        runs_days = {r[0] for r in con.execute("SELECT DISTINCT ds FROM validation_runs_history").fetchall()
                     } if migrated else {date.fromisoformat(ds)}
        for day in sorted(d for d in runs_days if d is not None):
            copy_partition(tx, "validation_runs", day.isoformat())
            copy_partition(tx, "validation_runs_history", day.isoformat())
        for day in sorted(d for d in days if d is not None):
            copy_partition(tx, "quarantined_events", day.isoformat())


def rebuild(db_path: Path, parquet_root: Path) -> dict:
    """Rebuild the DuckDB file from the Parquet copies (``recsys rebuild-warehouse``): every table
    under ``parquet_root`` and ``log_root``, all its ds partitions, and the latest_ views. The file it replaces is kept
    as ``recsys.duckdb.damaged-<UTC stamp>``. Returns {table: rows} and the kept file."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    kept = None
    counts: dict[str, int] = {}
    with transaction(db_path, parquet_root, "rebuild", what="rebuild-warehouse") as tx:
        if db_path.exists():
            kept = db_path.with_name(f"{db_path.name}.damaged-{stamp}")
            os.link(db_path, kept)  # kept whatever happens next; the journal only moves the new file in
            if Path(str(db_path) + ".wal").exists():
                os.link(str(db_path) + ".wal", str(kept) + ".wal")
        con = tx.connection(fresh=True)
        roots = [r for r in (parquet_root, log_root(db_path)) if r.exists()]
        for table_dir in sorted((p for r in roots for p in r.iterdir() if p.is_dir()), key=lambda p: p.name):
            files = sorted(str(f) for f in table_dir.glob("ds=*/part-0.parquet"))
            if not files:
                continue
            name = table_dir.name.replace('"', '""')
            if table_dir.name in ("validation_runs", "validation_runs_history"):
                ddl.rebuild_validation(con, name, files)
            else:
                con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM read_parquet([{", ".join(map(_sql_path, files))}], '
                            "union_by_name = true, hive_partitioning = false)")
            counts[table_dir.name] = con.execute(f'SELECT count(*) FROM "{name}"').fetchall()[0][0]
        ddl.finish(con)  # types of older releases' copies fixed, the views, the comments
    log.warning("rebuild-warehouse: %s rebuilt from %s: %s; the old file is kept as %s", db_path, parquet_root,
                counts, kept)
    return {"tables": counts, "kept": str(kept) if kept else None}
