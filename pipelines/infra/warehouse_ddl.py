"""The warehouse's DDL beyond the tables' rows (docs/tables.md): what every warehouse transaction
does last (``finish``): bring an older warehouse up to date (``migrate``: column types fixed, model
columns added, the validation history split out, rule_counts as a MAP), (re)define the views (the
nightly's ``latest_`` views all on the one ds of ``published_runs``, the ``v_`` views with item
titles, ``latest_validation_runs``) and the ``COMMENT ON`` of every table, view and column, from
pipelines/infra/warehouse_schema.py. Also the rows of ``published_runs`` and ``validation_runs``.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Callable, Mapping

from pipelines.infra.warehouse_schema import (
    NIGHTLY_TABLES,
    OWN_LATEST_TABLES,
    PUBLISHED_RUNS,
    TABLES,
    V_BASE,
    V_VIEWS,
    VALIDATION,
    view_columns,
    view_description,
)

# ------------------------------------------------------------------ SQL helpers
_TODAY = "CAST(timezone('UTC', now()) AS DATE)"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _tables(con) -> dict[str, str]:
    return dict(con.execute("SELECT table_name, table_type FROM information_schema.tables "
                            "WHERE table_schema = 'main'").fetchall())


def _columns(con, table: str) -> dict[str, str]:
    return dict(con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = "
                            "'main' AND table_name = ? ORDER BY ordinal_position", [table]).fetchall())


def latest_view_sql(name: str) -> str:
    """``latest_<name>`` over the table's own newest ds that is not in the future (UTC)."""
    return (f'CREATE OR REPLACE VIEW {_q("latest_" + name)} AS SELECT * FROM {_q(name)} WHERE ds = '
            f'(SELECT max(ds) FROM {_q(name)} WHERE TRY_CAST(ds AS DATE) <= {_TODAY})')


def published_view_sql(name: str) -> str:
    """``latest_<name>`` over the newest ds of published_runs that is not in the future (UTC): one ds
    for every table of the nightly, even where this table has no row on it."""
    return (f'CREATE OR REPLACE VIEW {_q("latest_" + name)} AS SELECT * FROM {_q(name)} WHERE ds = '
            f'(SELECT max(ds) FROM {PUBLISHED_RUNS} WHERE ds <= {_TODAY})')


# ------------------------------------------------------------------ migration
def rule_counts_map(expr: str) -> str:
    return f"CAST(coalesce(NULLIF(CAST({expr} AS VARCHAR), ''), '{{}}')::JSON AS MAP(VARCHAR, BIGINT))"


def migrate(con, validation: bool = True) -> list[str]:
    """Bring a warehouse of an older release up to this schema (in the caller's transaction):
    dates as DATE and ranks as INTEGER, model columns on model_runs, rule_counts as a MAP, and the
    validation history split from validation_runs (its newest run per ds). Returns what it changed."""
    done = []
    tables = _tables(con)
    fixes = {("ab_assignments", "ds"): "DATE", ("user_category_affinity", "rank"): "INTEGER"}
    for (table, col), typ in fixes.items():
        if tables.get(table) == "BASE TABLE" and _columns(con, table).get(col, typ) != typ:
            con.execute(f"ALTER TABLE {_q(table)} ALTER {_q(col)} TYPE {typ}")
            done.append(f"{table}.{col} -> {typ}")
    if tables.get("model_runs") == "BASE TABLE":
        for col in ("mlflow_run_id", "model_version"):
            if col not in _columns(con, "model_runs"):
                con.execute(f"ALTER TABLE model_runs ADD COLUMN {col} VARCHAR")
                done.append(f"model_runs.{col}")
    if validation:  # only by writers that rewrite the validation tables' Parquet copies too
        done += _migrate_validation(con, tables)
    return done


