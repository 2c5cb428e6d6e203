"""The DAGs' on_failure_callback: one summary line in the log, then the configured failure_callback."""
import logging
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from pipelines.airflow_tasks import failure_summary, on_failure

CALLS: list = []


def record(context):
    CALLS.append(context)


def explode(context):
    raise RuntimeError("pager down")


def _context():
    try:
        raise ValueError("no validated events up to ds=2024-06-30\nsecond line of detail")
    except ValueError as exc:
        error = exc
    ti = SimpleNamespace(dag_id="recsys_nightly", task_id="score", map_index=2, try_number=3,
                         log_url="http://af:8080/dags/recsys_nightly/runs/r1/tasks/score/mapped/2?try_number=3")
    return {"ti": ti, "run_id": "scheduled__2024-06-30T02:00:00+00:00", "ds": "2024-06-30", "params": {},
            "logical_date": datetime(2024, 6, 30, 2, tzinfo=timezone.utc), "exception": error}


SUMMARY = ("recsys task failed: dag=recsys_nightly task=score[2] ds=2024-06-30 "
           "run=scheduled__2024-06-30T02:00:00+00:00 try=3 "
           "error=ValueError: no validated events up to ds=2024-06-30 "
           "log=http://af:8080/dags/recsys_nightly/runs/r1/tasks/score/mapped/2?try_number=3")


def _records(caplog):
    return [r for r in caplog.records if r.name == "pipelines.airflow_tasks"]


def test_on_failure_logs_one_summary_line(caplog, monkeypatch):
    monkeypatch.delenv("RECSYS_FAILURE_CALLBACK", raising=False)
    with caplog.at_level(logging.INFO, logger="pipelines.airflow_tasks"):
        on_failure(_context())
    records = _records(caplog)
    assert [r.getMessage() for r in records] == [SUMMARY]
    assert records[0].levelno == logging.ERROR and "\n" not in records[0].getMessage()


def test_summary_without_ti_url_or_exception_still_one_line():
    ctx = {"dag": SimpleNamespace(dag_id="recsys_ab_report"), "task": SimpleNamespace(task_id="ab_report"),
           "ds": "2024-07-01", "dag_run": SimpleNamespace(run_id="manual__x", run_after=None)}
    assert failure_summary(ctx) == ("recsys task failed: dag=recsys_ab_report task=ab_report ds=2024-07-01 "
                                    "run=manual__x try=? error=unknown error (no exception in the context)")


def test_configured_callback_gets_the_context(caplog, monkeypatch):
    monkeypatch.setenv("RECSYS_FAILURE_CALLBACK", f"{__name__}:record")
    CALLS.clear()
    ctx = _context()
    with caplog.at_level(logging.INFO, logger="pipelines.airflow_tasks"):
        on_failure(ctx)
    assert CALLS == [ctx] and CALLS[0] is ctx
    assert [r.getMessage() for r in _records(caplog)] == [SUMMARY]


@pytest.mark.parametrize("path", [f"{__name__}:explode", "no_such_module_xyz:alert", f"{__name__}:missing"])
def test_a_failing_callback_is_logged_not_raised(caplog, monkeypatch, path):
    monkeypatch.setenv("RECSYS_FAILURE_CALLBACK", path)
    with caplog.at_level(logging.INFO, logger="pipelines.airflow_tasks"):
        on_failure(_context())   # must not raise
    records = _records(caplog)
    assert records[0].getMessage() == SUMMARY
    assert len(records) == 2 and records[1].levelno == logging.ERROR
    assert path in records[1].getMessage() and "the task's own failure stands" in records[1].getMessage()
