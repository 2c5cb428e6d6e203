"""The run report: one self-contained HTML page per ds, under ``reports/ds=<ds>/report.html``.

Written by the publish step after the tables are committed, and attached to the night's MLflow
run (artifact ``report/report.html``). It shows:

* the gate decision and where each surface's lists came from;
* metrics per candidate on the holdout (returning users), the new-user segment, and the hybrid
  against its generators on the ranker's window;
* the session models' HR@20 and MRR@20 (leave-last-out) and the one chosen for ``session_next_items``;
* plots (PNG, embedded): NDCG per model tonight; NDCG per model over the nights in ``model_runs``
  (metric history); popularity bias: the share of recommendation slots vs the share of purchases
  per item popularity decile.
"""
from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.artifacts import (
    Features,
    layout,
    read_eval_metrics,
    read_eval_summary,
    read_hybrid_metrics,
    read_selection,
)
from pipelines.config import Config
from pipelines.infra import storage, warehouse
from pipelines.session_artifacts import read_session_metrics, read_session_summary

log = logging.getLogger(__name__)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _table(df: pd.DataFrame, digits: int = 4) -> str:
    return df.to_html(float_format=lambda v: f"{v:.{digits}f}", border=0, classes="t", na_rep="")


def popularity_bias(recs: pd.DataFrame, purchases: np.ndarray, item_ids: np.ndarray) -> pd.DataFrame:
    """Per popularity decile (1 = the 10% most-bought items): share of purchases and share of
    recommendation slots of each surface. ``purchases``: buyers per item, aligned with item_ids;
    ``recs``: surface, item_id (and model), one row per slot or with a slot count ``n``."""
    order = np.argsort(-purchases, kind="stable")
    decile = np.empty(len(order), dtype=np.int64)
    decile[order] = np.arange(len(order)) * 10 // max(len(order), 1) + 1
    by_item = pd.Series(decile, index=item_ids)
    out = pd.DataFrame({"purchases": pd.Series(purchases).groupby(decile).sum() / max(purchases.sum(), 1)})
    weight = recs["n"] if "n" in recs else pd.Series(1, index=recs.index)
    for surface, g in recs.assign(_n=weight).groupby("surface"):
        d = by_item.reindex(g["item_id"].to_numpy())
        ok = d.notna().to_numpy()
        counts = pd.Series(g["_n"].to_numpy()[ok]).groupby(d.to_numpy()[ok].astype(int)).sum()
        out[surface] = counts.reindex(out.index, fill_value=0) / max(counts.sum(), 1)
    out.index.name = "decile"
    return out.fillna(0.0)