def _migrate_validation(con, tables: dict[str, str]) -> list[str]:
    done = []
    cols = ", ".join(f"{_q(c)} {t}" for c, t, _ in VALIDATION)
    for table in ("validation_runs", "validation_runs_history"):
        if tables.get(table) != "BASE TABLE":
            continue
        have = _columns(con, table)
        if have.get("rule_counts") != "MAP(VARCHAR, BIGINT)" or "validated_at" not in have:
            # Rebuilt in place, keeping insertion order (rowid): the newest run of a ds is its last.
            select = ", ".join(rule_counts_map("rule_counts") if c == "rule_counts" else
                               (_q(c) if c in have else f"CAST(NULL AS {t})") for c, t, _ in VALIDATION)
            con.execute(f"CREATE TABLE _v_new ({cols})")
            con.execute(f"INSERT INTO _v_new SELECT {select} FROM {_q(table)} ORDER BY rowid")
            con.execute(f"DROP TABLE {_q(table)}")
            con.execute(f"ALTER TABLE _v_new RENAME TO {_q(table)}")
            done.append(f"{table}: rule_counts as MAP, validated_at")
    if tables.get("validation_runs") == "BASE TABLE" and tables.get("validation_runs_history") != "BASE TABLE":
        # An older release kept every run in validation_runs: that is the history; keep the newest run per ds.
        con.execute("CREATE TABLE validation_runs_history AS SELECT * FROM validation_runs ORDER BY rowid")
        con.execute("""DELETE FROM validation_runs WHERE rowid NOT IN (
            SELECT rowid FROM validation_runs v WHERE run_id = (
                SELECT last(run_id ORDER BY rowid) FROM validation_runs w WHERE w.ds = v.ds))""")
        done.append("validation_runs_history split out")
    elif tables.get("validation_runs_history") == "BASE TABLE" and tables.get("validation_runs") != "BASE TABLE":
        con.execute(f"CREATE TABLE validation_runs ({cols})")
    if tables.get("quarantined_events") == "BASE TABLE":
        # Event columns added since (ratings, reviews, dwell, context): NULL for the rows set aside before.
        have = _columns(con, "quarantined_events")
        for col, typ, _ in TABLES["quarantined_events"][1]:
            if col not in have:
                con.execute(f"ALTER TABLE quarantined_events ADD COLUMN {_q(col)} {typ}")
                done.append(f"quarantined_events.{col}")
    return done


def validation_ddl(table: str) -> str:
    return f"CREATE TABLE IF NOT EXISTS {_q(table)} (" + ", ".join(f"{_q(c)} {t}" for c, t, _ in VALIDATION) + ")"


# ------------------------------------------------------------------ views and comments
def define_views(con) -> None:
    """(Re)define every view of this module over the tables that exist (views bind their column
    types when created, so they are redefined after every change of a table)."""
    tables = {t for t, kind in _tables(con).items() if kind == "BASE TABLE"}
    published = PUBLISHED_RUNS in tables
    for t in sorted(tables):
        if t in NIGHTLY_TABLES and published:
            con.execute(published_view_sql(t))
        elif t in NIGHTLY_TABLES or t in OWN_LATEST_TABLES or t == "validation_runs":
            con.execute(latest_view_sql(t))
        elif not t.startswith("_") and t not in TABLES and t not in _LOG_NO_VIEW and "ds" in _columns(con, t):
            con.execute(latest_view_sql(t))  # a table of someone else's publish_tables call (tests, tools)
    if "items" in tables:
        for name, (_, sql) in V_VIEWS.items():
            if V_BASE[name] in tables:
                con.execute(f"CREATE OR REPLACE VIEW {_q(name)} AS {sql}")


_LOG_NO_VIEW = ("quarantined_events", "privacy_requests", "validation_runs_history", PUBLISHED_RUNS)

# Tables documented beside TABLES whose columns come from their writers (no COMMENT ON COLUMN here).
OTHER_TABLES = {
    "ab_results": "A/B results: one row per (ds, experiment_id, as_of, metric, variant) (docs/ab-testing.md).",
}


def apply_comments(con) -> None:
    """COMMENT ON every table, view and column of this module that exists (CREATE OR REPLACE and
    ALTER drop them, so every writer applies them last)."""
    objs = _tables(con)
    for name, kind in objs.items():
        if kind == "BASE TABLE" and name in TABLES:
            desc, cols = TABLES[name]
        elif kind == "BASE TABLE" and name in OTHER_TABLES:
            desc, cols = OTHER_TABLES[name], []
        elif kind == "VIEW" and (view_columns(name) is not None or name.startswith("latest_")):
            desc, cols = view_description(name), view_columns(name) or []
        else:
            continue
        con.execute(f"COMMENT ON {'TABLE' if kind == 'BASE TABLE' else 'VIEW'} {_q(name)} IS {_lit(desc)}")
        have = _columns(con, name)
        for col, _, text in cols:
            if col in have:
                con.execute(f"COMMENT ON COLUMN {_q(name)}.{_q(col)} IS {_lit(text)}")


def finish(con, validation: bool = True) -> None:
    """What every warehouse transaction does last: migrate, views, comments."""
    migrate(con, validation)
    define_views(con)
    apply_comments(con)


