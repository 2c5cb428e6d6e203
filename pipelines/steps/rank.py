"""Rank step: the two-stage hybrid (pipelines/hybrid/). Evaluated at T2 = ds - ranker_window_days
on [T2, ds]; where it beats every single generator, a ranker trained up to ds writes the lists
of the most active users for the score step.

Where a task cannot be learned or judged (no training window with eligible users, an evaluation
window without a purchase of a user with history: a quiet period, a ds long after the last event,
one old event far before the rest), the task is skipped with the reason in the summary
(``skipped``) and the log: no ranker and no lists, so the score step serves the champion's."""
from __future__ import annotations

import logging
import shutil
import time

import numpy as np
import pandas as pd

from models.registry import make_model
from pipelines.artifacts import layout, read_daily, read_features, write_hybrid
from pipelines.config import Config
from pipelines.evaluation.metrics import ranking_metrics, sample_users
from pipelines.hybrid.choice import hybrid_wins
from pipelines.hybrid.ranker import (
    TASKS,
    HybridRun,
    candidate_blocks,
    candidate_frame,
    publish_users,
    top_n,
    truth_matrix,
)
from pipelines.infra.logs import Progress
from pipelines.signal_artifacts import read_ranker_signals

log = logging.getLogger(__name__)

METRIC_COLUMNS = {"model": str, "task": str, "metric": str, "value": np.float64}
LIST_COLUMNS = {"surface": str, "user_idx": np.int64, "rank": np.int32, "item_idx": np.int64, "score": np.float32}


def empty_frame(columns: dict) -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series(dtype=t) for k, t in columns.items()})


def evaluate_task(cfg: Config, run: HybridRun, task: str, t2: int, t3: int, inactive: np.ndarray,
                  n_catalog: int) -> tuple[list[dict], str | None]:
    """The hybrid and its generators on [T2, T3): (metric rows, None), or ([], why it was skipped)."""
    new_only, k = task == "new", cfg.evaluation.eval_k
    # An unfitted ranker (no training window with eligible users before T2: a short history) is
    # still judged: it falls back to the first generator's order (Ranker.score).
    ranker = run.train(t2, new_only)
    c2, gens2 = run.at(t2)
    truth = truth_matrix(run.daily, t2, t3, run.shape, new_only, c2)
    users = np.flatnonzero((np.diff(c2.x.indptr) > 0) & (np.diff(truth.indptr) > 0))
    if not len(users):
        return [], "no user with history bought in the evaluation window"
    users = sample_users(users, cfg.evaluation.eval_max_users, cfg.seed)
    uu, ii, x = candidate_frame(cfg, c2, gens2, users, new_only, inactive, f"rank task {task}: evaluation candidates")
    ids, _ = top_n(uu, ii, ranker.score(x), run.shape[0], k)
    lists = {"hybrid": ids[users]}
    baselines = {b: make_model(b, cfg).fit(c2.x, c2.items) for b in ("popularity", "trending")}
    for name, model in {**gens2.models, **baselines}.items():
        lists[name], _ = model.recommend(users, c2.x, k, exclude=c2.x if new_only else None, filter_items=inactive)
    rows = []
    for name, l in lists.items():
        m = ranking_metrics(l, truth[users], k, n_catalog)
        rows += [{"model": name, "task": task, "metric": key, "value": float(v)} for key, v in m.items()]
    return rows, None


