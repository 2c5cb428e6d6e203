"""The nightly A/B report (DAG ``recsys_ab_report``): per experiment that has started by ``ds``,
the metrics per arm with lifts, intervals and p-values, cumulative day by day, the SRM check and the
ROI; into the ``ab_results`` table and ``reports/ab/ds=<ds>/report.html`` (docs/ab-testing.md).

Outcome events come from ``recsys import-outcomes`` (``landing/outcomes/``); assignments are
recomputed from the experiment's salt (they are deterministic) for the users seen in the outcomes,
so the report does not depend on which nights the pipeline published.
"""
from __future__ import annotations

import base64
import html
import io
import logging
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.artifacts import latest_items, layout
from pipelines.config import Config
from pipelines.infra import storage
from pipelines.infra.consent import drop_forgotten
from pipelines.services.ab import METRICS
from pipelines.services.reading import ImportError_, existing_file, read_rows

log = logging.getLogger(__name__)

OUTCOME_TYPES = ("impression", "click", "add_to_cart", "purchase")
OUTCOMES = "outcomes"  # the landing dataset (landing/outcomes/) of ``recsys import-outcomes``


def load_outcomes(cfg: Config, start: date, end_exclusive: date) -> pd.DataFrame:
    """Every landed outcome event with start <= event_time < end_exclusive (UTC), exact duplicates
    (the same event landed by two files) counted once."""
    files = storage.landing_files(layout(cfg).landing, OUTCOMES)
    if not files:
        return pd.DataFrame(columns=["user_id", "event_type", "event_time", "recommendation_id", "item_id", "revenue"])
    import duckdb

    con = duckdb.connect()
    try:
        return con.execute(f"""
            SELECT DISTINCT * FROM read_parquet(?, union_by_name=true)
            WHERE event_time >= TIMESTAMPTZ '{start} 00:00:00+00' AND event_time < TIMESTAMPTZ '{end_exclusive} 00:00:00+00'
            """, [[str(f) for f in files]]).df()
    finally:
        con.close()


def category_of_items(cfg: Config) -> pd.Series | None:
    """item_id -> category key of the newest features, or None before the first run."""
    items = latest_items(cfg, ["item_id", "category_key"])
    return None if items is None else items.set_index("item_id")["category_key"]


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def write_report(cfg: Config, ds: str, results: pd.DataFrame, summaries: list) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [f"<h1>A/B experiments, report of {html.escape(ds)}</h1>"]
    if not summaries:
        parts.append("<p>No experiment with outcome events has started by this date.</p>")
    for exp, headline, economics in summaries:
        parts.append(f"<h2>{html.escape(exp.id)}</h2><p>{exp.start} to {exp.end}; variants "
                     + ", ".join(f"{html.escape(v.name)} ({v.share:.0%}, lists {v.lists})" for v in exp.variants)
                     + f"; control {html.escape(exp.control_variant)}.</p>")
        if len(headline):
            srm_p, flag = headline["srm_p_value"].iloc[0], bool(headline["srm_flag"].iloc[0])
            parts.append(f"<p><b>Sample ratio check:</b> p = {srm_p:.2g} &mdash; "
                         + ("<b style='color:#b00'>MISMATCH: the assignment or the logging is broken; do not trust "
                            "the results below until it is fixed.</b>" if flag else "consistent with the design.")
                         + "</p>")
            show = headline[["variant", "metric", "visitors_control", "visitors_variant", "mean_control",
                             "mean_variant", "lift", "lift_low", "lift_high", "p_value", "significant"]]
            parts.append(show.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0))
        if economics:
            e = economics
            parts.append(
                f"<p><b>Return on investment</b> ({html.escape(str(e['variant']))} vs control, revenue per visitor, "
                f"{e['daily_visitors']:.0f} visitors a day over {e['days']:.0f} days): revenue impact "
                f"{e['revenue_impact']:,.0f} (95% interval {e['impact_low']:,.0f} to {e['impact_high']:,.0f}) against "
                f"a cost of {e['cost']:,.0f}: net {e['net']:,.0f} ({e['net_low']:,.0f} to {e['net_high']:,.0f}). "
                f"Probability that the impact exceeds the cost: {e['p_impact_exceeds_cost']:.0%}. The interval is "
                "the statistical uncertainty of the measured lift only; it assumes the traffic and the effect stay "
                "as measured.</p>")
        r = results[results["experiment_id"] == exp.id]
        if len(r):
            metrics = [m for m in METRICS if r.loc[r["metric"] == m, "lift"].notna().any()]
            fig, axes = plt.subplots(len(metrics), 1, figsize=(7, 2.0 * len(metrics)), sharex=True, squeeze=False)
            for ax, m in zip(axes[:, 0], metrics):
                for variant, g in r[r["metric"] == m].groupby("variant"):
                    x = pd.to_datetime(g["as_of"])
                    ax.plot(x, g["lift"] * 100, marker="o", ms=3, label=variant)
                    ax.fill_between(x, g["lift_low"] * 100, g["lift_high"] * 100, alpha=0.2)
                ax.axhline(0, color="grey", lw=0.8)
                ax.set_ylabel(f"{m}\nlift %", fontsize=8)
            axes[0, 0].legend(fontsize=7)
            axes[0, 0].set_title("Relative lift against control with its 95% interval, cumulative by day")
            fig.autofmt_xdate()
            parts.append(_png(fig))
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>A/B report " + html.escape(ds) + "</title>"
            "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
            "font-size:13px}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    return storage.atomic_write_text(page, layout(cfg).ab_report(ds))


