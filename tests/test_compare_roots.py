"""benchmarks/compare_roots.py on two hand-built data roots (no pipeline run)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "compare_roots.py"


def load_script():
    spec = importlib.util.spec_from_file_location("compare_roots", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


compare_roots = load_script()


def make_root(root: Path, *, score: float = 0.5, extra_table: bool = False, docs: str = "/x/validation",
              parquet_rows: int = 2) -> Path:
    """A data root with a tiny warehouse: `same` (identical on both sides), `scores` (one value
    given by `score`), `validation_runs` (data_docs: a path, excluded by default), optionally `extra`,
    and a view; plus a Parquet copy of `same`."""
    db = root / "warehouse" / "recsys.duckdb"
    db.parent.mkdir(parents=True)
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE same (ds DATE, run_id VARCHAR, item_id VARCHAR, n BIGINT)")
    con.execute("INSERT INTO same VALUES ('2026-11-29', 'cmp', 'i1', 1), ('2026-11-29', 'cmp', 'i1', 1), "
                "('2026-11-29', 'cmp', 'i2', 3)")
    con.execute("CREATE TABLE scores (user_id VARCHAR, item_id VARCHAR, score DOUBLE, parts FLOAT[])")
    con.execute("INSERT INTO scores VALUES ('u1', 'i1', 0.25, [0.25, 1]), ('u1', 'i2', $s, [$s, 1]), "
                "('u2', 'i1', 0.125, NULL)", {"s": score})
    con.execute("CREATE TABLE validation_runs (ds DATE, run_id VARCHAR, rows_in BIGINT, data_docs VARCHAR)")
    con.execute("INSERT INTO validation_runs VALUES ('2026-11-29', 'cmp', 10, ?)", [docs])
    con.execute("CREATE VIEW latest_same AS SELECT * FROM same")
    if extra_table:
        con.execute("CREATE TABLE extra AS SELECT 1 AS x")
    con.close()
    part = root / "warehouse" / "parquet" / "same" / "ds=2026-11-29"
    part.mkdir(parents=True)
    pq.write_table(pa.table({"item_id": [f"i{k}" for k in range(parquet_rows)]}), part / "part-0.parquet")
    return root


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], check=False, capture_output=True, text=True,
                          timeout=120)


def lines(out: str, prefix: str) -> dict[str, str]:
    return {ln.split()[1].rstrip(":"): ln for ln in out.splitlines() if ln.startswith(prefix + " ")}


def test_identical_roots_are_equal_and_excluded_path_does_not_count(tmp_path):
    a = make_root(tmp_path / "a", docs=str(tmp_path / "a" / "validation"))
    b = make_root(tmp_path / "b", docs=str(tmp_path / "b" / "validation"))
    p = run(a, b)
    assert p.returncode == 0, p.stdout + p.stderr
    ok = lines(p.stdout, "OK")
    assert set(ok) == {"same", "scores", "validation_runs"}  # the view latest_same is not a table
    assert "OK same rows=3" in p.stdout
    assert p.stdout.strip().splitlines()[-1] == "compare_roots: 3 tables equal, 0 differ"
    # Without the default exclusions, the data root in the path is a difference.
    p = run(a, b, "--no-default-ignores")
    assert p.returncode == 1
    assert set(lines(p.stdout, "DIFF")) == {"validation_runs"}


def test_differences_named_with_exit_code_1(tmp_path):
    a = make_root(tmp_path / "a", score=0.5, extra_table=True)
    b = make_root(tmp_path / "b", score=0.5000001)
    p = run(a, b)
    assert p.returncode == 1, p.stdout + p.stderr
    diff, ok = lines(p.stdout, "DIFF"), lines(p.stdout, "OK")
    assert set(diff) == {"scores", "extra"}
    assert set(ok) == {"same", "validation_runs"}
    assert "table only in A" in diff["extra"]
    assert "1 only in A, 1 only in B" in diff["scores"]
    assert "A: ('u1', 'i2', 0.5, [0.5, 1.0])" in p.stdout
    assert "B: ('u1', 'i2', 0.5000001, [0.5000001" in p.stdout
    assert p.stdout.strip().splitlines()[-1] == "compare_roots: 2 tables equal, 2 differ"
    # A relative tolerance of 1e-6 absorbs the float differences (DOUBLE and FLOAT[]); the
    # missing table remains. 1e-9 does not.
    p = run(a, b, "--float-tolerance", "1e-6")
    assert p.returncode == 1
    assert set(lines(p.stdout, "DIFF")) == {"extra"}
    p = run(a, b, "--float-tolerance", "1e-9")
    assert set(lines(p.stdout, "DIFF")) == {"scores", "extra"}


def test_excluded_timestamp_columns(tmp_path):
    """Wall-clock columns differing between the runs: the default exclusions (privacy_requests'
    request times and random request id) do not count; another one counts unless excluded."""
    roots = []
    for name, stamp, request in (("a", "2026-11-30 02:00:01", "9f1c"), ("b", "2026-11-30 02:07:13", "03ab")):
        root = make_root(tmp_path / name)
        con = duckdb.connect(str(root / "warehouse" / "recsys.duckdb"))
        con.execute("CREATE TABLE privacy_requests (request_id VARCHAR, kind VARCHAR, requested_at TIMESTAMPTZ, "
                    "completed_at TIMESTAMPTZ, warehouse_rows_removed BIGINT)")
        con.execute("INSERT INTO privacy_requests VALUES (?, 'forget', ?::TIMESTAMPTZ, ?::TIMESTAMPTZ + INTERVAL 2 "
                    "SECOND, 47)", [request, stamp, stamp])
        con.close()
        roots.append(root)
    args = [str(r) for r in roots]
    assert compare_roots.main(args) == 0
    assert compare_roots.main(args + ["--no-default-ignores"]) == 1
    for root, stamp in zip(roots, ("2026-11-30 02:00:01", "2026-11-30 02:07:13")):
        con = duckdb.connect(str(root / "warehouse" / "recsys.duckdb"))
        con.execute("CREATE TABLE runs (ds DATE, run_id VARCHAR, validated_at TIMESTAMP)")
        con.execute("INSERT INTO runs VALUES ('2026-11-29', 'cmp', ?::TIMESTAMP)", [stamp])
        con.close()
    assert compare_roots.main(args) == 1
    assert compare_roots.main(args + ["--ignore-columns", "runs.validated_at"]) == 0
    assert compare_roots.main(args + ["--ignore-columns", "*.validated_at"]) == 0
    # The excluded columns still count where a real column differs.
    con = duckdb.connect(str(roots[1] / "warehouse" / "recsys.duckdb"))
    con.execute("UPDATE privacy_requests SET warehouse_rows_removed = 46")
    con.close()
    assert compare_roots.main(args + ["--ignore-columns", "*.validated_at"]) == 1


def test_parquet_copies_compared(tmp_path):
    a = make_root(tmp_path / "a", parquet_rows=2)
    b = make_root(tmp_path / "b", parquet_rows=3)
    extra = b / "warehouse" / "parquet" / "same" / "ds=2026-11-28"
    extra.mkdir()
    pq.write_table(pa.table({"x": [1]}), extra / "part-0.parquet")
    p = run(a, b)
    assert p.returncode == 1
    diff = lines(p.stdout, "DIFF")
    assert set(diff) == {"same"}
    assert "parquet files only in B: same/ds=2026-11-28/part-0.parquet" in diff["same"]
    assert "parquet rows 2 vs 4" in diff["same"]


def test_missing_warehouse_exit_2(tmp_path, capsys):
    a = make_root(tmp_path / "a")
    (tmp_path / "empty").mkdir()
    assert compare_roots.main([str(a), str(tmp_path / "empty")]) == 2
    assert "no warehouse file at" in capsys.readouterr().err
    p = run(tmp_path / "nowhere", a)
    assert p.returncode == 2 and "no warehouse file at" in p.stderr


def test_same_root_twice(tmp_path):
    a = make_root(tmp_path / "a")
    assert compare_roots.main([str(a), str(a)]) == 0


@pytest.mark.parametrize("bad", [["--ignore-columns", "nodot"], ["--float-tolerance", "0"]])
def test_usage_errors_exit_2(tmp_path, bad):
    a = make_root(tmp_path / "a")
    assert compare_roots.main([str(a), str(a), *bad]) == 2
