"""The business-rule re-ranking layer (docs/rules.md), driven by a YAML rules file.

``load_rules`` merges the file named by config ``rules_file`` over the defaults in
``pipelines/rules.yaml``. ``rerank_personal`` turns each user's ordered candidates into the
published list, vectorised over all users at once (pandas group operations, no loop over users):

1. drop unavailable items (inactive; out of stock when the rules say so);
2. drop already-bought items that are not repeatable (``for_you``; ``new_for_you`` never has them);
3. utility = 1 / log2(position + 1) x (1 + margin and promotion boosts), re-sorted;
4. at most ``max_category_share`` of the list from one category;
5. the head of the list, then brand-new items (content), then discovery items, then pinned items
   at their positions, then backfill from best sellers up to ``min_items``.

The publish step turns each row's source into a short ``reason``.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import yaml

from pipelines.config import Config

log = logging.getLogger(__name__)

DEFAULT_RULES = Path(__file__).with_name("rules.yaml")
MAX_BOOST = 0.5


class RulesError(ValueError):
    pass


def _merge(base: dict, over: dict, path: str, source: str) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if k not in base:
            raise RulesError(f"{source}: unknown rule {path}{k!r}; known: {sorted(base)}")
        out[k] = _merge(base[k], v, f"{path}{k}.", source) if isinstance(base[k], dict) else v
    return out


@dataclass(frozen=True)
class Rules:
    drop_out_of_stock: bool
    repeatable_min_ratio: float
    margin_weight: float
    promotion_weight: float
    max_category_share: float
    discovery_share: float
    pinned: tuple
    min_items: int
    source: str


def load_rules(cfg: Config) -> Rules:
    base = yaml.safe_load(DEFAULT_RULES.read_text())
    source = str(DEFAULT_RULES)
    if cfg.rules_file:
        path = Path(cfg.rules_file)
        if not path.exists():
            raise RulesError(f"rules file {path} (config rules_file) not found")
        base = _merge(base, yaml.safe_load(path.read_text()) or {}, "", str(path))
        source = str(path)
    try:
        r = Rules(
            drop_out_of_stock=bool(base["availability"]["drop_out_of_stock"]),
            repeatable_min_ratio=float(base["already_bought"]["repeatable_min_ratio"]),
            margin_weight=float(base["boosts"]["margin_weight"]),
            promotion_weight=float(base["boosts"]["promotion_weight"]),
            max_category_share=float(base["diversity"]["max_category_share"]),
            discovery_share=float(base["discovery"]["share"]),
            pinned=tuple(dict(p) for p in (base.get("pinned") or [])),
            min_items=int(base["min_items"]),
            source=source,
        )
    except (TypeError, ValueError, KeyError) as exc:
        raise RulesError(f"{source}: invalid value: {exc}") from exc
    for name in ("margin_weight", "promotion_weight"):
        if not 0 <= getattr(r, name) <= MAX_BOOST:
            raise RulesError(f"{source}: boosts.{name} must be within [0, {MAX_BOOST}], got {getattr(r, name)}")
    if not 0 < r.max_category_share <= 1:
        raise RulesError(f"{source}: diversity.max_category_share must be in (0, 1], got {r.max_category_share}")
    if not 0 <= r.discovery_share < 1:
        raise RulesError(f"{source}: discovery.share must be in [0, 1), got {r.discovery_share}")
    for p in r.pinned:
        if "item_id" not in p or int(p.get("position", 0)) < 1:
            raise RulesError(f"{source}: each pinned entry needs item_id and position >= 1, got {p}")
    return r


def item_flags(items: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    """Per item (aligned with item_idx): available, repeatable, margin in [0, 1], promotion."""
    available = items["active"].to_numpy(dtype=bool).copy()
    if rules.drop_out_of_stock and "in_stock" in items:
        available &= items["in_stock"].astype("boolean").fillna(True).to_numpy(dtype=bool)
    rate = items["repeat_rate_full"].to_numpy(float) if "repeat_rate_full" in items else np.ones(len(items))
    catalog_rate = float(np.nanmean(rate)) if len(rate) else 0.0
    repeatable = rate >= rules.repeatable_min_ratio * catalog_rate
    if "repeatable" in items:
        flag = items["repeatable"].astype("boolean")
        repeatable = np.where(flag.isna(), repeatable, flag.fillna(False).to_numpy(dtype=bool))
    margin = pd.to_numeric(items["margin"], errors="coerce").fillna(0).clip(0, 1).to_numpy() \
        if "margin" in items else np.zeros(len(items))
    promo = items["promotion"].astype("boolean").fillna(False).to_numpy(dtype=bool) \
        if "promotion" in items else np.zeros(len(items), bool)
    return pd.DataFrame({"available": available, "repeatable": repeatable.astype(bool), "margin": margin,
                         "promotion": promo})


def _first_per_user(df: pd.DataFrame, n: int | np.ndarray) -> pd.DataFrame:
    pos = df.groupby("user_idx", sort=False).cumcount().to_numpy()
    limit = n if np.isscalar(n) else np.asarray(n)[df["user_idx"].to_numpy()]
    return df[pos < limit]


def rerank_personal(cands: pd.DataFrame, *, surface: str, rules: Rules, flags: pd.DataFrame, category: np.ndarray,
                    bought: sp.csr_matrix, user_categories: sp.csr_matrix, top_n: int,
                    fresh: pd.DataFrame, fresh_slots: int, discovery_pool: np.ndarray, backfill: pd.DataFrame,
                    item_index: dict[str, int], exclude_owned: sp.csr_matrix | None) -> pd.DataFrame:
    """Apply the rules to one surface.

    ``cands``: user_idx, item_idx, source, in each user's candidate order (best first).
    ``category``: category code per item; ``user_categories``: users x category codes (interaction weight).
    ``fresh``: brand-new item candidates (user_idx, item_idx, source), best first.
    ``discovery_pool``: item indices (best sellers, best first) for discovery slots.
    ``backfill``: user_idx, item_idx, source: best sellers of the user's country, then overall.
    ``exclude_owned``: users x items of items that may never appear (new_for_you: all interacted items).
    Returns user_idx, rank (1..), item_idx, utility, source (the caller turns sources into reasons).
    """
    avail, repeatable = flags["available"].to_numpy(), flags["repeatable"].to_numpy()

    def allowed(df: pd.DataFrame) -> pd.DataFrame:
        df = df.astype({"user_idx": np.int64, "item_idx": np.int64})
        u, i = df["user_idx"].to_numpy(), df["item_idx"].to_numpy()
        ok = avail[i]
        if len(df):
            owned = np.asarray(bought[u, i]).ravel() > 0
            ok &= ~owned | repeatable[i]
            if exclude_owned is not None:
                ok &= ~(np.asarray(exclude_owned[u, i]).ravel() > 0)
        return df[ok]

    df = allowed(cands).copy()
    df["pos"] = df.groupby("user_idx", sort=False).cumcount() + 1
    boost = 1 + rules.margin_weight * flags["margin"].to_numpy()[df["item_idx"]] \
        + rules.promotion_weight * flags["promotion"].to_numpy()[df["item_idx"]]
    df["utility"] = 1.0 / np.log2(df["pos"].to_numpy() + 1.0) * boost
    df = df.sort_values(["user_idx", "utility", "pos"], ascending=[True, False, True], kind="stable")
    # Diversity: at most max_category_share of the list from one category.
    cap = max(1, int(np.floor(rules.max_category_share * top_n)))
    df["category"] = category[df["item_idx"].to_numpy()]
    df = df[df.groupby(["user_idx", "category"], sort=False).cumcount() < cap]
    n_fresh = fresh_slots if len(fresh) else 0
    n_disc = int(round(rules.discovery_share * top_n))
    n_pins = len([p for p in rules.pinned if surface in p.get("surfaces", [surface])])
    head_n = max(1, top_n - n_fresh - n_disc - n_pins)
    head = _first_per_user(df, head_n)
    parts = [head.assign(tier=0)]
    if len(fresh):
        parts.append(allowed(fresh).assign(tier=1, utility=0.0))
    if n_disc and len(discovery_pool):
        # Best sellers from categories the user never interacted with (users with no history: none).
        has_history = np.diff(user_categories.indptr) > 0
        present = np.unique(np.concatenate([cands["user_idx"].to_numpy(np.int64),
                                            backfill["user_idx"].to_numpy(np.int64)]))
        users = present[has_history[present]]
        pool_code = category[discovery_pool]
        uu = np.repeat(users, len(discovery_pool))
        ii = np.tile(discovery_pool, len(users))
        seen = np.asarray(user_categories[uu, np.tile(pool_code, len(users))]).ravel() > 0
        disc = pd.DataFrame({"user_idx": uu[~seen], "item_idx": ii[~seen]})
        disc = disc.assign(source="discovery", tier=2, utility=0.0)
        parts.append(allowed(disc))
    out = pd.concat(parts, ignore_index=True)
    out = out.drop_duplicates(["user_idx", "item_idx"], keep="first")
    out["category"] = category[out["item_idx"].to_numpy()]
    # Discovery items beyond n_disc and fresh items beyond their slots are not needed.
    tier_pos = out.groupby(["user_idx", "tier"], sort=False).cumcount().to_numpy()
    tier = out["tier"].to_numpy()
    out = out[(tier == 0) | ((tier == 1) & (tier_pos < max(n_fresh, 0))) | ((tier == 2) & (tier_pos < n_disc))]
    # Backfill up to min_items from best sellers (country, then overall).
    want = min(rules.min_items, top_n)
    # The candidates beyond the head come first, then best sellers (both "tier 3": backfill).
    rest = df.drop(index=head.index).assign(tier=3)
    back = allowed(backfill).assign(tier=3, utility=0.0)
    back["category"] = category[back["item_idx"].to_numpy()]
    out = pd.concat([out, rest, back], ignore_index=True).drop_duplicates(["user_idx", "item_idx"], keep="first")
    out = out.sort_values(["user_idx", "tier"], kind="stable")
    # The category cap over the whole list; capped-out items are a last resort (tier 4) so that
    # min_items wins over diversity when a catalog has too few categories.
    over = out.groupby(["user_idx", "category"], sort=False).cumcount().to_numpy() >= cap
    out = out.assign(tier=np.where(over, 4, out["tier"].to_numpy())).sort_values(["user_idx", "tier"], kind="stable")
    pos = out.groupby("user_idx", sort=False).cumcount().to_numpy()
    out = out[(out["tier"].to_numpy() < 3) | (pos < want)]
    # Pinned items at their positions (moved there if already in the list).
    for p in rules.pinned:
        if surface not in p.get("surfaces", [surface]) or str(p["item_id"]) not in item_index:
            continue
        item = item_index[str(p["item_id"])]
        if not avail[item]:
            continue
        users = out["user_idx"].unique()
        out = out[out["item_idx"] != item]
        out = out.assign(order=out.groupby("user_idx", sort=False).cumcount() + 1.0)
        pin = pd.DataFrame({"user_idx": users, "item_idx": item, "source": "pinned",
                            "tier": -1, "utility": 0.0, "order": float(p["position"]) - 0.5})
        out = pd.concat([out, allowed(pin)], ignore_index=True).sort_values(["user_idx", "order"], kind="stable")
        out = out.drop(columns="order")
    out = _first_per_user(out, top_n)
    out = out.assign(rank=out.groupby("user_idx", sort=False).cumcount() + 1)
    return out[["user_idx", "rank", "item_idx", "utility", "source"]].reset_index(drop=True)
