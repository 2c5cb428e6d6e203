"""Rank step: the two-stage hybrid (pipelines/hybrid/). Evaluated at T2 = ds - ranker_window_days
on [T2, ds]; where it beats every single generator, a ranker trained up to ds writes the lists
of the most active users for the score step."""
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

log = logging.getLogger(__name__)


def run(cfg: Config, ds: str, run_id: str) -> dict:
    f = read_features(cfg, ds)
    daily = read_daily(cfg, ds)
    shape = f.full.shape
    items = f.items
    inactive = np.flatnonzero(~items["active"].to_numpy(dtype=bool))
    n_catalog = int(items["active"].sum())
    t3 = (pd.Timestamp(ds) - pd.Timestamp("1970-01-01")).days + 1
    t2 = t3 - cfg.hybrid.ranker_window_days
    run = HybridRun(cfg, daily, shape, items["text"].to_numpy(), inactive)
    t0 = time.perf_counter()
    rows, recs = [], []
    for task in TASKS:
        new_only = task == "new"
        # ---- evaluation at T2 on [T2, T3)
        ranker = run.train(t2, new_only)
        c2, gens2 = run.at(t2)
        truth = truth_matrix(daily, t2, t3, shape, new_only, c2)
        users = np.flatnonzero((np.diff(c2.x.indptr) > 0) & (np.diff(truth.indptr) > 0))
        users = sample_users(users, cfg.evaluation.eval_max_users, cfg.seed)
        uu, ii, x = candidate_frame(cfg, c2, gens2, users, new_only, inactive)
        ids, _ = top_n(uu, ii, ranker.score(x), shape[0], cfg.evaluation.eval_k)
        lists = {"hybrid": ids[users]}
        baselines = {b: make_model(b, cfg).fit(c2.x, c2.items) for b in ("popularity", "trending")}
        for name, model in {**gens2.models, **baselines}.items():
            lists[name], _ = model.recommend(users, c2.x, cfg.evaluation.eval_k, exclude=c2.x if new_only else None,
                                             filter_items=inactive)
        for name, l in lists.items():
            m = ranking_metrics(l, truth[users], cfg.evaluation.eval_k, n_catalog)
            rows += [{"model": name, "task": task, "metric": k, "value": float(v)} for k, v in m.items()]
        log.info("rank ds=%s task %s: hybrid ndcg@%d=%.4f vs best generator %.4f (%d users)", ds, task, cfg.evaluation.eval_k,
                 next(r["value"] for r in rows if r["model"] == "hybrid" and r["task"] == task
                      and r["metric"] == f"ndcg_at_{cfg.evaluation.eval_k}"),
                 max(r["value"] for r in rows if r["model"] != "hybrid" and r["task"] == task
                     and r["metric"] == f"ndcg_at_{cfg.evaluation.eval_k}"), len(users))
        # ---- publishing at T3, for the users with history (the hybrid_max_users most active), only
        # when the hybrid won on its window: otherwise publish serves the champion and nobody would
        # read these lists.
        key = f"ndcg_at_{cfg.evaluation.eval_k}"
        if not hybrid_wins({r["model"]: r["value"] for r in rows if r["task"] == task and r["metric"] == key},
                           cfg.hybrid.hybrid_min_gain):
            log.info("rank ds=%s task %s: the hybrid does not beat the best single list on its window: no "
                     "ranker at T3 and no lists tonight (publish serves the champion)", ds, task)
            shutil.rmtree(layout(cfg).ranker_dir(ds, task), ignore_errors=True)
            continue
        ranker = run.train(t3, new_only)
        ranker.save(layout(cfg).ranker_dir(ds, task))
        c3, gens3 = run.at(t3)
        users = publish_users(c3, cfg.hybrid.hybrid_max_users)
        t_pub = time.perf_counter()
        for uu, ii, x in candidate_blocks(cfg, c3, gens3, users, new_only, inactive):
            block = np.unique(uu)
            ids, vals = top_n(np.searchsorted(block, uu), ii, ranker.score(x), len(block), cfg.ranking.top_n)
            ok = (ids >= 0).ravel()
            recs.append(pd.DataFrame({
                "surface": "for_you" if task == "all" else "new_for_you",
                "user_idx": np.repeat(block, cfg.ranking.top_n)[ok],
                "rank": np.tile(np.arange(1, cfg.ranking.top_n + 1, dtype=np.int32), len(block))[ok],
                "item_idx": ids.ravel()[ok], "score": vals.ravel()[ok]}))
        log.info("rank ds=%s task %s: lists for %d users in %.1fs", ds, task, len(users), time.perf_counter() - t_pub)
    metrics = pd.DataFrame(rows)
    recs = pd.concat(recs, ignore_index=True) if recs else pd.DataFrame(
        {"surface": pd.Series(dtype=str), "user_idx": pd.Series(dtype=np.int64), "rank": pd.Series(dtype=np.int32),
         "item_idx": pd.Series(dtype=np.int64), "score": pd.Series(dtype=np.float32)})
    key = f"ndcg_at_{cfg.evaluation.eval_k}"
    best = {task: metrics[(metrics["task"] == task) & (metrics["metric"] == key)].set_index("model")["value"].to_dict()
            for task in TASKS}
    summary = {"ds": ds, "run_id": run_id, "seconds": round(time.perf_counter() - t0, 1), "ndcg": best}
    write_hybrid(cfg, ds, metrics, recs, summary)
    return {"ds": ds, "seconds": summary["seconds"],
            "hybrid_ndcg": {t: round(best[t]["hybrid"], 4) for t in TASKS}}