def import_outcomes(cfg: Config, path) -> int | None:
    """Land outcome events (CSV or Parquet): user_id, event_type (impression, click, add_to_cart,
    purchase), event_time, and optional recommendation_id, item_id, revenue (purchases) and
    experiment_id. Bad rows fail the import with the file, column, rule and example lines; a file
    with a header and no rows is refused. Returns the rows landed, None when the file was imported
    before (nothing written)."""
    path = existing_file(path, "import-outcomes")
    df = read_rows(path)
    missing = [c for c in ("user_id", "event_type", "event_time") if c not in df]
    if missing:
        raise ImportError_(f"{path}: rule missing_column: {missing} required; the file has {list(df.columns)}")
    known = {"user_id", "event_type", "event_time", "recommendation_id", "item_id", "revenue", "experiment_id"}
    if set(df.columns) - known:
        raise ImportError_(f"{path}: unknown column(s) {sorted(set(df.columns) - known)}; known: {sorted(known)}")

    def fail(col: str, rule: str, bad: pd.Series) -> None:
        lines = (np.flatnonzero(bad.to_numpy()) + 2)[:5].tolist()
        raise ImportError_(f"{path}: column {col!r}: rule {rule}: {int(bad.sum())} row(s), e.g. "
                           f"{df.loc[bad, col].head(5).tolist()} on line(s) {lines}; nothing written")

    df["user_id"] = df["user_id"].astype("string").str.strip()
    if (bad := df["user_id"].isna() | (df["user_id"] == "")).any():
        fail("user_id", "null_user_id", bad)
    df["event_type"] = df["event_type"].astype("string").str.strip().str.lower()
    if (bad := ~df["event_type"].isin(OUTCOME_TYPES).fillna(False)).any():
        fail("event_type", f"unknown_event_type (one of {OUTCOME_TYPES})", bad)
    t = pd.to_datetime(df["event_time"], errors="coerce", utc=True)
    if (bad := t.isna()).any():
        fail("event_time", "unparseable_time", bad)
    df["event_time"] = t
    revenue = pd.to_numeric(df["revenue"], errors="coerce") if "revenue" in df else pd.Series(0.0, index=df.index)
    if (bad := (df["event_type"] == "purchase") & (revenue.isna() | (revenue < 0))).any():
        df["revenue"] = df.get("revenue")
        fail("revenue", "purchase_without_valid_revenue", bad)
    df["revenue"] = revenue.fillna(0.0).astype(float)
    for col in ("recommendation_id", "item_id", "experiment_id"):
        df[col] = df[col].astype("string") if col in df else pd.Series(pd.NA, index=df.index, dtype="string")
    df = drop_forgotten(cfg, df)
    batch = "outcomes-" + storage.file_digest(path)
    if storage.landing_batch_exists(layout(cfg).landing, OUTCOMES, batch):
        return None
    storage.write_landing_table(layout(cfg).landing, OUTCOMES, pa.Table.from_pandas(df, preserve_index=False), batch)
    return int(len(df))


def plan_text(plan) -> str:
    days = f"; {plan.days} days at the given daily users" if plan.days else ""
    return (f"{plan.detail}\nusers per arm: {plan.users_per_arm:,}; all arms: {plan.total_users:,}{days}")
