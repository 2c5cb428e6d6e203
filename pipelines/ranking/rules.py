"""The business-rule re-ranking layer (docs/rules.md), driven by a YAML rules file.

``load_rules`` merges the file named by config ``rules_file`` over the defaults in
``pipelines/rules.yaml``. ``rerank_lists`` turns each user's ordered candidates into the
published list, vectorised over a block of users at once: every step works on rectangular
(users x slots) arrays, -1 marking an empty slot, with row-wise sorts, cumulative counts and
scatters; no loop over users, no per-row Python (``rerank_personal`` is the same on long frames).
Its inputs: ``RulesNight`` (per night: rules, item flags, categories, discovery pool, source
codes), ``UserRows`` (per block of users: purchases, categories, backfill) and ``Candidates`` (per
surface: the ordered candidates, new items, exclusions).

1. drop unavailable items (inactive; out of stock when the rules say so);
2. drop already-bought items that are not repeatable (``for_you``; ``new_for_you`` never has them);
3. utility = 1 / log2(position + 1) x (1 + margin and promotion boosts) x review factor, re-sorted;
4. at most ``max_category_share`` of the list from one category;
5. the head of the list, then brand-new items (content), then discovery items, then pinned items
   at their positions, then backfill from best sellers up to ``min_items``.

The score step turns each row's source into a short ``reason`` (pipelines/ranking/reasons.py).
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

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
from pipelines.ranking.reasons import Source
from pipelines.ranking.review_rule import ReviewRule, parse_review_rule, review_factor, review_keeps

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
    reviews: ReviewRule = ReviewRule()  # pipelines/ranking/review_rule.py


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
            reviews=parse_review_rule(base["reviews"], source, RulesError),
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
    """Per item (aligned with item_idx): available, repeatable, margin in [0, 1], promotion, review_factor,
    and boost: (1 + margin and promotion boosts) x the review factor, the re-ranking utility's factor."""
    available = items["active"].to_numpy(dtype=bool) & review_keeps(items, rules.reviews)
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
    review = review_factor(items, rules.reviews)
    boost = (1 + rules.margin_weight * margin + rules.promotion_weight * promo) * review
    return pd.DataFrame({"available": available, "repeatable": repeatable.astype(bool), "margin": margin,
                         "promotion": promo, "review_factor": review, "boost": boost})


@dataclass
class Lists:
    """Rectangular per-user lists: ids (-1 = empty slot), source codes and utility, (rows, k)."""
    ids: np.ndarray
    src: np.ndarray
    utility: np.ndarray


@dataclass(frozen=True)
class SourceCodes:
    """Source codes of the items the rules add (default: pipelines/ranking/reasons.py's Source)."""
    new_item: int = int(Source.CONTENT_NEW_ITEM)
    discovery: int = int(Source.DISCOVERY)
    pinned: int = int(Source.PINNED)


@dataclass(frozen=True)
class RulesNight:
    """The per-night inputs of the rules layer, the same for every block of users: the rules, the
    item flags (``item_flags``), the category code per item, the discovery pool (item indices, best
    sellers first), item_id -> item index (pins), the list length and the codes of added items.
    The per-item arrays the rules read are derived once (cached)."""
    rules: Rules
    flags: pd.DataFrame
    category: np.ndarray
    discovery_pool: np.ndarray
    item_index: dict[str, int]
    top_n: int
    codes: SourceCodes = SourceCodes()

    @cached_property
    def available(self) -> np.ndarray:
        return self.flags["available"].to_numpy(bool)

    @cached_property
    def repeatable(self) -> np.ndarray:
        return self.flags["repeatable"].to_numpy(bool)

    @cached_property
    def boost(self) -> np.ndarray:
        return self.flags["boost"].to_numpy(float)  # item_flags

    @cached_property
    def pool(self) -> np.ndarray:
        return pd.unique(np.asarray(self.discovery_pool, dtype=np.int64))

    @property
    def cap(self) -> int:  # items per category in a list
        return max(1, int(np.floor(self.rules.max_category_share * self.top_n)))

    @property
    def discovery_slots(self) -> int:
        return int(round(self.rules.discovery_share * self.top_n))

    @property
    def want(self) -> int:  # the backfill fills a list up to this many items
        return min(self.rules.min_items, self.top_n)

    def pins(self, surface: str) -> tuple[int, list[tuple[int, int]]]:
        """(number of pins on ``surface``, [(item index, position)] of those whose item is known and
        available, in the rules' order)."""
        pins = [p for p in self.rules.pinned if surface in p.get("surfaces", [surface])]
        known = [(self.item_index[str(p["item_id"])], int(p["position"])) for p in pins
                 if str(p["item_id"]) in self.item_index]
        return len(pins), [(item, position) for item, position in known if self.available[item]]