# ------------------------------------------------------------------ published_runs
def _exists(con, table: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                            [table]).fetchall()[0][0])


def latest_published_ds(con) -> str | None:
    """The ds every nightly latest_ view shows: the newest of published_runs not in the future (UTC)."""
    if not _exists(con, PUBLISHED_RUNS):
        return None
    day = con.execute(f"SELECT max(ds) FROM {PUBLISHED_RUNS} WHERE ds <= {_TODAY}").fetchall()[0][0]
    return day.isoformat() if day is not None else None


def record_published(con, ds: str, counts: Mapping[str, int], run: Mapping[str, object],
                     copy: Callable[[str], None]) -> None:
    """The published_runs rows of ds (one per table), in the publish transaction; ``copy(day)``
    stages a day's Parquet copy. A warehouse of an older release first gets rows for the dates it
    already holds (tables with rows on them; no model link)."""
    spec = TABLES[PUBLISHED_RUNS][1]
    if not _exists(con, PUBLISHED_RUNS):
        con.execute(f"CREATE TABLE {PUBLISHED_RUNS} (" + ", ".join(f"{_q(c)} {t}" for c, t, _ in spec) + ")")
        for t in (t for t in NIGHTLY_TABLES if t in _tables(con)):
            con.execute(f"INSERT INTO {PUBLISHED_RUNS} (ds, table_name, run_id, rows) SELECT TRY_CAST(ds AS DATE), ?, "
                        f"any_value(run_id), count(*) FROM {_q(t)} WHERE TRY_CAST(ds AS DATE) <> ?::DATE GROUP BY 1",
                        [t, ds])
        for (day,) in con.execute(f"SELECT DISTINCT ds FROM {PUBLISHED_RUNS}").fetchall():
            copy(day.isoformat())
    con.execute(f"DELETE FROM {PUBLISHED_RUNS} WHERE ds = ?::DATE", [ds])
    now = datetime.now(timezone.utc)
    text = {k: None if run.get(k) is None else str(run[k]) for k in ("model_version", "champion_version")}
    rows = [[ds, name, run.get("run_id"), n, now, run.get("mlflow_run_id"), text["model_version"], run.get("champion"),
             text["champion_version"]] for name, n in counts.items()]
    con.executemany(f"INSERT INTO {PUBLISHED_RUNS} ({', '.join(c for c, _, _ in spec)}) "
                    f"VALUES ({', '.join('?' * len(spec))})", rows)
    copy(ds)


# ------------------------------------------------------------------ validation_runs
def _rule_counts_json(value) -> str:
    """A run's rule counts (a dict, or JSON text as older callers pass) as JSON for the MAP column."""
    counts = json.loads(value) if isinstance(value, str) else dict(value or {})
    return json.dumps({str(k): int(v) for k, v in counts.items()})


def insert_validation(con, ds: str, run_id: str, rows: list[dict]) -> None:
    """The run's rows: they replace the ds's rows of validation_runs (the newest run of a ds) and
    join validation_runs_history (a retry of the same run replaces its own rows there)."""
    cols = [c for c, _, _ in VALIDATION]
    for table in ("validation_runs", "validation_runs_history"):
        con.execute(validation_ddl(table))
    now = datetime.now(timezone.utc)
    values = [[ds if c == "ds" else now if c == "validated_at" else
               _rule_counts_json(r.get(c)) if c == "rule_counts" else r.get(c) for c in cols] for r in rows]
    marks = ", ".join("CAST(?::JSON AS MAP(VARCHAR, BIGINT))" if c == "rule_counts" else "?" for c in cols)
    con.execute("DELETE FROM validation_runs WHERE ds = ?::DATE", [ds])
    con.execute("DELETE FROM validation_runs_history WHERE ds = ?::DATE AND run_id = ?", [ds, run_id])
    for table in ("validation_runs", "validation_runs_history"):
        con.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", values)


def rebuild_validation(con, name: str, files: list[str]) -> None:
    """A validation table from its Parquet copies, file by file: copies of older releases hold
    ``rule_counts`` as JSON text, newer ones as a MAP."""
    con.execute(validation_ddl(name))
    for f in files:
        src = "read_parquet(" + _lit(f) + ")"
        typ = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {src})").fetchall()
                   ).get("rule_counts", "MAP")
        select = "*" if typ.startswith("MAP") else f"* REPLACE ({rule_counts_map('rule_counts')} AS rule_counts)"
        con.execute(f"INSERT INTO {_q(name)} BY NAME SELECT {select} FROM {src}")
