"""Check that two data roots published the same rows (e.g. before and after a refactor).

    python benchmarks/compare_roots.py ROOT_A ROOT_B [--ignore-columns table.col,...]
                                       [--float-tolerance X] [--no-default-ignores] [--threads N]

Standalone: only the standard library, duckdb and pyarrow; it never imports the project's
packages, so it works against any version of the code. Make both runs with the same ``--ds`` and
the same ``--run-id`` (``run_id`` columns are compared like any other column).

What is compared
----------------
DuckDB warehouse (``<root>/warehouse/recsys.duckdb``, opened read-only):

* the base tables (views such as ``latest_*`` are not compared: they are queries over the tables);
  a table present on one side only is a difference;
* per table: column names and types (the columns being compared, see below), row count, and the
  multiset of rows: both files are attached to one in-memory DuckDB connection and
  ``SELECT cols FROM a.t EXCEPT ALL SELECT cols FROM b.t`` is counted both ways; up to 5 example
  rows of each side's extras are printed. Floating point columns are compared exactly (a refactor
  must be bit-identical) unless ``--float-tolerance X`` is given: FLOAT/DOUBLE columns (and lists
  of them) are then rounded to ``ceil(-log10(X))`` significant digits on both sides before the
  comparison (``--float-tolerance 1e-6``: six significant digits, i.e. a relative tolerance of
  about 1e-6; two values on either side of a rounding boundary can still differ).

Parquet copies (``<root>/warehouse/parquet``): the set of files (relative paths) and, per table
directory (first level under ``parquet/``), the row count from the files' Parquet metadata. Their
content is not compared again: it is the same data as the DuckDB tables.

Output: one line per table, ``OK table rows=N`` or ``DIFF table: <reasons>`` (example rows are
printed indented under a DIFF line), then ``compare_roots: N tables equal, M differ``. Exit code 0
when everything is equal, 1 when something differs, 2 on a usage error or when a root has no
readable warehouse file.

Columns excluded by default
---------------------------
Only columns that legitimately differ between two runs of the same code on the same input with the
same ``--run-id``: wall-clock times, paths containing the data root, random ids. Decided by
inspecting the tables of demo runs (``recsys demo-data`` + ``recsys run --ds ... --run-id ...``
into separate roots), and the code writing the one warehouse table a run does not create
(``privacy_requests``). An excluded column is left out of both the schema and the row comparison.

* ``validation_runs.data_docs``: the URL of the validation report (Great Expectations Data Docs)
  of each validated dataset, ``file://<root>/validation/ds%3D<ds>/report.html``; it contains the
  data root.
* ``privacy_requests.request_id``: a random uuid4 per ``recsys forget`` request (the table exists
  only where ``recsys forget`` was run).
* ``privacy_requests.requested_at``, ``privacy_requests.completed_at``: wall-clock times at which
  that request started and ended.

Nothing else: no other table of the warehouse stores a wall-clock time (no ``validated_at``,
``created_at``, ``published_at``: the only TIMESTAMP column is ``quarantined_events.event_time``,
the event's own time), an MLflow run id (those stay in MLflow and the ``models/`` JSON files) or
another path (``quarantined_events.source_file`` is a relative path); ids such as
``recommendation_id`` are hashes of (ds, surface, user, rank, item), not random. Add more with
``--ignore-columns table.col,...`` (``*.col`` matches the column in every table); disable the
defaults with ``--no-default-ignores``.

Known non-determinism (not excluded, since it is not a wall-clock, path or random-id column): at
commit 3a44903, two runs of the same code on the same demo data publish ``best_sellers.revenue``
values that differ in the last bits (about 1e-14 relative: DuckDB's multi-threaded
``sum(quantity * price)`` over DOUBLE adds in a varying order). Every other table was equal
bit for bit over three runs. To compare such roots, add ``--float-tolerance 1e-12``.

On UCI Online Retail (``recsys import-online-retail`` + ``recsys run --ds 2011-11-08``) two runs of
the same code at 3a44903 also differ in ``model_runs`` rows of ``bpr`` (implicit's BPR fits with
several threads updating the factors at once, so its holdout metrics vary in the third decimal) and
in ``post_purchase_email`` scores (summed over DOUBLE as above). ``user_recommendations`` and every
other table are equal bit for bit.
"""
from __future__ import annotations

import argparse
import fnmatch
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

WAREHOUSE = Path("warehouse") / "recsys.duckdb"
PARQUET = Path("warehouse") / "parquet"
EXAMPLES = 5

