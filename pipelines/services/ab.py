"""A/B testing: experiments as config, deterministic assignment, power analysis, and the analysis of
outcome events (docs/ab-testing.md).

* ``load_experiments``: the YAML file named by config ``experiments_file``.
* ``assign``: variant per user from sha256(salt ":" user_id), the same on every machine and night.
* ``plan_proportions`` / ``plan_means``: users per arm for a two-sided test (normal approximation,
  solved exactly as statsmodels' ``NormalIndPower`` does) and the days that takes.
* ``analyse``: per arm and metric the mean, the relative lift against control with a delta-method
  confidence interval and a p-value; a sample-ratio-mismatch (SRM) check; all vectorised.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml
from scipy import optimize, stats

from pipelines.config import Config
from pipelines.infra.hashing import bucket

log = logging.getLogger(__name__)

LISTS = ("current", "champion", "challenger", "popularity", "none")
SRM_ALPHA = 0.001  # a sample-ratio mismatch is flagged below this chi-square p-value


class ExperimentError(ValueError):
    pass


@dataclass(frozen=True)
class Variant:
    name: str
    share: float
    lists: str = "current"


@dataclass(frozen=True)
class Experiment:
    id: str
    variants: tuple[Variant, ...]
    start: date
    end: date
    salt: str = ""
    control: str = ""
    surfaces: tuple[str, ...] = ("for_you", "new_for_you", "buy_again")

    def active(self, ds: str) -> bool:
        return self.start <= date.fromisoformat(ds) <= self.end

    @property
    def control_variant(self) -> str:
        return self.control or self.variants[0].name


@dataclass(frozen=True)
class Programme:
    experiments: tuple[Experiment, ...] = ()
    roi: dict = field(default_factory=dict)


def load_experiments(cfg: Config) -> Programme:
    if not cfg.ab.experiments_file:
        return Programme()
    path = Path(cfg.ab.experiments_file)
    if not path.exists():
        raise ExperimentError(f"experiments file {path} (config experiments_file) not found")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - {"experiments", "roi"}
    if unknown:
        raise ExperimentError(f"{path}: unknown keys {sorted(unknown)}; known: experiments, roi")
    out = []
    for i, e in enumerate(data.get("experiments") or []):
        where = f"{path}: experiments[{i}]"
        try:
            variants = tuple(Variant(str(v["name"]), float(v["share"]), str(v.get("lists", "current")))
                             for v in e["variants"])
            exp = Experiment(id=str(e["id"]), variants=variants, start=date.fromisoformat(str(e["start"])),
                             end=date.fromisoformat(str(e["end"])), salt=str(e.get("salt", e["id"])),
                             control=str(e.get("control", "")),
                             surfaces=tuple(e.get("surfaces", ("for_you", "new_for_you", "buy_again"))))
        except (KeyError, TypeError, ValueError) as exc:
            raise ExperimentError(f"{where}: {exc!r}; each experiment needs id, start, end and variants "
                                  "(name, share, lists)") from exc
        if abs(sum(v.share for v in variants) - 1.0) > 1e-9:
            raise ExperimentError(f"{where} ({exp.id}): variant shares sum to {sum(v.share for v in variants)}, not 1")
        bad = [v.lists for v in variants if v.lists not in LISTS]
        if bad:
            raise ExperimentError(f"{where} ({exp.id}): unknown lists {bad}; one of {LISTS}")
        if exp.control_variant not in {v.name for v in variants}:
            raise ExperimentError(f"{where} ({exp.id}): control {exp.control_variant!r} is not a variant")
        if len({v.name for v in variants}) != len(variants):
            raise ExperimentError(f"{where} ({exp.id}): variant names repeat")
        out.append(exp)
    for a in out:
        for b in out:
            if a.id < b.id and a.start <= b.end and b.start <= a.end and set(a.surfaces) & set(b.surfaces):
                raise ExperimentError(f"{path}: experiments {a.id} and {b.id} overlap in time on the same surfaces; "
                                      "a user would be in two tests at once")
    return Programme(tuple(out), dict(data.get("roi") or {}))


def assign(exp: Experiment, user_ids) -> pd.DataFrame:
    """experiment_id, user_id, variant, bucket for every user."""
    user_ids = pd.Series(user_ids, dtype="string").astype(str).to_numpy()
    b = bucket(exp.salt, user_ids)
    edges = np.cumsum([v.share for v in exp.variants])
    idx = np.minimum(np.searchsorted(edges, b, side="right"), len(exp.variants) - 1)
    names = np.array([v.name for v in exp.variants], dtype=object)
    return pd.DataFrame({"experiment_id": exp.id, "user_id": user_ids, "variant": names[idx], "bucket": b})


def active_assignments(cfg: Config, ds: str, user_ids) -> list[tuple[Experiment, pd.DataFrame]]:
    """(experiment, assignment aligned with ``user_ids``) for every experiment running on ds."""
    out = []
    for exp in load_experiments(cfg).experiments:
        if exp.active(ds):
            a = assign(exp, user_ids)
            log.info("experiment %s on ds=%s: %s", exp.id, ds, a["variant"].value_counts().to_dict())
            out.append((exp, a))
    return out


def assignments_table(ds: str, run_id: str, experiments: list[tuple[Experiment, pd.DataFrame]]):
    """The ``ab_assignments`` rows of ds: experiment, user, variant, bucket (schema kept when empty)."""
    frames = [a.assign(lists=a["variant"].map({v.name: v.lists for v in exp.variants})) for exp, a in experiments]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {"experiment_id": pd.Series(dtype=str), "user_id": pd.Series(dtype=str), "variant": pd.Series(dtype=str),
         "bucket": pd.Series(dtype=float), "lists": pd.Series(dtype=str)})
    df.insert(0, "run_id", run_id)
    df.insert(0, "ds", date.fromisoformat(ds))
    return pa.Table.from_pandas(df, preserve_index=False)


# ------------------------------------------------------------------ power
def _solve_n(effect: float, alpha: float, power: float, ratio: float = 1.0) -> float:
    """Users in the first arm for a two-sided z-test of a standardised effect (as statsmodels'
    NormalIndPower.solve_power: both tails counted)."""
    if effect == 0:
        raise ExperimentError("the effect size is 0: no sample size detects no difference")
    crit = stats.norm.isf(alpha / 2)
    effect = abs(effect)

    def achieved(n1: float) -> float:
        nc = effect * math.sqrt(n1 / (1 + 1 / ratio))
        return stats.norm.sf(crit - nc) + stats.norm.cdf(-crit - nc) - power

    hi = 10.0
    while achieved(hi) < 0:
        hi *= 2
    return optimize.brentq(achieved, 1e-6, hi, xtol=1e-10)


@dataclass(frozen=True)
class Plan:
    users_per_arm: int
    total_users: int
    days: int | None
    effect_size: float
    detail: str


def plan_proportions(baseline: float, mde: float, alpha: float = 0.05, power: float = 0.8, arms: int = 2,
                     daily_users: int | None = None) -> Plan:
    """Users per arm to detect a relative lift ``mde`` of a rate ``baseline`` (Cohen's h, arcsine)."""
    if not 0 < baseline < 1 or not 0 < baseline * (1 + mde) < 1:
        raise ExperimentError("baseline rate and baseline x (1 + mde) must be within (0, 1)")
    h = 2 * math.asin(math.sqrt(baseline * (1 + mde))) - 2 * math.asin(math.sqrt(baseline))
    return _plan(h, alpha, power, arms, daily_users,
                 f"rate {baseline:g} -> {baseline * (1 + mde):g} (relative lift {mde:+.1%}), Cohen's h {h:.5f}")


def plan_means(mean: float, sd: float, mde: float, alpha: float = 0.05, power: float = 0.8, arms: int = 2,
               daily_users: int | None = None) -> Plan:
    """Users per arm to detect a relative lift ``mde`` of a mean (revenue per visitor) with standard
    deviation ``sd`` per user: standardised effect d = mde x mean / sd."""
    if sd <= 0:
        raise ExperimentError("the standard deviation must be positive")
    d = mde * mean / sd
    return _plan(d, alpha, power, arms, daily_users,
                 f"mean {mean:g} -> {mean * (1 + mde):g} (relative lift {mde:+.1%}), sd {sd:g}, Cohen's d {d:.5f}")


def _plan(effect, alpha, power, arms, daily_users, detail) -> Plan:
    n = math.ceil(_solve_n(effect, alpha, power))
    total = n * arms
    days = math.ceil(total / daily_users) if daily_users else None
    return Plan(n, total, days, effect, detail)


# ------------------------------------------------------------------ analysis
METRICS = ("ctr", "add_to_cart_rate", "conversion", "revenue_per_visitor", "average_order_value",
           "cross_category_rate")
RATIO_METRICS = {"ctr": ("clicks", "impressions"), "average_order_value": ("revenue", "orders")}
MEAN_METRICS = {"add_to_cart_rate": "added", "conversion": "converted", "revenue_per_visitor": "revenue",
                "cross_category_rate": "cross_category"}


def per_visitor(assign_df: pd.DataFrame, outcomes: pd.DataFrame, categories: pd.Series | None = None) -> pd.DataFrame:
    """One row per assigned user with any outcome event: variant and the per-user sums the metrics use.

    ``outcomes``: user_id, event_type (impression, click, add_to_cart, purchase), revenue,
    recommendation_id (optional), item_id (optional). Impressions and clicks count when they carry a
    recommendation_id (recommendations shown and clicked); ``categories``: item_id -> category.
    """
    o = outcomes.merge(assign_df[["user_id", "variant"]], on="user_id", how="inner")
    has_rec = o["recommendation_id"].notna() if "recommendation_id" in o else pd.Series(True, index=o.index)
    et = o["event_type"]
    o = o.assign(impressions=((et == "impression") & has_rec).astype(float),
                 clicks=((et == "click") & has_rec).astype(float),
                 added=(et == "add_to_cart").astype(float), orders=(et == "purchase").astype(float),
                 revenue=np.where(et == "purchase", pd.to_numeric(o.get("revenue", 0), errors="coerce"), 0.0))
    g = o.groupby(["user_id", "variant"], sort=False)
    users = g[["impressions", "clicks", "added", "orders", "revenue"]].sum().reset_index()
    users["revenue"] = users["revenue"].fillna(0.0)
    users["converted"] = (users["orders"] > 0).astype(float)
    users["added"] = (users["added"] > 0).astype(float)
    if categories is not None and "item_id" in o:
        bought = o[o["event_type"] == "purchase"].assign(cat=lambda d: d["item_id"].map(categories))
        span = bought.dropna(subset=["cat"]).groupby("user_id")["cat"].nunique()
        users["cross_category"] = (users["user_id"].map(span).fillna(0) >= 2).astype(float)
    else:
        users["cross_category"] = np.nan
    return users


def _mean_stats(x: np.ndarray) -> tuple[float, float, int]:
    n = len(x)
    return (float(x.mean()) if n else np.nan), (float(x.var(ddof=1) / n) if n > 1 else np.nan), n


def _ratio_stats(y: np.ndarray, x: np.ndarray) -> tuple[float, float, int]:
    """Ratio of sums sum(y) / sum(x) over users and its delta-method variance."""
    n = len(x)
    if n < 2 or x.sum() == 0:
        return np.nan, np.nan, n
    mx, my = x.mean(), y.mean()
    r = my / mx
    var = (np.var(y, ddof=1) - 2 * r * np.cov(x, y, ddof=1)[0, 1] + r * r * np.var(x, ddof=1)) / (n * mx * mx)
    return float(r), float(var), n


def compare(mc: float, vc: float, mt: float, vt: float, alpha: float = 0.05) -> dict:
    """Relative lift mt / mc - 1, its delta-method interval, and the two-sided p-value of mt - mc."""
    z = stats.norm.isf(alpha / 2)
    if not (mc and np.isfinite(mc) and np.isfinite(vc) and np.isfinite(vt)):
        return {"lift": np.nan, "lift_low": np.nan, "lift_high": np.nan, "p_value": np.nan}
    lift = mt / mc - 1
    se = math.sqrt(vt / mc ** 2 + mt ** 2 * vc / mc ** 4)
    diff_se = math.sqrt(vt + vc)
    p = float(2 * stats.norm.sf(abs(mt - mc) / diff_se)) if diff_se > 0 else (0.0 if mt != mc else 1.0)
    return {"lift": lift, "lift_low": lift - z * se, "lift_high": lift + z * se, "p_value": p}


def srm(counts: dict[str, int], shares: dict[str, float]) -> tuple[float, bool]:
    """Chi-square goodness of fit of assigned users against the configured shares."""
    names = [k for k in shares if shares[k] > 0]
    obs = np.array([counts.get(k, 0) for k in names], dtype=float)
    if obs.sum() == 0:
        return np.nan, False
    exp = np.array([shares[k] for k in names]) * obs.sum()
    p = float(stats.chisquare(obs, exp).pvalue)
    return p, p < SRM_ALPHA


def analyse(exp: Experiment, assign_df: pd.DataFrame, outcomes: pd.DataFrame, categories: pd.Series | None = None,
            alpha: float = 0.05) -> pd.DataFrame:
    """Per metric and non-control variant: both arms' means, lift, interval, p-value, and the SRM check."""
    users = per_visitor(assign_df, outcomes, categories)
    counts = assign_df["variant"].value_counts().to_dict()
    shares = {v.name: v.share for v in exp.variants}
    srm_p, srm_flag = srm(counts, shares)
    control = exp.control_variant
    by = {name: g for name, g in users.groupby("variant")}
    rows = []
    for v in exp.variants:
        if v.name == control:
            continue
        c, t = by.get(control, users.iloc[:0]), by.get(v.name, users.iloc[:0])
        for metric in METRICS:
            if metric in RATIO_METRICS:
                num, den = RATIO_METRICS[metric]
                mc, vc, nc = _ratio_stats(c[num].to_numpy(float), c[den].to_numpy(float))
                mt, vt, nt = _ratio_stats(t[num].to_numpy(float), t[den].to_numpy(float))
            else:
                col = MEAN_METRICS[metric]
                mc, vc, nc = _mean_stats(c[col].to_numpy(float))
                mt, vt, nt = _mean_stats(t[col].to_numpy(float))
            r = compare(mc, vc, mt, vt, alpha)
            rows.append({"experiment_id": exp.id, "metric": metric, "control": control, "variant": v.name,
                         "visitors_control": nc, "visitors_variant": nt, "mean_control": mc, "mean_variant": mt,
                         **r, "significant": bool(r["p_value"] < alpha) if np.isfinite(r["p_value"]) else False,
                         "assigned_control": int(counts.get(control, 0)), "assigned_variant": int(counts.get(v.name, 0)),
                         "srm_p_value": srm_p, "srm_flag": srm_flag})
    return pd.DataFrame(rows)


def roi(results: pd.DataFrame, daily_visitors: float, days: float, cost: float) -> dict:
    """Revenue impact of the measured revenue-per-visitor lift for the retailer's traffic over
    ``days``, with its 95% interval, against ``cost`` for the same period."""
    r = results[results["metric"] == "revenue_per_visitor"]
    if r.empty or not np.isfinite(r.iloc[0]["lift"]):
        return {}
    r = r.iloc[0]
    base = r["mean_control"] * daily_visitors * days
    impact, low, high = base * r["lift"], base * r["lift_low"], base * r["lift_high"]
    se = (high - low) / (2 * stats.norm.isf(0.025))
    p_positive = float(stats.norm.sf((cost - impact) / se)) if se > 0 else float(impact > cost)
    return {"variant": r["variant"], "revenue_impact": impact, "impact_low": low, "impact_high": high,
            "cost": cost, "net": impact - cost, "net_low": low - cost, "net_high": high - cost,
            "p_impact_exceeds_cost": p_positive, "days": days, "daily_visitors": daily_visitors}
