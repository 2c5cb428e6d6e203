"""A/B report step (the recsys_ab_report DAG): cumulative results of every started experiment,
per day, with lifts, intervals, SRM and ROI; the ab_results table and an HTML report."""
from __future__ import annotations

import logging
from datetime import date, timedelta

import pandas as pd
import pyarrow as pa

from pipelines.artifacts import layout
from pipelines.config import Config
from pipelines.infra import warehouse
from pipelines.services.ab import analyse, assign, load_experiments, roi
from pipelines.services.ab_report import category_of_items, load_outcomes, write_report

log = logging.getLogger(__name__)


def run(cfg: Config, ds: str, run_id: str) -> dict:
    programme = load_experiments(cfg)
    day = date.fromisoformat(ds)
    started = [e for e in programme.experiments if e.start <= day]
    if not programme.experiments:
        log.info("ab report ds=%s: no experiments configured (config experiments_file)", ds)
    categories = category_of_items(cfg)
    frames, summaries = [], []
    for exp in started:
        last = min(day, exp.end)
        outcomes = load_outcomes(cfg, exp.start, last + timedelta(days=1))
        if outcomes.empty:
            log.warning("ab report ds=%s: experiment %s has no outcome events yet", ds, exp.id)
            continue
        assigned = assign(exp, outcomes["user_id"].dropna().unique())
        # Cumulative results for each day of the experiment so far: the lift and its interval over time.
        t = pd.to_datetime(outcomes["event_time"], utc=True).dt.date
        for as_of in pd.date_range(exp.start, last, freq="D").date:
            res = analyse(exp, assigned, outcomes[t <= as_of], categories)
            if len(res):
                frames.append(res.assign(as_of=as_of))
        headline = frames[-1] if frames else pd.DataFrame()
        economics = roi(headline, float(programme.roi.get("daily_visitors", 0)),
                        float(programme.roi.get("period_days", 30)), float(programme.roi.get("cost", 0))) \
            if programme.roi and len(headline) else {}
        summaries.append((exp, headline, economics))
        srm_flag = bool(headline["srm_flag"].iloc[0]) if len(headline) else False
        log.info("ab report ds=%s: %s, %d outcome events up to %s, SRM %s", ds, exp.id, len(outcomes), last,
                 "FLAGGED" if srm_flag else "ok")
    cols = ["experiment_id", "as_of", "metric", "control", "variant", "visitors_control", "visitors_variant",
            "mean_control", "mean_variant", "lift", "lift_low", "lift_high", "p_value", "significant",
            "assigned_control", "assigned_variant", "srm_p_value", "srm_flag"]
    results = pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(
        {c: pd.Series(dtype="float64" if c not in ("experiment_id", "metric", "control", "variant") else "string")
         for c in cols}).astype({"as_of": "object", "significant": bool, "srm_flag": bool})
    results.insert(0, "run_id", run_id)
    results.insert(0, "ds", day)
    warehouse.publish_tables(layout(cfg).duckdb_path, layout(cfg).parquet_root, ds,
                           {"ab_results": pa.Table.from_pandas(results, preserve_index=False)})
    path = write_report(cfg, ds, results, summaries)
    return {"ds": ds, "experiments": [e.id for e, _, _ in summaries], "rows": int(len(results)),
            "srm_flags": [e.id for e, h, _ in summaries if len(h) and bool(h["srm_flag"].iloc[0])],
            "report": str(path)}
