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
    assert dag.catchup is False and "ab_results" in dag.doc_md
    # Scheduled on the personal lists' Asset that publish updates, not on a fixed 05:00 cron.
    assert type(dag.timetable).__name__ == "AssetTriggeredTimetable"
    assert [(a.name, a.uri) for a in dag.timetable.asset_condition.objects] == \
        [("recsys_personal_lists", "x-recsys://warehouse/personal_lists")]


def test_publish_updates_one_asset_per_published_table_family(dagbag):
    nightly = dagbag.dags["recsys_nightly"]
    outlets = {t.task_id: sorted(a.uri for a in t.outlets) for t in nightly.tasks if t.outlets}
    assert outlets == {"publish": ["x-recsys://warehouse/email", "x-recsys://warehouse/item_surfaces",
                                   "x-recsys://warehouse/model_runs", "x-recsys://warehouse/personal_lists"]}
    # The report's asset is one that publish updates: the same object, name and URI.
    report_assets = list(dagbag.dags["recsys_ab_report"].timetable.asset_condition.objects)
    assert {(a.name, a.uri) for a in report_assets} <= {(a.name, a.uri) for a in nightly.get_task("publish").outlets}


def test_dag_settings(dagbag):
    dag = dagbag.dags["recsys_nightly"]
    from pipelines.steps import STEPS

    assert dag.task_ids == list(STEPS) == ["validate", "features", "train", "evaluate", "rank", "select", "surfaces",
                                           "score", "publish", "export"]
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


def _run(run_type, run_after):
    from types import SimpleNamespace

    from airflow.utils.types import DagRunType

    return SimpleNamespace(run_type=DagRunType(run_type), run_after=run_after)


@pytest.mark.parametrize("run_type, logical_date, run_after, params, expected", [
    # Scheduled: the 02:00 run of 2026-12-01 has logical date (interval start) 2026-11-30 02:00.
    ("scheduled", "2026-11-30T02:00", "2026-12-01T02:00", {}, "2026-11-30"),
    # Backfill of 2024-06-01: the interval's day, whenever it runs.
    ("backfill", "2024-06-01T02:00", "2026-11-30T16:05", {}, "2024-06-01"),
    # UI trigger at 2026-11-30T16:05 (logical date = trigger time): the previous UTC day, not today.
    ("manual", "2026-11-30T16:05", "2026-11-30T16:05", {}, "2026-11-29"),
    # REST trigger without a logical date: the day before run_after.
    ("manual", None, "2026-11-30T00:30", {}, "2026-11-29"),
    # A logical date at exactly 00:00 UTC names the day (REST trigger for a date, `airflow dags test D`).
    ("manual", "2024-06-30T00:00", "2026-11-30T16:05", {}, "2024-06-30"),
    # A trigger at 01:00 CET (00:00 UTC+1) is 23:00 UTC of the day before: its previous UTC day.
    ("manual", "2026-11-30T00:00+01:00", "2026-11-29T23:00", {}, "2026-11-28"),
    # params.ds always wins.
    ("manual", "2026-11-30T16:05", "2026-11-30T16:05", {"ds": "2026-11-01"}, "2026-11-01"),
    ("scheduled", "2026-11-30T02:00", "2026-12-01T02:00", {"ds": "2026-11-01"}, "2026-11-01"),
    ("operator_triggered", None, "2026-11-30T16:05", {}, "2026-11-29"),
    # Asset-triggered without an event carrying a ds: as a manual run.
    ("asset_triggered", None, "2026-11-30T16:05", {}, "2026-11-29"),
])
def test_resolve_ds_by_run_type(run_type, logical_date, run_after, params, expected):
    from datetime import datetime, timezone

    from pipelines.airflow_tasks import resolve_ds

    def as_dt(value):
        if value is None:
            return None
        d = datetime.fromisoformat(value)
        return d if d.tzinfo else d.replace(tzinfo=timezone.utc)

    ctx = {"params": params, "logical_date": as_dt(logical_date), "dag_run": _run(run_type, as_dt(run_after))}
    assert resolve_ds(ctx) == expected


def test_asset_triggered_run_reports_on_the_ds_of_the_newest_asset_event():
    """recsys_ab_report, started by publish's asset events, takes the ds from the newest event's extra
    (the Task SDK's own accessor), not from its trigger time; params.ds still wins."""
    from datetime import datetime, timezone

    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    from pipelines.airflow_tasks import published_assets, resolve_ds

    lists, email = published_assets(["personal_lists", "email"])

    def event(asset, ds, hour):
        from airflow.sdk.api.datamodels._generated import AssetEventDagRunReference
        from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult

        ref = AssetEventDagRunReference(asset={"name": asset.name, "uri": asset.uri, "extra": {}}, extra=ds,
                                        source_task_id="publish", source_dag_id="recsys_nightly",
                                        source_run_id="r", source_map_index=-1, source_aliases=[],
                                        timestamp=datetime(2026, 12, 1, hour, tzinfo=timezone.utc))
        return AssetEventDagRunReferenceResult.from_asset_event_dag_run_reference(ref)

    # A rebuild of 2026-11-20 published at 03:00 after the nightly of 2026-11-30 at 02:40: both events
    # queued one report run, which reports on the newest publication.
    events = TriggeringAssetEventsAccessor.build([event(lists, {"ds": "2026-11-30"}, 2),
                                                  event(lists, {"ds": "2026-11-20"}, 3),
                                                  event(email, {}, 4)])
    run = _run("asset_triggered", datetime(2026, 12, 1, 4, 1, tzinfo=timezone.utc))
    ctx = {"params": {}, "logical_date": None, "dag_run": run, "triggering_asset_events": events}
    assert resolve_ds(ctx) == "2026-11-20"
    assert resolve_ds({**ctx, "params": {"ds": "2026-10-31"}}) == "2026-10-31"


def test_data_errors_fail_the_task_without_retries(tmp_path, monkeypatch):
    from datetime import datetime, timezone

    from airflow.sdk.exceptions import AirflowFailException

    from pipelines.airflow_tasks import run_task

    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "empty"))
    ctx = {"params": {}, "logical_date": datetime(2024, 6, 30, tzinfo=timezone.utc), "run_id": "t"}
    with pytest.raises(AirflowFailException, match="no validated events up to ds=2024-06-30"):
        run_task("features", ctx)