@dataclass(frozen=True)
class UserRows:
    """What the rules know of a block of users (row r of every array: the block's r-th user): their
    purchases, the category codes they interacted with, and their backfill (ids and source codes:
    best sellers of their country, then overall)."""
    bought: RowSet
    categories: RowSet
    back_ids: np.ndarray
    back_src: np.ndarray


@dataclass(frozen=True)
class Candidates:
    """One surface's lists to re-rank for a block of users: each user's ordered candidates (best
    first) and their source codes, brand-new item candidates (best first) with the slots they may
    take, and the items that may never appear (a RowSet over the same rows, or None)."""
    surface: str
    ids: np.ndarray
    src: np.ndarray
    fresh_ids: np.ndarray
    fresh_slots: int
    exclude: RowSet | None = None


class _Part(NamedTuple):
    """A run of list cells in tier order: 0 head, 1 new items, 2 discovery, 3 rest and backfill."""
    ids: np.ndarray
    src: np.ndarray
    util: np.ndarray
    ok: np.ndarray
    tier: int


def _allowed(night: RulesNight, rows: UserRows, cand: Candidates, ids: np.ndarray) -> np.ndarray:
    """Available, not an already-bought item that is not repeatable, not excluded."""
    safe = np.maximum(ids, 0)
    ok = (ids >= 0) & night.available[safe]
    ok &= ~rows.bought.has(ids) | night.repeatable[safe]
    if cand.exclude is not None:
        ok &= ~cand.exclude.has(ids)
    return ok


def _ranked(night: RulesNight, rows: UserRows, cand: Candidates) -> tuple[np.ndarray, ...]:
    """Steps 1-4: the allowed candidates, position utility x boosts, re-sorted (ties keep candidate
    order), at most ``cap`` per category; kept cells moved left. Returns (ok, ids, src, util)."""
    ok = _allowed(night, rows, cand, cand.ids)
    pos = np.cumsum(ok, axis=1)
    util = np.where(ok, 1.0 / np.log2(np.maximum(pos, 1) + 1.0) * night.boost[np.maximum(cand.ids, 0)], -np.inf)
    order = np.argsort(-util, axis=1, kind="stable")  # ties keep candidate order; dropped cells last
    ids, src, util, ok = (np.take_along_axis(a, order, 1) for a in (cand.ids, cand.src, util, ok))
    ok &= row_cumcount(night.category[np.maximum(ids, 0)], ok) < night.cap
    return compact(ok, ids, src, util)


def _discovery(night: RulesNight, rows: UserRows, cand: Candidates, taken: np.ndarray) -> _Part:
    """Discovery items: best sellers from categories the user never interacted with (users with no
    history: none), not already ``taken``."""
    m, pool = cand.ids.shape[0], night.pool
    present = (cand.ids >= 0).any(axis=1) | (rows.back_ids >= 0).any(axis=1)
    has_history = (rows.categories.row_nnz > 0) & present
    d_ids = np.broadcast_to(pool, (m, len(pool)))
    seen = rows.categories.has(np.broadcast_to(night.category[pool], (m, len(pool))))
    d_ok = has_history[:, None] & ~seen & _allowed(night, rows, cand, d_ids) & ~in_rows(d_ids, taken)
    n_disc = night.discovery_slots
    d_keep, d_ids = compact(take_first(d_ok, n_disc), d_ids, width=min(n_disc, len(pool)))
    return _Part(d_ids, np.full(d_ids.shape, night.codes.discovery), np.zeros(d_ids.shape), d_keep, 2)