def publish_task(cfg: Config, ds: str, run: HybridRun, task: str, t3: int, inactive: np.ndarray
                 ) -> list[pd.DataFrame]:
    """The lists of the most active users at T3 from a ranker trained up to T3 (saved for MLflow)."""
    new_only, n = task == "new", cfg.ranking.top_n
    ranker = run.train(t3, new_only)
    ranker.save(layout(cfg).ranker_dir(ds, task))  # an unfitted one saves nothing and scores by fallback
    c3, gens3 = run.at(t3)
    users = publish_users(c3, cfg.hybrid.hybrid_max_users)
    t_pub, recs = time.perf_counter(), []
    progress = Progress(log, f"rank ds={ds} task {task}: scoring candidates", len(users))
    for uu, ii, x in candidate_blocks(cfg, c3, gens3, users, new_only, inactive, progress):
        block = np.unique(uu)
        ids, vals = top_n(np.searchsorted(block, uu), ii, ranker.score(x), len(block), n)
        ok = (ids >= 0).ravel()
        recs.append(pd.DataFrame({
            "surface": "for_you" if task == "all" else "new_for_you",
            "user_idx": np.repeat(block, n)[ok],
            "rank": np.tile(np.arange(1, n + 1, dtype=np.int32), len(block))[ok],
            "item_idx": ids.ravel()[ok], "score": vals.ravel()[ok]}))
    log.info("rank ds=%s task %s: lists for %d users in %.1fs", ds, task, len(users), time.perf_counter() - t_pub)
    return recs


def run(cfg: Config, ds: str, run_id: str) -> dict:
    f = read_features(cfg, ds)
    daily = read_daily(cfg, ds)
    items = f.items
    inactive = np.flatnonzero(~items["active"].to_numpy(dtype=bool))
    n_catalog = int(items["active"].sum())
    t3 = (pd.Timestamp(ds) - pd.Timestamp("1970-01-01")).days + 1
    t2 = t3 - cfg.hybrid.ranker_window_days
    run = HybridRun(cfg, daily, f.full.shape, items["text"].to_numpy(), inactive, read_ranker_signals(cfg, ds))
    key = f"ndcg_at_{cfg.evaluation.eval_k}"
    t0 = time.perf_counter()
    rows, recs, skipped = [], [], {}
    for task in TASKS:
        task_rows, why = evaluate_task(cfg, run, task, t2, t3, inactive, n_catalog) if f.full.nnz else \
            ([], "no interactions up to ds")
        if why:
            skipped[task] = why
            log.warning("rank ds=%s task %s: the hybrid is not trained: %s (publish serves the champion)",
                        ds, task, why)
            shutil.rmtree(layout(cfg).ranker_dir(ds, task), ignore_errors=True)
            continue
        rows += task_rows
        ndcg = {r["model"]: r["value"] for r in task_rows if r["metric"] == key}
        log.info("rank ds=%s task %s: hybrid ndcg@%d=%.4f vs best generator %.4f", ds, task, cfg.evaluation.eval_k,
                 ndcg["hybrid"], max((v for m, v in ndcg.items() if m != "hybrid"), default=0.0))
        # Lists at T3 only when the hybrid won on its window: otherwise publish serves the champion
        # and nobody would read them.
        if not hybrid_wins(ndcg, cfg.hybrid.hybrid_min_gain):
            log.info("rank ds=%s task %s: the hybrid does not beat the best single list on its window: no "
                     "ranker at T3 and no lists tonight (publish serves the champion)", ds, task)
            shutil.rmtree(layout(cfg).ranker_dir(ds, task), ignore_errors=True)
            continue
        lists = publish_task(cfg, ds, run, task, t3, inactive)
        recs += lists
    metrics = pd.DataFrame(rows) if rows else empty_frame(METRIC_COLUMNS)
    recs = pd.concat(recs, ignore_index=True) if recs else empty_frame(LIST_COLUMNS)
    best = {task: metrics[(metrics["task"] == task) & (metrics["metric"] == key)].set_index("model")["value"].to_dict()
            for task in TASKS if task not in skipped}
    summary = {"ds": ds, "run_id": run_id, "seconds": round(time.perf_counter() - t0, 1), "ndcg": best,
               "skipped": skipped}
    write_hybrid(cfg, ds, metrics, recs, summary)
    return {"ds": ds, "seconds": summary["seconds"], "skipped": skipped,
            "hybrid_ndcg": {t: round(best[t]["hybrid"], 4) for t in best}}
