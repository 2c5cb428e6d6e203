"""Simulated outcome events with a known true lift, for the tests and the demo experiment.

Each visitor sees recommendations (impressions with a recommendation id), clicks some, adds to cart
and buys with the arm's probabilities; revenue per order is log-normal. The treatment multiplies the
click, add-to-cart and purchase probabilities by (1 + lift), so conversion, revenue per visitor and
the other per-visitor rates have the same true relative lift; the order value distribution is the
same in every arm (true AOV lift 0). ``srm_shift`` moves users from control to treatment to break the
assignment on purpose.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.services.ab import Experiment, assign


def simulate(exp: Experiment, n_users: int, seed: int, lift: dict[str, float] | None = None,
             base: dict | None = None, srm_shift: float = 0.0, start: str | None = None, days: int = 14,
             items: np.ndarray | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(assignments, outcome events). ``lift``: variant -> true relative lift (control 0)."""
    rng = np.random.default_rng(seed)
    base = {"impressions": 4.0, "ctr": 0.08, "add_to_cart": 0.12, "purchase": 0.30, "log_value_mean": 3.5,
            "log_value_sd": 0.6, **(base or {})}
    lift = lift or {}
    users = np.array([f"sim{seed}-{k:07d}" for k in range(n_users)], dtype=object)
    a = assign(exp, users)
    if srm_shift:
        control = exp.control_variant
        other = [v.name for v in exp.variants if v.name != control][0]
        move = (a["variant"].to_numpy() == control) & (rng.random(n_users) < srm_shift)
        a.loc[move, "variant"] = other
    factor = 1.0 + a["variant"].map(lambda v: lift.get(v, 0.0)).to_numpy(float)
    start_ts = pd.Timestamp(start or str(exp.start), tz="UTC")
    n_imp = rng.poisson(base["impressions"], n_users) + 1
    uid = np.repeat(np.arange(n_users), n_imp)
    t = start_ts + pd.to_timedelta(rng.integers(0, days * 86400, len(uid)), unit="s")
    items = items if items is not None else np.array([f"i{k:04d}" for k in range(200)], dtype=object)
    imp_item = items[rng.integers(0, len(items), len(uid))]
    rec_id = np.char.add("r", np.arange(len(uid)).astype(str)).astype(object)
    frames = [pd.DataFrame({"user_id": users[uid], "event_type": "impression", "event_time": t,
                            "recommendation_id": rec_id, "item_id": imp_item, "revenue": 0.0})]
    click = rng.random(len(uid)) < base["ctr"] * factor[uid]
    frames.append(pd.DataFrame({"user_id": users[uid[click]], "event_type": "click", "event_time": t[click],
                                "recommendation_id": rec_id[click], "item_id": imp_item[click], "revenue": 0.0}))
    add = rng.random(n_users) < base["add_to_cart"] * factor
    buy = rng.random(n_users) < base["purchase"] * factor
    n_orders = np.where(buy, rng.poisson(0.3, n_users) + 1, 0)
    ou = np.repeat(np.arange(n_users), n_orders)
    value = np.exp(rng.normal(base["log_value_mean"], base["log_value_sd"], len(ou)))
    ot = start_ts + pd.to_timedelta(rng.integers(0, days * 86400, len(ou)), unit="s")
    frames.append(pd.DataFrame({"user_id": users[np.flatnonzero(add)], "event_type": "add_to_cart",
                                "event_time": start_ts + pd.to_timedelta(rng.integers(0, days * 86400, add.sum()), unit="s"),
                                "recommendation_id": None, "item_id": items[rng.integers(0, len(items), add.sum())],
                                "revenue": 0.0}))
    frames.append(pd.DataFrame({"user_id": users[ou], "event_type": "purchase", "event_time": ot,
                                "recommendation_id": None, "item_id": items[rng.integers(0, len(items), len(ou))],
                                "revenue": value}))
    return a, pd.concat(frames, ignore_index=True)