# "table.column" -> why it differs between two runs. fnmatch patterns (``*.col``), case-insensitive.
DEFAULT_IGNORES: dict[str, str] = {
    "validation_runs.data_docs": "URL of the validation report (Data Docs) under the data root",
    "privacy_requests.request_id": "random uuid4 of a `recsys forget` request",
    "privacy_requests.requested_at": "wall-clock start of a `recsys forget` request",
    "privacy_requests.completed_at": "wall-clock end of a `recsys forget` request",
}

FLOAT_TYPES = {"FLOAT", "DOUBLE", "REAL", "FLOAT4", "FLOAT8"}


def _duckdb_version() -> tuple[int, ...]:
    parts = []
    for p in duckdb.__version__.split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


# DuckDB 1.3 added `lambda x: ...`; newer releases reject the old `x -> ...`.
NEW_LAMBDA = _duckdb_version() >= (1, 3)


class UsageError(Exception):
    """Exit code 2: a root without a readable warehouse, a bad option."""


@dataclass
class Table:
    schema: str
    name: str
    columns: list[tuple[str, str]]  # (name, type) in table order

    @property
    def key(self) -> str:
        return self.name if self.schema == "main" else f"{self.schema}.{self.name}"


@dataclass
class Result:
    name: str
    rows: int | None = None
    reasons: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ helpers
def qident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def qstr(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def parse_ignores(values: list[str]) -> list[tuple[str, str]]:
    out = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            table, sep, col = item.rpartition(".")
            if not sep or not table or not col:
                raise UsageError(f"--ignore-columns: {item!r} is not table.column")
            out.append((table.lower(), col.lower()))
    return out


def is_ignored(table: str, column: str, ignores: list[tuple[str, str]]) -> bool:
    return any(fnmatch.fnmatchcase(table.lower(), t) and fnmatch.fnmatchcase(column.lower(), c) for t, c in ignores)


def list_tables(db: Path) -> dict[str, Table]:
    """Base tables (not views) of a warehouse file, opened read-only."""
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error as e:
        raise UsageError(f"cannot open {db} read-only: {e}") from e
    try:
        rows = con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() "
            "WHERE database_name = current_database() AND NOT temporary ORDER BY schema_name, table_name").fetchall()
        tables = {}
        for schema, name in rows:
            cols = con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
                "AND schema_name = ? AND table_name = ? ORDER BY column_index", [schema, name]).fetchall()
            t = Table(schema, name, [(c, str(ty)) for c, ty in cols])
            tables[t.key] = t
        return tables
    finally:
        con.close()


def digits_for(tolerance: float) -> int:
    if not (tolerance > 0 and tolerance < 1):
        raise UsageError(f"--float-tolerance must be in (0, 1), got {tolerance}")
    return max(1, math.ceil(-math.log10(tolerance) - 1e-9))


def rounded(expr: str, digits: int) -> str:
    """SQL rounding a DOUBLE expression to `digits` significant digits (NULL, 0, NaN, inf unchanged)."""
    x = f"({expr})::DOUBLE"
    return (f"CASE WHEN {x} IS NULL OR {x} = 0 OR isnan({x}) OR isinf({x}) THEN {x} "
            f"ELSE round({x}, ({digits - 1} - floor(log10(abs({x}))))::INTEGER) END")


def select_expr(col: str, typ: str, digits: int | None) -> str:
    q = qident(col)
    if digits is None:
        return q
    base = typ.upper()
    if base in FLOAT_TYPES:
        return f"{rounded(q, digits)} AS {q}"
    if base.endswith("[]") and base[:-2] in FLOAT_TYPES:
        fn = f"lambda x: {rounded('x', digits)}" if NEW_LAMBDA else f"x -> {rounded('x', digits)}"
        return f"list_transform({q}, {fn}) AS {q}"
    return q


def fmt_row(row: tuple) -> str:
    text = "(" + ", ".join(repr(v) for v in row) + ")"
    return text if len(text) <= 400 else text[:397] + "..."


