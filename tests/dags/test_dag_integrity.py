"""DAG integrity: the DagBag loads, the DAG is configured as documented, the file stays thin."""
import ast
import subprocess
import sys

import pytest

from tests.conftest import REPO

DAG_FILE = REPO / "dags" / "recsys_nightly.py"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dags) == ["recsys_ab_report", "recsys_nightly"]


def test_ab_report_dag_settings(dagbag):
    dag = dagbag.dags["recsys_ab_report"]
    assert dag.task_ids == ["ab_report"] and set(dag.tags) == {"recsys", "ab-testing"}
    assert dag.catchup is False and dag.timetable.expression == "0 5 * * *"
    assert "ab_results" in dag.doc_md


def test_dag_settings(dagbag):
    dag = dagbag.dags["recsys_nightly"]
    from pipelines.steps import STEPS

    assert dag.task_ids == list(STEPS) == ["validate", "features", "train", "evaluate", "rank", "select", "surfaces", "score", "publish"]
    assert set(dag.tags) == {"recsys", "nightly"}
    assert dag.catchup is False and dag.max_active_runs == 1
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable" and dag.timetable.expression == "0 2 * * *"
    assert all(t.retries == 2 for t in dag.tasks)
    assert "recsys_nightly" in dag.doc_md and "`publish`" in dag.doc_md
    # Each task's own docs come from the step registry.
    assert all(STEPS[t.task_id].summary in t.doc_md for t in dag.tasks)
    # A straight chain: each task feeds the next.
    for up, down in zip(dag.task_ids, dag.task_ids[1:]):
        assert dag.get_task(up).downstream_task_ids == {down}


@pytest.mark.parametrize("dag_id", ["recsys_nightly", "recsys_ab_report"])
def test_dag_description_timeout_callback_and_task_docs(dagbag, dag_id):
    from datetime import timedelta

    from pipelines.airflow_tasks import on_failure
    from pipelines.config import load_config

    dag = dagbag.dags[dag_id]
    assert dag.description and dag.description.strip() and "\n" not in dag.description
    timeout = timedelta(minutes=load_config().scale.task_timeout_minutes)
    assert timeout == timedelta(minutes=240)
    for t in dag.tasks:
        assert t.execution_timeout == timeout, t.task_id
        callbacks = t.on_failure_callback if isinstance(t.on_failure_callback, list) else [t.on_failure_callback]
        assert on_failure in callbacks, t.task_id
        assert t.doc_md and t.task_id in t.doc_md, t.task_id


@pytest.mark.parametrize("dag_file", ["recsys_nightly.py", "recsys_ab_report.py"])
def test_dag_file_has_no_heavy_top_level_imports(dag_file):
    tree = ast.parse((REPO / "dags" / dag_file).read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            top.add((node.module or "").split(".")[0])
    assert top <= {"__future__", "os", "datetime", "pendulum", "airflow", "pipelines"}, top


def test_the_project_modules_a_dag_file_imports_are_light():
    """The DAG files read the config, the step registry and the failure callback at parse time: none
    may pull in the heavy libraries (checked in a fresh interpreter)."""
    code = ("import sys; import pipelines.config, pipelines.steps, pipelines.airflow_tasks; "
            "print(sorted(m for m in ('pandas', 'numpy', 'pyarrow', 'scipy', 'duckdb', 'mlflow', 'implicit', "
            "'sklearn', 'great_expectations') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_resolve_ds_prefers_param_then_logical_date():
    from datetime import datetime, timezone
    from types import SimpleNamespace

    from pipelines.airflow_tasks import resolve_ds

    ld = datetime(2024, 6, 30, 2, 0, tzinfo=timezone.utc)
    assert resolve_ds({"params": {"ds": "2011-11-08"}, "logical_date": ld}) == "2011-11-08"
    assert resolve_ds({"params": {"ds": None}, "logical_date": ld}) == "2024-06-30"
    run = SimpleNamespace(run_after=datetime(2024, 7, 1, 3, tzinfo=timezone.utc))
    assert resolve_ds({"params": {}, "logical_date": None, "dag_run": run}) == "2024-07-01"


def test_data_errors_fail_the_task_without_retries(tmp_path, monkeypatch):
    from datetime import datetime, timezone

    from airflow.sdk.exceptions import AirflowFailException

    from pipelines.airflow_tasks import run_task

    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "empty"))
    ctx = {"params": {}, "logical_date": datetime(2024, 6, 30, tzinfo=timezone.utc), "run_id": "t"}
    with pytest.raises(AirflowFailException, match="no validated events up to ds=2024-06-30"):
        run_task("features", ctx)
