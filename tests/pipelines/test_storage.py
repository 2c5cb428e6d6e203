"""Atomic, per-ds publishing to DuckDB and Parquet."""
from datetime import date

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.infra.warehouse import publish_tables


def recs(ds: str, n: int, tag: str) -> pa.Table:
    return pa.table({"ds": [date.fromisoformat(ds)] * n, "run_id": [tag] * n, "rank": list(range(1, n + 1))})


def runs(ds: str, value) -> pa.Table:
    return pa.table({"ds": [date.fromisoformat(ds)], "metric": ["ndcg"], "value": pa.array([value])})


def rows(db, table):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(f"SELECT ds::VARCHAR, run_id, count(*) FROM {table} GROUP BY ALL ORDER BY ALL").fetchall()
    finally:
        con.close()


def test_rerun_replaces_only_its_ds(tmp_path):
    db, root = tmp_path / "w.duckdb", tmp_path / "parquet"
    publish_tables(db, root, "2024-01-01", {"recs": recs("2024-01-01", 3, "a")})
    publish_tables(db, root, "2024-01-02", {"recs": recs("2024-01-02", 4, "b")})
    publish_tables(db, root, "2024-01-01", {"recs": recs("2024-01-01", 2, "c")})
    assert rows(db, "recs") == [("2024-01-01", "c", 2), ("2024-01-02", "b", 4)]
    assert pq.read_table(root / "recs" / "ds=2024-01-01" / "part-0.parquet").num_rows == 2
    assert pq.read_table(root / "recs" / "ds=2024-01-02" / "part-0.parquet").num_rows == 4
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT DISTINCT ds::VARCHAR FROM latest_recs").fetchall() == [("2024-01-02",)]
    con.close()


def test_failed_publish_leaves_every_table_as_it_was(tmp_path):
    db, root = tmp_path / "w.duckdb", tmp_path / "parquet"
    publish_tables(db, root, "2024-01-01", {"recs": recs("2024-01-01", 3, "a"), "runs": runs("2024-01-01", 0.5)})
    before = (root / "recs" / "ds=2024-01-01" / "part-0.parquet").read_bytes()
    # The second table cannot be inserted (text into a DOUBLE column): the whole ds must roll back.
    with pytest.raises(duckdb.Error):
        publish_tables(db, root, "2024-01-01", {"recs": recs("2024-01-01", 9, "z"), "runs": runs("2024-01-01", "oops")})
    assert rows(db, "recs") == [("2024-01-01", "a", 3)]
    assert (root / "recs" / "ds=2024-01-01" / "part-0.parquet").read_bytes() == before
    assert not list(root.rglob(".*staged*"))  # no temporary files left behind


def test_an_empty_night_never_fixes_a_tables_types(tmp_path):
    """A night without rows publishes its tables empty (pandas typed its list column as null, cast to
    text); the first night with rows gives the table its real types; later empty nights change nothing."""
    db, root = tmp_path / "w.duckdb", tmp_path / "parquet"

    def email(ds: str, items: list) -> pa.Table:
        typ = pa.list_(pa.string()) if items else pa.string()  # what an empty frame arrives as
        return pa.table({"ds": pa.array([date.fromisoformat(ds)] * len(items), pa.date32()),
                         "user_id": pa.array([f"u{k}" for k in range(len(items))], pa.string()),
                         "items": pa.array(items, typ)})

    assert publish_tables(db, root, "2024-01-01", {"email": email("2024-01-01", [])}) == {"email": 0}
    assert publish_tables(db, root, "2024-01-02", {"email": email("2024-01-02", [["a", "b"], ["c"]])}) == {"email": 2}
    assert publish_tables(db, root, "2024-01-03", {"email": email("2024-01-03", [])}) == {"email": 0}
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT data_type FROM information_schema.columns WHERE table_name = 'email' "
                           "AND column_name = 'items'").fetchall() == [("VARCHAR[]",)]
        assert con.execute("SELECT ds::VARCHAR, items FROM email ORDER BY user_id").fetchall() == [
            ("2024-01-02", ["a", "b"]), ("2024-01-02", ["c"])]
    finally:
        con.close()


def test_scratch_duckdb_spills_in_its_own_folder_and_clears_a_killed_steps(tmp_path):
    """The folder is removed at the end; a folder left by a dead process of this host is removed by
    the next connection; a live process's folder and another host's are kept."""
    import os
    import re
    import subprocess

    from pipelines.infra.storage import SPILL_PREFIX, scratch_duckdb

    host = re.sub(r"[^A-Za-z0-9.]", "_", os.uname().nodename)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"{SPILL_PREFIX}{host}-{dead.pid}-abc"
    live = tmp_path / f"{SPILL_PREFIX}{host}-{os.getpid()}-def"
    other = tmp_path / f"{SPILL_PREFIX}otherhost-{dead.pid}-ghi"
    for d in (stale, live, other):
        d.mkdir()
    with scratch_duckdb("100MB", tmp_path) as con:
        mine = [p for p in tmp_path.iterdir() if p not in (live, other)]
        assert len(mine) == 1 and mine[0].name.startswith(f"{SPILL_PREFIX}{host}-{os.getpid()}-")
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        assert limit != duckdb.connect().execute("SELECT current_setting('memory_limit')").fetchone()[0]
        assert con.execute("SELECT count(*) FROM range(1000)").fetchone()[0] == 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
