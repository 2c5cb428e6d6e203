"""recsys_nightly through Airflow: dag.test() in-process, and the real scheduler via the REST API."""
import subprocess
import time

import duckdb
import pandas as pd
import pytest
import requests

from pipelines.artifacts import layout
from tests.dags.airflow_helpers import BIN, DS, demo_home, free_port, stop


def published(cfg) -> pd.DataFrame:
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    try:
        return con.execute("SELECT user_id, count(*) AS n FROM user_recommendations WHERE ds = ?::DATE "
                           "AND surface = 'for_you' GROUP BY 1",
                           [DS]).df()
    finally:
        con.close()


def demo_users(cfg) -> int:
    import pyarrow.parquet as pq

    files = sorted((layout(cfg).validated / "events").glob("event_date=*/part.parquet"))
    return pd.concat([pq.read_table(f).to_pandas() for f in files])["user_id"].nunique()


def test_airflow_test_runs_every_task_and_names_the_run_after_its_ds(tmp_path):
    """`recsys airflow-test --ds DS` (dag.test()): every task runs, and the run shows the ds it built: run
    id, logical date and data interval DS's UTC day, its real start (not DS 00:00), a note, the ds in
    the XCom, and publish's asset events carry it."""
    import json
    import sqlite3
    from datetime import datetime, timezone

    cfg, env = demo_home(tmp_path / "var")
    before = datetime.now(timezone.utc).replace(microsecond=0)
    out = subprocess.run([str(BIN / "recsys"), "airflow-test", "--ds", DS], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0 and "state: success" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    assert "  task validate ...\n" in out.stdout and "  task publish ...\n" in out.stdout  # progress lines
    rows = published(cfg)
    assert len(rows) == demo_users(cfg) and (rows["n"] == 20).all()
    db = sqlite3.connect(layout(cfg).airflow_dir / "airflow.db")
    runs = db.execute("SELECT r.run_id, r.run_type, r.state, r.logical_date, r.data_interval_start, "
                      "r.data_interval_end, r.start_date, r.end_date, n.content FROM dag_run r LEFT JOIN dag_run_note n "
                      "ON n.dag_run_id = r.id WHERE r.dag_id = 'recsys_nightly'").fetchall()
    assert len(runs) == 1, runs
    run_id, run_type, state, logical, start, end, started, ended, note = runs[0]
    t = lambda v: pd.Timestamp(v).tz_localize("UTC") if pd.Timestamp(v).tzinfo is None else pd.Timestamp(v)
    day = pd.Timestamp(f"{DS}T00:00:00", tz="UTC")
    assert (run_type, state, note) == ("manual", "success", f"ds={DS} (recsys airflow-test)")
    assert run_id.startswith(f"manual__ds_{DS}__") and t(run_id.split("__")[2]) >= pd.Timestamp(before)
    assert (t(logical), t(start), t(end)) == (day, day, day + pd.Timedelta(days=1))
    # The run's start is when it started, so its duration is the run's own (was DS 00:00: "1d 08:36").
    assert pd.Timestamp(before) <= t(started) <= t(ended) <= pd.Timestamp(datetime.now(timezone.utc))
    # The nightly's publish emitted one asset event per published table family, each carrying DS.
    events = db.execute("SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                        "WHERE e.source_run_id = ?", [run_id]).fetchall()
    assert sorted((u, json.loads(x)) for u, x in events) == [
        (f"x-recsys://warehouse/{f}", {"ds": DS}) for f in ("email", "item_surfaces", "model_runs", "personal_lists")]
    xcom = db.execute("SELECT value FROM xcom WHERE run_id = ? AND task_id = 'validate' AND key = 'return_value'",
                      [run_id]).fetchone()
    assert json.loads(xcom[0])["ds"] == DS
    db.close()


EXPERIMENT = """
experiments:
  - id: e2e-exp
    start: 2024-06-20
    end: 2024-07-20
    variants:
      - {name: control, share: 0.5, lists: current}
      - {name: treatment, share: 0.5, lists: champion}
roi: {daily_visitors: 1000, period_days: 30, cost: 100}
"""


@pytest.mark.slow
def test_scheduler_runs_dag_triggered_through_rest_api(tmp_path):
    cfg, env = demo_home(tmp_path / "var")
    # An experiment running on DS and simulated outcome events for it: recsys_ab_report runs after the nightly.

    from pipelines.dev.ab_sim import simulate
    from pipelines.services.ab import load_experiments
    from pipelines.services.ab_report import import_outcomes

    env["RECSYS_PUBLISH_SHARDS"] = "3"  # the scheduler maps the score step over three user shards
    (tmp_path / "experiments.yaml").write_text(EXPERIMENT)
    env["RECSYS_EXPERIMENTS_FILE"] = str(tmp_path / "experiments.yaml")
    cfg = cfg.replace(experiments_file=str(tmp_path / "experiments.yaml"))
    exp = load_experiments(cfg).experiments[0]
    _, events = simulate(exp, 3000, seed=1, lift={"treatment": 0.05}, days=11)
    events.to_csv(tmp_path / "outcomes.csv", index=False)
    assert import_outcomes(cfg, tmp_path / "outcomes.csv") == len(events)
    port = free_port()
    env.update({"AIRFLOW__API__PORT": str(port), "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5"})
    log = open(tmp_path / "standalone.log", "w")
    proc = subprocess.Popen([str(BIN / "airflow"), "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def wait_for(what, fn, timeout):
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                assert proc.poll() is None, f"airflow standalone exited: {(tmp_path / 'standalone.log').read_text()[-3000:]}"
                try:
                    if (value := fn()) is not None:
                        return value
                except requests.RequestException:
                    pass
                time.sleep(2)
            raise AssertionError(f"timed out waiting for {what}; log tail:\n"
                                 f"{(tmp_path / 'standalone.log').read_text()[-3000:]}")

        wait_for("API server", lambda: requests.get(f"{base}/api/v2/monitor/health", timeout=5).ok or None, 240)
        pw_file = layout(cfg).airflow_dir / "simple_auth_manager_passwords.json.generated"
        password = wait_for("password file", lambda: pw_file.exists() and
                            __import__("json").loads(pw_file.read_text()).get("admin"), 60)
        token = requests.post(f"{base}/auth/token", json={"username": "admin", "password": password},
                              timeout=10).json()["access_token"]
        h = {"Authorization": f"Bearer {token}"}
        details = wait_for("DAG parsed", lambda: (r := requests.get(f"{base}/api/v2/dags/recsys_nightly/details",
                                                                    headers=h, timeout=10)).ok and r.json(), 180)
        assert "recsys_nightly" in details["doc_md"] and set(details["tags"][i]["name"] for i in range(2)) == \
            {"recsys", "nightly"}
        def unpause(dag_id: str) -> None:
            assert requests.patch(f"{base}/api/v2/dags/{dag_id}", json={"is_paused": False}, headers=h,
                                  timeout=10).ok

        def run_state(dag_id: str, run_id: str) -> str | None:
            state = requests.get(f"{base}/api/v2/dags/{dag_id}/dagRuns/{run_id}", headers=h, timeout=10).json()["state"]
            return state if state in ("success", "failed") else None

        # The report DAG is scheduled on publish's personal-lists Asset: unpaused first, it runs by itself
        # once the nightly has published, for the ds in the asset event (no trigger, no 05:00 cron).
        unpause("recsys_ab_report")
        unpause("recsys_nightly")
        # A manual REST trigger whose logical date is DS 00:00 UTC names DS (the resolve_ds rule).
        r = requests.post(f"{base}/api/v2/dags/recsys_nightly/dagRuns", headers=h, timeout=10,
                          json={"dag_run_id": "e2e_test", "logical_date": f"{DS}T00:00:00Z"})
        assert r.ok, r.text
        assert wait_for("the recsys_nightly run", lambda: run_state("recsys_nightly", "e2e_test"), 900) == "success"
        tis = requests.get(f"{base}/api/v2/dags/recsys_nightly/dagRuns/e2e_test/taskInstances", headers=h,
                           timeout=10).json()["task_instances"]
        states = sorted((t["task_id"], t["map_index"], t["state"]) for t in tis)
        steps = ("validate", "features", "train", "evaluate", "rank", "select", "surfaces", "publish", "export")
        # The score step ran as three mapped tasks (one per user shard) under the LocalExecutor.
        assert states == sorted([(t, -1, "success") for t in steps] + [("score", k, "success") for k in range(3)])
        # The built ds is in the tasks' XCom (shown in the UI), and publish's asset event carries it.
        xcom = requests.get(f"{base}/api/v2/dags/recsys_nightly/dagRuns/e2e_test/taskInstances/validate/xcomEntries/"
                            "return_value", headers=h, timeout=10).json()["value"]
        assert (xcom if isinstance(xcom, dict) else __import__("json").loads(xcom))["ds"] == DS
        events = requests.get(f"{base}/api/v2/assets/events", params={"source_run_id": "e2e_test"}, headers=h,
                              timeout=10).json()["asset_events"]
        assert sorted((e["uri"], e["extra"]) for e in events) == [
            (f"x-recsys://warehouse/{f}", {"ds": DS}) for f in ("email", "item_surfaces", "model_runs", "personal_lists")]

        # The report run that e2e_test's personal-lists event started (unpausing the nightly also started
        # a scheduled run, for the day before today, whose publish starts a report run of its own).
        def report_run():
            evs = requests.get(f"{base}/api/v2/assets/events", params={"source_run_id": "e2e_test"}, headers=h,
                               timeout=10).json()["asset_events"]
            runs = [r for e in evs if e["uri"].endswith("/personal_lists") for r in e["created_dagruns"]]
            return runs or None

        ab_runs = wait_for("the asset-triggered recsys_ab_report run", report_run, 300)
        assert [r["dag_id"] for r in ab_runs] == ["recsys_ab_report"], ab_runs
        ab_run_id = ab_runs[0]["run_id"]
        assert wait_for("the recsys_ab_report run", lambda: run_state("recsys_ab_report", ab_run_id), 300) == "success"
        ab_run = requests.get(f"{base}/api/v2/dags/recsys_ab_report/dagRuns/{ab_run_id}", headers=h, timeout=10).json()
        assert ab_run["run_type"] == "asset_triggered" and ab_run["logical_date"] is None
        ui = requests.get(f"{base}/", timeout=10)
        assert ui.ok and "<html" in ui.text.lower()
    finally:
        stop(proc)
        log.close()
    rows = published(cfg)
    assert len(rows) == demo_users(cfg) and (rows["n"] == 20).all()
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    assert con.execute("SELECT DISTINCT run_id FROM user_recommendations WHERE ds = ?::DATE", [DS]).fetchall() \
        == [("e2e_test",)]
    # The sharded run wrote exactly the tables of a single-shard run: redo score and publish in one
    # shard, in-process, with the same run id, and compare every published table of the date.
    tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables WHERE table_type = "
                                        "'BASE TABLE' AND table_name IN (SELECT table_name FROM "
                                        "information_schema.columns WHERE column_name = 'ds')").fetchall()]
    sharded = {t: con.execute(f'SELECT * FROM "{t}" WHERE ds = ?::DATE', [DS]).df() for t in tables}
    con.close()
    from pipelines.run import run_step

    single = cfg.replace(publish_shards=1)
    assert run_step("score", single, DS, "e2e_test")["shards"] == 1
    run_step("publish", single, DS, "e2e_test")
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    for t, df in sharded.items():
        if t == "ab_results":
            continue  # written by the report DAG, not by publish
        again = con.execute(f'SELECT * FROM "{t}" WHERE ds = ?::DATE', [DS]).df()
        # published_runs stamps each publication's wall-clock time: the redo is a later publication.
        df, again = df.drop(columns=["published_at"], errors="ignore"), again.drop(columns=["published_at"], errors="ignore")
        keys = list(again.columns)
        norm = lambda d: d.astype(str).sort_values(keys).reset_index(drop=True)
        pd.testing.assert_frame_equal(norm(df), norm(again), obj=t)
    # Lists carry the experiment, and the report DAG wrote its table and page.
    arms = dict(con.execute("SELECT variant, count(DISTINCT user_id) FROM user_recommendations WHERE ds = ?::DATE "
                            "AND surface = 'for_you' GROUP BY 1", [DS]).fetchall())
    assert set(arms) == {"control", "treatment"}
    ab = con.execute("SELECT * FROM ab_results WHERE ds = ?::DATE AND as_of = ?::DATE", [DS, DS]).df()
    con.close()
    assert set(ab["metric"]) >= {"conversion", "revenue_per_visitor", "ctr"} and (ab["run_id"] == ab_run_id).all()
    assert ab["visitors_control"].iloc[0] + ab["visitors_variant"].iloc[0] == 3000
    assert (cfg.home / "reports" / "ab" / f"ds={DS}" / "report.html").exists()
