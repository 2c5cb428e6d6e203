"""Publish is one transaction across DuckDB and the Parquet copies: a real SIGKILL at any named
instant leaves both stores on the same run (after the recovery that the next warehouse command
runs: here ``warehouse.connect_readonly``), no staged file survives, readers never fail the
publish and always see a complete ds, and latest_ views ignore future dates."""
import os
import subprocess
import sys
import textwrap
import time
from datetime import date, datetime, timedelta, timezone

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.artifacts import layout
from pipelines.infra import journal, warehouse
from pipelines.infra.faults import FAULT_POINTS
from pipelines.infra.warehouse import LOG_TABLES, WarehouseBusy, publish_tables
from pipelines.run import run_step
from tests.conftest import BASE_DS, BIN, REPO

# (fault point, the run both stores must show after the kill and the recovery)
# (publish.parquet_staged and publish.journal_written are the same cases a step earlier or later;
# the chaos script runs every point of FAULT_POINTS.)
CRASHES = [("publish.duckdb_staged", "old"), ("publish.mid_replace", "new"), ("publish.before_journal_delete", "new")]


def published(cfg) -> list[str]:
    root = layout(cfg).parquet_root
    return sorted(p.name for p in root.iterdir() if (p / f"ds={BASE_DS}").exists() and p.name not in LOG_TABLES)


def run_ids(cfg) -> dict[str, tuple[set, set]]:
    """Per published table: (run ids of BASE_DS in DuckDB, run ids in its Parquet copy)."""
    con = warehouse.connect_readonly(cfg)  # the next warehouse command: finishes or discards a killed writer
    try:
        out = {}
        for t in published(cfg):
            duck = {r[0] for r in con.execute(f'SELECT DISTINCT run_id FROM "{t}" WHERE ds = ?::DATE', [BASE_DS]).fetchall()}
            parq = set(pq.read_table(layout(cfg).table_file(t, BASE_DS), columns=["run_id"]).column("run_id").to_pylist())
            out[t] = (duck, parq)
        return out
    finally:
        con.close()


def staged_files(cfg) -> list:
    return [p for p in cfg.home.rglob("*") if ".staged-" in p.name]