# ---------------------------------------------------------------------------------------- DuckDB
def compare_table(con, ta: Table, tb: Table, ignores: list[tuple[str, str]], digits: int | None,
                  alias_b: str = "b") -> Result:
    res = Result(ta.key)
    ca = [(c, t) for c, t in ta.columns if not is_ignored(ta.key, c, ignores)]
    cb = [(c, t) for c, t in tb.columns if not is_ignored(tb.key, c, ignores)]
    da, db_ = dict(ca), dict(cb)
    only_a = [c for c, _ in ca if c not in db_]
    only_b = [c for c, _ in cb if c not in da]
    retyped = [f"{c} {da[c]} vs {db_[c]}" for c, _ in ca if c in db_ and da[c] != db_[c]]
    if only_a:
        res.reasons.append("columns only in A: " + ", ".join(only_a))
    if only_b:
        res.reasons.append("columns only in B: " + ", ".join(only_b))
    if retyped:
        res.reasons.append("column types differ: " + "; ".join(retyped))
    common = [(c, t) for c, t in ca if c in db_ and da[c] == db_[c]]
    if not only_a and not only_b and [c for c, _ in ca] != [c for c, _ in cb]:
        res.notes.append("column order differs")

    rel_a = f"a.{qident(ta.schema)}.{qident(ta.name)}"
    rel_b = f"{alias_b}.{qident(tb.schema)}.{qident(tb.name)}"
    na = con.execute(f"SELECT count(*) FROM {rel_a}").fetchone()[0]
    nb = con.execute(f"SELECT count(*) FROM {rel_b}").fetchone()[0]
    res.rows = na
    if na != nb:
        res.reasons.append(f"rows {na} vs {nb}")
    if not common:
        if na or nb:
            res.reasons.append("no column in common to compare rows on")
        return res
    cols = ", ".join(select_expr(c, t, digits) for c, t in common)
    names = [c for c, _ in common]
    sel_a, sel_b = f"SELECT {cols} FROM {rel_a}", f"SELECT {cols} FROM {rel_b}"
    extras = {}
    for side, first, second in (("A", sel_a, sel_b), ("B", sel_b, sel_a)):
        q = f"({first} EXCEPT ALL {second})"
        n = con.execute(f"SELECT count(*) FROM {q}").fetchone()[0]
        extras[side] = n
        if n:
            examples = con.execute(f"SELECT * FROM {q} LIMIT {EXAMPLES}").fetchall()
            res.details.append(f"  rows only in {side} ({n}), first {len(examples)}: columns ({', '.join(names)})")
            res.details.extend(f"    {side}: {fmt_row(r)}" for r in examples)
    if extras["A"] or extras["B"]:
        compared = "rows" if len(common) == len(ca) == len(cb) else f"rows (on {len(common)} common columns)"
        res.reasons.append(f"{compared} differ: {extras['A']} only in A, {extras['B']} only in B")
    return res


# --------------------------------------------------------------------------------------- Parquet
def parquet_files(root: Path) -> dict[str, int]:
    """Relative path (POSIX) -> rows (from the Parquet footer) for every file under warehouse/parquet;
    -1 for a file that is not readable Parquet (still part of the file set)."""
    base = root / PARQUET
    out: dict[str, int] = {}
    if not base.is_dir():
        return out
    for dirpath, _dirs, files in os.walk(base):
        for f in files:
            p = Path(dirpath) / f
            rel = p.relative_to(base).as_posix()
            rows = -1
            if f.endswith(".parquet") and not f.startswith((".", "_")):
                try:
                    rows = pq.ParquetFile(p).metadata.num_rows
                except Exception:  # noqa: BLE001 - reported as unreadable
                    rows = -1
            out[rel] = rows
    return out


def table_dir(rel: str) -> str:
    return rel.split("/", 1)[0] if "/" in rel else "(parquet root)"


def compare_parquet(files_a: dict[str, int], files_b: dict[str, int]) -> dict[str, tuple[list[str], int]]:
    """Per table directory: (reasons, rows in A)."""
    out: dict[str, tuple[list[str], int]] = {}
    for d in sorted({table_dir(r) for r in files_a} | {table_dir(r) for r in files_b}):
        fa = {r: n for r, n in files_a.items() if table_dir(r) == d}
        fb = {r: n for r, n in files_b.items() if table_dir(r) == d}
        reasons = []
        if not fa:
            reasons.append(f"parquet directory only in B ({len(fb)} files)")
        elif not fb:
            reasons.append(f"parquet directory only in A ({len(fa)} files)")
        else:
            oa, ob = sorted(set(fa) - set(fb)), sorted(set(fb) - set(fa))
            for side, only in (("A", oa), ("B", ob)):
                if only:
                    more = " ..." if len(only) > EXAMPLES else ""
                    reasons.append(f"parquet files only in {side}: {', '.join(only[:EXAMPLES])}{more}")
            bad = sorted(r for r in set(fa) | set(fb) if r.endswith(".parquet") and -1 in (fa.get(r, 0), fb.get(r, 0)))
            if bad:
                reasons.append(f"unreadable parquet files: {', '.join(bad[:EXAMPLES])}")
            ra = sum(n for n in fa.values() if n > 0)
            rb = sum(n for n in fb.values() if n > 0)
            if ra != rb:
                reasons.append(f"parquet rows {ra} vs {rb}")
        out[d] = (reasons, sum(n for n in fa.values() if n > 0))
    return out