def _assemble(night: RulesNight, parts: list[_Part], width: int, rows: np.ndarray | None = None):
    """The list from its parts in order (first occurrence of an item wins). The category cap over
    the whole list: capped-out items are a last resort (tier 4), so that min_items wins over
    diversity when a catalog has too few categories; then a stable sort by tier, keeping tiers 0-2
    and the first min_items. Returns ((ok, ids, src, util) of ``width`` columns, the number of
    non-capped items per row); ``rows``: only those rows."""
    def cat(field: str, dtype) -> np.ndarray:
        return np.hstack([np.asarray(getattr(p, field) if rows is None else getattr(p, field)[rows], dtype)
                          for p in parts])

    ids, src, util = cat("ids", np.int64), cat("src", np.int16), cat("util", np.float64)
    ok = first_occurrence(ids, cat("ok", bool))
    tier = np.hstack([np.full((len(ids), p.ids.shape[1]), p.tier, np.int8) for p in parts])
    over = ok & (row_cumcount(night.category[np.maximum(ids, 0)], ok) >= night.cap)
    first, last = ok & ~over, over
    n_first = first.sum(axis=1, keepdims=True)
    dest = np.where(first, np.cumsum(first, axis=1) - 1, np.where(last, n_first + np.cumsum(last, axis=1) - 1, -1))
    dest = np.where((first & (tier < 3)) | (dest < night.want), dest, -1)
    return place(dest, width, ids, src, util), n_first[:, 0]


def _pin(lists: tuple[np.ndarray, ...], item: int, position: int, put: np.ndarray, code: int) -> tuple:
    """``item`` at ``position`` (1 = top; after the last item for a shorter list) in the rows
    ``put``, moved there if already listed, removed from the other rows. (ok, ids, src, util) in
    and out, one column wider."""
    ok, ids, src, util = lists
    ok &= ids != item
    ok, ids, src, util = compact(ok, ids, src, util)
    w = ids.shape[1]
    at = np.where(put, np.minimum(position - 1, ok.sum(axis=1)), w + 1)[:, None]
    col = np.arange(w + 1)[None, :]
    from_col = np.clip(np.where(col > at, col - 1, col), 0, max(w - 1, 0))
    here = col == at
    ids = np.where(here, item, np.take_along_axis(ids, from_col, 1))
    src = np.where(here, code, np.take_along_axis(src, from_col, 1))
    util = np.where(here, 0.0, np.take_along_axis(util, from_col, 1))
    ok = here | (np.take_along_axis(ok, from_col, 1) & ((col < w) | (col > at)))
    return ok, ids, src, util


