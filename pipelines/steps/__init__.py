"""The step registry: every step of the nightly run (and the A/B report) by name, in order.

``recsys run``, the Airflow DAGs and the tests all read ``STEPS``; a new step is one module in this
package with a ``run(cfg, ds, run_id, **options)`` function and one ``Step`` line below.

This module stays import-light (standard library only): the Airflow scheduler reads it every time
it parses a DAG file. ``Step.function`` imports the step module on first use.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable


@dataclass(frozen=True)
class Step:
    name: str
    summary: str   # one line: what the step does (the DAG's task docs, ``recsys steps``)
    writes: str    # where its output goes under the data root
    # Options the step's run() takes besides (cfg, ds, run_id): "shard" (one mapped task per user
    # shard), "airflow_run_id" (tagged on the MLflow run).
    options: tuple[str, ...] = ()

    @property
    def mapped(self) -> bool:
        return "shard" in self.options

    def function(self) -> Callable[..., dict]:
        return importlib.import_module(f"pipelines.steps.{self.name}").run


NIGHTLY = (
    Step("validate", "Great Expectations gate over new landing partitions; bad rows to quarantine with the "
         "rule they broke", "validated/, quarantine/, validation/ds=<ds>/"),
    Step("features", "user x item interaction matrices (train split and full), holdout truth, item table",
         "features/ds=<ds>/"),
    Step("train", "fits every candidate model on the data before the holdout window", "models/ds=<ds>/holdout/"),
    Step("evaluate", "temporal holdout: precision@K, recall@K, NDCG@K, coverage per candidate and segment; "
         "the nightly hyperparameter search", "eval/ds=<ds>/"),
    Step("rank", "two-stage hybrid: candidates from several generators re-ranked by gradient boosting, "
         "for for_you and new_for_you", "eval/ds=<ds>/hybrid_*, models/ds=<ds>/hybrid/"),
    Step("select", "champion/challenger gate; refits the winner on all data, logs the MLflow run, moves the "
         "`champion` alias", "models/ds=<ds>/, mlflow/", options=("airflow_run_id",)),
    Step("surfaces", "pair tables, post-purchase email, trending, best sellers, category affinity, context defaults",
         "surfaces/ds=<ds>/"),
    Step("score", "the personal lists through the rules layer, one task per user shard",
         "models/ds=<ds>/shards/", options=("shard",)),
    Step("publish", "every table of docs/tables.md for ds, all shards together, atomically (with the homepage "
         "slots from the final lists); the run report",
         "warehouse/, reports/ds=<ds>/"),
    Step("export", "the post-purchase email file (csv, klaviyo, braze or json) and its manifest, dropped in "
         "export_dir for marketing; nothing when export_dir is unset", "<export_dir>/email/ds=<ds>/ (outside the data root)"),
)
STEPS: MappingProxyType[str, Step] = MappingProxyType({s.name: s for s in NIGHTLY})

# Steps of other DAGs, runnable by name too (``recsys_ab_report``).
OTHER_STEPS: MappingProxyType[str, Step] = MappingProxyType({
    "ab_report": Step("ab_report", "A/B results per experiment: lifts, intervals, SRM, ROI",
                      "warehouse/ab_results, reports/ab/ds=<ds>/"),
})


def get_step(name: str) -> Step:
    step = STEPS.get(name) or OTHER_STEPS.get(name)
    if step is None:
        raise ValueError(f"unknown step {name!r}; steps: {tuple(STEPS)} and {tuple(OTHER_STEPS)}")
    return step
