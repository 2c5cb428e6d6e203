"""recsys_nightly through Airflow: dag.test() in-process, and the real scheduler via the REST API."""
import subprocess
import sys
import textwrap
import time

import duckdb
import pandas as pd
import pytest
import requests

from pipelines.artifacts import layout
from tests.conftest import REPO
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


def test_dag_test_runs_every_task(tmp_path):
    cfg, env = demo_home(tmp_path / "var")
    script = textwrap.dedent(f"""
        from datetime import datetime, timezone
        from airflow.dag_processing.dagbag import DagBag
        dag = DagBag(dag_folder={str(REPO / 'dags')!r}).dags["recsys_nightly"]
        dr = dag.test(logical_date=datetime.fromisoformat("{DS}T00:00:00+00:00"))
        print("DAGRUN_STATE", dr.state)
        states = {{ti.task_id: str(ti.state) for ti in dr.get_task_instances()}}
        print("TASK_STATES", sorted(states.items()))
    """)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert "DAGRUN_STATE success" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    rows = published(cfg)
    assert len(rows) == demo_users(cfg) and (rows["n"] == 20).all()


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
        def run_dag(dag_id: str, run_id: str, timeout: int) -> str:
            """Unpause, trigger for DS through the REST API, wait for the run's final state."""
            assert requests.patch(f"{base}/api/v2/dags/{dag_id}", json={"is_paused": False}, headers=h,
                                  timeout=10).ok
            r = requests.post(f"{base}/api/v2/dags/{dag_id}/dagRuns", headers=h, timeout=10,
                              json={"dag_run_id": run_id, "logical_date": f"{DS}T00:00:00Z"})
            assert r.ok, r.text

            def finished():
                state = requests.get(f"{base}/api/v2/dags/{dag_id}/dagRuns/{run_id}", headers=h,
                                     timeout=10).json()["state"]
                return state if state in ("success", "failed") else None

            return wait_for(f"the {dag_id} run", finished, timeout)

        assert run_dag("recsys_nightly", "e2e_test", 900) == "success"
        tis = requests.get(f"{base}/api/v2/dags/recsys_nightly/dagRuns/e2e_test/taskInstances", headers=h,
                           timeout=10).json()["task_instances"]
        states = sorted((t["task_id"], t["map_index"], t["state"]) for t in tis)
        steps = ("validate", "features", "train", "evaluate", "rank", "select", "surfaces", "publish")
        # The score step ran as three mapped tasks (one per user shard) under the LocalExecutor.
        assert states == sorted([(t, -1, "success") for t in steps] + [("score", k, "success") for k in range(3)])
        # The A/B report DAG, for the same date, after the nightly.
        assert run_dag("recsys_ab_report", "e2e_ab", 300) == "success"
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
        keys = list(again.columns)
        norm = lambda d: d.astype(str).sort_values(keys).reset_index(drop=True)
        pd.testing.assert_frame_equal(norm(df), norm(again), obj=t)
    # Lists carry the experiment, and the report DAG wrote its table and page.
    arms = dict(con.execute("SELECT variant, count(DISTINCT user_id) FROM user_recommendations WHERE ds = ?::DATE "
                            "AND surface = 'for_you' GROUP BY 1", [DS]).fetchall())
    assert set(arms) == {"control", "treatment"}
    ab = con.execute("SELECT * FROM ab_results WHERE ds = ?::DATE AND as_of = ?::DATE", [DS, DS]).df()
    con.close()
    assert set(ab["metric"]) >= {"conversion", "revenue_per_visitor", "ctr"} and (ab["run_id"] == "e2e_ab").all()
    assert ab["visitors_control"].iloc[0] + ab["visitors_variant"].iloc[0] == 3000
    assert (cfg.home / "reports" / "ab" / f"ds={DS}" / "report.html").exists()