def rerank_lists(night: RulesNight, rows: UserRows, cand: Candidates) -> Lists:
    """Apply the rules to one surface for a block of users (the rows of every array), vectorised
    over a rectangular layout: (users, k) arrays, -1 for an empty slot, no per-row Python.
    Returns Lists of width top_n (utility 0 for every row that is not a ranked candidate)."""
    m, top_n = cand.ids.shape[0], night.top_n
    ok, ids, src, util = _ranked(night, rows, cand)
    n_fresh = cand.fresh_slots if (cand.fresh_ids >= 0).any() else 0
    n_disc = night.discovery_slots
    n_pins, pins = night.pins(cand.surface)
    head_n = min(max(1, top_n - n_fresh - n_disc - n_pins), ids.shape[1])
    head = ids[:, :head_n]
    # 5. Brand-new items (not already in the head), then discovery items.
    fresh = cand.fresh_ids
    f_ok = first_occurrence(fresh, _allowed(night, rows, cand, fresh) & ~in_rows(fresh, head))
    parts = [_Part(head, src[:, :head_n], util[:, :head_n], ok[:, :head_n], 0),
             _Part(fresh, np.full(fresh.shape, night.codes.new_item), np.zeros(fresh.shape),
                   take_first(f_ok, max(n_fresh, 0)), 1)]
    if n_disc and len(night.discovery_pool):
        parts.append(_discovery(night, rows, cand, np.hstack([head, np.where(f_ok, fresh, -1)])))
    # 6. The candidates beyond the head, then best sellers (tier 3: backfill up to min_items).
    parts.append(_Part(ids[:, head_n:], src[:, head_n:], util[:, head_n:], ok[:, head_n:], 3))
    # The backfill only matters for rows with fewer than min_items non-capped items before it (it
    # comes last, so it changes nothing else): those rows are assembled again with it.
    width = top_n + n_pins
    (ok, ids, src, util), n_first = _assemble(night, parts, width)
    short = np.flatnonzero(n_first < night.want)
    if len(short):
        back = _Part(rows.back_ids, rows.back_src, np.zeros(rows.back_ids.shape),
                     _allowed(night, rows, cand, rows.back_ids), 3)
        (ok[short], ids[short], src[short], util[short]), _ = _assemble(night, parts + [back], width, short)
    # 8. Pinned items at their positions (moved there if already in the list), for users with a list.
    lists = ok, ids, src, util
    for item, position in pins:
        put = lists[0].any(axis=1) & _allowed(night, rows, cand, np.full((m, 1), item, np.int64))[:, 0]
        lists = _pin(lists, item, position, put, night.codes.pinned)
    ok, ids, src, util = compact(*lists, width=top_n)
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


@dataclass(frozen=True)
class UserFrames:
    """``rerank_personal``'s per-user inputs: long frames (user_idx, item_idx, source, in each
    user's order) of candidates, brand-new items and backfill; users x items (or category codes)
    sparse matrices over all users of purchases, interacted categories and excluded items."""
    cands: pd.DataFrame
    fresh: pd.DataFrame
    backfill: pd.DataFrame
    bought: sp.csr_matrix
    user_categories: sp.csr_matrix
    exclude_owned: sp.csr_matrix | None = None


def rerank_personal(night: RulesNight, frames: UserFrames, *, surface: str, fresh_slots: int) -> pd.DataFrame:
    """``rerank_lists`` on long frames (its source codes come from the frames' source names, not
    ``night.codes``). Returns user_idx, rank (1..), item_idx, utility, source."""
    names = sorted(set(frames.cands["source"]) | set(frames.fresh["source"]) | set(frames.backfill["source"])
                   | {"content_new_item", "discovery", "pinned"})
    code_of = {k: i for i, k in enumerate(names)}
    night = replace(night, codes=SourceCodes(code_of["content_new_item"], code_of["discovery"], code_of["pinned"]))
    users = np.unique(np.concatenate([d["user_idx"].to_numpy(np.int64)
                                      for d in (frames.cands, frames.fresh, frames.backfill)]))
    row_of = np.zeros(int(users.max()) + 1 if len(users) else 1, np.int64)
    row_of[users] = np.arange(len(users))
    cand_ids, cand_src = _rect(frames.cands, row_of, len(users), code_of)
    fresh_ids, _ = _rect(frames.fresh, row_of, len(users), code_of)
    back_ids, back_src = _rect(frames.backfill, row_of, len(users), code_of)
    rows = UserRows(RowSet(frames.bought, users), RowSet(frames.user_categories, users), back_ids, back_src)
    exclude = None if frames.exclude_owned is None else RowSet(frames.exclude_owned, users)
    out = rerank_lists(night, rows, Candidates(surface, cand_ids, cand_src, fresh_ids, fresh_slots, exclude))
    keep = out.ids >= 0
    r, c = np.nonzero(keep)
    return pd.DataFrame({"user_idx": users[r], "rank": c + 1, "item_idx": out.ids[keep],
                         "utility": out.utility[keep], "source": np.asarray(names, dtype=object)[out.src[keep]]})
