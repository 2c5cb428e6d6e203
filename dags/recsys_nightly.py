"""
### recsys_nightly

Turns the raw retail events landed up to the end of the logical date (`ds`, UTC) into fresh
recommendation tables.

Tasks (`pipelines.steps.STEPS`, one function each under `pipelines/steps/`): `validate`, `features`, `train`, `evaluate`, `rank`, `select`, `surfaces`, `score`, `publish`, `export`; each task's own docs say what it does and writes.

Which day a run builds (`ds`, UTC; `pipelines.airflow_tasks.resolve_ds`):

- the `ds` param, whenever it is set (`{"ds": "YYYY-MM-DD"}`): rebuild that date;
- a scheduled or backfill run: its logical date, the start of its data interval (the 02:00 run on
  D+1 covers D 02:00 -> D+1 02:00 and builds D);
- a manual run (UI, REST API): a logical date at exactly 00:00 UTC names the day; any other logical date,
  or none, is the trigger time, and the run builds the latest complete day, the UTC day before it
  (triggered 2026-11-30T16:05: builds 2026-11-29);
- `recsys airflow-test --ds D`: D (run id `manual__ds_D__<start time>`, data interval D 00:00 -> D+1 00:00,
  note `ds=D`).

Every task logs the ds and returns it in its XCom. `publish` emits one Airflow Asset per published table
family (`personal_lists`, `item_surfaces`, `email`, `model_runs`) with `{"ds": ...}` in the event extra;
`recsys_ab_report` is scheduled on `personal_lists`.

Everything lives under `$RECSYS_HOME`, except the email file `export` drops in `export_dir`. A rerun
replaces that date only. Owner: data engineering.
Docs: `README.md`, `docs/`.
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, chain, dag, task

# All three are light (standard library only): heavy imports (pandas, implicit, mlflow,
# great_expectations) happen inside the tasks only, as the scheduler parses this file every few seconds.
from pipelines.airflow_tasks import on_failure, published_assets
from pipelines.config import load_config
from pipelines.steps import STEPS, Step

CFG = load_config()


def _doc(step: Step) -> str:
    where = "" if "outside the data root" in step.writes else " under `$RECSYS_HOME`"
    return f"**{step.name}**: {step.summary}.\n\nWrites `{step.writes}`{where}."


def _step_task(step: Step):
    # publish updates the published tables' Assets (the ds in each event's extra); asset-scheduled
    # DAGs (recsys_ab_report) run after it, for its ds.
    @task(task_id=step.name, doc_md=_doc(step), outlets=published_assets() if step.name == "publish" else [])
    def run_step(**context) -> dict:
        from pipelines.airflow_tasks import run_task

        return run_task(step.name, context)

    return run_step()


def _mapped_task(step: Step):
    # One mapped task per user shard (dynamic task mapping), so Celery or Kubernetes workers share
    # the step; publish makes every shard visible in one transaction. RECSYS_PUBLISH_SHARDS must be
    # the same for the scheduler that parses this file and for the workers.
    @task(task_id=step.name, doc_md=_doc(step))
    def run_shard(shard: int, **context) -> dict:
        from pipelines.airflow_tasks import run_task

        return run_task(step.name, context, shard=shard)

    return run_shard.expand(shard=list(range(CFG.scale.publish_shards)))


@dag(
    dag_id="recsys_nightly",
    # Data intervals, not bare trigger times: the run that starts at 02:00 on day D+1 covers day D,
    # so its logical date (and ds) is D, the day whose events are complete.
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    # Early start so that historical dates (imported history, backfills) can be run; catchup is off,
    # so the scheduler itself only ever creates the latest interval.
    start_date=pendulum.datetime(2000, 1, 1, tz="UTC"),
    description="Nightly: raw retail events of ds to published recommendation tables (validate to publish).",
    catchup=False,
    max_active_runs=1,
    # RECSYS_TASK_RETRIES lets a one-off local run (`recsys airflow-test`) fail fast; the nightly keeps 2.
    # on_failure logs a one-line summary, then calls the configured failure_callback (docs/deploy.md).
    default_args={"owner": "data-engineering", "retries": CFG.scale.task_retries,
                  "retry_delay": timedelta(minutes=5),
                  "execution_timeout": timedelta(minutes=CFG.scale.task_timeout_minutes),
                  "on_failure_callback": on_failure},
    tags=["recsys", "nightly"],
    doc_md=__doc__,
    params={"ds": Param(None, type=["null", "string"], format="date",
                        description="Build this date (YYYY-MM-DD). Empty: a manual run builds the UTC day before its trigger time (or the day of a logical date at 00:00 UTC)")},
)
def recsys_nightly():
    # Each task calls one step function and returns its small summary (counts, paths, run ids) as
    # XCom; data moves through files under $RECSYS_HOME, never through XCom.
    chain(*[_mapped_task(step) if step.mapped else _step_task(step) for step in STEPS.values()])


recsys_nightly()
