"""The business-rule re-ranking layer (docs/rules.md), driven by a YAML rules file.

``load_rules`` merges the file named by config ``rules_file`` over the defaults in
``pipelines/rules.yaml``. ``rerank_lists`` turns each user's ordered candidates into the
published list, vectorised over a block of users at once: every step works on rectangular
(users x slots) arrays, -1 marking an empty slot, with row-wise sorts, cumulative counts and
scatters; no loop over users, no per-row Python (``rerank_personal`` is the same on long frames).

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

from models.rows import (
    RowSet,
    compact,
    first_occurrence,
    in_rows,
    place,
    row_cumcount,
    take_first,
)
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
    if cfg.ranking.rules_file:
        path = Path(cfg.ranking.rules_file)
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


@dataclass
class Lists:
    """Rectangular per-user lists: ids (-1 = empty slot), source codes and utility, (rows, k)."""
    ids: np.ndarray
    src: np.ndarray
    utility: np.ndarray


def rerank_lists(users: np.ndarray, cand_ids: np.ndarray, cand_src: np.ndarray, *, surface: str, rules: Rules,
                 flags: pd.DataFrame, category: np.ndarray, bought: RowSet, user_categories: RowSet, top_n: int,
                 fresh_ids: np.ndarray, fresh_slots: int, discovery_pool: np.ndarray, back_ids: np.ndarray,
                 back_src: np.ndarray, item_index: dict[str, int], exclude_owned: RowSet | None,
                 codes: dict[str, int]) -> Lists:
    """Apply the rules to one surface for the users ``users`` (rows of every array), vectorised
    over a rectangular layout: (users, k) arrays, -1 for an empty slot, no per-row Python.

    ``cand_ids``/``cand_src``: each user's ordered candidates (best first) and their source codes.
    ``bought``, ``user_categories``, ``exclude_owned``: RowSets over the same rows (purchases;
    category codes the user interacted with; items that may never appear, or None).
    ``fresh_ids``: brand-new item candidates, best first. ``discovery_pool``: item indices (best
    sellers, best first) for discovery slots. ``back_ids``/``back_src``: backfill, best sellers of
    the user's country then overall. ``codes``: the source codes of content_new_item, discovery and
    pinned. Returns Lists of width top_n (utility 0 for every row that is not a ranked candidate).
    """
    m = len(users)
    avail, repeatable = flags["available"].to_numpy(bool), flags["repeatable"].to_numpy(bool)
    boost = 1 + rules.margin_weight * flags["margin"].to_numpy(float) \
        + rules.promotion_weight * flags["promotion"].to_numpy(bool)

    def allowed(ids: np.ndarray) -> np.ndarray:
        safe = np.maximum(ids, 0)
        ok = (ids >= 0) & avail[safe]
        ok &= ~bought.has(ids) | repeatable[safe]
        if exclude_owned is not None:
            ok &= ~exclude_owned.has(ids)
        return ok

    # 1-3. Allowed candidates, position utility x boosts, re-sorted; then the category cap.
    ok = allowed(cand_ids)
    pos = np.cumsum(ok, axis=1)
    util = np.where(ok, 1.0 / np.log2(np.maximum(pos, 1) + 1.0) * boost[np.maximum(cand_ids, 0)], -np.inf)
    order = np.argsort(-util, axis=1, kind="stable")  # ties keep candidate order; dropped cells last
    ids, src, util, ok = (np.take_along_axis(a, order, 1) for a in (cand_ids, cand_src, util, ok))
    cap = max(1, int(np.floor(rules.max_category_share * top_n)))
    ok &= row_cumcount(category[np.maximum(ids, 0)], ok) < cap
    ok, ids, src, util = compact(ok, ids, src, util)
    n_fresh = fresh_slots if (fresh_ids >= 0).any() else 0
    n_disc = int(round(rules.discovery_share * top_n))
    pins = [p for p in rules.pinned if surface in p.get("surfaces", [surface])]
    head_n = min(max(1, top_n - n_fresh - n_disc - len(pins)), ids.shape[1])
    head_ok, head = ok[:, :head_n], ids[:, :head_n]
    # 5. Brand-new items (not already in the head), then discovery items: best sellers from
    # categories the user never interacted with (users with no history: none).
    f_ok = first_occurrence(fresh_ids, allowed(fresh_ids) & ~in_rows(fresh_ids, head))
    f_keep = take_first(f_ok, max(n_fresh, 0))
    parts = [(head, src[:, :head_n], util[:, :head_n], head_ok, 0),
             (fresh_ids, np.full(fresh_ids.shape, codes["content_new_item"]), np.zeros(fresh_ids.shape), f_keep, 1)]
    if n_disc and len(discovery_pool):
        pool = pd.unique(np.asarray(discovery_pool, dtype=np.int64))
        present = (cand_ids >= 0).any(axis=1) | (back_ids >= 0).any(axis=1)
        has_history = (user_categories.row_nnz > 0) & present
        d_ids = np.broadcast_to(pool, (m, len(pool)))
        seen = user_categories.has(np.broadcast_to(category[pool], (m, len(pool))))
        d_ok = has_history[:, None] & ~seen & allowed(d_ids) \
            & ~in_rows(d_ids, np.hstack([head, np.where(f_ok, fresh_ids, -1)]))
        d_keep, d_ids = compact(take_first(d_ok, n_disc), d_ids, width=min(n_disc, len(pool)))
        parts.append((d_ids, np.full(d_ids.shape, codes["discovery"]), np.zeros(d_ids.shape), d_keep, 2))
    # 6. The candidates beyond the head, then best sellers (tier 3: backfill up to min_items).
    parts.append((ids[:, head_n:], src[:, head_n:], util[:, head_n:], ok[:, head_n:], 3))
    back = (back_ids, back_src, np.zeros(back_ids.shape), allowed(back_ids), 3)
    want = min(rules.min_items, top_n)

    def assemble(parts: list, rows: np.ndarray | None = None):
        """The list from its parts in order (first occurrence of an item wins). The category cap over
        the whole list: capped-out items are a last resort (tier 4), so that min_items wins over
        diversity when a catalog has too few categories; then a stable sort by tier (the parts are in
        tier order but for the capped-out ones, which go last), keeping tiers 0-2 and the first
        min_items: the kept cells are a prefix of the new order. Also returns the number of
        non-capped items per row."""
        def cat(k, dtype):
            return np.hstack([np.asarray(p[k] if rows is None else p[k][rows], dtype) for p in parts])

        ids, src, util = cat(0, np.int64), cat(1, np.int16), cat(2, np.float64)
        ok = first_occurrence(ids, cat(3, bool))
        tier = np.hstack([np.full((len(ids), p[0].shape[1]), p[4], np.int8) for p in parts])
        over = ok & (row_cumcount(category[np.maximum(ids, 0)], ok) >= cap)
        first, last = ok & ~over, over
        n_first = first.sum(axis=1, keepdims=True)
        dest = np.where(first, np.cumsum(first, axis=1) - 1, np.where(last, n_first + np.cumsum(last, axis=1) - 1, -1))
        dest = np.where((first & (tier < 3)) | (dest < want), dest, -1)
        return place(dest, top_n + len(pins), ids, src, util), n_first[:, 0]

    # The backfill only matters for rows with fewer than min_items non-capped items before it (it
    # comes last, so it changes nothing else): those rows are assembled again with it.
    (ok, ids, src, util), n_first = assemble(parts)
    short = np.flatnonzero(n_first < want)
    if len(short):
        (ok[short], ids[short], src[short], util[short]), _ = assemble(parts + [back], short)
    # 8. Pinned items at their positions (moved there if already in the list), for users with a list.
    for p in pins:
        if str(p["item_id"]) not in item_index:
            continue
        item = item_index[str(p["item_id"])]
        if not avail[item]:
            continue
        listed = ok.any(axis=1)
        ok &= ids != item
        ok, ids, src, util = compact(ok, ids, src, util)
        pin = np.full((m, 1), item, np.int64)
        put = listed & allowed(pin)[:, 0]
        w = ids.shape[1]
        at = np.where(put, np.minimum(int(p["position"]) - 1, ok.sum(axis=1)), w + 1)[:, None]
        col = np.arange(w + 1)[None, :]
        from_col = np.clip(np.where(col > at, col - 1, col), 0, max(w - 1, 0))
        here = col == at
        ids = np.where(here, item, np.take_along_axis(ids, from_col, 1))
        src = np.where(here, codes["pinned"], np.take_along_axis(src, from_col, 1))
        util = np.where(here, 0.0, np.take_along_axis(util, from_col, 1))
        ok = here | (np.take_along_axis(ok, from_col, 1) & ((col < w) | (col > at)))
    ok, ids, src, util = compact(ok, ids, src, util, width=top_n)
    return Lists(np.where(ok, ids, -1), np.where(ok, src, -1).astype(np.int16), np.where(ok, util, 0.0))


def _rect(df: pd.DataFrame, row_of: np.ndarray, rows: int, code_of: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Long rows (user_idx, item_idx, source) in list order -> (rows, k) ids and source codes."""
    col = df.groupby("user_idx", sort=False).cumcount().to_numpy()
    ids = np.full((rows, int(col.max()) + 1 if len(col) else 1), -1, np.int64)
    src = np.full(ids.shape, -1, np.int16)
    if len(df):
        r = row_of[df["user_idx"].to_numpy(np.int64)]
        ids[r, col] = df["item_idx"].to_numpy(np.int64)
        src[r, col] = [code_of[x] for x in df["source"]]
    return ids, src


