"""
### recsys_nightly

Turns the raw retail events landed up to the end of the logical date (`ds`, UTC) into fresh
recommendation tables.

| task | what it does | writes |
|---|---|---|
| `validate` | Great Expectations gate over new landing partitions; bad rows to quarantine with the rule they broke | `validated/`, `quarantine/` |
| `features` | user x item interaction matrices (train split and full), holdout truth, item text | `features/ds=<ds>/` |
| `train` | fits every candidate (popularity, ALS, item-kNN, TF-IDF content) on the data before the holdout window | `models/ds=<ds>/holdout/` |
| `evaluate` | temporal holdout: precision@K, recall@K, NDCG@K, coverage per candidate | `eval/ds=<ds>/` |
| `rank` | two-stage hybrid: candidates from buy-again, item-kNN, EASE and ALS re-ranked by a gradient-boosted model, for `for_you` and `new_for_you` | `eval/`, `models/ds=<ds>/hybrid/` |
| `select` | refits the best on all data, logs the MLflow run, registers it with alias `champion` | `mlflow/` |
| `surfaces` | pair tables, post-purchase email, trending, best sellers, category affinity | `surfaces/ds=<ds>/` |
| `score` | the personal lists through the rules layer, one mapped task per user shard (`RECSYS_PUBLISH_SHARDS`) | `models/ds=<ds>/shards/` |
| `publish` | every table of `docs/tables.md` for `ds`, all shards together, atomically | `warehouse/` |

Everything lives under `$RECSYS_HOME`. Trigger with the `ds` param to (re)build a past date; a rerun
replaces that date only. Owner: data engineering. Docs: `README.md`, `docs/`.
"""
from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, chain, dag, task

# Heavy imports (pandas, implicit, mlflow, great_expectations) happen inside the tasks only:
# the scheduler parses this file every few seconds. Same order as pipelines.run.STEPS (tested).
STEPS = ("validate", "features", "train", "evaluate", "rank", "select", "surfaces", "score", "publish")
# The score step runs as one mapped task per user shard (dynamic task mapping), so Celery or
# Kubernetes workers share it; publish makes every shard visible in one transaction.
SHARDS = int(os.environ.get("RECSYS_PUBLISH_SHARDS", "1"))


def _step_task(step: str):
    @task(task_id=step)
    def run_step(**context) -> dict:
        from pipelines.airflow_tasks import run_task

        return run_task(step, context)

    return run_step()


@dag(
    dag_id="recsys_nightly",
    # Data intervals, not bare trigger times: the run that starts at 02:00 on day D+1 covers day D,
    # so its logical date (and ds) is D, the day whose events are complete.
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    # Early start so that historical dates (imported history, backfills) can be run; catchup is off,
    # so the scheduler itself only ever creates the latest interval.
    start_date=pendulum.datetime(2000, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # RECSYS_TASK_RETRIES lets a one-off local run (`recsys airflow-test`) fail fast; the nightly keeps 2.
    default_args={"owner": "data-engineering", "retries": int(os.environ.get("RECSYS_TASK_RETRIES", "2")),
                  "retry_delay": timedelta(minutes=5)},
    tags=["recsys", "nightly"],
    doc_md=__doc__,
    params={"ds": Param(None, type=["null", "string"], format="date",
                        description="Build this date instead of the run's logical date (YYYY-MM-DD)")},
)
def recsys_nightly():
    # Each task calls one step function and returns its small summary (counts, paths, run ids) as
    # XCom; data moves through files under $RECSYS_HOME, never through XCom.
    @task(task_id="score")
    def score(shard: int, **context) -> dict:
        from pipelines.airflow_tasks import run_task

        return run_task("score", context, shard=shard)

    chain(*[score.expand(shard=list(range(SHARDS))) if step == "score" else _step_task(step) for step in STEPS])


recsys_nightly()