# ------------------------------------------------------------------------------------------ main
def compare(root_a: Path, root_b: Path, ignores: list[tuple[str, str]], digits: int | None,
            threads: int | None = None) -> list[Result]:
    dba, dbb = root_a / WAREHOUSE, root_b / WAREHOUSE
    for db in (dba, dbb):
        if not db.is_file():
            raise UsageError(f"no warehouse file at {db}")
    tables_a, tables_b = list_tables(dba), list_tables(dbb)

    con = duckdb.connect()  # in-memory
    con.execute("SET preserve_insertion_order = false")  # less memory for EXCEPT ALL on big tables
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    same = dba.resolve() == dbb.resolve()
    alias_b = "a" if same else "b"  # one file cannot be attached twice: compared with itself
    con.execute(f"ATTACH {qstr(str(dba))} AS a (READ_ONLY)")
    if not same:
        con.execute(f"ATTACH {qstr(str(dbb))} AS b (READ_ONLY)")

    def count(alias: str, t: Table) -> int:
        return con.execute(f"SELECT count(*) FROM {alias}.{qident(t.schema)}.{qident(t.name)}").fetchone()[0]

    results: dict[str, Result] = {}
    try:
        for key in sorted(set(tables_a) | set(tables_b)):
            if key not in tables_b:
                n = count("a", tables_a[key])
                results[key] = Result(key, n, [f"table only in A ({n} rows)"])
            elif key not in tables_a:
                n = count(alias_b, tables_b[key])
                results[key] = Result(key, None, [f"table only in B ({n} rows)"])
            else:
                results[key] = compare_table(con, tables_a[key], tables_b[key], ignores, digits, alias_b)
    finally:
        con.close()

    for d, (reasons, rows) in compare_parquet(parquet_files(root_a), parquet_files(root_b)).items():
        r = results.get(d)
        if r is None:
            r = results[d] = Result(d, rows)
            r.notes.append("parquet only")
        r.reasons.extend(reasons)
    return [results[k] for k in sorted(results)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="compare_roots", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root_a", type=Path)
    p.add_argument("root_b", type=Path)
    p.add_argument("--ignore-columns", action="append", default=[], metavar="TABLE.COL,...",
                   help="more columns to leave out (table.col; *.col for every table); repeatable")
    p.add_argument("--no-default-ignores", action="store_true",
                   help="compare the default-excluded columns too: " + ", ".join(DEFAULT_IGNORES))
    p.add_argument("--float-tolerance", type=float, default=None, metavar="X",
                   help="round FLOAT/DOUBLE columns to ceil(-log10(X)) significant digits (default: exact)")
    p.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: DuckDB's)")
    args = p.parse_args(argv)
    try:
        ignores = parse_ignores(args.ignore_columns)
        if not args.no_default_ignores:
            ignores = parse_ignores(list(DEFAULT_IGNORES)) + ignores
        digits = None if args.float_tolerance is None else digits_for(args.float_tolerance)
        print(f"compare_roots: A={args.root_a} B={args.root_b}")
        print("compare_roots: excluded columns: " + (", ".join(f"{t}.{c}" for t, c in ignores) or "none")
              + "; floats: " + ("exact" if digits is None else f"{digits} significant digits"))
        results = compare(args.root_a, args.root_b, ignores, digits, args.threads)
    except UsageError as e:
        print(f"compare_roots: error: {e}", file=sys.stderr)
        return 2
    differ = 0
    for r in results:
        note = f" ({'; '.join(r.notes)})" if r.notes else ""
        if r.reasons:
            differ += 1
            print(f"DIFF {r.name}: {'; '.join(r.reasons)}{note}")
            for line in r.details:
                print(line)
        else:
            print(f"OK {r.name} rows={r.rows}{note}")
    print(f"compare_roots: {len(results) - differ} tables equal, {differ} differ")
    sys.stdout.flush()
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