def build_report(cfg: Config, ds: str, run_id: str, f: Features, recs: pd.DataFrame) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = cfg.evaluation.eval_k
    key = f"ndcg_at_{k}"
    summary = read_eval_summary(cfg, ds)
    selected = read_selection(cfg, ds)
    metrics = read_eval_metrics(cfg, ds)
    if "segment" not in metrics:
        metrics["segment"] = "returning"
    cols = [c for c in (key, f"recall_at_{k}", f"precision_at_{k}", f"map_at_{k}", f"hit_rate_at_{k}",
                        f"coverage_at_{k}", f"novelty_at_{k}", f"diversity_at_{k}", f"recall_head_at_{k}",
                        f"recall_tail_at_{k}", "users") if c in set(metrics["metric"])]
    wide = metrics.pivot_table(index=["segment", "model"], columns="metric", values="value")[cols]
    returning = wide.loc["returning"].sort_values(key, ascending=False) if "returning" in wide.index else wide
    new_users = wide.loc["new"].sort_values(key, ascending=False) if "new" in wide.index.get_level_values(0) else None
    parts = [f"<h1>Recommendations run {html.escape(ds)}</h1>",
             f"<p>run <code>{html.escape(run_id)}</code> &middot; champion <b>{html.escape(selected['champion'])}</b>"
             f" &middot; challenger {html.escape(selected['challenger'])} &middot; gate: "
             f"<b>{'promote' if selected['promoted'] else 'keep'}</b> &mdash; {html.escape(selected['reason'])}</p>",
             f"<p>Evaluated returning users: {summary['eval_users']} (holdout of {cfg.features.holdout_days} days before "
             f"the end of ds). Metric definitions: docs/metrics.md.</p>"]
    src = (recs.groupby(["surface", "model"])["n"].sum() if "n" in recs else
           recs.groupby(["surface", "model"]).size()).unstack(fill_value=0)
    parts += ["<h2>Where tonight's lists came from (rows per source)</h2>", _table(src, 0)]
    parts += ["<h2>Candidates on the holdout, returning users</h2>", _table(returning)]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    returning[key].sort_values().plot.barh(ax=ax, color="#4472c4")
    ax.set_xlabel(f"NDCG@{k}")
    ax.set_title(f"NDCG@{k} per candidate, ds {ds}")
    parts.append(_png(fig))
    if new_users is not None:
        parts += ["<h2>New users (first event inside the holdout): the cold-start lists</h2>", _table(new_users)]
    h = read_hybrid_metrics(cfg, ds)
    if h is not None:
        hw = h[h["metric"].isin(cols)].pivot_table(index=["task", "model"], columns="metric", values="value")
        parts += [f"<h2>Two-stage hybrid vs its generators (last {cfg.hybrid.ranker_window_days} days; task all = "
                  f"for_you, new = new_for_you)</h2>", _table(hw[[c for c in cols if c in hw]])]
    sm = read_session_metrics(cfg, ds)
    if sm is not None and len(sm):
        chosen = (read_session_summary(cfg, ds) or {}).get("model", "")
        sw = sm.pivot_table(index="model", columns="metric", values="value", sort=False)
        parts += ["<h2>Anonymous sessions: next item, leave-last-out on the holdout window's sessions</h2>",
                  f"<p>Published <code>session_next_items</code> from: <b>{html.escape(str(chosen))}</b> "
                  "(the best HR@20).</p>", _table(sw)]
    # Metric history over nights, from the warehouse (this ds included: publish committed it).
    history = _history(cfg, key)
    if history is not None and len(history):
        fig, ax = plt.subplots(figsize=(7, 3.2))
        for model, g in history.groupby("model"):
            ax.plot(pd.to_datetime(g["ds"]), g["value"], marker="o", label=model)
        ax.set_ylabel(f"NDCG@{k}")
        ax.set_title("Holdout NDCG per candidate over nights")
        ax.legend(fontsize=7, ncol=3)
        fig.autofmt_xdate()
        parts += ["<h2>Metric history</h2>", _png(fig)]
    items = f.items
    buyers = np.asarray((f.full > 0).sum(axis=0)).ravel().astype(float)
    bias = popularity_bias(recs, buyers, items["item_id"].to_numpy())
    if bias.empty:  # a night with no item or no list (a ds before the first event): nothing to plot
        parts += ["<h2>Popularity bias</h2>", "<p>No items or recommendations on this night.</p>"]
    else:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        bias.plot.bar(ax=ax)
        ax.set_xlabel("item popularity decile (1 = most bought)")
        ax.set_ylabel("share")
        ax.set_title("Popularity bias: recommendation slots vs purchases")
        parts += ["<h2>Popularity bias</h2>", _table(bias), _png(fig)]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>recsys run " + html.escape(ds) + "</title>"
            "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table.t{border-collapse:collapse;"
            "font-size:13px}table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
            "</style></head><body>" + "\n".join(parts) + "</body></html>")
    path = layout(cfg).report(ds)
    storage.atomic_write_text(page, path)
    log.info("report ds=%s: %s", ds, path)
    return path


def _history(cfg: Config, key: str) -> pd.DataFrame | None:
    if not layout(cfg).duckdb_path.exists():
        return None
    con = warehouse.connect_readonly(cfg)
    try:
        # One run per ds (a rerun replaces its ds). Nights published before the protocol and segment
        # columns existed read NULL there: they were holdout figures of returning users.
        return con.execute("SELECT ds, model, value FROM model_runs WHERE metric = ? "
                           "AND coalesce(protocol, 'holdout') = 'holdout' AND coalesce(segment, 'returning') = 'returning' "
                           "ORDER BY ds, model", [key]).df()
    finally:
        con.close()