def rerank_personal(cands: pd.DataFrame, *, surface: str, rules: Rules, flags: pd.DataFrame, category: np.ndarray,
                    bought: sp.csr_matrix, user_categories: sp.csr_matrix, top_n: int,
                    fresh: pd.DataFrame, fresh_slots: int, discovery_pool: np.ndarray, backfill: pd.DataFrame,
                    item_index: dict[str, int], exclude_owned: sp.csr_matrix | None) -> pd.DataFrame:
    """``rerank_lists`` on long frames (user_idx, item_idx, source, in each user's order; sparse
    matrices over all users). Returns user_idx, rank (1..), item_idx, utility, source."""
    names = sorted(set(cands["source"]) | set(fresh["source"]) | set(backfill["source"])
                   | {"content_new_item", "discovery", "pinned"})
    code_of = {k: i for i, k in enumerate(names)}
    users = np.unique(np.concatenate([d["user_idx"].to_numpy(np.int64) for d in (cands, fresh, backfill)]))
    row_of = np.zeros(int(users.max()) + 1 if len(users) else 1, np.int64)
    row_of[users] = np.arange(len(users))
    cand_ids, cand_src = _rect(cands, row_of, len(users), code_of)
    fresh_ids, _ = _rect(fresh, row_of, len(users), code_of)
    back_ids, back_src = _rect(backfill, row_of, len(users), code_of)
    out = rerank_lists(users, cand_ids, cand_src, surface=surface, rules=rules, flags=flags, category=category,
                       bought=RowSet(bought, users), user_categories=RowSet(user_categories, users), top_n=top_n,
                       fresh_ids=fresh_ids, fresh_slots=fresh_slots, discovery_pool=discovery_pool,
                       back_ids=back_ids, back_src=back_src, item_index=item_index,
                       exclude_owned=None if exclude_owned is None else RowSet(exclude_owned, users), codes=code_of)
    keep = out.ids >= 0
    r, c = np.nonzero(keep)
    return pd.DataFrame({"user_idx": users[r], "rank": c + 1, "item_idx": out.ids[keep],
                         "utility": out.utility[keep], "source": np.asarray(names, dtype=object)[out.src[keep]]})