def publish_in_subprocess(cfg, run_id: str, fault: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECSYS_HOME": str(cfg.home)}
    env.pop("RECSYS_FAULT_POINT", None)
    if fault:
        env["RECSYS_FAULT_POINT"] = fault
    return subprocess.run([str(BIN / "recsys"), "-q", "run", "--ds", BASE_DS, "--step", "publish", "--run-id", run_id],
                          env=env, capture_output=True, text=True, timeout=300)


def test_fault_points_are_listed():
    assert len(FAULT_POINTS) == len(set(FAULT_POINTS)) and "publish.parquet_staged" in FAULT_POINTS
    assert {p for p, _ in CRASHES} <= set(FAULT_POINTS)
    assert {"validation.journal_written", "forget.files_staged", "forget.mid_replace"} <= set(FAULT_POINTS)


def test_a_kill_at_any_instant_of_publish_leaves_both_stores_on_one_run(home):
    tables = published(home)
    assert {"user_recommendations", "similar_items", "model_runs", "best_sellers"} <= set(tables)
    current = "baseline"
    assert all(v == ({current}, {current}) for t, v in run_ids(home).items() if v != (set(), set()))
    for k, (point, expect) in enumerate(CRASHES):
        run_id = f"killed-{k}"
        res = publish_in_subprocess(home, run_id, point)
        assert res.returncode == -9, (point, res.returncode, res.stderr[-2000:])
        current = run_id if expect == "new" else current
        seen = run_ids(home)
        for t, (duck, parq) in seen.items():
            assert duck == parq, (point, t, duck, parq)
            assert duck in (set(), {current}), (point, t, duck)
        assert sum(bool(d) for d, _ in seen.values()) >= 4
        assert staged_files(home) == [], point
    res = publish_in_subprocess(home, "rerun", None)
    assert res.returncode == 0, res.stderr[-2000:]
    for t, (duck, parq) in run_ids(home).items():
        assert duck == parq and duck in (set(), {"rerun"}), t
    assert staged_files(home) == []
    assert not list(layout(home).warehouse.glob("recsys.duckdb.journal*"))


READER = textwrap.dedent("""
    import duckdb, sys, time, pathlib
    db, ds, mode, stop = sys.argv[1], sys.argv[2], sys.argv[3], pathlib.Path(sys.argv[4])
    q = ("SELECT count(*), count(DISTINCT run_id), min(run_id) FROM user_recommendations WHERE ds = '" + ds + "'")
    if mode == "hold":
        con = duckdb.connect(db, read_only=True)
        print("before", *con.execute(q).fetchone(), flush=True)
        while not stop.exists():
            time.sleep(0.05)
        print("after", *con.execute(q).fetchone(), flush=True)
    else:
        while not stop.exists():
            try:
                con = duckdb.connect(db, read_only=True)
                print("seen", *con.execute(q).fetchone(), flush=True)
                con.close()
            except Exception as exc:
                print("error", " ".join(str(exc).split()), flush=True)
            time.sleep(0.02)
""")


def test_readers_never_fail_the_publish_and_see_a_complete_ds(home, tmp_path):
    db = str(layout(home).duckdb_path)
    con = duckdb.connect(db, read_only=True)
    n_old = con.execute("SELECT count(*) FROM user_recommendations WHERE ds = ?::DATE", [BASE_DS]).fetchone()[0]
    con.close()
    stop = tmp_path / "stop"
    script = tmp_path / "reader.py"
    script.write_text(READER)
    holder = subprocess.Popen([sys.executable, str(script), db, BASE_DS, "hold", str(stop)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().split() == ["before", str(n_old), "1", "baseline"]
    poller = subprocess.Popen([sys.executable, str(script), db, BASE_DS, "poll", str(stop)], stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    try:
        res = run_step("publish", home, BASE_DS, "during-readers")
    finally:
        time.sleep(0.5)
        stop.touch()
        held, _ = holder.communicate(timeout=60)
        polled, _ = poller.communicate(timeout=60)
    n_new = res["rows"]["user_recommendations"]
    assert held.split() == ["after", str(n_old), "1", "baseline"]  # the held connection: the old ds, whole
    seen = [line.split() for line in polled.splitlines()]
    assert [s for s in seen if s[0] != "seen"] == []
    assert len(seen) > 5
    # Every answer is one whole ds, the old or the new one; both were seen (before and after the swap).
    assert {tuple(s[1:]) for s in seen} == {(str(n_old), "1", "baseline"), (str(n_new), "1", "during-readers")}
    con = duckdb.connect(db, read_only=True)
    assert con.execute("SELECT count(*), min(run_id), max(run_id) FROM user_recommendations WHERE ds = ?::DATE",
                       [BASE_DS]).fetchone() == (n_new, "during-readers", "during-readers")
    con.close()


def test_a_read_write_connection_elsewhere_does_not_fail_a_publish(tmp_path):
    db, root = tmp_path / "w.duckdb", tmp_path / "parquet"
    t = pa.table({"ds": [date(2024, 1, 1)] * 3, "run_id": ["a"] * 3, "x": [1, 2, 3]})
    publish_tables(db, root, "2024-01-01", {"recs": t})
    analyst = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                                "print('open', flush=True); time.sleep(60)", str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert analyst.stdout.readline().strip() == "open"
        publish_tables(db, root, "2024-01-01", {"recs": t.set_column(1, "run_id", pa.array(["b"] * 3))})
    finally:
        analyst.kill()
        analyst.wait()
    con = warehouse.connect_readonly(db)
    assert con.execute("SELECT DISTINCT run_id FROM recs").fetchall() == [("b",)]
    con.close()


def test_latest_views_ignore_a_future_ds(tmp_path):
    db, root = tmp_path / "w.duckdb", tmp_path / "parquet"
    today = datetime.now(timezone.utc).date()
    days = [today - timedelta(days=10), today + timedelta(days=200), today - timedelta(days=1)]
    for k, d in enumerate(days):
        publish_tables(db, root, d.isoformat(), {"recs": pa.table({"ds": [d] * (k + 1), "run_id": [f"r{k}"] * (k + 1)})})
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT ds, count(*) FROM latest_recs GROUP BY ds").fetchall() == [(today - timedelta(days=1), 3)]
    con.close()


RECORD = textwrap.dedent("""
    import sys
    from pathlib import Path
    import pyarrow as pa
    from pipelines.infra.warehouse import record_validation
    row = dict(ds="2024-01-02", run_id=sys.argv[2], dataset="events", rows_in=5, rows_valid=5, rows_quarantined=0,
               success=True, partitions=1, rule_counts="{}", warnings="[]", message=None, data_docs=None)
    record_validation(Path(sys.argv[1]), "2024-01-02", sys.argv[2], [row], pa.table({"ds": pa.array([], pa.date32()),
                      "run_id": pa.array([], pa.string()), "event_date": pa.array([], pa.string())}), [])
""")


def test_a_killed_validation_record_leaves_both_stores_on_one_run(tmp_path):
    db = tmp_path / "warehouse" / "recsys.duckdb"
    script = tmp_path / "record.py"
    script.write_text(RECORD)

    def record(run_id: str, fault: str | None) -> int:
        env = {k: v for k, v in os.environ.items() if k != "RECSYS_FAULT_POINT"}
        env.update({"RECSYS_FAULT_POINT": fault} if fault else {})
        return subprocess.run([sys.executable, str(script), str(db), run_id], env=env, cwd=str(REPO), timeout=120,
                              capture_output=True).returncode

    def stores() -> tuple[set, set]:
        con = warehouse.connect_readonly(db)  # recovers first
        # Every run is in the history (validation_runs keeps the newest run of the ds only).
        duck = {r[0] for r in con.execute("SELECT run_id FROM validation_runs_history").fetchall()}
        con.close()
        copy = warehouse.log_root(db) / "validation_runs_history" / "ds=2024-01-02" / "part-0.parquet"
        return duck, set(pq.read_table(copy).column("run_id").to_pylist())

    assert record("first", None) == 0
    assert stores() == ({"first"}, {"first"})
    assert record("lost", "validation.duckdb_staged") == -9
    assert stores() == ({"first"}, {"first"})
    assert record("kept", "validation.mid_replace") == -9
    assert stores() == ({"first", "kept"}, {"first", "kept"})
    assert not [p for p in tmp_path.rglob("*") if ".staged-" in p.name]


def test_a_second_writer_waits_then_names_the_holder(tmp_path):
    db, root = tmp_path / "w.duckdb", tmp_path / "parquet"
    with journal.write_lock(db, "publish ds=2024-01-01"):
        with pytest.raises(WarehouseBusy, match=r"being written by another process \(.*publish ds=2024-01-01.*waited 1 s"):
            with warehouse.transaction(db, root, "publish", timeout_s=0.6):
                pass
    with warehouse.transaction(db, root, "publish", timeout_s=0.6) as tx:  # free again
        tx.connection().execute("CREATE TABLE t AS SELECT 1 AS x")
    assert warehouse.connect_readonly(db).execute("SELECT x FROM t").fetchall() == [(1,)]
