"""
### recsys_ab_report

The nightly A/B report, after `recsys_nightly` has published the day's lists. For every experiment
in the experiments file (config `experiments_file`, docs/ab-testing.md) that has started by `ds`:
per arm CTR on recommendations, add-to-cart rate, conversion, revenue per visitor, average order
value and cross-category purchase rate; the relative lift against control with its 95% interval and
p-value, cumulative day by day; a sample-ratio-mismatch check; the return on investment.

| task | writes |
|---|---|
| `ab_report` | table `ab_results` (DuckDB and Parquet), `reports/ab/ds=<ds>/report.html` |

Scheduled on the Airflow Asset `recsys_personal_lists` (`x-recsys://warehouse/personal_lists`), which the
`publish` task of `recsys_nightly` updates: a run starts once a nightly (or the rebuild of a past date) has
published its lists, and reports on the ds in that asset event's extra; a late nightly delays the report
instead of leaving it to report on the previous night's lists. Outcome events arrive through
`recsys import-outcomes FILE`. Trigger with the `ds` param to rebuild a past date (a manual run without
it follows recsys_nightly's rule: the UTC day before the trigger time, or the day of a logical date at
00:00 UTC). Owner: data engineering / analytics.
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

# Light (standard library only): the step's heavy imports happen inside the task.
from pipelines.airflow_tasks import AB_REPORT_ASSETS, on_failure, published_assets
from pipelines.config import load_config

CFG = load_config()


@dag(
    dag_id="recsys_ab_report",
    # After publish of recsys_nightly has updated the personal lists' Asset, for the ds in its event.
    schedule=published_assets(AB_REPORT_ASSETS),
    start_date=pendulum.datetime(2000, 1, 1, tz="UTC"),
    description="Nightly A/B report: per-arm metrics, lift with intervals, SRM check and ROI for ds.",
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "data-engineering", "retries": CFG.scale.task_retries,
                  "retry_delay": timedelta(minutes=5),
                  "execution_timeout": timedelta(minutes=CFG.scale.task_timeout_minutes),
                  "on_failure_callback": on_failure},
    tags=["recsys", "ab-testing"],
    doc_md=__doc__,
    params={"ds": Param(None, type=["null", "string"], format="date",
                        description="Report on this date (YYYY-MM-DD) instead of the ds of the triggering asset event")},
)
def recsys_ab_report():
    @task(task_id="ab_report", doc_md="**ab_report**: per experiment and arm, the outcome metrics of `ds`, the lift "
          "against control with its 95% interval and p-value, a sample-ratio-mismatch check and the ROI.\n\n"
          "Writes table `ab_results` and `reports/ab/ds=<ds>/report.html` under `$RECSYS_HOME`.")
    def ab_report(**context) -> dict:
        from pipelines.airflow_tasks import run_task

        return run_task("ab_report", context)

    ab_report()


recsys_ab_report()
